/**
 * Suite "hbone" (issue 2): the HBONE tunnel against direct TCP and a stunnel4 mutual-TLS pair, in one run.
 *
 * Paths (each role its own process; all on 127.0.0.1):
 *   direct   load -> target
 *   stunnel  load -> stunnel client -> TLS -> stunnel server -> target
 *   hbone    load -> our client relay -> HBONE (mTLS h2 CONNECT) -> our server relay -> target (node:http2)
 *   h2       the same pair on ambit's own HTTP/2 layer (shared/hbone/h2/, issue 14), measured beside node:http2
 * Measures: bulk throughput (1 stream; 8 parallel streams), 1 KiB round trips on one persistent connection,
 * new connections to the first echoed byte, and for HBONE the library's open() on a warm pool; relay CPU for
 * each. Repetitions are interleaved across paths so drift in the machine's load hits every path alike.
 * Must not know about: how the relays work inside.
 */
import { type CpuByRole, CpuMeter, totalCpu } from '../lib/cpu.ts';
import { hboneClientArgs, hboneLibraryAvailable, startHbonePair } from '../lib/hbone-pair.ts';
import { formatNumber, formatRatio, goalMark } from '../lib/report.ts';
import { median, type LatencySummary } from '../lib/stats.ts';
import { startStunnelPair } from '../lib/stunnel.ts';
import type { Goal, Suite, SuiteContext, SuiteResult } from '../lib/suite.ts';
import { nodeTool } from '../lib/tools.ts';

const GIB = 1024 ** 3;
const MIB = 1024 ** 2;

interface Sizes {
  singleBytes: number;
  parallelStreams: number;
  parallelTotalBytes: number;
  warmupBytes: number;
  throughputRuns: number;
  rttCount: number;
  rttWarmup: number;
  rttRuns: number;
  rttBytes: number;
  connectCount: number;
  connectWarmup: number;
}

/** The sizes. 8 parallel streams carry 1 GiB in total (8 x 128 MiB), so both rows move the same bytes. */
const FULL: Sizes = {
  singleBytes: GIB,
  parallelStreams: 8,
  parallelTotalBytes: GIB,
  warmupBytes: 64 * MIB,
  throughputRuns: 3,
  rttCount: 10_000,
  rttWarmup: 500,
  // p99 of 10,000 is 100 samples: a burst of other work on a shared 2-core machine moves it, so 5 runs, median.
  rttRuns: 5,
  rttBytes: 1024,
  connectCount: 2_000,
  connectWarmup: 200,
};

const QUICK: Sizes = {
  singleBytes: 64 * MIB,
  parallelStreams: 8,
  parallelTotalBytes: 64 * MIB,
  warmupBytes: 8 * MIB,
  throughputRuns: 1,
  rttCount: 1_000,
  rttWarmup: 100,
  rttRuns: 1,
  rttBytes: 1024,
  connectCount: 200,
  connectWarmup: 20,
};

type PathKey = 'direct' | 'stunnel' | 'hbone' | 'h2';
const PATH_LABELS: Record<PathKey, string> = { direct: 'direct TCP', stunnel: 'stunnel pair', hbone: 'HBONE pair', h2: 'HBONE pair, own HTTP/2' };

interface Path {
  key: PathKey;
  entryPort: number;
  /** Relay pids by role, for CPU accounting (none for direct TCP). */
  relays: Record<string, number>;
}

interface ThroughputRun {
  megabytesPerSecond: number;
  /** Relay CPU seconds, both ends, per GiB moved. */
  cpuSecondsPerGiB: number;
  cpu: CpuByRole;
}

interface LatencyRun extends LatencySummary {
  /** Relay CPU, both ends, in milliseconds per 1,000 operations. */
  cpuMsPer1000: number;
  cpu: CpuByRole;
}

interface PathFigures {
  single: ThroughputRun[];
  parallel: ThroughputRun[];
  rtt: LatencyRun[];
  connect: LatencyRun[];
  /** HBONE only: open() on a warm pool to the first echoed byte. */
  open: LatencySummary[];
  errors: string[];
}

interface ThroughputResult {
  bytes: number;
  seconds: number;
  megabytesPerSecond: number;
}

export const hboneSuite: Suite = {
  name: 'hbone',
  summary: 'HBONE tunnel vs direct TCP and a stunnel4 mutual-TLS pair (issue 2)',
  run,
};

async function run(context: SuiteContext): Promise<SuiteResult> {
  const sizes = context.quick ? QUICK : FULL;
  const { processes, certs } = context;
  const targetTool = nodeTool('target.ts', []);
  const target = await processes.start('target', targetTool.command, targetTool.args);

  const paths: Path[] = [{ key: 'direct', entryPort: target.port, relays: {} }];
  const figures: Record<PathKey, PathFigures> = {
    direct: emptyFigures(),
    stunnel: emptyFigures(),
    hbone: emptyFigures(),
    h2: emptyFigures(),
  };
  try {
    const stunnel = await startStunnelPair(processes, context.runDir, certs, target.port);
    paths.push({ key: 'stunnel', entryPort: stunnel.entryPort, relays: { client: stunnel.client.pid, server: stunnel.server.pid } });
  } catch (error) {
    figures.stunnel.errors.push(`stunnel pair did not start (is stunnel4 installed? \`make toolchain\` installs it): ${firstLine(error)}`);
  }
  let hboneServerPort: number | undefined;
  if (!hboneLibraryAvailable()) {
    figures.hbone.errors.push('shared/hbone/index.ts does not exist yet: HBONE rows not measured');
  } else {
    try {
      const pair = await startHbonePair(processes, certs, target.port, context.profileDir);
      hboneServerPort = pair.serverPort;
      paths.push({ key: 'hbone', entryPort: pair.entryPort, relays: { client: pair.client.pid, server: pair.server.pid } });
    } catch (error) {
      figures.hbone.errors.push(`HBONE relays did not start: ${firstLine(error)}`);
    }
    try {
      const pair = await startHbonePair(processes, certs, target.port, context.profileDir, 'own');
      paths.push({ key: 'h2', entryPort: pair.entryPort, relays: { client: pair.client.pid, server: pair.server.pid } });
    } catch (error) {
      figures.h2.errors.push(`HBONE relays on the own HTTP/2 layer did not start: ${firstLine(error)}`);
    }
  }

  const load = async <T>(name: string, path: Path, args: string[]): Promise<T> => {
    const tool = nodeTool('load.ts', [...args, '--port', String(path.entryPort)]);
    return processes.run<T>(`load ${name} via ${path.key}`, tool.command, tool.args);
  };
  /** Runs one measurement on one path; a failure is recorded for that path and the others carry on. */
  const attempt = async (path: Path, what: string, body: () => Promise<void>): Promise<void> => {
    try {
      await body();
    } catch (error) {
      const message = `${what} via ${PATH_LABELS[path.key]} failed: ${firstLine(error)}`;
      figures[path.key].errors.push(message);
      context.log(message);
    }
  };

  const throughput = async (path: Path, streams: number, bytes: number): Promise<ThroughputRun> => {
    const meter = new CpuMeter(path.relays).start();
    const result = await load<ThroughputResult>('throughput', path, ['throughput', '--bytes', String(bytes), '--streams', String(streams)]);
    const cpu = meter.stop();
    return { megabytesPerSecond: result.megabytesPerSecond, cpuSecondsPerGiB: totalCpu(cpu) / (result.bytes / GIB), cpu };
  };
  const latency = async (path: Path, args: string[], operations: number): Promise<LatencyRun> => {
    const meter = new CpuMeter(path.relays).start();
    const result = await load<LatencySummary>(args[0]!, path, args);
    const cpu = meter.stop();
    return { ...result, cpuMsPer1000: (totalCpu(cpu) * 1e3 * 1000) / operations, cpu };
  };

  // Warm-up: JIT in every relay, pooled connection established, TCP buffers grown.
  for (const path of paths) {
    await attempt(path, 'warm-up', async () => {
      await throughput(path, 1, sizes.warmupBytes);
      await latency(path, ['rtt', '--count', '200', '--warmup', '0', '--size', String(sizes.rttBytes)], 200);
    });
  }

  for (let runIndex = 1; runIndex <= sizes.throughputRuns; runIndex++) {
    for (const path of paths) {
      await attempt(path, '1-stream throughput', async () => {
        const result = await throughput(path, 1, sizes.singleBytes);
        figures[path.key].single.push(result);
        context.log(`1 stream ${formatBytes(sizes.singleBytes)}, run ${runIndex}/${sizes.throughputRuns}, ${PATH_LABELS[path.key]}: ${formatNumber(result.megabytesPerSecond)} MB/s`);
      });
    }
    for (const path of paths) {
      await attempt(path, `${sizes.parallelStreams}-stream throughput`, async () => {
        const result = await throughput(path, sizes.parallelStreams, sizes.parallelTotalBytes);
        figures[path.key].parallel.push(result);
        context.log(`${sizes.parallelStreams} streams, run ${runIndex}/${sizes.throughputRuns}, ${PATH_LABELS[path.key]}: ${formatNumber(result.megabytesPerSecond)} MB/s`);
      });
    }
  }

  for (let runIndex = 1; runIndex <= sizes.rttRuns; runIndex++) {
    for (const path of paths) {
      await attempt(path, 'round trips', async () => {
        const result = await latency(path, ['rtt', '--count', String(sizes.rttCount), '--warmup', String(sizes.rttWarmup), '--size', String(sizes.rttBytes)], sizes.rttCount + sizes.rttWarmup);
        figures[path.key].rtt.push(result);
        context.log(`${sizes.rttCount} x 1 KiB round trips, run ${runIndex}/${sizes.rttRuns}, ${PATH_LABELS[path.key]}: p50 ${formatNumber(result.p50)} µs, p99 ${formatNumber(result.p99)} µs`);
      });
    }
  }

  for (const path of paths) {
    await attempt(path, 'new connections', async () => {
      const result = await latency(path, ['connect', '--count', String(sizes.connectCount), '--warmup', String(sizes.connectWarmup)], sizes.connectCount + sizes.connectWarmup);
      figures[path.key].connect.push(result);
      context.log(`${sizes.connectCount} new connections, ${PATH_LABELS[path.key]}: p50 ${formatNumber(result.p50)} µs, p99 ${formatNumber(result.p99)} µs`);
    });
  }

  const hbonePath = paths.find((path) => path.key === 'hbone');
  if (hbonePath && hboneServerPort !== undefined) {
    await attempt(hbonePath, 'open() on a warm pool', async () => {
      const tool = nodeTool('hbone-open.ts', [
        ...hboneClientArgs(certs, hboneServerPort, target.port),
        '--count', String(sizes.connectCount),
        '--warmup', String(sizes.connectWarmup),
      ]);
      const result = await processes.run<LatencySummary>('hbone-open', tool.command, tool.args);
      figures.hbone.open.push(result);
      context.log(`${sizes.connectCount} HBONE open() on a warm pool: p50 ${formatNumber(result.p50)} µs, p99 ${formatNumber(result.p99)} µs`);
    });
  }

  return buildResult(sizes, figures, hboneLibraryAvailable());
}

function emptyFigures(): PathFigures {
  return { single: [], parallel: [], rtt: [], connect: [], open: [], errors: [] };
}

function firstLine(error: unknown): string {
  return ((error as Error).message ?? String(error)).split('\n')[0]!;
}

function formatBytes(bytes: number): string {
  return bytes >= GIB ? `${bytes / GIB} GiB` : `${bytes / MIB} MiB`;
}

function medianOf<T>(runs: readonly T[], pick: (run: T) => number): number | undefined {
  return runs.length === 0 ? undefined : median(runs.map(pick));
}

function ratio(numerator: number | undefined, denominator: number | undefined): number | undefined {
  return numerator === undefined || denominator === undefined || denominator === 0 ? undefined : numerator / denominator;
}

function goal(name: string, value: number | undefined, target: string, meets: (value: number) => boolean, phrase?: string): Goal {
  return { name, value, target, met: value === undefined ? undefined : meets(value), ...(phrase ? { phrase } : {}) };
}

function buildResult(sizes: Sizes, figures: Record<PathKey, PathFigures>, libraryPresent: boolean): SuiteResult {
  const keys: PathKey[] = ['direct', 'stunnel', 'hbone', 'h2'];
  const pick = (select: (f: PathFigures) => number | undefined): Record<PathKey, number | undefined> =>
    Object.fromEntries(keys.map((key) => [key, select(figures[key])])) as Record<PathKey, number | undefined>;

  const single = pick((f) => medianOf(f.single, (r) => r.megabytesPerSecond));
  const parallel = pick((f) => medianOf(f.parallel, (r) => r.megabytesPerSecond));
  const singleCpu = pick((f) => medianOf(f.single, (r) => r.cpuSecondsPerGiB));
  const parallelCpu = pick((f) => medianOf(f.parallel, (r) => r.cpuSecondsPerGiB));
  const rttP50 = pick((f) => medianOf(f.rtt, (r) => r.p50));
  const rttP99 = pick((f) => medianOf(f.rtt, (r) => r.p99));
  const rttCpu = pick((f) => medianOf(f.rtt, (r) => r.cpuMsPer1000));
  const connectP50 = pick((f) => medianOf(f.connect, (r) => r.p50));
  const connectP99 = pick((f) => medianOf(f.connect, (r) => r.p99));
  const connectCpu = pick((f) => medianOf(f.connect, (r) => r.cpuMsPer1000));
  const openP50 = medianOf(figures.hbone.open, (r) => r.p50);
  const openP99 = medianOf(figures.hbone.open, (r) => r.p99);
  const added = (values: Record<PathKey, number | undefined>, key: PathKey): number | undefined =>
    values[key] === undefined || values.direct === undefined ? undefined : values[key]! - values.direct;
  const addedP50 = { direct: undefined, stunnel: added(rttP50, 'stunnel'), hbone: added(rttP50, 'hbone'), h2: added(rttP50, 'h2') };
  const addedP99 = { direct: undefined, stunnel: added(rttP99, 'stunnel'), hbone: added(rttP99, 'hbone'), h2: added(rttP99, 'h2') };

  const goals: Goal[] = [
    goal('throughput, 1 stream: HBONE (own HTTP/2) ÷ stunnel', ratio(single.h2, single.stunnel), '≥ 1.0x', (v) => v >= 1.0),
    goal(`throughput, ${sizes.parallelStreams} streams: HBONE (own HTTP/2) ÷ stunnel`, ratio(parallel.h2, parallel.stunnel), '≥ 1.0x', (v) => v >= 1.0),
    goal('latency added over direct, p50: HBONE (own HTTP/2) ÷ stunnel', ratio(addedP50.h2, addedP50.stunnel), '≤ 0.7x', (v) => v <= 0.7),
    goal('new stream on a warm pool (open()) vs new connection through stunnel, p50: stunnel ÷ HBONE', ratio(connectP50.stunnel, openP50), '≥ 10x', (v) => v >= 10, 'cheaper'),
  ];
  const [goalSingle, goalParallel, goalLatency, goalOpen] = goals as [Goal, Goal, Goal, Goal];

  type Row = { label: string; values: Record<PathKey, number | undefined>; goal?: Goal };
  const rowsSpec: Row[] = [
    { label: `throughput, 1 stream × ${formatBytes(sizes.singleBytes)} (MB/s)`, values: single, goal: goalSingle },
    { label: `throughput, ${sizes.parallelStreams} streams × ${formatBytes(sizes.parallelTotalBytes / sizes.parallelStreams)} (MB/s)`, values: parallel, goal: goalParallel },
    { label: '1 KiB round trip, p50 (µs)', values: rttP50 },
    { label: '1 KiB round trip, p99 (µs)', values: rttP99 },
    { label: 'latency added over direct, p50 (µs)', values: addedP50, goal: goalLatency },
    { label: 'latency added over direct, p99 (µs)', values: addedP99 },
    { label: 'new connection to first echoed byte, p50 (µs)', values: connectP50 },
    { label: 'new connection to first echoed byte, p99 (µs)', values: connectP99 },
    { label: 'HBONE open() on a warm pool to first echoed byte, p50 (µs)', values: { direct: undefined, stunnel: connectP50.stunnel, hbone: openP50, h2: undefined }, goal: goalOpen },
    { label: 'HBONE open() on a warm pool to first echoed byte, p99 (µs)', values: { direct: undefined, stunnel: connectP99.stunnel, hbone: openP99, h2: undefined } },
    { label: 'relay CPU, both ends, per GiB, 1 stream (s)', values: singleCpu },
    { label: `relay CPU, both ends, per GiB, ${sizes.parallelStreams} streams (s)`, values: parallelCpu },
    { label: 'relay CPU, both ends, per 1,000 round trips (ms)', values: rttCpu },
    { label: 'relay CPU, both ends, per 1,000 new connections (ms)', values: connectCpu },
  ];
  const rows = rowsSpec.map((row) => [
    row.label,
    ...keys.map((key) => (key === 'direct' && row.label.startsWith('relay CPU') ? 'no relay' : formatNumber(row.values[key]))),
    formatRatio(ratio(row.values.hbone, row.values.direct)),
    formatRatio(ratio(row.values.hbone, row.values.stunnel)),
    formatRatio(ratio(row.values.h2, row.values.hbone)),
    formatRatio(ratio(row.values.h2, row.values.stunnel)),
    row.goal ? goalMark(row.goal) : '',
  ]);

  const notes = [
    `Medians of ${sizes.throughputRuns} runs for throughput and of ${sizes.rttRuns} runs (${sizes.rttCount.toLocaleString('en-US')} round trips each, after ${sizes.rttWarmup} warm-up) for round trips;` +
      ` ${sizes.connectCount.toLocaleString('en-US')} new connections/streams, one at a time, after ${sizes.connectWarmup} warm-up. MB = 10^6 bytes.`,
    'Ratios: "HBONE ÷ direct" and "HBONE ÷ stunnel" divide the HBONE figure by the other; for throughput higher is better, for times and CPU lower is better.',
    '"HBONE pair, own HTTP/2" is the same relay pair on ambit\'s own HTTP/2 layer (shared/hbone/h2/) instead of node:http2; "own ÷ HBONE" and "own ÷ stunnel" divide its figure by the node:http2 pair\'s and by stunnel\'s. Goals are judged on the own pair (what the agent runs by default since 2026-12-06; `AMBIT_HBONE_IMPL=node` selects node:http2). The open() row\'s client is the library\'s pool with its default (own) layer, against the node:http2 pair\'s server relay.',
    'The open() row compares a new HBONE stream on the pool\'s warm connection with a new TCP connection through the stunnel pair (which pays a TLS handshake); the "new connection" rows go through each pair\'s entry relay.',
  ];
  if ([addedP50.stunnel, addedP50.hbone, addedP99.stunnel, addedP99.hbone].some((value) => value !== undefined && value < 0)) {
    notes.push('A negative "added" figure means direct TCP\'s own percentile was disturbed by other work on the machine during this run; that row says nothing then.');
  }
  if (!libraryPresent) notes.push('**HBONE library not present yet**: HBONE rows empty.');
  for (const key of keys) for (const error of figures[key].errors) notes.push(`**${PATH_LABELS[key]}**: ${error}`);

  return {
    suite: 'hbone',
    tables: [{
      title: 'HBONE vs direct TCP and stunnel4 (loopback, each role its own process)',
      columns: ['measure', 'direct TCP', 'stunnel pair', 'HBONE pair', 'HBONE pair, own HTTP/2', 'HBONE ÷ direct', 'HBONE ÷ stunnel', 'own ÷ HBONE', 'own ÷ stunnel', 'goal'],
      rows,
      notes,
    }],
    goals,
    data: { sizes, figures },
  };
}
