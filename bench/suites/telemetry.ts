/**
 * Suite "telemetry" (issue 5): what per-connection telemetry costs on the captured path. Two 2-node local meshes
 * (bench/lib/mesh-cluster.ts) live side by side for the whole run, identical but for the agents' environment:
 *
 *   on   agents at log level info (one access-log line per connection) with metrics: the product's default
 *   off  the same, with AMBIT_TELEMETRY=off (no per-connection metrics, no access-log line)
 *
 * In each: load (mesh-client pod, node 1) ─[captured]─> agent node 1 ══HBONE══> agent node 2 ─> target (mesh-server pod).
 * Measures, in rounds that interleave the two (on, off, on, off, ...) so drift in the machine's load hits both
 * alike: 1-stream throughput; 1 KiB requests at a fixed rate (open loop); new connections one at a time (where the
 * access log writes a line each); CPU of both agents per 1,000 requests and per 1,000 connections.
 * Must not know about: how the agent works inside.
 */
import { CpuMeter, type CpuByRole } from '../lib/cpu.ts';
import { APP_PORT, buildMeshTopology, inPod, startTarget, type MeshTopology } from '../lib/mesh-cluster.ts';
import { formatNumber, formatRatio, goalMark } from '../lib/report.ts';
import { median, type LatencySummary } from '../lib/stats.ts';
import type { Goal, Suite, SuiteContext, SuiteResult } from '../lib/suite.ts';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { REFERENCE_PLUGINS_DIR } from '../../runtime/index.ts';

const MIB = 1024 ** 2;
/** Both meshes at info: in "on" that is the access log; in "off" the switch alone removes it. */
const AGENT_LOG_LEVEL = 'info';
/** Issue 5: telemetry on and off at most 5% apart. */
const APART = 0.05;

export interface Sizes {
  rounds: number;
  throughputBytes: number;
  warmupBytes: number;
  requestRate: number;
  requestSeconds: number;
  requestConnections: number;
  requestBytes: number;
  sequentialConnects: number;
  warmupSeconds: number;
}

const FULL: Sizes = {
  rounds: 3,
  throughputBytes: 256 * MIB,
  warmupBytes: 32 * MIB,
  requestRate: 1_000,
  requestSeconds: 5,
  requestConnections: 10,
  requestBytes: 1024,
  sequentialConnects: 300,
  warmupSeconds: 1,
};

const QUICK: Sizes = {
  rounds: 2,
  throughputBytes: 32 * MIB,
  warmupBytes: 4 * MIB,
  requestRate: 1_000,
  requestSeconds: 1,
  requestConnections: 10,
  requestBytes: 1024,
  sequentialConnects: 100,
  warmupSeconds: 0,
};

export type Variant = 'on' | 'off';
const VARIANTS: Variant[] = ['on', 'off'];
const LABELS: Record<Variant, string> = { on: 'telemetry on', off: 'telemetry off' };

interface RequestRun extends LatencySummary {
  offeredRate: number;
  achievedRate: number;
  completed: number;
  errors: number;
  cpu: CpuByRole;
}
interface SequentialRun extends LatencySummary {
  connectionsPerSecond: number;
  operations: number;
  cpu: CpuByRole;
}
export interface VariantFigures {
  throughput: number[];
  requests: RequestRun[];
  sequential: SequentialRun[];
  errors: string[];
}

export const telemetrySuite: Suite = {
  name: 'telemetry',
  summary: 'captured path with the agents\' telemetry on (access log at info, metrics) vs AMBIT_TELEMETRY=off, interleaved (issue 5)',
  run,
};

async function run(outer: SuiteContext): Promise<SuiteResult> {
  const began = Date.now();
  const context: SuiteContext = { ...outer, log: (message) => outer.log(`[${((Date.now() - began) / 1000).toFixed(0).padStart(3)} s] ${message}`) };
  const sizes = context.quick ? QUICK : FULL;
  if (process.getuid?.() !== 0 || !existsSync(join(REFERENCE_PLUGINS_DIR, 'bridge'))) {
    throw new Error(`the telemetry suite builds network namespaces with the reference CNI plugins: it needs root and ${REFERENCE_PLUGINS_DIR}/bridge (Debian's containernetworking-plugins)`);
  }
  const figures: Record<Variant, VariantFigures> = { on: emptyFigures(), off: emptyFigures() };
  const topologies: Partial<Record<Variant, MeshTopology>> = {};
  try {
    // One after the other: two cluster builds at once only compete for the same two cores and iptables lock.
    for (const variant of VARIANTS) {
      context.log(`building the ${LABELS[variant]} mesh (agents at ${AGENT_LOG_LEVEL}${variant === 'off' ? ', AMBIT_TELEMETRY=off' : ''})`);
      const topology = await buildMeshTopology({
        logLevel: AGENT_LOG_LEVEL,
        log: context.log,
        ...(variant === 'off' ? { agentEnv: { AMBIT_TELEMETRY: 'off' } } : {}),
      });
      topologies[variant] = topology;
      await startTarget(context.processes, topology.meshServer);
    }
    context.log('both meshes and their targets up');
    await measure(context, sizes, topologies as Record<Variant, MeshTopology>, figures);
  } finally {
    await context.processes.stopAll();
    await Promise.all(VARIANTS.map((variant) => topologies[variant]?.destroy()));
  }
  return buildResult(sizes, figures);
}

async function measure(context: SuiteContext, sizes: Sizes, topologies: Record<Variant, MeshTopology>, figures: Record<Variant, VariantFigures>): Promise<void> {
  const load = <T>(what: string, variant: Variant, tool: string, args: string[]): Promise<T> => {
    const topology = topologies[variant];
    const command = inPod(topology.meshClient, tool, [...args, '--host', topology.meshServer.ip, '--port', String(APP_PORT)]);
    return context.processes.run<T>(`${what} with ${LABELS[variant]}`, command.command, command.args);
  };
  const meter = (variant: Variant): CpuMeter =>
    new CpuMeter({ client: topologies[variant].agentPids.node1, server: topologies[variant].agentPids.node2 }).start();
  const attempt = async (variant: Variant, what: string, body: () => Promise<void>): Promise<void> => {
    try {
      await body();
    } catch (error) {
      const message = `${what} with ${LABELS[variant]} failed: ${firstLine(error)}`;
      figures[variant].errors.push(message);
      context.log(message);
    }
  };
  const throughput = async (variant: Variant, bytes: number): Promise<number> =>
    (await load<{ megabytesPerSecond: number }>('throughput', variant, 'load.ts', ['throughput', '--bytes', String(bytes), '--streams', '1'])).megabytesPerSecond;
  const requests = async (variant: Variant, seconds: number): Promise<RequestRun> => {
    const cpu = meter(variant);
    const result = await load<Omit<RequestRun, 'cpu'>>('requests', variant, 'load.ts', [
      'rate-rtt', '--rate', String(sizes.requestRate), '--duration', String(seconds),
      '--connections', String(sizes.requestConnections), '--size', String(sizes.requestBytes),
    ]);
    return { ...result, cpu: cpu.stop() };
  };
  const sequential = async (variant: Variant, count: number): Promise<SequentialRun> => {
    const warmup = Math.round(count / 10);
    const cpu = meter(variant);
    const result = await load<LatencySummary & { connectionsPerSecond: number }>('sequential connections', variant, 'load.ts', [
      'connect', '--count', String(count), '--warmup', String(warmup),
    ]);
    return { ...result, operations: count + warmup, cpu: cpu.stop() };
  };

  // Warm-up of each mesh: JIT in the agents, the HBONE pool's connection and workload certificates, TCP buffers.
  // (Each new-connection run has its own warm-up connections; --quick skips the request warm-up to save a tool start.)
  for (const variant of VARIANTS) {
    await attempt(variant, 'warm-up', async () => {
      await throughput(variant, sizes.warmupBytes);
      if (sizes.warmupSeconds > 0) await requests(variant, sizes.warmupSeconds);
    });
  }
  for (let round = 1; round <= sizes.rounds; round++) {
    for (const variant of VARIANTS) {
      const tag = `round ${round}/${sizes.rounds}, ${LABELS[variant]}`;
      await attempt(variant, 'throughput', async () => {
        const value = await throughput(variant, sizes.throughputBytes);
        figures[variant].throughput.push(value);
        context.log(`${tag}: 1 stream ${sizes.throughputBytes / MIB} MiB ${formatNumber(value)} MB/s`);
      });
      await attempt(variant, '1 KiB requests', async () => {
        const result = await requests(variant, sizes.requestSeconds);
        figures[variant].requests.push(result);
        context.log(`${tag}: 1 KiB requests at ${sizes.requestRate}/s for ${sizes.requestSeconds} s p50 ${formatNumber(result.p50)} µs, p99 ${formatNumber(result.p99)} µs, ${result.completed} done`);
      });
      await attempt(variant, 'new connections one at a time', async () => {
        const result = await sequential(variant, sizes.sequentialConnects);
        figures[variant].sequential.push(result);
        context.log(`${tag}: ${sizes.sequentialConnects} new connections one at a time ${formatNumber(result.connectionsPerSecond)}/s, p50 ${formatNumber(result.p50)} µs`);
      });
    }
  }
}

function emptyFigures(): VariantFigures {
  return { throughput: [], requests: [], sequential: [], errors: [] };
}

function firstLine(error: unknown): string {
  return ((error as Error).message ?? String(error)).split('\n')[0]!;
}

function ratio(numerator: number | undefined, denominator: number | undefined): number | undefined {
  return numerator === undefined || denominator === undefined || denominator === 0 ? undefined : numerator / denominator;
}

function medianOf(values: readonly number[]): number | undefined {
  return values.length === 0 ? undefined : median(values);
}

/** Both agents' CPU milliseconds per 1,000 operations, summed over every round, divided by two: one agent's mean. */
function cpuPerThousandPerAgent<T extends { cpu: CpuByRole }>(runs: readonly T[], operations: (run: T) => number): number | undefined {
  if (runs.length === 0) return undefined;
  const cpu = runs.reduce((sum, r) => sum + (r.cpu.client ?? 0) + (r.cpu.server ?? 0), 0);
  const count = runs.reduce((sum, r) => sum + operations(r), 0);
  return count === 0 ? undefined : (cpu * 1e3 * 1000) / count / 2;
}

/** Exported so a run's table can be rendered again from its JSON (`data.sizes`, `data.figures`). */
export function buildResult(sizes: Sizes, figures: Record<Variant, VariantFigures>): SuiteResult {
  type Values = Record<Variant, number | undefined>;
  const pick = (select: (f: VariantFigures) => number | undefined): Values => ({ on: select(figures.on), off: select(figures.off) });

  const throughput = pick((f) => medianOf(f.throughput));
  const p50 = pick((f) => medianOf(f.requests.map((r) => r.p50)));
  const p99 = pick((f) => medianOf(f.requests.map((r) => r.p99)));
  const achieved = pick((f) => medianOf(f.requests.map((r) => r.achievedRate)));
  const requestErrors = pick((f) => (f.requests.length === 0 ? undefined : f.requests.reduce((sum, r) => sum + r.errors, 0)));
  const requestCpu = pick((f) => cpuPerThousandPerAgent(f.requests, (r) => r.completed));
  const sequentialRate = pick((f) => medianOf(f.sequential.map((r) => r.connectionsPerSecond)));
  const sequentialP50 = pick((f) => medianOf(f.sequential.map((r) => r.p50)));
  const sequentialCpu = pick((f) => cpuPerThousandPerAgent(f.sequential, (r) => r.operations));

  const within = (v: number): boolean => Math.abs(v - 1) <= APART + 1e-9;
  const target = `${formatNumber(1 - APART)}x to ${formatNumber(1 + APART)}x`;
  const goals: Goal[] = [
    { name: 'throughput, 1 stream: telemetry on ÷ off', value: ratio(throughput.on, throughput.off), target, met: undefined },
    { name: `1 KiB request at ${sizes.requestRate.toLocaleString('en-US')}/s, p50: telemetry on ÷ off`, value: ratio(p50.on, p50.off), target, met: undefined },
  ];
  for (const g of goals) g.met = g.value === undefined ? undefined : within(g.value);
  const [goalThroughput, goalP50] = goals as [Goal, Goal];

  const rate = sizes.requestRate.toLocaleString('en-US');
  const rows: { label: string; values: Values; goal?: Goal; count?: boolean }[] = [
    { label: `throughput, 1 stream × ${sizes.throughputBytes / MIB} MiB, median of ${sizes.rounds} (MB/s)`, values: throughput, goal: goalThroughput },
    { label: `1 KiB requests at ${rate}/s: achieved/s, median of ${sizes.rounds}`, values: achieved },
    { label: `1 KiB requests at ${rate}/s: failed, all rounds`, values: requestErrors, count: true },
    { label: `1 KiB request at ${rate}/s, p50, median of ${sizes.rounds} (µs)`, values: p50, goal: goalP50 },
    { label: `1 KiB request at ${rate}/s, p99, median of ${sizes.rounds} (µs)`, values: p99 },
    { label: 'agent CPU per 1,000 requests, one agent (mean of both) (ms)', values: requestCpu },
    { label: `new connections one at a time (${sizes.sequentialConnects}): rate, median of ${sizes.rounds} (/s)`, values: sequentialRate },
    { label: 'new connection one at a time, p50 to first echo, median (µs)', values: sequentialP50 },
    { label: 'agent CPU per 1,000 new connections one at a time, one agent (mean of both) (ms)', values: sequentialCpu },
  ];
  const tableRows = rows.map((row) => [
    row.label,
    ...VARIANTS.map((variant) => (row.count ? String(row.values[variant] ?? '—') : formatNumber(row.values[variant]))),
    row.count ? '' : formatRatio(ratio(row.values.on, row.values.off)),
    row.goal ? goalMark(row.goal) : '',
  ]);

  const notes = [
    'Two 2-node local meshes (network namespaces, a real ambit agent per node, pods by the real CNI chain, no control plane) exist side by side for the whole run, ' +
      `identical but for the agents' environment: both at log level ${AGENT_LOG_LEVEL}; "off" adds AMBIT_TELEMETRY=off (no per-connection metrics, no access-log line). ` +
      'Load runs in the enrolled client pod on node 1, the target in the enrolled server pod on node 2.',
    `Interleaved: a warm-up of each mesh (throughput${sizes.warmupSeconds > 0 ? ', requests' : ''}), then ${sizes.rounds} rounds, each running throughput, requests and new connections on "on", then the same on "off". ` +
      `Throughput: median of the rounds. Requests: ${sizes.requestBytes}-byte echoes scheduled at ${rate}/s for ${sizes.requestSeconds} s over ${sizes.requestConnections} persistent connections, ` +
      'timed from the scheduled send (open loop); p50 and p99 are medians of the rounds\' percentiles. New connections one at a time: load.ts connect (closed loop), ' +
      `${sizes.sequentialConnects} after ${Math.round(sizes.sequentialConnects / 10)} warm-up per round; only here does each operation write an access-log line.`,
    'CPU: user + system seconds of both agent processes from /proc over the runs of every round, per 1,000 operations, halved (one agent, mean of both).',
    `Ratio: on ÷ off. Goal (issue 5): throughput and p50 at most ${APART * 100}% apart, i.e. the ratio between ${target}; a ratio outside that band in the favourable direction is noise the run could not resolve, and is marked ✗ all the same.`,
  ];
  for (const variant of VARIANTS) for (const error of figures[variant].errors) notes.push(`**${LABELS[variant]}**: ${error}`);

  return {
    suite: 'telemetry',
    tables: [{
      title: 'Captured path with telemetry on vs AMBIT_TELEMETRY=off (2-node local runtime, interleaved)',
      columns: ['measure', 'telemetry on', 'telemetry off', 'on ÷ off', 'goal'],
      rows: tableRows,
      notes,
    }],
    goals,
    data: { sizes, agentLogLevel: AGENT_LOG_LEVEL, figures },
  };
}
