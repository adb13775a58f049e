/**
 * Instructions per HTTP/1.1 1 KiB request in the waypoint process, counted by callgrind: the waypoint suite's
 * cluster (bench/suites/waypoint.ts's topology: client -> agent -> waypoint -> agent -> server-v1), the waypoint
 * re-executed under `valgrind --tool=callgrind` by a preload (bench/tools/exec-under-callgrind.ts; instrumentation
 * off through start-up and the warm-up rounds, on for the measured ones). Instruction counts do not depend on what
 * else the machine runs, so this is the A/B for the waypoint's CPU per request when the machine is busy; the suite's
 * CPU rows (quiet runs only) stay the figure of record. User space only (the kernel's part is not counted).
 *
 *   node bench/waypoint-instructions.ts [--rate 8] [--connections 16] [--warm-rate 100] [--warm-rounds 8] [--rounds 8]
 *                                       [--seconds 10] [--keep DIR] [--keep-log FILE]
 *   node bench/waypoint-instructions.ts --profile DIR [--rate 1000] [--warm-rate 1000] ...
 *
 * The load is the suite's http-load (1 KiB POSTs answered with 1 KiB, open loop) at a low rate: instrumented, the
 * waypoint runs some 50x slower and falls behind at 20-30/s (a backlog batches requests per loop turn, which lowers
 * the count per request), so the measured rate is one it keeps up with: each request mostly finds the waypoint idle.
 * The warm-up rounds run uninstrumented at a higher rate (the JIT tiers up by invocation counts). Printed:
 * instructions per request of the main thread (the event loop) without the native memory releases that fall in the
 * measured rounds (see mainThreadParts) and the GC's part of it, of the other threads (V8's GC and compiler workers,
 * whose counts swing with when a compile or a marking lands; libuv's thread pool: the access log's file writes), and
 * per thread. The first column is the one to compare. Timers that run
 * per second (the access log's flush, the pools' sweeps, the heap release's checks) are spread over the few requests
 * of a second at this rate: compare trees at the same rate, not these counts with CPU per request at 1,000/s.
 * `--keep DIR` copies callgrind's dump files there (for callgrind_annotate). AMBIT_BENCH_WAYPOINT_EXTRA_NODE_OPTIONS
 * adds flags to the waypoint's NODE_OPTIONS (say `--perf-basic-prof`: V8's perf map in /tmp/perf-PID.map names the JIT
 * code, and its tier, that callgrind shows as `???:0x...`; `--trace-opt` is not allowed in NODE_OPTIONS); `--keep-log FILE` copies
 * the waypoint's log there, with `=== measured window begins ===` / `ends` lines where the window begins and ends.
 *
 * `--profile DIR`: no callgrind; V8's CPU profiler runs in the waypoint for the measured rounds only
 * (bench/tools/profile-on-signal.ts, started and stopped by SIGUSR2) and its profile is written into DIR, with the
 * waypoint's CPU per request over the same window (/proc): a profile of the HTTP/1.1 path alone, without start-up,
 * warm-up or the suite's other paths.
 *
 * Owns: this measurement. Must not know about: how the waypoint works.
 */
import { execFileSync } from 'node:child_process';
import { appendFileSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { createLocalMesh, type LocalMesh } from '../runtime/local-mesh.ts';
import { writeBenchCertificates } from './lib/certs.ts';
import { inPod } from './lib/mesh-cluster.ts';
import { ProcessGroup, RUN_DIR_PREFIX } from './lib/processes.ts';
import type { LatencySummary } from './lib/stats.ts';
import { CpuMeter } from './lib/cpu.ts';
import { callgrindTotals, type CallgrindTotals } from './tools/callgrind-totals.ts';
import { buildTopology, formatMemory, VIPS, waypointMemory, type Topology } from './suites/waypoint.ts';

const { values } = parseArgs({
  options: {
    rate: { type: 'string' },
    'warm-rate': { type: 'string' },
    connections: { type: 'string', default: '16' },
    'warm-rounds': { type: 'string', default: '8' },
    rounds: { type: 'string', default: '8' },
    seconds: { type: 'string', default: '10' },
    profile: { type: 'string' },
    /** Keeps callgrind's dump files there (for callgrind_annotate). */
    keep: { type: 'string' },
    'keep-log': { type: 'string' },
  },
});
const profileDir = values.profile === undefined ? undefined : path.resolve(values.profile);

interface LoadResult extends LatencySummary {
  requestsPerSecond: number;
  failed: number;
}

const runDir = mkdtempSync(path.join(tmpdir(), `${RUN_DIR_PREFIX}${process.pid}-`));
const dumpDir = mkdtempSync(path.join(tmpdir(), 'ambit-waypoint-callgrind-'));
const rate = values.rate ?? (profileDir ? '1000' : '8');
const warmRate = values['warm-rate'] ?? (profileDir ? '1000' : '100');
const preload = path.join(import.meta.dirname, 'tools', profileDir ? 'profile-on-signal.ts' : 'exec-under-callgrind.ts');
// The suite passes these to the waypoint alone (after its own NODE_OPTIONS and environment).
process.env.AMBIT_BENCH_WAYPOINT_NODE_OPTIONS = `--import=${preload} ${process.env.AMBIT_BENCH_WAYPOINT_EXTRA_NODE_OPTIONS ?? ''}`.trim();
process.env.AMBIT_BENCH_WAYPOINT_ENV = profileDir ? `AMBIT_PROFILE_DIR=${profileDir}` : `AMBIT_CALLGRIND_OUT_DIR=${dumpDir}`;
// Under valgrind the waypoint's start-up (TypeScript, xDS, its certificate) takes minutes on a busy machine.
if (!profileDir) process.env.AMBIT_BENCH_WAYPOINT_READY_MS ??= '300000';
if (profileDir) mkdirSync(profileDir, { recursive: true });
const log = (message: string): void => void process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${message}\n`);

/** The measured dump files of the waypoint (`pid`): every thread, and thread 1 (the main thread). */
function measuredInstructions(pid: number, trigger: string): CallgrindTotals {
  return callgrindTotals(dumpDir, (name) => name.startsWith(`callgrind.${pid}`), trigger);
}

/**
 * Inclusive instructions of the main thread's dump in the native memory release (ambit_memory.node: under valgrind the
 * anonymous memory grows with valgrind's own, so releases fall in the measured rounds; each parses /proc/self/maps,
 * millions of instructions that a waypoint at 1,000 requests/s does not run) and in V8's collections on that thread.
 */
function mainThreadParts(file: string): { nativeRelease: number; gc: number } {
  const text = execFileSync('callgrind_annotate', ['--inclusive=yes', '--threshold=100', file], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  const parts = { nativeRelease: 0, gc: 0 };
  for (const line of text.split('\n')) {
    const match = /^\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*)$/.exec(line);
    if (!match) continue;
    const count = Number(match[1]!.replaceAll(',', ''));
    if (/:(drop_executable_pages|trim_malloc) \[.*ambit_memory\.node\]/.test(match[2]!)) parts.nativeRelease += count;
    else if (parts.gc === 0 && match[2]!.startsWith('???:v8::internal::Heap::CollectGarbage(')) parts.gc = count;
  }
  return parts;
}

/** Two of the heap release's 10 s checks and a little more. */
const QUIET_BEFORE_MEASURING_MS = 22_000;

const processes = new ProcessGroup(runDir);
let mesh: LocalMesh | undefined;
/** The waypoint's log file, once the topology exists (for --keep-log). */
let waypointLogFile: string | undefined;
let output: string | undefined;
try {
  const certs = await writeBenchCertificates(runDir);
  let topology: Topology | undefined;
  // A waypoint started under valgrind on a busy machine can miss the runtime's 30 s readiness: the cluster is made again.
  for (let attempt = 1; topology === undefined; attempt++) {
    mesh = await createLocalMesh({ nodes: 2, name: 'bench-wpi', agentEnv: { AMBIT_LOG_LEVEL: 'warn', AMBIT_DRAIN_MS: '500' } });
    try {
      topology = await buildTopology({ quick: true, runDir, processes, certs, log }, mesh);
    } catch (error) {
      if (attempt === 3) throw error;
      log(`set-up failed (${String(error).split('\n')[0]!.slice(0, 160)}); again`);
      await processes.stopAll();
      await mesh.destroy();
      mesh = undefined;
    }
  }
  const pid = topology.waypointPid;
  waypointLogFile = topology.waypoint.logFile;
  log(`waypoint pid ${pid} (${readFileSync(`/proc/${pid}/comm`, 'utf8').trim()})`);
  // Requests that failed in the measured rounds (a stall on the busy machine): counted here, not in the requests.
  let failedMeasured = 0;
  const load = async (rounds: number, warmup: boolean): Promise<number> => {
    let completed = 0;
    for (let round = 0; round < rounds; round++) {
      const command = inPod(topology.client, 'http-load.ts', ['--host', VIPS.via, '--port', '80', '--rate', warmup ? warmRate : rate, '--duration', values.seconds, '--connections', values.connections, '--size', '1024', '--warmup', warmup ? '200' : '0']);
      try {
        const result = await processes.run<LoadResult>('load', command.command, command.args);
        completed += result.count;
        log(`${warmup ? 'warm-up' : 'measured'} round ${round + 1}: ${result.count} answered, ${result.failed} failed, ${result.requestsPerSecond.toFixed(1)}/s, p50 ${(result.p50 / 1000).toFixed(1)} ms`);
        if (!warmup) failedMeasured += result.failed;
      } catch (error) {
        if (!warmup) throw error;
        log(`warm-up round ${round + 1} failed: ${String(error).slice(0, 160)}`);
      }
    }
    return completed;
  };
  await load(Number(values['warm-rounds']), true);
  if (profileDir) {
    process.kill(pid, 'SIGUSR2');
    const meter = new CpuMeter({ waypoint: pid }).start();
    const completed = await load(Number(values.rounds), false);
    const used = meter.stop().waypoint!;
    process.kill(pid, 'SIGUSR2');
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    output = `\nWaypoint CPU per HTTP/1.1 request over the profiled window: ${((used * 1e6) / completed).toFixed(0)} µs (${completed} requests at ${rate}/s); load average ${loadavg()[0]!.toFixed(1)}; profile in ${profileDir}\n`;
  } else {
    const gcCounts = async (): Promise<Record<string, number>> => {
      process.kill(pid, 'SIGUSR2');
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      return JSON.parse(readFileSync(path.join(dumpDir, `gc-${pid}.json`), 'utf8')) as Record<string, number>;
    };
    // Quiet for two of the heap release's checks first (shared/memory/heap-release.ts): the warm-up's growth is given
    // back now rather than in the measured rounds (a native release parses /proc/self/maps: millions of instructions).
    await new Promise((resolve) => setTimeout(resolve, QUIET_BEFORE_MEASURING_MS));
    const memoryBefore = await waypointMemory(topology.waypoint, pid);
    const gcBefore = await gcCounts();
    execFileSync('callgrind_control', ['-i', 'on', String(pid)], { stdio: 'ignore' });
    execFileSync('callgrind_control', ['-z', String(pid)], { stdio: 'ignore' });
    if (values['keep-log'] !== undefined) appendFileSync(topology.waypoint.logFile, '\n=== measured window begins ===\n');
    const completed = await load(Number(values.rounds), false);
    const trigger = `measured-${process.pid}`;
    execFileSync('callgrind_control', ['-d', trigger, String(pid)], { stdio: 'ignore' });
    if (values['keep-log'] !== undefined) appendFileSync(topology.waypoint.logFile, '\n=== measured window ends ===\n');
    execFileSync('callgrind_control', ['-i', 'off', String(pid)], { stdio: 'ignore' });
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    const gcAfter = await gcCounts();
    const memoryAfter = await waypointMemory(topology.waypoint, pid);
    const gcs = Object.keys(gcAfter).map((kind) => `${kind} ${gcAfter[kind]! - (gcBefore[kind] ?? 0)}`).join(', ');
    const counted = measuredInstructions(pid, trigger);
    const perRequest = (count: number): string => (count / completed / 1000).toFixed(1);
    const parts = mainThreadParts(counted.mainFile);
    output = [
      '',
      `Waypoint instructions per HTTP/1.1 1 KiB request (thousands), callgrind, ${rate}/s over ${values.connections} connections, ${completed} requests measured (${failedMeasured} failed); load average ${loadavg()[0]!.toFixed(1)} at the end (does not move the counts)`,
      '',
      '| main thread without native releases | of which GC | native releases (main thread) | other threads | all |',
      '|---:|---:|---:|---:|---:|',
      `| ${perRequest(counted.main - parts.nativeRelease)} | ${perRequest(parts.gc)} | ${perRequest(parts.nativeRelease)} | ${perRequest(counted.all - counted.main)} | ${perRequest(counted.all)} |`,
      '',
      `Per thread: ${counted.threads.map((count, thread) => `${thread}: ${perRequest(count)}`).filter(Boolean).join(', ')}`,
      `GCs in the measured rounds: ${gcs}`,
      `Memory before: ${formatMemory(memoryBefore)}`,
      `Memory after: ${formatMemory(memoryAfter)}`,
      '',
    ].join('\n');
  }
} finally {
  await processes.stopAll();
  if (values['keep-log'] !== undefined && waypointLogFile !== undefined && existsSync(waypointLogFile)) copyFileSync(waypointLogFile, values['keep-log']);
  await mesh?.destroy();
  rmSync(runDir, { recursive: true, force: true });
  if (values.keep !== undefined) {
    mkdirSync(values.keep, { recursive: true });
    for (const file of readdirSync(dumpDir)) copyFileSync(path.join(dumpDir, file), path.join(values.keep, file));
  }
  rmSync(dumpDir, { recursive: true, force: true });
}
process.stdout.write(output ?? '');
