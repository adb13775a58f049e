/**
 * What one new connection costs each agent, counted rather than timed (issue 14, the storm step): the mesh suite's
 * two-node topology (bench/lib/mesh-cluster.ts), new connections one at a time from the mesh client pod to the
 * mesh server pod's echo target (`load.ts connect`: connect, `E` + one byte, first echo, close), and per connection
 * and per agent (node 1 = client side, node 2 = server side):
 *   - bytes the agent's V8 heap allocated (the sum of `allocated=` over the GCs `--trace-gc-nvp` logs in the window),
 *     scavenges and mark-compacts: what the garbage collector is given to do, whatever else runs on the machine;
 *   - CPU (user + system from /proc, ms): load-dependent, reported beside the counts;
 *   - syscalls by name (`strace -c -f` attached for a second window of the same size; strace slows the agent, so
 *     this window's CPU is not used).
 * A/B: run it from each tree in turn (`node bench/connection-counts.ts --count 2000`); the counts of one tree move
 * little between runs, unlike its CPU on a shared machine.
 *
 * Owns: nothing the suites use; a measuring tool. Must not know about: the agent's code.
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CpuMeter } from './lib/cpu.ts';
import { APP_PORT, buildMeshTopology, inPod, startTarget } from './lib/mesh-cluster.ts';
import { ProcessGroup } from './lib/processes.ts';
import { callgrindTotals } from './tools/callgrind-totals.ts';

const args = process.argv.slice(2);
const option = (name: string, fallback: number): number => {
  const index = args.indexOf(`--${name}`);
  return index >= 0 ? Number(args[index + 1]) : fallback;
};
const count = option('count', 2000);
const warmup = option('warmup', 1000);
const withStrace = !args.includes('--no-strace');
/** `--heap-sample DIR`: V8's sampling heap profile of each agent over the counted window (collected objects kept). */
const heapSampleIndex = args.indexOf('--heap-sample');
const heapSampleDir = heapSampleIndex >= 0 ? args[heapSampleIndex + 1] : undefined;
/** `--cpu-profile DIR`: V8's CPU profile of each agent over the counted window (not with --heap-sample: one signal). */
const cpuProfileIndex = args.indexOf('--cpu-profile');
const cpuProfileDir = cpuProfileIndex >= 0 ? args[cpuProfileIndex + 1] : undefined;
/**
 * `--deferrals DIR`: bench/tools/deferral-counts.ts preloaded into each agent (its files under DIR/<pid>/), and per
 * connection the asynchronous resources each agent made over the counted window, by type (TickObject: a
 * process.nextTick; Immediate: a setImmediate; Timeout; PROMISE; native requests). async_hooks slow the agents: take
 * no CPU figure from such a run.
 */
const deferralsIndex = args.indexOf('--deferrals');
const deferralsDir = deferralsIndex >= 0 ? args[deferralsIndex + 1] : undefined;
if ([heapSampleDir, cpuProfileDir, deferralsDir].filter((dir) => dir !== undefined).length > 1) throw new Error('--heap-sample, --cpu-profile and --deferrals share the agents\' SIGUSR2: one at a time');
/**
 * `--storm RATE`: the counted windows offer RATE new connections per second for `--storm-seconds` (default 2) with
 * the suite's open-loop driver (bench/tools/mesh-connect.ts) instead of one at a time, and the figures are per
 * answered connection: the storm step's own batching (many connections per loop turn), not the closed loop's.
 */
const stormRate = option('storm', 0);
/**
 * `--callgrind DIR`: both agents run under `valgrind --tool=callgrind` (instrumentation off through start-up and the
 * warm-up, on for the counted window only), and the figure is user-space instructions per connection per agent, all
 * threads and the main thread (the event loop) apart: load-independent, unlike the CPU column. No strace window.
 */
const callgrindIndex = args.indexOf('--callgrind');
const callgrindDir = callgrindIndex >= 0 ? args[callgrindIndex + 1] : undefined;

const stormSeconds = option('storm-seconds', 2);

/**
 * Which agent saturates first in a storm: over the counted window each agent's main thread (its event loop: one core
 * at most) and the whole machine are sampled every BUSY_SAMPLE_MS from /proc. Per agent: the main thread's mean and
 * 90th-percentile share of one core, and the share of samples at or above BUSY_SATURATED (the loop had no idle time);
 * the machine's busy share of its cores. Load-dependent like the CPU column, but it says where the queue forms.
 */
const BUSY_SAMPLE_MS = 100;
const BUSY_SATURATED = 0.9;
const CLOCK_TICKS = 100;

function threadTicks(pid: number, tid: number): number {
  const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]);
}

function machineTicks(): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!;
  const values = line.trim().split(/\s+/).slice(1).map(Number);
  const total = values.reduce((sum, value) => sum + value, 0);
  // idle + iowait
  return { busy: total - values[3]! - (values[4] ?? 0), total };
}

class BusySampler {
  readonly #pids: Record<string, number>;
  readonly #samples: Record<string, number[]> = {};
  readonly #machine: number[] = [];
  #timer: NodeJS.Timeout | undefined;

  constructor(pids: Record<string, number>) {
    this.#pids = pids;
  }

  start(): this {
    let last = Object.fromEntries(Object.entries(this.#pids).map(([side, pid]) => [side, threadTicks(pid, pid)]));
    let lastMachine = machineTicks();
    let lastAt = performance.now();
    this.#timer = setInterval(() => {
      const now = performance.now();
      const seconds = (now - lastAt) / 1000;
      lastAt = now;
      const next: Record<string, number> = {};
      for (const [side, pid] of Object.entries(this.#pids)) {
        next[side] = threadTicks(pid, pid);
        (this.#samples[side] ??= []).push((next[side] - last[side]!) / CLOCK_TICKS / seconds);
      }
      last = next;
      const machine = machineTicks();
      this.#machine.push((machine.busy - lastMachine.busy) / Math.max(1, machine.total - lastMachine.total));
      lastMachine = machine;
    }, BUSY_SAMPLE_MS);
    return this;
  }

  stop(): Record<string, unknown> {
    clearInterval(this.#timer);
    const sorted = (values: number[]): number[] => [...values].sort((a, b) => a - b);
    const result: Record<string, unknown> = {};
    for (const [side, values] of Object.entries(this.#samples)) {
      const ordered = sorted(values);
      result[side] = {
        mainThreadMeanOfOneCore: +(values.reduce((sum, value) => sum + value, 0) / Math.max(1, values.length)).toFixed(2),
        mainThreadP90OfOneCore: +(ordered[Math.floor(ordered.length * 0.9)] ?? 0).toFixed(2),
        saturatedShare: +(values.filter((value) => value >= BUSY_SATURATED).length / Math.max(1, values.length)).toFixed(2),
      };
    }
    result.machineBusyShare = +(this.#machine.reduce((sum, value) => sum + value, 0) / Math.max(1, this.#machine.length)).toFixed(2);
    result.samples = this.#machine.length;
    return result;
  }
}

interface GcWindow {
  allocated: number;
  scavenges: number;
  markCompacts: number;
}

/** The GC lines `--trace-gc-nvp` wrote to an agent's log after byte `from`. */
function gcSince(logFile: string, from: number): GcWindow {
  const text = readFileSync(logFile).subarray(from).toString('latin1');
  const window: GcWindow = { allocated: 0, scavenges: 0, markCompacts: 0 };
  for (const line of text.split('\n')) {
    const kind = /\bgc=(\w+)/.exec(line)?.[1];
    if (kind === undefined) continue;
    const allocated = Number(/\ballocated=(\d+)/.exec(line)?.[1] ?? 0);
    // V8 prints a wrapped-around size_t when its counter went backwards (seen on a mark-compact): not a figure.
    if (allocated < 2 ** 40) window.allocated += allocated;
    if (kind === 's') window.scavenges++;
    else if (kind === 'ms' || kind === 'mc') window.markCompacts++;
  }
  return window;
}

/** The asynchronous resources an agent made between its first two marks (deferral-counts.ts), per connection. */
function deferralsPer(dir: string, pid: number, connections: number): Record<string, number> {
  const read = (mark: number): Record<string, number> => JSON.parse(readFileSync(join(dir, String(pid), `deferrals-${mark}.json`), 'utf8')) as Record<string, number>;
  const before = read(0);
  const after = read(1);
  const perConnection: Record<string, number> = {};
  for (const [type, count] of Object.entries(after)) {
    const made = (count - (before[type] ?? 0)) / connections;
    if (made >= 0.01) perConnection[type] = +made.toFixed(2);
  }
  return perConnection;
}

async function strace(pids: number[], run: () => Promise<void>): Promise<Map<number, Map<string, number>>> {
  const outputs = pids.map((pid) => `/tmp/connection-counts-strace-${pid}.txt`);
  const tracers = pids.map((pid, index) => spawn('strace', ['-c', '-f', '-q', '-o', outputs[index]!, '-p', String(pid)], { stdio: 'ignore' }));
  await new Promise((resolve) => setTimeout(resolve, 1000));
  await run();
  await Promise.all(tracers.map((tracer) => new Promise((resolve) => { tracer.once('exit', resolve); tracer.kill('SIGINT'); })));
  const result = new Map<number, Map<string, number>>();
  pids.forEach((pid, index) => {
    const calls = new Map<string, number>();
    for (const line of readFileSync(outputs[index]!, 'utf8').split('\n')) {
      const fields = line.trim().split(/\s+/);
      // % time, seconds, usecs/call, calls, [errors], syscall
      if (fields.length < 5 || !/^\d/.test(fields[0]!)) continue;
      calls.set(fields[fields.length - 1]!, Number(fields[3]));
    }
    result.set(pid, calls);
  });
  return result;
}

const processes = new ProcessGroup(mkdtempSync(join(tmpdir(), 'ambit-connection-counts-')));
const log = (message: string): void => console.error(`[${new Date().toISOString().slice(11, 19)}] ${message}`);
// V8's GC trace is refused in NODE_OPTIONS: a wrapper puts it on the agents' node command line.
const wrapper = join(mkdtempSync(join(tmpdir(), 'ambit-connection-counts-node-')), 'node-trace-gc');
const heapSampler = heapSampleDir === undefined ? '' : ` --import ${join(import.meta.dirname, 'tools', 'heap-sample-on-signal.ts')}`;
const heapSamplerEnv = heapSampleDir === undefined ? '' : `AMBIT_HEAP_SAMPLE_DIR=${heapSampleDir} `;
const profiler = cpuProfileDir === undefined ? '' : ` --import ${join(import.meta.dirname, 'tools', 'profile-on-signal.ts')}`;
const profilerEnv = cpuProfileDir === undefined ? '' : `AMBIT_PROFILE_DIR=${cpuProfileDir} `;
const deferrals = deferralsDir === undefined ? '' : ` --import ${join(import.meta.dirname, 'tools', 'deferral-counts.ts')}`;
// The wrapper's shell is the agent's process (exec): $$ is the agent's pid, so each agent counts into its own folder.
const deferralsEnv = deferralsDir === undefined ? '' : `AMBIT_DEFERRALS_DIR=${deferralsDir}/$$ `;
const deferralsMkdir = deferralsDir === undefined ? '' : `mkdir -p ${deferralsDir}/$$; `;
const valgrind = callgrindDir === undefined ? '' : `valgrind --tool=callgrind --separate-threads=yes --instr-atstart=no --smc-check=all-non-file --callgrind-out-file=${callgrindDir}/callgrind.%p `;
writeFileSync(wrapper, `#!/bin/sh\nnode="$1"; shift; ${deferralsMkdir}${heapSamplerEnv}${profilerEnv}${deferralsEnv}exec ${valgrind}"$node" --trace-gc-nvp${heapSampler}${profiler}${deferrals} "$@"\n`, { mode: 0o755 });
const topology = await buildMeshTopology({ logLevel: 'warn', log, agentCommandPrefix: [wrapper], ...(callgrindDir === undefined ? {} : { agentReadyTimeoutMs: 300_000 }) });
try {
  await startTarget(processes, topology.meshServer);
  const closedLoop = async (n: number): Promise<number> => {
    const command = inPod(topology.meshClient, 'load.ts', ['connect', '--count', String(n), '--warmup', '0', '--host', topology.meshServer.ip, '--port', String(APP_PORT)]);
    await processes.run('connections', command.command, command.args);
    return n;
  };
  /** Every storm window's outcome, in order (warm-up, counted, strace). */
  const storms: Array<{ answered: number; answeredPerSecond: number; failed: number; unanswered: number }> = [];
  /** One storm window; resolves with the connections answered. */
  const storm = async (): Promise<number> => {
    const command = inPod(topology.meshClient, 'mesh-connect.ts', ['--rate', String(stormRate), '--duration', String(stormSeconds), '--grace-ms', '1500', '--host', topology.meshServer.ip, '--port', String(APP_PORT)]);
    const result = await processes.run<{ completed: number; achievedRate: number; unanswered: number; failed: number }>('storm', command.command, command.args);
    storms.push({ answered: result.completed, answeredPerSecond: Math.round(result.achievedRate), failed: result.failed, unanswered: result.unanswered });
    log(`storm at ${stormRate}/s: ${result.completed} answered (${Math.round(result.achievedRate)}/s), ${result.unanswered} unanswered`);
    return result.completed;
  };
  const connect = stormRate > 0 ? (): Promise<number> => storm() : closedLoop;
  log(`warm-up: ${warmup} connections`);
  await closedLoop(warmup);
  if (stormRate > 0) await storm();
  const pids = { client: topology.agentPids.node1, server: topology.agentPids.node2 };
  const logs = { client: topology.mesh.cluster.node(0).agentLogFile, server: topology.mesh.cluster.node(1).agentLogFile };
  const offsets = { client: statSync(logs.client).size, server: statSync(logs.server).size };
  const signalAgents = (): void => {
    if (heapSampleDir !== undefined || cpuProfileDir !== undefined || deferralsDir !== undefined) for (const pid of [pids.client, pids.server]) process.kill(pid, 'SIGUSR2');
  };
  signalAgents();
  if (callgrindDir !== undefined) {
    // Turning instrumentation on discards valgrind's translations: the agents stall for seconds while everything is
    // translated again (long enough for a keepalive PING or a connect timer to give up). A second warm-up, allowed to
    // fail, then the counters zeroed.
    for (const pid of [pids.client, pids.server]) execFileSync('callgrind_control', ['-i', 'on', String(pid)], { stdio: 'ignore' });
    for (let round = 0; round < 3; round++) await closedLoop(200).catch((error: unknown) => log(`instrumented warm-up round failed: ${String(error).slice(0, 160)}`));
    for (const pid of [pids.client, pids.server]) execFileSync('callgrind_control', ['-z', String(pid)], { stdio: 'ignore' });
  }
  const loadBefore = readFileSync('/proc/loadavg', 'utf8').trim();
  const cpu = new CpuMeter(pids).start();
  const systemCpu = new CpuMeter(pids, 'system').start();
  const busy = new BusySampler(pids).start();
  log(stormRate > 0 ? `counted: a storm at ${stormRate}/s for ${stormSeconds} s` : `counted: ${count} connections`);
  const counted = await connect(count);
  // The storm's backlog is the window's too: wait for the agents to go quiet (or 5 s) before reading the CPU.
  if (stormRate > 0) await new Promise((resolve) => setTimeout(resolve, 1500));
  const used = cpu.stop();
  const usedSystem = systemCpu.stop();
  const busyFigures = busy.stop();
  signalAgents();
  // The agents write their counts from the signal's handler, on their loops: give them a moment.
  if (deferralsDir !== undefined) await new Promise((resolve) => setTimeout(resolve, 1000));
  const instructions: Record<string, { all: number; main: number }> = {};
  if (callgrindDir !== undefined) {
    const trigger = `counted-${Date.now()}`;
    for (const pid of [pids.client, pids.server]) execFileSync('callgrind_control', ['-d', trigger, String(pid)], { stdio: 'ignore' });
    for (const pid of [pids.client, pids.server]) execFileSync('callgrind_control', ['-i', 'off', String(pid)], { stdio: 'ignore' });
    await new Promise((resolve) => setTimeout(resolve, 3000));
    instructions.client = callgrindTotals(callgrindDir, (name) => name.startsWith(`callgrind.${pids.client}`), trigger);
    instructions.server = callgrindTotals(callgrindDir, (name) => name.startsWith(`callgrind.${pids.server}`), trigger);
  }
  const report: Record<string, unknown> = { count: counted, ...(stormRate > 0 ? { stormRate, stormSeconds } : {}), loadBefore, load: readFileSync('/proc/loadavg', 'utf8').trim(), busy: busyFigures, ...(stormRate > 0 ? { counted: storms.at(-1) } : {}) };
  for (const side of ['client', 'server'] as const) {
    const gc = gcSince(logs[side], offsets[side]);
    report[side] = {
      allocatedKiBPerConnection: +(gc.allocated / 1024 / counted).toFixed(2),
      scavengesPer1000: +((gc.scavenges * 1000) / counted).toFixed(2),
      markCompactsPer1000: +((gc.markCompacts * 1000) / counted).toFixed(2),
      cpuMsPer1000: +((used[side]! * 1e6) / counted).toFixed(1),
      systemCpuMsPer1000: +((usedSystem[side]! * 1e6) / counted).toFixed(1),
      ...(deferralsDir === undefined ? {} : { deferralsPerConnection: deferralsPer(deferralsDir, pids[side]!, counted) }),
      ...(instructions[side] ? { kiloInstructionsPerConnection: +(instructions[side].all / counted / 1000).toFixed(1), mainThreadKiloInstructionsPerConnection: +(instructions[side].main / counted / 1000).toFixed(1) } : {}),
    };
  }
  if (withStrace && callgrindDir === undefined) {
    log(`strace: ${stormRate > 0 ? 'a storm' : `${count} connections`}`);
    let traced = count;
    const calls = await strace([pids.client, pids.server], async () => { traced = await connect(count); });
    for (const side of ['client', 'server'] as const) {
      const perConnection: Record<string, number> = {};
      let total = 0;
      for (const [name, n] of calls.get(pids[side]) ?? []) {
        if (name === 'total') continue;
        total += n;
        if (n / traced >= 0.05) perConnection[name] = +(n / traced).toFixed(2);
      }
      (report[side] as Record<string, unknown>).syscallsPerConnection = +(total / traced).toFixed(2);
      (report[side] as Record<string, unknown>).syscalls = perConnection;
    }
  }
  console.log(JSON.stringify(report, null, 1));
} finally {
  await processes.stopAll();
  await topology.destroy();
}
