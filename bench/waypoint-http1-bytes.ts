/**
 * Bytes allocated on the V8 heap per HTTP/1.1 1 KiB request in the waypoint, and where they are allocated: a small
 * mesh (client pod -> agent ══HBONE══> waypoint ══HBONE══> agent -> http-target, Service `via` bound to the waypoint,
 * no route: the suite's plain waypoint path), the waypoint at info (one access-log line per request, as in the suite),
 * warmed up at speed, then a measured window at `--rate` (http-load.ts, 1 KiB POSTs over `--connections` keep-alive
 * connections). Neither the machine's load nor the JIT's tier moves the bytes much (a request allocates what its code
 * allocates whichever tier runs it, less what optimised code keeps out of the heap: escape analysis), so this is the
 * steady A/B for the per-request objects of the HTTP/1.1 path; compare trees at the same rate (at higher rates more
 * requests share one read and one write, which allocates less per request).
 *
 *   node bench/waypoint-http1-bytes.ts [--main OTHER_TREE/waypoint/main.ts] [--rate 300] [--rounds 3] [--seconds 10]
 *        [--warm-rate 500] [--warm-rounds 6] [--warm-seconds 5] [--heap-profile [--keep-profile FILE]] [--deferrals] [--name MESH] [--json FILE]
 *        [--node-options='--perf-basic-prof' --keep-log FILE]  (the = form: parseArgs refuses a value starting with --)
 *
 * The waypoint is preloaded with bench/waypoint-grpc-preload.ts (its marks are protocol-neutral: a minor GC, then the
 * GCs by kind and the bytes allocated since the last mark, from v8.GCProfiler; with `--heap-profile` V8's sampling
 * heap profile of the window, its top printed by function). `--deferrals` also preloads bench/tools/deferral-counts.ts
 * and prints the ticks, immediates, timers, promises and native requests created per request in the window (at a
 * low rate, say `--rate 20`, each request is alone in its turns; async_hooks slows the waypoint: no bytes figure from
 * such a run). `--main` runs another tree's waypoint (a `git archive` of
 * main) in the same harness; `--name` names the mesh so two trees can run side by side. `--node-options` adds flags to
 * the waypoint's NODE_OPTIONS (only those Node allows there: `--perf-basic-prof` is, `--trace-opt`/`--trace-deopt` are not); `--keep-log FILE` copies the waypoint's log
 * there with a line `=== measured window begins ===` / `ends` written where the window's marks were taken.
 *
 * Owns: this measurement. Must not know about: how the waypoint works.
 */
import { appendFileSync, copyFileSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { loadavg } from 'node:os';
import path, { join } from 'node:path';
import { parseArgs } from 'node:util';
import { stringify } from 'yaml';
import { createLocalMesh, type LocalMesh } from '../runtime/local-mesh.ts';
import { createWaypoint } from '../runtime/waypoint.ts';
import { WAYPOINT_NODE_OPTIONS } from '../waypoint/config.ts';
import { inPod } from './lib/mesh-cluster.ts';
import { ProcessGroup } from './lib/processes.ts';
import { heapProfileTop, markOf, waypointPid } from './tools/waypoint-marks.ts';

const { values } = parseArgs({
  options: {
    main: { type: 'string' },
    rate: { type: 'string', default: '300' },
    connections: { type: 'string', default: '16' },
    rounds: { type: 'string', default: '3' },
    seconds: { type: 'string', default: '10' },
    'warm-rate': { type: 'string', default: '500' },
    'warm-rounds': { type: 'string', default: '6' },
    'warm-seconds': { type: 'string', default: '5' },
    'heap-profile': { type: 'boolean', default: false },
    /** With --heap-profile: the window's profile copied to this file (for its call tree). */
    'keep-profile': { type: 'string' },
    deferrals: { type: 'boolean', default: false },
    name: { type: 'string', default: 'wp-h1-bytes' },
    json: { type: 'string' },
    'node-options': { type: 'string', default: '' },
    'keep-log': { type: 'string' },
  },
});
const APP_PORT = 8080;
const VIP = '10.240.5.11';
const PRELOAD = join(import.meta.dirname, 'waypoint-grpc-preload.ts');
const DEFERRALS_PRELOAD = join(import.meta.dirname, 'tools', 'deferral-counts.ts');
/** The heap release's 10 s check after the warm-up falls before the window. */
const QUIET_BEFORE_MEASURING_MS = 12_000;
const log = (message: string): void => void process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${message}\n`);

async function writeAtomically(file: string, text: string): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(`${file}.tmp`, text);
  await rename(`${file}.tmp`, file);
}

let mesh: LocalMesh | undefined;
const rows: string[] = [];
try {
  mesh = await createLocalMesh({ nodes: 2, name: values.name, agentEnv: { AMBIT_LOG_LEVEL: 'warn', AMBIT_DRAIN_MS: '500' } });
  const { cluster } = mesh;
  const markDir = join(cluster.tmpDir, 'marks');
  mkdirSync(markDir, { recursive: true });
  const processes = new ProcessGroup(cluster.tmpDir);
  try {
    const client = await cluster.createPod({ node: 0, namespace: 'bench-mesh', name: 'client', serviceAccount: 'bench-client', namespaceLabels: { 'istio.io/dataplane-mode': 'ambient' } });
    const server = await cluster.createPod({ node: 1, namespace: 'bench-mesh', name: 'server-v1', serviceAccount: 'bench-server', labels: { app: 'bench-http', version: 'v1' } });
    await client.exec('sysctl', ['-qw', 'net.ipv4.ip_local_port_range=10000 65000']);
    const target = inPod(server, 'http-target.ts', ['--port', String(APP_PORT), '--name', 'v1']);
    await processes.start('http target', target.command, target.args);
    const waypoint = await createWaypoint(mesh, {
      node: 1, namespace: 'bench-mesh', name: 'waypoint',
      ...(values.main ? { main: path.resolve(values.main) } : {}),
      env: {
        NODE_OPTIONS: `${WAYPOINT_NODE_OPTIONS} ${values['node-options']} --import=${PRELOAD}${values.deferrals ? ` --import=${DEFERRALS_PRELOAD}` : ''}`, AMBIT_GRPC_INSTR_DIR: markDir,
        ...(values['heap-profile'] ? { AMBIT_GRPC_INSTR_HEAP_PROFILE: '1' } : {}), ...(values.deferrals ? { AMBIT_DEFERRALS_DIR: markDir } : {}),
      },
    });
    await writeAtomically(join(cluster.clusterDir, 'bench-waypoint', 'via.yaml'), stringify({
      apiVersion: 'v1', kind: 'Service', metadata: { name: 'via', namespace: 'bench-mesh', labels: { 'istio.io/use-waypoint': 'waypoint' } },
      spec: { clusterIP: VIP, selector: { app: 'bench-http', version: 'v1' }, ports: [{ name: 'http', port: 80, targetPort: APP_PORT }] },
    }));
    const script = (what: string) => `fetch('http://127.0.0.1:15000/config_dump').then((r) => r.json()).then((d) => process.exit((${what}) ? 0 : 1), () => process.exit(1))`;
    const agentReady = script("d.services.some((s) => s.name === 'via' && s.waypoint)");
    const waypointReady = script("d.services.some((s) => s.name === 'via' && s.endpoints.length === 1)");
    const deadline = Date.now() + 180_000;
    while ((await cluster.node(0).exec(process.execPath, ['-e', agentReady])).code !== 0 || (await waypoint.pod.exec(process.execPath, ['-e', waypointReady])).code !== 0) {
      if (Date.now() > deadline) throw new Error('the client agent and the waypoint did not learn Service via in 180 s');
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
    const pid = waypointPid(markDir);
    log(`waypoint ready (pid ${pid}${values.main ? `, ${values.main}` : ''}); warming up`);
    let failedMeasured = 0;
    const load = async (rate: string, seconds: string, measured: boolean): Promise<number> => {
      const command = inPod(client, 'http-load.ts', ['--host', VIP, '--port', '80', '--rate', rate, '--duration', seconds, '--connections', values.connections, '--size', '1024', '--warmup', '0']);
      const result = await processes.run<{ count: number; failed: number; p50: number; requestsPerSecond: number }>('load', command.command, command.args);
      if (measured) failedMeasured += result.failed;
      log(`${measured ? 'measured' : 'warm-up'} round: ${result.count} answered, ${result.failed} failed, ${result.requestsPerSecond.toFixed(0)}/s, p50 ${(result.p50 / 1000).toFixed(2)} ms`);
      return result.count;
    };
    for (let round = 0; round < Number(values['warm-rounds']); round++) {
      await load(values['warm-rate'], values['warm-seconds'], false).catch((error: unknown) => (log(`warm-up round ${round} failed: ${String(error).slice(0, 160)}`), 0));
    }
    await new Promise((resolve) => setTimeout(resolve, QUIET_BEFORE_MEASURING_MS));
    const before = await markOf(pid, markDir, 0);
    if (values['keep-log'] !== undefined) appendFileSync(waypoint.logFile, '\n=== measured window begins ===\n');
    let completed = 0;
    for (let round = 0; round < Number(values.rounds); round++) completed += await load(values.rate, values.seconds, true);
    const after = await markOf(pid, markDir, 1);
    if (values['keep-log'] !== undefined) appendFileSync(waypoint.logFile, '\n=== measured window ends ===\n');
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    const gcs = Object.keys(after.gcs).map((kind) => `${kind} ${after.gcs[kind]! - (before.gcs[kind] ?? 0) - (kind === 'minor' ? 1 : 0)}`).join(', ');
    const perRequest = (after.allocatedBytes ?? 0) / completed;
    rows.push(`| ${values.main ?? 'this tree'} | ${completed} (${failedMeasured} failed) at ${values.rate}/s | ${perRequest.toFixed(0)} | GCs ${gcs} | load ${loadavg()[0]!.toFixed(1)} |`);
    if (values.deferrals) {
      const read = (index: number): Record<string, number> => JSON.parse(readFileSync(join(markDir, `deferrals-${index}.json`), 'utf8')) as Record<string, number>;
      const [first, second] = [read(0), read(1)];
      rows.push('', 'Asynchronous resources created per request in the window (async_hooks types):', '', '| type | per request |', '|---|---:|',
        ...Object.keys(second).sort().map((type) => `| ${type} | ${((second[type]! - (first[type] ?? 0)) / completed).toFixed(2)} |`));
    }
    const heapFile = join(markDir, 'window.heapprofile');
    if (existsSync(heapFile)) rows.push('', ...heapProfileTop(heapFile, completed, 'request', 30));
    if (existsSync(heapFile) && values['keep-profile'] !== undefined) copyFileSync(heapFile, values['keep-profile']);
    if (values['keep-log'] !== undefined) copyFileSync(waypoint.logFile, values['keep-log']);
    if (values.json) appendFileSync(values.json, `${JSON.stringify({ at: new Date().toISOString(), tree: values.main ?? 'this tree', rate: Number(values.rate), requests: completed, failed: failedMeasured, load: loadavg()[0], allocatedBytes: perRequest, gcs })}\n`);
  } finally {
    await processes.stopAll();
  }
} finally {
  await mesh?.destroy();
}
process.stdout.write(['', '| waypoint | requests measured | bytes allocated per request (V8 heap) | GCs in the window | load at the end |', '|---|---:|---:|---|---|', ...rows, ''].join('\n'));
