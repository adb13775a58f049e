/**
 * Instructions per gRPC unary call in the waypoint, counted by callgrind: the waypoint suite's gRPC path (client pod
 * -> agent ══HBONE══> waypoint ══HBONE══> agent -> gRPC target, 1 KiB each way, 4 h2c connections) with the waypoint
 * alone under `valgrind --tool=callgrind`, at a low rate. Instruction counts do not depend on what else the machine
 * runs, so this is the A/B for issue 12's gRPC CPU per call when the machine is busy (the suite's CPU rows, quiet
 * runs only, stay the figures of record). User space only.
 *
 *   node bench/waypoint-grpc-instructions.ts [--main OTHER_TREE/waypoint/main.ts] [--rate 10] [--warm-rounds 8]
 *                                       [--rounds 4] [--seconds 20] [--keep DIR] [--name MESH]
 *
 * `--main` runs another tree's waypoint (a `git archive` of main, say) in the same mesh and harness, for A/B runs.
 * The load runs in rounds of `--seconds` at `--rate` calls/s (grpc-load.ts, no warm-up calls of its own, 4 new h2c
 * connections per round, as the suite's); after the warm-up rounds (the JIT tiers up by invocation counts) the
 * counters are zeroed, the measured rounds run, and the counters are dumped. Printed: every thread, and the main
 * thread (the event loop) apart from V8's GC and compiler threads. `--keep DIR` copies the dumps there (for
 * callgrind_annotate: where the instructions went, by function); `--name` names the mesh, so two runs (two trees)
 * can go side by side. Same code measured twice (an A/A pair, 07:50-08:03 UTC, 800 calls after 1,600) read 513.7 and
 * 536.7 thousand instructions per call on the main thread, 834 and 680 on all threads (V8's compiler and marking
 * threads still busy at that warm-up): compare main threads, and several runs.
 *
 * Owns: this measurement. Must not know about: how the waypoint works.
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { loadavg } from 'node:os';
import path, { join } from 'node:path';
import { parseArgs } from 'node:util';
import { stringify } from 'yaml';
import { createLocalMesh, type LocalMesh } from '../runtime/local-mesh.ts';
import { createWaypoint } from '../runtime/waypoint.ts';
import { inPod } from './lib/mesh-cluster.ts';
import { ProcessGroup } from './lib/processes.ts';

const { values } = parseArgs({
  options: {
    main: { type: 'string' },
    rate: { type: 'string', default: '10' },
    'warm-rounds': { type: 'string', default: '8' },
    rounds: { type: 'string', default: '4' },
    seconds: { type: 'string', default: '20' },
    keep: { type: 'string' },
    name: { type: 'string', default: 'wp-instr' },
  },
});
const GRPC_PORT = 50051;
const VIP = '10.240.5.16';
const VALGRIND_READY_MS = 900_000;
const log = (message: string): void => void process.stdout.write(`[${new Date().toISOString().slice(11, 19)}] ${message}\n`);

async function writeAtomically(file: string, text: string): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(`${file}.tmp`, text);
  await rename(`${file}.tmp`, file);
}

/** The waypoint's process (valgrind's tool, which runs node's code): the one whose command line names this run's dump directory. */
function waypointPid(dumpDir: string): number {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      if (cmdline.includes('waypoint/main.ts') && cmdline.includes(`--callgrind-out-file=${dumpDir}/`) && readFileSync(`/proc/${entry}/comm`, 'utf8').trim() !== 'ip') return Number(entry);
    } catch {
      // gone meanwhile
    }
  }
  throw new Error(`the waypoint process writing to ${dumpDir} was not found`);
}

let mesh: LocalMesh | undefined;
const rows: string[] = [];
try {
  mesh = await createLocalMesh({ nodes: 2, name: values.name, agentEnv: { AMBIT_LOG_LEVEL: 'warn', AMBIT_DRAIN_MS: '500' } });
  const { cluster } = mesh;
  const runDir = cluster.tmpDir;
  const dumpDir = join(runDir, 'callgrind');
  mkdirSync(dumpDir, { recursive: true });
  const processes = new ProcessGroup(runDir);
  try {
    const client = await cluster.createPod({ node: 0, namespace: 'bench-mesh', name: 'client', serviceAccount: 'bench-client', namespaceLabels: { 'istio.io/dataplane-mode': 'ambient' } });
    const server = await cluster.createPod({ node: 1, namespace: 'bench-mesh', name: 'server-v1', serviceAccount: 'bench-server', labels: { app: 'bench-http', version: 'v1' } });
    const target = inPod(server, 'grpc-target.ts', ['--port', String(GRPC_PORT), '--name', 'v1']);
    await processes.start('gRPC target', target.command, target.args);
    log(`starting the waypoint under callgrind${values.main ? ` (${values.main})` : ''}`);
    const waypoint = await createWaypoint(mesh, {
      node: 1, namespace: 'bench-mesh', name: 'waypoint', readyTimeoutMs: VALGRIND_READY_MS,
      ...(values.main ? { main: path.resolve(values.main) } : {}),
      commandPrefix: ['valgrind', '--tool=callgrind', '--separate-threads=yes', '--smc-check=all-non-file', `--callgrind-out-file=${dumpDir}/waypoint.%p`],
    });
    await writeAtomically(join(cluster.clusterDir, 'bench-waypoint', 'via-grpc.yaml'), stringify({
      apiVersion: 'v1', kind: 'Service', metadata: { name: 'via-grpc', namespace: 'bench-mesh', labels: { 'istio.io/use-waypoint': 'waypoint' } },
      spec: { clusterIP: VIP, selector: { app: 'bench-http', version: 'v1' }, ports: [{ name: 'grpc', port: GRPC_PORT, targetPort: GRPC_PORT }] },
    }));
    const script = (what: string) => `fetch('http://127.0.0.1:15000/config_dump').then((r) => r.json()).then((d) => process.exit((${what}) ? 0 : 1), () => process.exit(1))`;
    const agentReady = script("d.services.some((s) => s.name === 'via-grpc' && s.waypoint)");
    const waypointReady = script("d.services.some((s) => s.name === 'via-grpc' && s.endpoints.length === 1)");
    const deadline = Date.now() + 300_000;
    while ((await cluster.node(0).exec(process.execPath, ['-e', agentReady])).code !== 0 || (await waypoint.pod.exec(process.execPath, ['-e', waypointReady], { timeoutMs: 60_000 })).code !== 0) {
      if (Date.now() > deadline) throw new Error('the client agent and the waypoint did not learn Service via-grpc in 300 s');
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
    const pid = waypointPid(dumpDir);
    log(`waypoint ready (pid ${pid}); warming up`);
    const load = async (): Promise<number> => {
      const command = inPod(client, 'grpc-load.ts', ['--host', VIP, '--port', String(GRPC_PORT), '--rate', values.rate, '--duration', values.seconds, '--connections', '4', '--size', '1024', '--warmup', '0']);
      const result = await processes.run<{ count: number; failed: number; p50: number }>('gRPC load', command.command, command.args);
      return result.count - result.failed;
    };
    for (let round = 0; round < Number(values['warm-rounds']); round++) {
      const done = await load().catch((error: unknown) => (log(`warm-up round ${round} failed: ${String(error).slice(0, 160)}`), 0));
      log(`warm-up round ${round}: ${done} calls`);
    }
    const trigger = 'measured-waypoint';
    execFileSync('callgrind_control', ['-z', String(pid)], { stdio: 'ignore' });
    let completed = 0;
    for (let round = 0; round < Number(values.rounds); round++) {
      const done = await load();
      log(`measured round ${round}: ${done} calls`);
      completed += done;
    }
    execFileSync('callgrind_control', ['-d', trigger, String(pid)], { stdio: 'ignore' });
    await new Promise((resolve) => setTimeout(resolve, 5_000));
    let all = 0;
    let main = 0;
    for (const file of readdirSync(dumpDir).filter((name) => name.includes(`.${pid}`))) {
      const text = readFileSync(join(dumpDir, file), 'utf8');
      if (!text.slice(0, 4000).includes(trigger)) continue;
      const total = /^(?:summary|totals): (\d+)/m.exec(text);
      if (!total) continue;
      all += Number(total[1]);
      if (/-01$/.test(file)) main += Number(total[1]);
    }
    rows.push(`| ${values.main ?? 'this tree'} | ${completed} | ${(all / completed / 1000).toFixed(1)} | ${(main / completed / 1000).toFixed(1)} |`);
    log(rows.at(-1)!);
    if (values.keep) {
      mkdirSync(values.keep, { recursive: true });
      for (const file of readdirSync(dumpDir)) if (file.includes(`.${pid}`)) copyFileSync(join(dumpDir, file), join(values.keep, file));
      log(`dumps copied to ${values.keep} (callgrind_annotate the measured one)`);
    }
  } finally {
    await processes.stopAll();
  }
} finally {
  await mesh?.destroy();
}
process.stdout.write([
  '',
  `Waypoint instructions per gRPC unary call (thousands), ${values.rate}/s over 4 h2c connections, callgrind; load average ${loadavg()[0]!.toFixed(1)} at the end (does not move the counts)`,
  '',
  '| waypoint | calls measured | all threads | main thread |',
  '|---|---:|---:|---:|',
  ...rows,
  '',
].join('\n'));
