/**
 * `ambitctl local`: a user's own Kubernetes YAML as a running multi-node mesh on this box, no Kubernetes needed.
 *
 *   ambitctl local up -f DIR [--nodes N] [--image-map FILE] [--timeout S]   start it (a detached supervisor owns it)
 *                    [--control-plane-source kubernetes|dir]               what the control plane reads
 *   ambitctl local get pods|svc|nodes [-n NS]                               what runs
 *   ambitctl local logs POD [-n NS] [-c CONTAINER] [-f]                     a container's output
 *   ambitctl local exec POD [-n NS] -- CMD [ARGS...]                        run a command in the pod's network namespace
 *   ambitctl local delete pod POD [-n NS]                                   delete a pod (its Deployment or file makes it again)
 *   ambitctl local status                                                   where the run directory, CA and logs are
 *   ambitctl local down [--keep-logs]                                       remove everything
 * Every subcommand takes --run-dir DIR (or AMBIT_LOCAL_RUN_DIR; default /run/ambit-local).
 *
 * Owns: the subcommands' arguments, output and exit codes (0 ok, 1 failed, 2 usage); starting and stopping the
 * supervisor process.
 * Must not know about: how the mesh is built (runtime/workloads/supervisor.ts does it, reporting in the state file).
 */
import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { mkdir, open, readdir, readFile, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { processStartTime, reapDeadRuns } from '../runtime/run-registry.ts';
import { containerLogFile } from '../runtime/workloads/containers.ts';
import { requestDeletePod } from '../runtime/workloads/control-socket.ts';
import { readState, resolveRunDir, supervisorLogFile, teardownFile, type LocalState } from '../runtime/workloads/local-state.ts';
import type { Io } from './main.ts';

const SUPERVISOR_MAIN = path.resolve(import.meta.dirname, '..', 'runtime', 'workloads', 'supervisor.ts');
const POLL_MS = 250;
const DEFAULT_UP_TIMEOUT_S = 180;
/** How long `down` waits for the supervisor's teardown: every pod goes through CNI DEL twice, slow on a loaded box. */
const DOWN_TIMEOUT_BASE_MS = 60_000;
const DOWN_TIMEOUT_PER_POD_MS = 2_000;

class UsageError extends Error {}

const USAGE = `usage:
  ambitctl local up -f DIR [--nodes N] [--image-map FILE] [--timeout SECONDS] [--control-plane-source kubernetes|dir]
  ambitctl local get pods|svc|nodes [-n NS]
  ambitctl local logs POD [-n NS] [-c CONTAINER] [-f]
  ambitctl local exec POD [-n NS] -- CMD [ARGS...]
  ambitctl local delete pod POD [-n NS]
  ambitctl local status
  ambitctl local down [--keep-logs]
  (every subcommand: --run-dir DIR, or AMBIT_LOCAL_RUN_DIR; default /run/ambit-local)
`;

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function alive(state: LocalState): boolean {
  return processStartTime(state.pid) === state.pidStartTime;
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => (row[column] ?? '').length)));
  return rows.map((row) => row.map((cell, column) => (column === row.length - 1 ? cell : cell.padEnd(widths[column]!))).join('   ')).join('\n') + '\n';
}

async function runningState(runDir: string): Promise<LocalState> {
  const state = await readState(runDir);
  if (state === undefined || !alive(state)) throw new Error(`no local mesh is running (run directory ${runDir}); start one with: ambitctl local up -f DIR`);
  return state;
}

function findPod(state: LocalState, name: string | undefined, namespace: string | undefined): LocalState['pods'][number] {
  if (name === undefined) throw new UsageError('name a pod');
  const ns = namespace ?? 'default';
  const pod = state.pods.find((candidate) => candidate.name === name && candidate.namespace === ns);
  if (pod === undefined) throw new Error(`no pod ${ns}/${name}${namespace === undefined ? ' (pass -n NS for another namespace)' : ''}`);
  return pod;
}

async function up(runDir: string, values: Record<string, string | boolean | undefined>, io: Io): Promise<number> {
  const dir = values.file as string | undefined;
  if (dir === undefined) throw new UsageError('up needs -f DIR (a directory of Kubernetes YAML)');
  if (!(await stat(dir).catch(() => undefined))?.isDirectory()) throw new Error(`${dir} is not a directory`);
  const nodes = Number(values.nodes ?? '2');
  if (!Number.isInteger(nodes) || nodes < 1) throw new UsageError('--nodes must be a whole number of at least 1');
  const previous = await readState(runDir);
  if (previous !== undefined && alive(previous)) throw new Error(`a local mesh is already running from ${runDir} (supervisor pid ${previous.pid}); ambitctl local down first`);
  await rm(runDir, { recursive: true, force: true });
  await mkdir(runDir, { recursive: true, mode: 0o700 });
  const log = openSync(supervisorLogFile(runDir), 'a');
  try {
    const args = [SUPERVISOR_MAIN, '--dir', path.resolve(dir), '--run-dir', runDir, '--nodes', String(nodes)];
    if (values['image-map'] !== undefined) args.push('--image-map', path.resolve(values['image-map'] as string));
    args.push(...controlPlaneSourceArgs(values['control-plane-source']));
    spawn(process.execPath, args, { detached: true, stdio: ['ignore', log, log] }).unref();
  } finally {
    closeSync(log);
  }
  const deadline = Date.now() + Number(values.timeout ?? DEFAULT_UP_TIMEOUT_S) * 1000;
  const said = new Set<string>();
  const say = (line: string): void => {
    if (said.has(line)) return;
    said.add(line);
    io.stdout(`${line}\n`);
  };
  say(`run directory ${runDir}`);
  while (Date.now() < deadline) {
    await sleep(POLL_MS);
    const state = await readState(runDir);
    if (state === undefined) continue;
    for (const problem of state.problems) {
      if (!said.has(problem)) io.stderr(`error: ${problem}\n`);
      said.add(problem);
    }
    if (state.phase === 'failed' || !alive(state)) {
      const tail = (await readFile(supervisorLogFile(runDir), 'utf8').catch(() => '')).split('\n').slice(-15).join('\n');
      io.stderr(`the local mesh failed to start: ${state.error ?? 'the supervisor exited'}\n${tail}\n`);
      return 1;
    }
    if (state.nodes.length > 0) say(`nodes ${state.nodes.length}/${state.nodeCount} up, control plane and agents ready`);
    if (state.phase !== 'running') continue;
    for (const line of kubectlLines(state)) say(line);
    for (const note of state.notes) say(`note: ${note}`);
    const runnable = state.pods.filter((pod) => pod.phase !== 'Failed');
    const ready = runnable.filter((pod) => pod.ready).length;
    say(`pods ready ${ready}/${runnable.length}`);
    if (ready === runnable.length) {
      const failed = state.pods.length - runnable.length;
      io.stdout(`local mesh up: ${state.nodes.length} nodes, ${ready} pods ready${failed > 0 ? `, ${failed} failed` : ''}${state.problems.length > 0 ? `, ${state.problems.length} problems (above)` : ''}\n`);
      return state.problems.length > 0 ? 1 : 0;
    }
  }
  io.stderr(`not every pod became Ready in time; the mesh keeps running: see ambitctl local get pods, ambitctl local logs\n`);
  return 1;
}

/** `--control-plane-source`: the local cluster's Kubernetes API, as in a cluster (default), or the cluster directory. */
function controlPlaneSourceArgs(value: string | boolean | undefined): string[] {
  if (value === undefined) return [];
  if (value !== 'dir' && value !== 'kubernetes') throw new UsageError('--control-plane-source must be kubernetes or dir');
  return ['--control-plane-source', value];
}

/** How to reach the local cluster's Kubernetes API with kubectl (the supervisor serves it once the mesh runs). */
function kubectlLines(state: LocalState): string[] {
  if (state.kubeconfig === undefined) return [];
  return [`Kubernetes API at ${state.apiServer}; for kubectl:`, `export KUBECONFIG=${state.kubeconfig}`];
}

async function get(runDir: string, what: string | undefined, namespace: string | undefined, io: Io): Promise<number> {
  const state = await runningState(runDir);
  const inNamespace = <T extends { namespace: string }>(rows: T[]): T[] => rows.filter((row) => namespace === undefined || row.namespace === namespace);
  switch (what) {
    case 'pods':
    case 'pod':
    case 'po':
      io.stdout(
        table([
          ['NAMESPACE', 'NAME', 'READY', 'STATUS', 'RESTARTS', 'IP', 'NODE', 'IMAGE'],
          ...inNamespace(state.pods).map((pod) => [pod.namespace, pod.name, pod.ready ? 'True' : 'False', pod.phase, String(pod.restarts), pod.ip || '<none>', pod.node || '<none>', pod.images.join(',')]),
        ]),
      );
      return 0;
    case 'svc':
    case 'services':
    case 'service':
      io.stdout(
        table([
          ['NAMESPACE', 'NAME', 'CLUSTER-IP', 'PORTS', 'SELECTOR', 'ENDPOINTS'],
          ...inNamespace(state.services).map((svc) => [svc.namespace, svc.name, svc.clusterIP, svc.ports, svc.selector || '<none>', svc.endpoints === undefined ? '<pending>' : String(svc.endpoints)]),
        ]),
      );
      return 0;
    case 'nodes':
    case 'node':
      io.stdout(table([['NAME', 'PODS', 'NETNS'], ...state.nodes.map((node) => [node.name, String(state.pods.filter((pod) => pod.node === node.name).length), node.netns])]));
      return 0;
    default:
      throw new UsageError('get pods, get svc or get nodes');
  }
}

async function logs(runDir: string, name: string | undefined, values: Record<string, string | boolean | undefined>, io: Io): Promise<number> {
  const state = await readState(runDir);
  if (state === undefined) throw new Error(`no local mesh state in ${runDir}`);
  const pod = findPod(state, name, values.namespace as string | undefined);
  const container = (values.container as string | undefined) ?? pod.containers[0]!;
  if (!pod.containers.includes(container)) throw new Error(`pod ${pod.namespace}/${pod.name} has no container ${container} (${pod.containers.join(', ')})`);
  const file = containerLogFile(state.logDir, pod.namespace, pod.name, container);
  let offset = 0;
  for (;;) {
    const handle = await open(file, 'r').catch(() => undefined);
    if (handle !== undefined) {
      try {
        const { size } = await handle.stat();
        if (size > offset) {
          const buffer = Buffer.alloc(size - offset);
          await handle.read(buffer, 0, buffer.length, offset);
          offset = size;
          io.stdout(buffer.toString('utf8'));
        }
      } finally {
        await handle.close();
      }
    }
    if (values.follow !== true || !alive(state)) return 0;
    await sleep(POLL_MS);
  }
}

async function exec(runDir: string, name: string | undefined, namespace: string | undefined, command: string[], io: Io): Promise<number> {
  const state = await runningState(runDir);
  const pod = findPod(state, name, namespace);
  if (command.length === 0) throw new UsageError('exec POD -- CMD [ARGS...]');
  if (pod.netns === '') throw new Error(`pod ${pod.namespace}/${pod.name} has no network namespace yet (phase ${pod.phase})`);
  const child = spawn('ip', ['netns', 'exec', pod.netns, ...command], { stdio: ['inherit', 'pipe', 'pipe'] });
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => io.stdout(chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => io.stderr(chunk));
  return new Promise<number>((resolve) => {
    child.once('error', (error) => {
      io.stderr(`cannot run ip netns exec: ${error.message}\n`);
      resolve(1);
    });
    child.once('close', (code) => resolve(code ?? 1));
  });
}

/** `delete pod POD`: the supervisor deletes it through the CNI chain and makes its replacement. */
async function deletePod(runDir: string, kind: string | undefined, name: string | undefined, namespace: string | undefined, io: Io): Promise<number> {
  if (kind !== 'pod' && kind !== 'pods' && kind !== 'po') throw new UsageError('delete pod POD [-n NS]');
  const state = await runningState(runDir);
  const pod = findPod(state, name, namespace);
  const result = await requestDeletePod(runDir, pod.namespace, pod.name);
  io.stdout(`pod ${result.deleted} deleted${result.replacement !== undefined ? `; ${result.replacement === result.deleted ? 'made again from its file' : `replaced by ${result.replacement}`}` : ''}\n`);
  return 0;
}

async function status(runDir: string, io: Io): Promise<number> {
  const state = await readState(runDir);
  if (state === undefined) {
    io.stdout(`no local mesh (run directory ${runDir})\n`);
    return 1;
  }
  const running = alive(state);
  const ready = state.pods.filter((pod) => pod.ready).length;
  io.stdout(
    [
      `state:           ${running ? state.phase : 'not running (supervisor gone)'}${state.error ? ` (${state.error})` : ''}`,
      `supervisor pid:  ${state.pid}`,
      `manifests:       ${state.dir}`,
      `run directory:   ${state.runDir}  (state.json, supervisor.log)`,
      `logs:            ${state.logDir}  (agent-<node>.log, controlplane.log, pods/<ns>_<pod>_<container>.log)`,
      `CA directory:    ${state.caDir ?? '-'}  (root certificate and private key; removed on down)`,
      `cluster state:   ${state.clusterDir ?? '-'}  (what the agents read${state.controlPlaneSource === 'dir' ? ' and the control plane reads' : ''})`,
      `control plane:   ${state.controlPlaneSource === 'dir' ? 'reads the cluster state directory' : 'reads the Kubernetes API below and writes status through it'}; log ${state.controlPlaneLog ?? '-'}`,
      `kubeconfig:      ${state.kubeconfig ?? '-'}  (Kubernetes API ${state.apiServer ?? 'not serving'}; export KUBECONFIG=${state.kubeconfig ?? '...'})`,
      `nodes:           ${state.nodes.map((node) => node.name).join(', ')}`,
      `pods ready:      ${ready}/${state.pods.length}`,
      ...state.problems.map((problem) => `problem:         ${problem}`),
      ...state.notes.map((note) => `note:            ${note}`),
      '',
    ].join('\n'),
  );
  return running ? 0 : 1;
}

async function down(runDir: string, keepLogs: boolean, io: Io): Promise<number> {
  const state = await readState(runDir);
  if (state === undefined) {
    io.stdout(`no local mesh (run directory ${runDir})\n`);
    return 0;
  }
  if (alive(state)) {
    process.kill(state.pid, 'SIGTERM');
    const timeoutMs = DOWN_TIMEOUT_BASE_MS + DOWN_TIMEOUT_PER_POD_MS * state.pods.length;
    const deadline = Date.now() + timeoutMs;
    while (alive(state) && Date.now() < deadline) await sleep(POLL_MS);
    if (alive(state)) {
      // Its exit hook will not run: the runtime's reaper removes what the run left (namespaces and the processes
      // in them, resolv.conf files, the temp dir with the CA key), as the next start would.
      process.kill(state.pid, 'SIGKILL');
      io.stderr(`the supervisor did not stop in ${timeoutMs / 1000} s and was killed; removing what its run left\n`);
      await sleep(POLL_MS);
      await reapDeadRuns();
    }
  }
  const report = JSON.parse(await readFile(teardownFile(runDir), 'utf8').catch(() => '{}')) as { pods?: string[]; processes?: number; namespaces?: string[]; tmpDir?: string };
  io.stdout(`removed ${report.pods?.length ?? 0} pods, ${report.processes ?? 0} processes, ${report.namespaces?.length ?? 0} network namespaces, ${report.tmpDir ?? 'no temp dir'} (CA key included)\n`);
  if (keepLogs) {
    for (const entry of await readdir(runDir)) if (entry !== 'logs' && entry !== 'supervisor.log') await rm(path.join(runDir, entry), { recursive: true, force: true });
    io.stdout(`logs kept in ${runDir}\n`);
  } else {
    await rm(runDir, { recursive: true, force: true });
  }
  return 0;
}

/** Runs `ambitctl local ...` (argv after "local"); resolves with the exit code. */
export async function runLocal(argv: readonly string[], io: Io, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const separator = argv.indexOf('--');
  const own = separator === -1 ? [...argv] : argv.slice(0, separator);
  const command = separator === -1 ? [] : argv.slice(separator + 1);
  // `logs -f` follows, as kubectl's does; `up -f` names the directory.
  if (own[0] === 'logs') for (const [index, word] of own.entries()) if (word === '-f') own[index] = '--follow';
  try {
    const { values, positionals } = parseArgs({
      args: own,
      allowPositionals: true,
      options: {
        file: { type: 'string', short: 'f' },
        nodes: { type: 'string' },
        'image-map': { type: 'string' },
        timeout: { type: 'string' },
        'control-plane-source': { type: 'string' },
        'run-dir': { type: 'string' },
        namespace: { type: 'string', short: 'n' },
        container: { type: 'string', short: 'c' },
        follow: { type: 'boolean' },
        'keep-logs': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    });
    const [sub, target, third] = positionals;
    if (values.help === true) {
      io.stdout(USAGE);
      return 0;
    }
    const runDir = resolveRunDir(values['run-dir'], env);
    switch (sub) {
      case 'up':
        return await up(runDir, values, io);
      case 'get':
        return await get(runDir, target, values.namespace, io);
      case 'logs':
        return await logs(runDir, target, values, io);
      case 'exec':
        return await exec(runDir, target, values.namespace, command, io);
      case 'delete':
        return await deletePod(runDir, target, third, values.namespace, io);
      case 'status':
        return await status(runDir, io);
      case 'down':
        return await down(runDir, values['keep-logs'] === true, io);
      default:
        throw new UsageError(sub === undefined ? 'name a subcommand' : `unknown subcommand "${sub}"`);
    }
  } catch (error) {
    if (error instanceof UsageError || (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      io.stderr(`ambitctl local: ${(error as Error).message}\n\n${USAGE}`);
      return 2;
    }
    io.stderr(`ambitctl local: ${(error as Error).message}\n`);
    return 1;
  }
}


