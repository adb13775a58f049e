/**
 * Instructions per gRPC unary call in the waypoint, counted by callgrind: the waypoint suite's gRPC path (client pod
 * -> agent ══HBONE══> waypoint ══HBONE══> agent -> gRPC target, 1 KiB each way, 4 h2c connections) with the waypoint
 * alone under `valgrind --tool=callgrind`, at a low rate. Instruction counts do not depend on what else the machine
 * runs, so this is the A/B for issue 12's gRPC CPU per call when the machine is busy (the suite's CPU rows, quiet
 * runs only, stay the figures of record). User space only.
 *
 *   node bench/waypoint-grpc-instructions.ts [--main OTHER_TREE/waypoint/main.ts] [--rate 8] [--rounds 4] [--seconds 50]
 *        [--warm-rate 50] [--warm-rounds 24] [--warm-seconds 10] [--release-gc] [--keep DIR] [--name MESH] [--json FILE]
 *
 * `--main` runs another tree's waypoint (a `git archive` of main, say) in the same mesh and harness, for A/B runs;
 * `--name` names the mesh, so two runs (two trees) can go side by side. The waypoint runs under callgrind with
 * instrumentation off (`--instr-atstart=no`) through start-up and the warm-up rounds (at `--warm-rate`: the JIT tiers
 * up by invocation counts, so thousands of calls), then a quiet pause, then instrumentation on, a settling round (30 s at the measured rate: code is
 * re-translated with instrumentation, slowly), counters zeroed, the
 * measured rounds (`--rounds` of `--seconds` at `--rate`, grpc-load.ts, 4 new h2c connections per round, as the
 * suite's), and a dump. bench/waypoint-grpc-preload.ts, preloaded into the waypoint, takes the heap release's GCs out
 * (they run on a quiet loop, which a few calls per second leaves, and not at 1,000/s; `--release-gc` keeps them) and
 * counts, around the window, V8's collections and the bytes allocated on its heap.
 *
 * Printed, per call: the main thread's instructions (the event loop: JS, the scavenger's main-thread part, OpenSSL)
 * without the native memory releases that fall in the window (the heap release's malloc_trim and page drop: under
 * valgrind the anonymous RSS grows with valgrind's own, and each release parses /proc/self/maps: millions of
 * instructions a waypoint at 1,000/s does not run), the GC's part of it (`Heap::CollectGarbage` inclusive), the other
 * threads (V8's compiler and marking workers, which swing with when a compile or a marking lands), bytes allocated on
 * the V8 heap, and the GCs by kind. `--json FILE` appends the row as one JSON line. `--keep DIR` copies the dumps
 * there (for callgrind_annotate: where the instructions went, by function).
 *
 * `--plain` runs the waypoint without valgrind (rates as given: say `--warm-rate 500 --rate 300`) and takes, over the
 * measured rounds instead of instructions: the bytes allocated and GCs as above, V8's sampling heap profile (where the
 * window's allocations were made, by function: the top of it printed, the profile kept with `--keep`), and with
 * `--syscalls` the waypoint's reads and writes per call on each HBONE leg (strace attached for the window: the legs
 * are the TLS sockets on port 15008, the clients' inbound and the endpoints' outbound) and its loop wake-ups, and
 * the time from a call's bytes read on one leg to their write on the other (strace's timestamps: the latency the
 * waypoint's own turn adds, which the suite's p50 shows only on a quiet machine).
 * strace slows the process: look at the p50s printed per round to see it kept up.
 * `--plain --perf DIR` (session s15) records the window with `perf record -g` (cpu-clock, 999 Hz, every thread) and
 * the waypoint with `--perf-basic-prof`, so JIT code is named by V8's perf map, the tier marked (`*` TurboFan, `+`
 * Maglev, `^` Sparkplug, `~` interpreted): where the main thread's and the other threads' time goes at the rate given,
 * native code (OpenSSL, libuv, Node's C++, the GC) included, which the V8 profile charges to the JS that called it;
 * `DIR/perf.data` and `DIR/report.txt` (perf report by thread, object and symbol) are kept; no heap profile then (its
 * sampling showed as a tenth of the main thread's samples).
 * `--plain --trace-gc` (session s15) lists the window's collections by kind and reason (V8's `--trace-gc`, turned on
 * between the marks by the preload; the waypoint's log is kept with `--keep`).
 * `--v8-flags='--flag ...'` (session s15) sets V8 flags in the waypoint at start through the preload (the = form:
 * parseArgs refuses a value starting with --).
 * `--plain --cpu-profile` (session s14) takes V8's sampling CPU profile of the window instead of the heap profile
 * (bench/tools/cpu-profile-top.ts: self and total µs per call by function, kept as window.cpuprofile with `--keep`);
 * every plain run also prints the waypoint's user and system CPU over the window (/proc/<pid>/stat) per 1,000 calls,
 * which a busy machine and the profilers inflate: compare trees side by side in the same minutes only.
 *
 * Session s10's version (no warm-up at speed, the release's GCs and native releases in the window, 500-800 calls)
 * read 514-641 thousand per call for one tree; see BENCHMARKS.md for this one's spread.
 *
 * Owns: this measurement. Must not know about: how the waypoint works.
 */
import { execFileSync, spawn } from 'node:child_process';
import { appendFileSync, copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
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
import { callgrindTotals } from './tools/callgrind-totals.ts';
import { cpuProfileTop } from './tools/cpu-profile-top.ts';
import { heapProfileTop, markOf, waypointPid } from './tools/waypoint-marks.ts';
import { latestPerfMap } from './tools/perf-map.ts';

const { values } = parseArgs({
  options: {
    main: { type: 'string' },
    rate: { type: 'string', default: '8' },
    rounds: { type: 'string', default: '4' },
    seconds: { type: 'string', default: '50' },
    'warm-rate': { type: 'string', default: '50' },
    'warm-rounds': { type: 'string', default: '24' },
    'warm-seconds': { type: 'string', default: '10' },
    'release-gc': { type: 'boolean', default: false },
    keep: { type: 'string' },
    name: { type: 'string', default: 'wp-instr' },
    json: { type: 'string' },
    plain: { type: 'boolean', default: false },
    syscalls: { type: 'boolean', default: false },
    'cpu-profile': { type: 'boolean', default: false },
    perf: { type: 'string' },
    'trace-gc': { type: 'boolean', default: false },
    'v8-flags': { type: 'string' },
  },
});
const GRPC_PORT = 50051;
const VIP = '10.240.5.16';
const VALGRIND_READY_MS = 900_000;
/** After the warm-up: the heap release's next 10 s check (its native release, if the warm-up grew the RSS) falls before the window. */
const QUIET_BEFORE_MEASURING_MS = 12_000;
/** Instrumented calls before the counters are zeroed (see the settling round). */
const SETTLE_SECONDS = '30';
const PRELOAD = join(import.meta.dirname, 'waypoint-grpc-preload.ts');
const plain = values.plain;
const log = (message: string): void => void process.stdout.write(`[${new Date().toISOString().slice(11, 19)}] ${message}\n`);

async function writeAtomically(file: string, text: string): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(`${file}.tmp`, text);
  await rename(`${file}.tmp`, file);
}

/**
 * Inclusive instructions of the main thread's dump in the native memory release, in V8's collections, and in the
 * preload's GC profiler (node's v8_utils Before/AfterGCCallback: heap statistics written as JSON at every GC, about
 * 0.2 M instructions each under callgrind; inside the collections' count too): the harness's own, taken off both.
 */
function mainThreadParts(file: string): { nativeRelease: number; gc: number; gcProfiler: number } {
  const text = execFileSync('callgrind_annotate', ['--inclusive=yes', '--threshold=100', file], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  const parts = { nativeRelease: 0, gc: 0, gcProfiler: 0 };
  for (const line of text.split('\n')) {
    const match = /^\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*)$/.exec(line);
    if (!match) continue;
    const count = Number(match[1]!.replaceAll(',', ''));
    if (/:(drop_executable_pages|trim_malloc) \[.*ambit_memory\.node\]/.test(match[2]!)) parts.nativeRelease += count;
    else if (/:node::v8_utils::(Before|After)GCCallback\(/.test(match[2]!)) parts.gcProfiler += count;
    else if (parts.gc === 0 && match[2]!.startsWith('???:v8::internal::Heap::CollectGarbage(')) parts.gc = count;
  }
  return parts;
}

/** The plain run's early way out of the measurement block (its rows are written). */
class Done extends Error {}

/** strace attached to every thread of `pid`, its reads, writes and loop waits written to `file`. */
function startStrace(pid: number, file: string): { stop(): Promise<void> } {
  const child = spawn('strace', ['-f', '-y', '-qq', '-ttt', '-e', 'trace=read,write,writev,readv,epoll_wait,epoll_pwait,epoll_pwait2', '-e', 'signal=none', '-o', file, '-p', String(pid)], { stdio: 'ignore' });
  return {
    stop: () => new Promise((resolve) => {
      child.once('exit', () => resolve());
      child.kill('SIGINT');
    }),
  };
}

/** Local and remote TCP ports of each socket inode of `pid`'s network namespace (its /proc/<pid>/net/tcp and tcp6). */
function socketPorts(pid: number): Map<string, { local: number; remote: number }> {
  const ports = new Map<string, { local: number; remote: number }>();
  for (const table of ['tcp', 'tcp6']) {
    let text: string;
    try {
      text = readFileSync(`/proc/${pid}/net/${table}`, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const fields = line.trim().split(/\s+/);
      if (fields.length < 10) continue;
      ports.set(fields[9]!, { local: parseInt(fields[1]!.split(':')[1]!, 16), remote: parseInt(fields[2]!.split(':')[1]!, 16) });
    }
  }
  return ports;
}

/** One socket read or write of the strace file that moved bytes: when (seconds), which leg, which call. */
interface LegIo {
  at: number;
  where: string;
  call: string;
}

/**
 * Syscalls per call from the strace file: reads and writes on the clients' leg (sockets whose local port is
 * 15008), on the endpoints' leg (remote port 15008), on other descriptors, and the loop's waits. `ports`: the
 * waypoint's sockets by inode (strace, in the root namespace, cannot name them). Then the time inside the waypoint
 * from a call's bytes arriving to their going on (session s13): from a read on the clients' leg that moved bytes to
 * the next write on the endpoints' leg (the request forwarded), and from a read on the endpoints' leg to the next
 * write on the clients' leg (the answer passed back); when several reads come before one write, from the first.
 * strace adds its own cost to every syscall between the two (the same for any tree), and a preempted waypoint
 * stretches a gap: the medians are the figures, over hundreds of calls.
 */
function syscallsPerCall(file: string, calls: number, ports: Map<string, { local: number; remote: number }>): string[] {
  const counts = new Map<string, number>();
  const io: LegIo[] = [];
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const match = /^\d+\s+(?:(\d+\.\d+)\s+)?(\w+)\((\d+)(<[^>]*>)?(?:.*=\s+(-?\d+))?/.exec(line);
    if (!match) continue;
    const [, at, call, , description = '', result] = match;
    const socket = ports.get(/socket:\[(\d+)\]/.exec(description)?.[1] ?? '');
    let where = 'other';
    if (call!.startsWith('epoll')) where = 'loop';
    else if (socket?.local === 15008) where = "clients' leg";
    else if (socket?.remote === 15008) where = "endpoints' leg";
    else if (description.includes('eventfd')) where = 'eventfd (thread pool)';
    else if (description.includes('/')) where = 'files';
    const key = `${where} ${call}`;
    counts.set(key, (counts.get(key) ?? 0) + 1);
    if (at !== undefined && Number(result) > 0 && where.endsWith('leg')) io.push({ at: Number(at), where, call: call!.startsWith('read') ? 'read' : 'write' });
  }
  const gaps = (from: string, to: string): number[] => {
    const found: number[] = [];
    let first: number | undefined;
    for (const event of io) {
      if (event.where === from && event.call === 'read') first ??= event.at;
      else if (event.where === to && event.call === 'write' && first !== undefined) {
        found.push((event.at - first) * 1e6);
        first = undefined;
      }
    }
    return found.sort((a, b) => a - b);
  };
  const quantile = (values: number[], q: number): string => (values.length === 0 ? '-' : values[Math.min(values.length - 1, Math.floor(q * values.length))]!.toFixed(0));
  const forwarded = gaps("clients' leg", "endpoints' leg");
  const answered = gaps("endpoints' leg", "clients' leg");
  return [
    'Syscalls per call (strace, the measured rounds):', '', '| where, call | per call |', '|---|---:|', ...[...counts].sort().map(([key, count]) => `| ${key} | ${(count / calls).toFixed(2)} |`),
    '', 'Time in the waypoint from a read to the write it caused (strace timestamps, µs; strace\'s own cost included):', '',
    '| way | pairs | p25 | p50 | p75 |', '|---|---:|---:|---:|---:|',
    `| request: clients' leg read -> endpoints' leg write | ${forwarded.length} | ${quantile(forwarded, 0.25)} | ${quantile(forwarded, 0.5)} | ${quantile(forwarded, 0.75)} |`,
    `| answer: endpoints' leg read -> clients' leg write | ${answered.length} | ${quantile(answered, 0.25)} | ${quantile(answered, 0.5)} | ${quantile(answered, 0.75)} |`,
  ];
}

/** The process's user and system CPU so far, in clock ticks (100 per second): /proc/<pid>/stat's utime and stime. */
function cpuTicksOf(pid: number): { user: number; system: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { user: Number(fields[11]), system: Number(fields[12]) };
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
      env: { NODE_OPTIONS: `${WAYPOINT_NODE_OPTIONS} --import=${PRELOAD}${values.perf !== undefined ? ' --perf-basic-prof' : ''}`, AMBIT_GRPC_INSTR_DIR: dumpDir, ...(values['trace-gc'] ? { AMBIT_GRPC_INSTR_TRACE_GC: '1' } : {}), ...(values['v8-flags'] ? { AMBIT_GRPC_INSTR_V8_FLAGS: values['v8-flags'] } : {}), ...(values['release-gc'] ? { AMBIT_GRPC_INSTR_RELEASE_GC: '1' } : {}), ...(plain ? (values['cpu-profile'] ? { AMBIT_GRPC_INSTR_CPU_PROFILE: '1' } : values.perf !== undefined ? {} : { AMBIT_GRPC_INSTR_HEAP_PROFILE: '1' }) : {}) },
      ...(plain ? {} : { commandPrefix: ['valgrind', '--tool=callgrind', '--separate-threads=yes', '--instr-atstart=no', '--smc-check=all-non-file', `--callgrind-out-file=${dumpDir}/waypoint.%p`] }),
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
    let failedMeasured = 0;
    const load = async (rate: string, seconds: string, measured: boolean): Promise<number> => {
      const command = inPod(client, 'grpc-load.ts', ['--host', VIP, '--port', String(GRPC_PORT), '--rate', rate, '--duration', seconds, '--connections', '4', '--size', '1024', '--warmup', '0']);
      const result = await processes.run<{ count: number; failed: number; p50: number }>('gRPC load', command.command, command.args);
      if (measured) failedMeasured += result.failed;
      log(`${measured ? 'measured' : 'warm-up'} round: ${result.count - result.failed} calls, ${result.failed} failed, p50 ${(result.p50 / 1000).toFixed(1)} ms`);
      return result.count - result.failed;
    };
    for (let round = 0; round < Number(values['warm-rounds']); round++) {
      await load(values['warm-rate'], values['warm-seconds'], false).catch((error: unknown) => (log(`warm-up round ${round} failed: ${String(error).slice(0, 160)}`), 0));
    }
    await new Promise((resolve) => setTimeout(resolve, QUIET_BEFORE_MEASURING_MS));
    if (plain) {
      await new Promise((resolve) => setTimeout(resolve, QUIET_BEFORE_MEASURING_MS));
      const before = await markOf(pid, dumpDir, 0);
      const cpuBefore = cpuTicksOf(pid);
      const tracer = values.syscalls ? startStrace(pid, join(dumpDir, 'strace.txt')) : undefined;
      if (tracer) await new Promise((resolve) => setTimeout(resolve, 2_000));
      const perfFile = values.perf !== undefined ? join(values.perf, 'perf.data') : undefined;
      if (perfFile !== undefined) mkdirSync(values.perf!, { recursive: true });
      const recorder = perfFile !== undefined ? spawn('perf', ['record', '-q', '-e', 'cpu-clock', '-F', '999', '-g', '-o', perfFile, '-p', String(pid)], { stdio: 'ignore' }) : undefined;
      let completed = 0;
      for (let round = 0; round < Number(values.rounds); round++) completed += await load(values.rate, values.seconds, true);
      if (recorder !== undefined) {
        await new Promise<void>((resolve) => {
          recorder.once('exit', () => resolve());
          recorder.kill('SIGINT');
        });
        latestPerfMap(pid);
        const report = execFileSync('perf', ['report', '-i', perfFile!, '--stdio', '--no-children', '-g', 'none', '--sort', 'comm,dso,sym', '--percent-limit', '0.2', '-q'], { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 });
        writeFileSync(join(values.perf!, 'report.txt'), report);
        rows.push('', `perf report (${join(values.perf!, 'report.txt')}), top lines:`, '', ...report.split('\n').slice(0, 40));
      }
      const ports = tracer ? socketPorts(pid) : new Map<string, { local: number; remote: number }>();
      if (tracer) await tracer.stop();
      const cpuAfter = cpuTicksOf(pid);
      const after = await markOf(pid, dumpDir, 1);
      await new Promise((resolve) => setTimeout(resolve, 2_000));
      const perThousand = (ticks: number): string => ((ticks * 10 * 1000) / completed).toFixed(0);
      const cpu = `user ${perThousand(cpuAfter.user - cpuBefore.user)} / system ${perThousand(cpuAfter.system - cpuBefore.system)} ms per 1,000 calls`;
      const gcs = Object.keys(after.gcs).map((kind) => `${kind} ${after.gcs[kind]! - (before.gcs[kind] ?? 0) - (kind === 'minor' ? 1 : 0)}`).join(', ');
      rows.push(`| ${values.main ?? 'this tree'} | ${completed} (${failedMeasured} failed) at ${values.rate}/s | ${((after.allocatedBytes ?? 0) / completed / 1024).toFixed(1)} KiB allocated per call | GCs ${gcs} | ${cpu} (load ${loadavg()[0]!.toFixed(1)}) |`);
      const heapFile = join(dumpDir, 'window.heapprofile');
      if (existsSync(heapFile)) rows.push('', ...heapProfileTop(heapFile, completed, 'call', 25));
      const cpuFile = join(dumpDir, 'window.cpuprofile');
      for (let waited = 0; values['cpu-profile'] && !existsSync(cpuFile) && waited < 10_000; waited += 200) await new Promise((resolve) => setTimeout(resolve, 200));
      if (existsSync(cpuFile)) rows.push('', ...cpuProfileTop(cpuFile, completed, 'call', 40));
      if (tracer) rows.push('', ...syscallsPerCall(join(dumpDir, 'strace.txt'), completed, ports));
      if (values.json) appendFileSync(values.json, `${JSON.stringify({ at: new Date().toISOString(), mode: 'plain', tree: values.main ?? 'this tree', rate: Number(values.rate), calls: completed, failed: failedMeasured, load: loadavg()[0], allocatedBytes: (after.allocatedBytes ?? 0) / completed, gcs })}\n`);
      log(rows.join('\n'));
      if (values['trace-gc']) {
        // The window's collections by kind and reason (V8's --trace-gc lines between the two marks in the log).
        const text = readFileSync(waypoint.logFile, 'utf8');
        const window = text.slice(text.lastIndexOf('grpc-instr mark 0'), text.lastIndexOf('grpc-instr mark 1'));
        const reasons = new Map<string, number>();
        for (const line of window.split('\n')) {
          // "[pid:isolate]  109392 ms: Mark-Compact 22.7 (29.6) -> 17.7 (29.8) MB, ... (average mu = ..., current mu = ...) REASON"
          const match = /ms: (Scavenge|Mark-Compact|Minor Mark-Sweep) .*?\(average mu = [^)]*\) (.*)$/.exec(line);
          if (match === null) continue;
          const key = `${match[1]}: ${match[2]!.replace(/;\s*$/, '').trim()}`;
          reasons.set(key, (reasons.get(key) ?? 0) + 1);
        }
        rows.push('', 'Collections in the window by kind and reason (--trace-gc):', '', ...[...reasons].sort((a, b) => b[1] - a[1]).map(([key, count]) => `- ${count} × ${key}`));
        if (values.keep) {
          mkdirSync(values.keep, { recursive: true });
          copyFileSync(waypoint.logFile, join(values.keep, 'waypoint.log'));
        }
      }
      if (values.keep) {
        mkdirSync(values.keep, { recursive: true });
        for (const file of readdirSync(dumpDir)) copyFileSync(join(dumpDir, file), join(values.keep, file));
      }
      throw new Done();
    }
    // Instrumentation on re-translates every piece of code the waypoint runs: the first seconds after it are slow
    // enough that calls pile up, so a settling round runs instrumented before the counters are zeroed.
    execFileSync('callgrind_control', ['-i', 'on', String(pid)], { stdio: 'ignore' });
    await load(values.rate, SETTLE_SECONDS, false).catch((error: unknown) => log(`settling round failed: ${String(error).slice(0, 160)}`));
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    const before = await markOf(pid, dumpDir, 0);
    const trigger = `measured-${process.pid}`;
    execFileSync('callgrind_control', ['-z', String(pid)], { stdio: 'ignore' });
    let completed = 0;
    for (let round = 0; round < Number(values.rounds); round++) completed += await load(values.rate, values.seconds, true);
    execFileSync('callgrind_control', ['-d', trigger, String(pid)], { stdio: 'ignore' });
    execFileSync('callgrind_control', ['-i', 'off', String(pid)], { stdio: 'ignore' });
    const after = await markOf(pid, dumpDir, 1);
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    const { all, main, mainFile } = callgrindTotals(dumpDir, (name) => name.includes(`.${pid}`), trigger);
    const parts = mainThreadParts(mainFile);
    const perCall = (count: number): string => (count / completed / 1000).toFixed(1);
    const gcs = Object.keys(after.gcs).map((kind) => `${kind} ${after.gcs[kind]! - (before.gcs[kind] ?? 0) - (kind === 'minor' ? 1 : 0)}`).join(', ');
    const allocatedPerCall = (after.allocatedBytes ?? 0) / completed;
    rows.push(`| ${values.main ?? 'this tree'} | ${completed} (${failedMeasured} failed) | ${perCall(main - parts.nativeRelease - parts.gcProfiler)} | ${perCall(parts.gc - parts.gcProfiler)} | ${perCall(parts.nativeRelease)} | ${perCall(all - main)} | ${(allocatedPerCall / 1024).toFixed(1)} | ${gcs} |`);
    log(rows.at(-1)!);
    if (values.json) {
      appendFileSync(values.json, `${JSON.stringify({
        at: new Date().toISOString(), tree: values.main ?? 'this tree', rate: Number(values.rate), calls: completed, failed: failedMeasured, load: loadavg()[0],
        mainWithoutNativeRelease: (main - parts.nativeRelease - parts.gcProfiler) / completed, gc: (parts.gc - parts.gcProfiler) / completed, gcProfiler: parts.gcProfiler / completed, nativeRelease: parts.nativeRelease / completed,
        otherThreads: (all - main) / completed, allocatedBytes: allocatedPerCall, gcs,
      })}\n`);
    }
    if (values.keep) {
      mkdirSync(values.keep, { recursive: true });
      for (const file of readdirSync(dumpDir)) if (file.includes(`.${pid}`)) copyFileSync(join(dumpDir, file), join(values.keep, file));
      log(`dumps copied to ${values.keep} (callgrind_annotate the measured one)`);
    }
  } finally {
    await processes.stopAll();
  }
} catch (error) {
  if (!(error instanceof Done)) throw error;
} finally {
  await mesh?.destroy();
}
process.stdout.write(plain ? `\n${rows.join('\n')}\n` : [
  '',
  `Waypoint per gRPC unary call, ${values.rate}/s over 4 h2c connections, callgrind (thousand instructions); load average ${loadavg()[0]!.toFixed(1)} at the end (does not move the counts)`,
  '',
  '| waypoint | calls measured | main thread without native releases and the GC profiler | of which GC | native releases | other threads | KiB allocated (V8 heap) | GCs in the window (the closing mark\'s minor one left out) |',
  '|---|---:|---:|---:|---:|---:|---:|---|',
  ...rows,
  '',
].join('\n'));
