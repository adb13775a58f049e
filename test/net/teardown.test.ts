/**
 * Teardown of the local runtime as an operator meets it: `make demo DEMO_ARGS=--keep` ended by SIGTERM or SIGHUP
 * (not only Ctrl-C) leaves no namespace, no process and no CA key behind and says what it removed, the commands it
 * prints for the run work, and a local mesh whose process was killed outright has its CA key removed by the next
 * run's reaper.
 */
import test, { type ExecutionContext } from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { reserveRun, releaseRun } from '../../runtime/cluster.ts';
import { run } from '../../runtime/exec.ts';
import { listNetns } from '../../runtime/netns.ts';
import { processStartTime, reapDeadRuns } from '../../runtime/run-registry.ts';
import { readState } from '../../runtime/workloads/local-state.ts';

const REPO = path.resolve(import.meta.dirname, '..', '..');
const DEMO = path.join(REPO, 'demo', 'run.ts');
/** The demo builds two nodes, starts the control plane, captures traffic twice: slow on a loaded 2-core box. */
const DEMO_UP_TIMEOUT_MS = 150_000;

interface Child {
  process: ChildProcess;
  output: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function start(t: ExecutionContext, args: string[]): Child {
  const child = spawn(process.execPath, args, { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  t.teardown(async () => {
    // A failed test must not leave a mesh up: kill the creator, then reap its run as the next run would.
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
    await reapDeadRuns();
  });
  return { process: child, output: () => output, exited };
}

async function waitForOutput(child: Child, pattern: RegExp, timeoutMs: number): Promise<RegExpExecArray> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const match = pattern.exec(child.output());
    if (match) return match;
    if (child.process.exitCode !== null || child.process.signalCode !== null) break;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  throw new Error(`no ${pattern} in the output:\n${child.output()}`);
}

/** Every process inside the run's namespaces, with its start time (so a reused pid is not taken for it). */
async function processesIn(namespaces: string[]): Promise<Array<{ pid: number; startTime: string }>> {
  const found: Array<{ pid: number; startTime: string }> = [];
  for (const name of namespaces) {
    const pids = await run('ip', ['netns', 'pids', name]);
    for (const pid of pids.stdout.split('\n').filter((line) => line !== '').map(Number)) {
      const startTime = processStartTime(pid);
      if (startTime !== undefined) found.push({ pid, startTime });
    }
  }
  return found;
}

for (const [signal, exitCode] of [['SIGTERM', 143], ['SIGHUP', 129]] as const) {
  test.serial(`make demo --keep ended by ${signal}: agents, control plane, namespaces and the CA key are gone, and the teardown is reported`, async (t) => {
    t.timeout(DEMO_UP_TIMEOUT_MS + 60_000);
    const demo = start(t, [DEMO, '--keep']);
    // The demo is `ambitctl local up` plus its checks: where everything lives is in the run's state file.
    await waitForOutput(demo, /Staying up \(Ctrl-C, SIGTERM or SIGHUP to tear down\)\. Try:(\n.*){8}\n/, DEMO_UP_TIMEOUT_MS);
    const output = demo.output();
    const runDir = /run directory (\S+)\n/.exec(output)![1]!;
    // Whatever happens to the demo process, its mesh (a detached supervisor) goes with the test.
    t.teardown(async () => {
      await run(path.join(REPO, 'ambitctl', 'ambitctl'), ['local', 'down', '--run-dir', runDir], { timeoutMs: 120_000 });
    });
    const state = (await readState(runDir))!;
    const caDir = state.caDir!;
    const tmpDir = state.tmpDir!;
    const runPrefix = /--node (ambit-[0-9a-f]+-)n\d/.exec(output)![1]!;
    // The printed ambitctl commands name namespaces that exist and work for this run.
    const hints = output.split('\n').filter((line) => line.trimStart().startsWith('ambitctl/ambitctl '));
    t.true(hints.length >= 3, output);
    for (const hint of hints) {
      const result = await run('bash', ['-c', `cd ${REPO} && ${hint.trim()}`]);
      t.not(result.code, 2, `${hint}: ${result.stderr}`);
      t.notRegex(result.stderr, /does not exist|cannot reach/, hint);
      if (hint.includes(' workloads ')) t.regex(result.stdout, /shop\s+server\s/, hint);
      if (hint.includes(' exec client ')) t.is(result.stdout, 'hello\n', `${hint}: the echo server answers through the mesh`);
      if (hint.includes('authz check shop/client')) t.is(result.code, 0, `${hint}: allowed\n${result.stdout}${result.stderr}`);
      if (hint.includes('authz check legacy/')) t.is(result.code, 0, `${hint}: no policy, so allowed\n${result.stdout}${result.stderr}`);
    }

    // A node's name is not its namespace: the error says which namespaces to use.
    const byName = await run(path.join(REPO, 'ambitctl', 'ambitctl'), ['workloads', '--node', 'demo-node0']);
    t.is(byName.code, 1);
    t.regex(byName.stderr, new RegExp(`"demo-node0" does not exist: --node takes a node's network namespace, not its name; the local runtime's nodes here are .*${runPrefix}n0`));

    const namespaces = (await listNetns()).filter((name) => name.startsWith(runPrefix));
    t.true(namespaces.length >= 6, `fabric, 2 nodes, 3 pods: ${namespaces.join(', ')}`);
    const processes = await processesIn(namespaces);
    t.true(processes.length >= 3, 'agents, control plane and the echo server run in the namespaces');
    t.true(existsSync(path.join(caDir, 'ca-key.pem')), 'the CA key exists while the mesh is up');
    t.true(caDir.startsWith(tmpDir + path.sep), 'the CA directory lives in the run\'s temp dir');

    demo.process.kill(signal);
    const exit = await demo.exited;
    t.is(exit.code, exitCode, demo.output());
    const after = demo.output().slice(output.length);
    t.regex(after, new RegExp(`Tearing down \\(${signal}\\)`));
    t.regex(after, /removed 3 pods, \d+ processes, \d+ network namespaces, \S+ \(CA key included\)/);

    t.deepEqual((await listNetns()).filter((name) => name.startsWith(runPrefix)), [], 'no namespace of the run is left');
    const left = processes.filter(({ pid, startTime }) => processStartTime(pid) === startTime);
    for (const { pid } of left) t.log(`left: ${pid} ${(await run('ps', ['-o', 'pid,ppid,args', '-p', String(pid)])).stdout}`);
    t.deepEqual(left, [], 'no process of the run is left');
    t.false(existsSync(caDir), 'the CA key is gone');
    t.false(existsSync(tmpDir), 'the run\'s temp dir is gone');
  });
}

test.serial("a local mesh killed outright (SIGKILL) leaves its CA key only until the next run's reaper", async (t) => {
  const script = `
    import { createLocalMesh } from ${JSON.stringify(path.join(REPO, 'runtime', 'local-mesh.ts'))};
    const mesh = await createLocalMesh({ nodes: 1, controlPlane: false, name: 'crash' });
    console.log('CA ' + mesh.caDir + ' NETNS ' + mesh.cluster.node(0).netnsName);
    setInterval(() => {}, 1000);
  `;
  const creator = start(t, ['--input-type=module', '-e', script]);
  const match = await waitForOutput(creator, /CA (\S+) NETNS (\S+)\n/, 60_000);
  const [caDir, netns] = [match[1]!, match[2]!];
  t.true(existsSync(path.join(caDir, 'ca-key.pem')));
  creator.process.kill('SIGKILL');
  await creator.exited;
  t.true(existsSync(path.join(caDir, 'ca-key.pem')), 'SIGKILL runs no cleanup: the key is still there');
  // The next run starts: reserving it reaps every dead run first (another test's run may reap it first: same end).
  const next = await reserveRun();
  await releaseRun(next);
  t.false(existsSync(caDir), 'the dead run\'s CA key is removed');
  t.false((await listNetns()).includes(netns), 'its namespaces too');
  t.false(readdirSync(path.dirname(path.dirname(caDir))).some((name) => name === path.basename(path.dirname(caDir))));
});
