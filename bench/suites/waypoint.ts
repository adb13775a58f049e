/**
 * Suite "waypoint" (issue 12): HTTP/1.1 and gRPC unary through the waypoint against the L4 mesh alone and against
 * haproxy (Debian's) inserted as the L7 hop with mutual TLS on both legs (in h2 mode for gRPC). One 2-node local mesh
 * with the control plane:
 *
 *   mesh:     client (node 1) ─VIP `direct`─> agent ══HBONE══> agent (node 2) -> server-v1                  (L4 mesh)
 *             client (node 1) ─VIP `via`───> agent ══HBONE══> waypoint (node 2) ══HBONE══> agent -> server-v1
 *   anchors:  plain-client ─> stunnel client ══mTLS══> stunnel server (plain-server) -> http target         (TLS hop)
 *             plain-client ─> stunnel client ══mTLS══> haproxy (node 2, mode http) ══mTLS══> stunnel server -> target
 *
 * What it measures, in interleaved rounds per protocol: 1 KiB POSTs answered with 1 KiB at 1,000 requests/s over 16
 * keep-alive connections (HTTP/1.1), or 1 KiB unary gRPC calls answered with 1 KiB at 1,000 calls/s over 4 h2c
 * connections (gRPC: the Service port is named grpc, so the waypoint serves it at L7 over HTTP/2 both ways; the
 * stunnel pair carries h2c as bytes; haproxy takes and sends h2 over its TLS legs), open loop with latency from the
 * scheduled start: p50/p99 per path, the latency the L7 hop adds (waypoint path minus L4 mesh; haproxy path minus
 * stunnel pair), CPU of the waypoint and of haproxy per 1,000 requests; then the highest rate one waypoint (one
 * thread) sustains with p99 < 10 ms (HTTP/1.1, rates stepped up until p99, failures or the achieved rate break; a
 * broken step is tried once more, so one noisy second on the shared machine does not end the climb), the same climb
 * through haproxy (its anchor on the same machine), the machine's own loopback round trip at 100/s and 1,000/s (a
 * latency that grows as the rate falls is partly the machine's: processes that sleep between requests wake slower), a 90/10
 * HTTPRoute split over 10,000 requests, and the waypoint's RSS after all of it.
 * Issue 13's CPU goal, HTTP/1.1 only: in the same rounds, the same load through the same waypoint to a second Service
 * `policy` (VIP `policy`, same backend) that 1,000 L7 AuthorizationPolicies and a RequestAuthentication (inline ES256
 * JWKS) target (bench/l7-scenario.ts's mix), every request carrying a valid JWT and a path one ALLOW policy admits, so
 * every request is answered 200; the waypoint's config dump must show the 1,000 policies and a request without a
 * token must be refused (403) before anything is measured. Goal: waypoint CPU per request with policy ÷ without.
 * Must not know about: how the waypoint routes.
 */
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdir, rename, writeFile } from 'node:fs/promises';
import path, { join } from 'node:path';
import { stringify } from 'yaml';
import { REFERENCE_PLUGINS_DIR, type Pod } from '../../runtime/index.ts';
import { createLocalMesh, type LocalMesh } from '../../runtime/local-mesh.ts';
import { createWaypoint, type LocalWaypoint } from '../../runtime/waypoint.ts';
import { WAYPOINT_NODE_OPTIONS } from '../../waypoint/config.ts';
import { CpuMeter, processResidentMemory } from '../lib/cpu.ts';
import { agentPid, inPod } from '../lib/mesh-cluster.ts';
import type { ProcessGroup } from '../lib/processes.ts';
import { formatNumber, formatRatio, goalMark } from '../lib/report.ts';
import { median, type LatencySummary } from '../lib/stats.ts';
import { STUNNEL_BINARY } from '../lib/stunnel.ts';
import type { Goal, Suite, SuiteContext, SuiteResult, Table } from '../lib/suite.ts';
import type { BenchCertificates } from '../lib/certs.ts';
import { l7PolicyManifests } from '../l7-scenario.ts';

/** Issue 12's goals. */
const CPU_AT_MOST = 1.5;
const LATENCY_AT_MOST = 1.5;
const RSS_AT_MOST_MB = 100;
/**
 * The waypoint's memory is read again this long after the run: longer than two of the heap release's check
 * intervals (shared/memory/heap-release.ts: every 10 s, when the heap grew and the loop is quiet), so a burst's
 * memory is given back by then if it ever will be.
 */
const MEMORY_SETTLE_MS = 60_000;
const P99_LIMIT_US = 10_000;
const SPLIT_WITHIN_POINTS = 1;
/** Issue 13: waypoint CPU per request with POLICY_COUNT L7 policies + a JWT on every request ÷ without. */
const POLICY_CPU_AT_MOST = 1.2;
const POLICY_COUNT = 1000;
/** Protocols measured through each path: HTTP/1.1 (bench/tools/http-load.ts) and gRPC unary (grpc-load.ts). */
const PROTOCOLS = ['http1', 'grpc-unary'] as const;
type Protocol = (typeof PROTOCOLS)[number];
/**
 * AMBIT_BENCH_WAYPOINT_ONLY=grpc-unary (or http1): that protocol's table alone, without the rate steps, the split
 * and the 60 s memory wait, for profiling and A/B runs of one path (the goal rows of what is skipped say so).
 */
const ONLY_PROTOCOL = PROTOCOLS.find((protocol) => protocol === process.env.AMBIT_BENCH_WAYPOINT_ONLY);
/**
 * AMBIT_BENCH_WAYPOINT_FOCUS=1: both protocols' tables at full size (the CPU, latency and policy goals), without the
 * rate climb, the split and the 60 s memory wait (about half the suite's time), so the noisy rows can be read over
 * several runs of one tree (bench/tools/goal-medians.ts reduces the runs' JSON to medians per goal).
 */
const FOCUS = process.env.AMBIT_BENCH_WAYPOINT_FOCUS === '1';
/** Only the request tables: one protocol's (ONLY_PROTOCOL) or both (FOCUS). */
const TABLES_ONLY = ONLY_PROTOCOL !== undefined || FOCUS;
/** AMBIT_BENCH_WAYPOINT_ONLY=rates: the rate climb alone, at full size even with --quick (A/B runs of the climb). */
const RATES_ONLY = process.env.AMBIT_BENCH_WAYPOINT_ONLY === 'rates';
/** AMBIT_BENCH_WAYPOINT_ONLY=split: the 90/10 split alone, at full size (A/B runs of the weighted pick). */
const SPLIT_ONLY = process.env.AMBIT_BENCH_WAYPOINT_ONLY === 'split';
/**
 * With AMBIT_BENCH_WAYPOINT_ONLY=rates, AMBIT_BENCH_WAYPOINT_RATE_PATHS ('mesh,haproxy,stunnel') runs each rate step
 * through those paths too, right after the waypoint's (same rate, connections and duration): which hop owns a
 * latency that grows as the rate falls shows as the same growth on the paths without that hop.
 */
const RATE_COMPARE_PATHS = RATES_ONLY ? (process.env.AMBIT_BENCH_WAYPOINT_RATE_PATHS ?? '').split(',').filter((name): name is RatePathName => name === 'mesh' || name === 'stunnel' || name === 'haproxy' || name === 'loopback') : [];
/**
 * The machine's own round trip at a low and a high rate (bench/tools/loopback-ping.ts: two Node processes, loopback
 * TCP, no mesh), measured before the climb and shown under it: on this machine a process that sleeps between
 * messages wakes slower, so every path's latency grows as the rate falls, hop after hop.
 */
const LOOPBACK_REFERENCE_RATES = [100, 1000];
const PROTOCOL_LABELS: Record<Protocol, string> = { http1: 'HTTP/1.1', 'grpc-unary': 'gRPC unary' };

const APP_PORT = 8080;
const GRPC_PORT = 50051;
const STUNNEL_CLIENT_PORT = 16001;
const STUNNEL_TO_HAPROXY_PORT = 16002;
const STUNNEL_GRPC_CLIENT_PORT = 16003;
const STUNNEL_GRPC_TO_HAPROXY_PORT = 16004;
const STUNNEL_SERVER_PORT = 16443;
const STUNNEL_GRPC_SERVER_PORT = 16444;
const HAPROXY_PORT = 17443;
const HAPROXY_GRPC_PORT = 17444;
export const VIPS = { direct: '10.240.5.10', via: '10.240.5.11', v1: '10.240.5.12', v2: '10.240.5.13', split: '10.240.5.14', directGrpc: '10.240.5.15', viaGrpc: '10.240.5.16', policy: '10.240.5.17' };
const ENROLLED = { 'istio.io/dataplane-mode': 'ambient' };

interface Sizes {
  rounds: number;
  seconds: number;
  rates: number[];
  rateSeconds: number;
  splitRequests: number;
}
/** Rates from well under the 1,000/s of the main table up: on a busy machine the waypoint's limit can be below it. */
const FULL: Sizes = { rounds: 3, seconds: 10, rates: [100, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 4000, 6000, 8000], rateSeconds: 5, splitRequests: 10_000 };
const QUICK: Sizes = { rounds: 1, seconds: 3, rates: [100, 300, 1000, 2000], rateSeconds: 3, splitRequests: 2_000 };

type PathName = 'mesh' | 'waypoint' | 'policy' | 'stunnel' | 'haproxy';
/** The paths each protocol is measured through, in round order (reversed every other round). */
const PATHS: Record<Protocol, PathName[]> = { http1: ['mesh', 'waypoint', 'policy', 'stunnel', 'haproxy'], 'grpc-unary': ['mesh', 'waypoint', 'stunnel', 'haproxy'] };
const LABELS: Record<PathName, string> = {
  mesh: 'L4 mesh (agents only)', waypoint: 'mesh + waypoint', policy: `mesh + waypoint, ${POLICY_COUNT.toLocaleString('en-US')} L7 policies + JWT`, stunnel: 'stunnel mTLS pair', haproxy: 'stunnel + haproxy (mTLS both legs)',
};

interface LoadResult extends LatencySummary {
  requestsPerSecond: number;
  failed: number;
  backends: Record<string, number>;
  errors: Record<string, number>;
}

/** A comparison path of the climb: one of the table's, or the machine's bare loopback round trip. */
type RatePathName = 'mesh' | 'stunnel' | 'haproxy' | 'loopback';
const RATE_PATH_LABELS: Record<RatePathName | 'waypoint', string> = { ...LABELS, loopback: 'loopback round trip, two processes (no mesh)' };

/** One rate step: through the waypoint, or (`path`) through a comparison path (RATE_COMPARE_PATHS). */
interface RateStep {
  rate: number;
  path?: RatePathName;
  result?: LoadResult;
  error?: string;
  /** CPU of the L7 hop (waypoint or haproxy) per request of the step, µs (the load tool's 200 warm-up requests counted). */
  hopCpuUsPerRequest?: number;
}

/** The load tool's warm-up requests (http-load's default), which fall inside a step's CPU reading. */
const STEP_WARMUP_REQUESTS = 200;

function difference(a: number | undefined, b: number | undefined): number | undefined {
  return a === undefined || b === undefined ? undefined : a - b;
}

function hopCpuPerRequest(seconds: number | undefined, rate: number, stepSeconds: number): number | undefined {
  return seconds === undefined ? undefined : (seconds * 1e6) / (rate * stepSeconds + STEP_WARMUP_REQUESTS);
}

interface PathRun extends LoadResult {
  /** The round it was measured in (0-based): "added" latency pairs a hop's run with its base path's of the same round. */
  round: number;
  /** CPU seconds of the L7 hop (waypoint or haproxy) during the run. */
  hopCpu?: number;
  /** The kernel's part of hopCpu (system time): TLS records' sends, loopback and veth delivery. */
  hopSystemCpu?: number;
  requests: number;
}

export interface Topology {
  mesh: LocalMesh;
  waypoint: LocalWaypoint;
  waypointPid: number;
  client: Pod;
  plainClient: Pod;
  haproxyPod: Pod;
  plainServer: Pod;
  haproxyPid: number;
  agentPids: number[];
  /** The `policy` Service's request: a path one ALLOW policy admits and a valid JWT whose `groups` claim it names. */
  policyRequest: { path: string; authorization: string; policy: string };
}

export const waypointSuite: Suite = {
  name: 'waypoint',
  summary: 'HTTP/1.1 and gRPC unary through the waypoint vs the L4 mesh vs haproxy as the L7 hop (mTLS both legs): CPU, latency, RSS, max rate, 90/10 split (issue 12)',
  run,
};

async function run(outer: SuiteContext): Promise<SuiteResult> {
  const began = Date.now();
  const context: SuiteContext = { ...outer, log: (message) => outer.log(`[${((Date.now() - began) / 1000).toFixed(0).padStart(3)} s] ${message}`) };
  const sizes = context.quick && !RATES_ONLY ? QUICK : FULL;
  if (process.getuid?.() !== 0 || !existsSync(join(REFERENCE_PLUGINS_DIR, 'bridge')) || !existsSync('/usr/sbin/haproxy')) {
    throw new Error(`the waypoint suite needs root, ${REFERENCE_PLUGINS_DIR}/bridge (containernetworking-plugins) and /usr/sbin/haproxy (apt-get install haproxy)`);
  }
  const runs: Record<Protocol, Record<PathName, PathRun[]>> = { http1: { mesh: [], waypoint: [], policy: [], stunnel: [], haproxy: [] }, 'grpc-unary': { mesh: [], waypoint: [], policy: [], stunnel: [], haproxy: [] } };
  const policyChecks: string[] = [];
  const errors: string[] = [];
  const rateSteps: RateStep[] = [];
  const loopbackReference: RateStep[] = [];
  let split: LoadResult | undefined;
  const memory: WaypointMemoryReadings = {};
  let mesh: LocalMesh | undefined;
  try {
    // AMBIT_BENCH_AGENT_ENV ('NAME=value NAME=value'): more environment for the agents, for A/B runs.
    mesh = await createLocalMesh({ nodes: 2, name: 'bench-wp', agentEnv: { AMBIT_LOG_LEVEL: 'warn', AMBIT_DRAIN_MS: '500', ...envPairs(process.env.AMBIT_BENCH_AGENT_ENV) } });
    const topology = await buildTopology(context, mesh);
    context.log(`waypoint ${topology.waypoint.pod.ip} (pid ${topology.waypointPid}), haproxy ${topology.haproxyPod.ip} (pid ${topology.haproxyPid})`);
    memory.start = await waypointMemory(topology.waypoint, topology.waypointPid);
    context.log(`waypoint memory at start: ${formatMemory(memory.start)}`);
    type Entry = { pod: Pod; host: string; port: number; hopPid?: number; extra?: string[] };
    const { policyRequest } = topology;
    const entries: Record<Protocol, Partial<Record<PathName, Entry>>> = {
      http1: {
        mesh: { pod: topology.client, host: VIPS.direct, port: 80 },
        waypoint: { pod: topology.client, host: VIPS.via, port: 80, hopPid: topology.waypointPid },
        policy: { pod: topology.client, host: VIPS.policy, port: 80, hopPid: topology.waypointPid, extra: ['--path', policyRequest.path, '--header', `authorization: ${policyRequest.authorization}`] },
        stunnel: { pod: topology.plainClient, host: '127.0.0.1', port: STUNNEL_CLIENT_PORT },
        haproxy: { pod: topology.plainClient, host: '127.0.0.1', port: STUNNEL_TO_HAPROXY_PORT, hopPid: topology.haproxyPid },
      },
      'grpc-unary': {
        mesh: { pod: topology.client, host: VIPS.directGrpc, port: GRPC_PORT },
        waypoint: { pod: topology.client, host: VIPS.viaGrpc, port: GRPC_PORT, hopPid: topology.waypointPid },
        stunnel: { pod: topology.plainClient, host: '127.0.0.1', port: STUNNEL_GRPC_CLIENT_PORT },
        haproxy: { pod: topology.plainClient, host: '127.0.0.1', port: STUNNEL_GRPC_TO_HAPROXY_PORT, hopPid: topology.haproxyPid },
      },
    };
    const load = (pod: Pod, name: string, args: string[], tool = 'http-load.ts') => {
      const command = inPod(pod, tool, args);
      return context.processes.run<LoadResult>(name, command.command, command.args);
    };
    const tools: Record<Protocol, { tool: string; connections: string }> = { http1: { tool: 'http-load.ts', connections: '16' }, 'grpc-unary': { tool: 'grpc-load.ts', connections: '4' } };
    // The policies are in force before anything is measured: without a token the same request is refused (no ALLOW
    // policy matches), with it every request is answered 200 (checked again on every measured run: failed = 0).
    try {
      const refused = await load(topology.client, 'policy Service without a token', ['--host', VIPS.policy, '--port', '80', '--count', '20', '--connections', '4', '--warmup', '0', '--path', policyRequest.path]);
      const allowed = await load(topology.client, 'policy Service with a token', ['--host', VIPS.policy, '--port', '80', '--count', '20', '--connections', '4', '--warmup', '0', '--path', policyRequest.path, '--header', `authorization: ${policyRequest.authorization}`]);
      policyChecks.push(`before measuring: without a token ${JSON.stringify(refused.errors)} of 20; with it ${20 - allowed.failed} of 20 answered 200 (allowed by ${policyRequest.policy}, path ${policyRequest.path})`);
      if (refused.errors['status 403'] !== 20 || allowed.failed !== 0) errors.push(`HTTP/1.1 policy check failed: ${policyChecks.at(-1)!}`);
      context.log(policyChecks.at(-1)!);
    } catch (error) {
      errors.push(`HTTP/1.1 policy check: ${(error as Error).message.split('\n')[0]}`);
    }
    // Warm-up, not measured: the waypoint's first seconds of load are JIT compilation, which would otherwise fall on
    // whichever of the two waypoint paths comes first in round 1 and skew the policy ratio.
    for (const name of ['waypoint', 'policy'] as const) {
      if (ONLY_PROTOCOL === 'grpc-unary') break;
      const target = entries.http1[name]!;
      await load(target.pod, `warm-up ${LABELS[name]}`, ['--host', target.host, '--port', String(target.port), '--rate', '1000', '--duration', '2', '--connections', '16', '--size', '1024', ...(target.extra ?? [])]).catch(() => undefined);
    }
    if (ONLY_PROTOCOL === 'grpc-unary') {
      // gRPC alone: the waypoint's JIT warm-up is done on its gRPC path instead.
      const target = entries['grpc-unary'].waypoint!;
      await load(target.pod, 'warm-up gRPC mesh + waypoint', ['--host', target.host, '--port', String(target.port), '--rate', '1000', '--duration', '2', '--connections', '4', '--size', '1024'], 'grpc-load.ts').catch(() => undefined);
    }
    for (const protocol of RATES_ONLY || SPLIT_ONLY ? [] : PROTOCOLS) {
      if (ONLY_PROTOCOL !== undefined && protocol !== ONLY_PROTOCOL) continue;
      for (let round = 0; round < sizes.rounds; round++) {
        for (const name of round % 2 === 0 ? PATHS[protocol] : [...PATHS[protocol]].reverse()) {
          const target = entries[protocol][name]!;
          const label = `${PROTOCOL_LABELS[protocol]} ${LABELS[name]}`;
          try {
            const meter = target.hopPid !== undefined ? new CpuMeter({ hop: target.hopPid }).start() : undefined;
            const systemMeter = target.hopPid !== undefined ? new CpuMeter({ hop: target.hopPid }, 'system').start() : undefined;
            const { tool, connections } = tools[protocol];
            const result = await load(target.pod, label, ['--host', target.host, '--port', String(target.port), '--rate', '1000', '--duration', String(sizes.seconds), '--connections', connections, '--size', '1024', ...(target.extra ?? [])], tool);
            const hopCpu = meter?.stop().hop;
            const hopSystemCpu = systemMeter?.stop().hop;
            runs[protocol][name].push({ ...result, round, requests: 1000 * sizes.seconds, ...(hopCpu !== undefined ? { hopCpu } : {}), ...(hopSystemCpu !== undefined ? { hopSystemCpu } : {}) });
            context.log(`round ${round + 1} ${label}: p50 ${formatNumber(result.p50)} µs, p99 ${formatNumber(result.p99)} µs, ${formatNumber(result.requestsPerSecond)}/s, failed ${result.failed}${hopCpu !== undefined ? `, hop CPU ${formatNumber(hopCpu * 1000)} ms` : ''}`);
          } catch (error) {
            const message = `${label}: ${((error as Error).message ?? String(error)).split('\n')[0]}`;
            errors.push(message);
            context.log(message);
          }
        }
      }
    }
    // The highest rate one waypoint sustains with p99 under the limit: rates stepped up until a step breaks it twice
    // in a row (on this shared machine one step can break on a neighbour's burst).
    // With AMBIT_BENCH_WAYPOINT_ONLY=rates, AMBIT_BENCH_WAYPOINT_RATES ('100,200,100') runs those steps once each,
    // whatever they show.
    const fixedRates = RATES_ONLY && process.env.AMBIT_BENCH_WAYPOINT_RATES ? process.env.AMBIT_BENCH_WAYPOINT_RATES.split(',').map(Number) : undefined;
    // The loopback round trip in the client pod: the machine's part of every path's latency at that rate.
    const loopbackPing = (rate: number, seconds: number): Promise<LoadResult> => load(topology.client, `loopback round trip at ${rate}/s`, ['--rate', String(rate), '--duration', String(seconds)], 'loopback-ping.ts');
    if (!TABLES_ONLY && !RATES_ONLY && !SPLIT_ONLY) {
      for (const rate of LOOPBACK_REFERENCE_RATES) {
        try {
          const reference = await loopbackPing(rate, sizes.rateSeconds);
          loopbackReference.push({ rate, path: 'loopback', result: reference });
          context.log(`loopback round trip at ${rate}/s: p50 ${formatNumber(reference.p50)} µs, p99 ${formatNumber(reference.p99)} µs`);
        } catch (error) {
          loopbackReference.push({ rate, path: 'loopback', error: (error as Error).message.split('\n')[0] });
        }
      }
    }
    climb: for (const rate of TABLES_ONLY || SPLIT_ONLY ? [] : (fixedRates ?? sizes.rates)) {
      for (let attempt = 1; attempt <= (fixedRates ? 1 : 2); attempt++) {
        try {
          const faultsBefore = topology.agentPids.map(minorFaults);
          const meter = new CpuMeter({ hop: topology.waypointPid }).start();
          const result = await load(topology.client, `waypoint at ${rate}/s`, ['--host', VIPS.via, '--port', '80', '--rate', String(rate), '--duration', String(sizes.rateSeconds), '--connections', '64', '--size', '1024']);
          const hopCpu = hopCpuPerRequest(meter.stop().hop, rate, sizes.rateSeconds);
          rateSteps.push({ rate, result, ...(hopCpu !== undefined ? { hopCpuUsPerRequest: hopCpu } : {}) });
          // Page faults the agents took during the step and their native memory releases so far: a release that drops
          // pages in use shows here as faults at every step after it (the hot pages faulting back in).
          const faults = topology.agentPids.map((pid, index) => minorFaults(pid) - faultsBefore[index]!);
          const releases = await Promise.all([0, 1].map((node) => agentHeapRelease(mesh!, node)));
          const waypointNow = await waypointMemory(topology.waypoint, topology.waypointPid);
          context.log(`waypoint at ${rate}/s (try ${attempt}): achieved ${formatNumber(result.requestsPerSecond)}/s, p50 ${formatNumber(result.p50)} µs, p99 ${formatNumber(result.p99)} µs, failed ${result.failed}, waypoint CPU ${formatNumber(hopCpu)} µs per request; agents' minor faults ${faults.join(' / ')}, native releases ${releases.map((r) => r?.nativeReleases ?? '?').join(' / ')}, GCs ${releases.map((r) => (r ? `${r.releases} (last ${formatNumber(r.lastGcMs)} ms)` : '?')).join(' / ')}; waypoint GCs ${waypointNow?.heapReleases ?? '?'} (last ${formatNumber(waypointNow?.lastGcMs)} ms), native releases ${waypointNow?.nativeReleases ?? '?'}`);
          for (const name of RATE_COMPARE_PATHS) {
            try {
              const meter = name === 'haproxy' ? new CpuMeter({ hop: topology.haproxyPid }).start() : undefined;
              const compared = name === 'loopback' ? await loopbackPing(rate, sizes.rateSeconds) : await load(entries.http1[name]!.pod, `${LABELS[name]} at ${rate}/s`, ['--host', entries.http1[name]!.host, '--port', String(entries.http1[name]!.port), '--rate', String(rate), '--duration', String(sizes.rateSeconds), '--connections', '64', '--size', '1024']);
              const hopCpu = hopCpuPerRequest(meter?.stop().hop, rate, sizes.rateSeconds);
              rateSteps.push({ rate, path: name, result: compared, ...(hopCpu !== undefined ? { hopCpuUsPerRequest: hopCpu } : {}) });
              context.log(`${RATE_PATH_LABELS[name]} at ${rate}/s: achieved ${formatNumber(compared.requestsPerSecond)}/s, p50 ${formatNumber(compared.p50)} µs, p99 ${formatNumber(compared.p99)} µs, failed ${compared.failed}${hopCpu !== undefined ? `, haproxy CPU ${formatNumber(hopCpu)} µs per request` : ''}`);
            } catch (error) {
              rateSteps.push({ rate, path: name, error: (error as Error).message.split('\n')[0] });
            }
          }
          if (fixedRates || sustains(rate, result)) continue climb;
        } catch (error) {
          rateSteps.push({ rate, error: (error as Error).message.split('\n')[0] });
        }
      }
      break;
    }
    // haproxy's own climb, same rules, same run: the anchor for the waypoint's highest rate on this machine (whose
    // p99 at a low rate is mostly the machine's: see LOOPBACK_REFERENCE_RATES).
    const haproxyEntry = entries.http1.haproxy!;
    haproxyClimb: for (const rate of TABLES_ONLY || RATES_ONLY || SPLIT_ONLY ? [] : sizes.rates) {
      for (let attempt = 1; attempt <= 2; attempt++) {
        try {
          const meter = new CpuMeter({ hop: topology.haproxyPid }).start();
          const result = await load(haproxyEntry.pod, `${LABELS.haproxy} at ${rate}/s`, ['--host', haproxyEntry.host, '--port', String(haproxyEntry.port), '--rate', String(rate), '--duration', String(sizes.rateSeconds), '--connections', '64', '--size', '1024']);
          const hopCpu = hopCpuPerRequest(meter.stop().hop, rate, sizes.rateSeconds);
          rateSteps.push({ rate, path: 'haproxy', result, ...(hopCpu !== undefined ? { hopCpuUsPerRequest: hopCpu } : {}) });
          context.log(`${LABELS.haproxy} at ${rate}/s (try ${attempt}): achieved ${formatNumber(result.requestsPerSecond)}/s, p50 ${formatNumber(result.p50)} µs, p99 ${formatNumber(result.p99)} µs, failed ${result.failed}, haproxy CPU ${formatNumber(hopCpu)} µs per request`);
          if (sustains(rate, result)) continue haproxyClimb;
        } catch (error) {
          rateSteps.push({ rate, path: 'haproxy', error: (error as Error).message.split('\n')[0] });
        }
      }
      break;
    }
    if (!TABLES_ONLY && !RATES_ONLY) {
      try {
        split = await load(topology.client, '90/10 split', ['--host', VIPS.split, '--port', '80', '--count', String(sizes.splitRequests), '--connections', '16', '--size', '1024', '--warmup', '0']);
        context.log(`split: ${JSON.stringify(split.backends)}`);
      } catch (error) {
        errors.push(`split: ${(error as Error).message.split('\n')[0]}`);
      }
    }
    memory.afterRun = await waypointMemory(topology.waypoint, topology.waypointPid);
    context.log(`waypoint memory after the run: ${formatMemory(memory.afterRun)}`);
    // Runs of the tables alone skip the wait: their "later" row reads "?" rather than a figure taken at once.
    if (!TABLES_ONLY && !RATES_ONLY && !SPLIT_ONLY) {
      await new Promise((resolve) => setTimeout(resolve, MEMORY_SETTLE_MS));
      memory.later = await waypointMemory(topology.waypoint, topology.waypointPid);
      context.log(`waypoint memory ${MEMORY_SETTLE_MS / 1000} s later: ${formatMemory(memory.later)}`);
    }
    if (context.profileDir) await stopForProfile(context, topology.waypointPid);
  } finally {
    await context.processes.stopAll();
    await mesh?.destroy();
  }
  return buildResult(sizes, runs, rateSteps, loopbackReference, split, memory, errors, policyChecks);
}

/** 'NAME=value NAME=value' as an environment object. */
function envPairs(text: string | undefined): Record<string, string> {
  return Object.fromEntries((text ?? '').split(/\s+/).filter((pair) => pair.includes('=')).map((pair) => [pair.slice(0, pair.indexOf('=')), pair.slice(pair.indexOf('=') + 1)]));
}

/** Minor page faults a process took so far (/proc/PID/stat field 10); NaN when it is gone. */
function minorFaults(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[7]);
  } catch {
    return Number.NaN;
  }
}

/** A node agent's heap release counters (its admin /memory, agent/admin.ts); undefined when unreadable. */
async function agentHeapRelease(mesh: LocalMesh, nodeIndex: number): Promise<{ releases: number; lastGcMs: number; nativeReleases: number; executableKibDropped: number } | undefined> {
  const script = "fetch('http://127.0.0.1:15000/memory').then((r) => r.json()).then((d) => console.log(JSON.stringify(d.heapRelease ?? null)))";
  const read = await mesh.cluster.node(nodeIndex).exec(process.execPath, ['-e', script]);
  try {
    return (JSON.parse(read.stdout) as { releases: number; lastGcMs: number; nativeReleases: number; executableKibDropped: number } | null) ?? undefined;
  } catch {
    return undefined;
  }
}

/** The waypoint's resident memory (/proc) and V8 heap (its config_dump) at one moment. */
interface WaypointMemory {
  rss: number;
  anon: number;
  file: number;
  /** V8 heap committed and used, bytes (undefined when the config_dump could not be read). */
  heapTotal?: number;
  heapUsed?: number;
  /** Memory-reducing GCs the waypoint ran so far (shared/memory/heap-release.ts). */
  heapReleases?: number;
  /** Milliseconds the last of them took (the loop stopped as long). */
  lastGcMs?: number;
  /** Native releases (malloc_trim, the binary's pages) so far, and the binary's KiB the last one dropped. */
  nativeReleases?: number;
  executableKibDropped?: number;
}

interface WaypointMemoryReadings {
  start?: WaypointMemory | undefined;
  afterRun?: WaypointMemory | undefined;
  later?: WaypointMemory | undefined;
}

export async function waypointMemory(waypoint: LocalWaypoint, pid: number): Promise<WaypointMemory | undefined> {
  const resident = processResidentMemory(pid);
  if (!resident) return undefined;
  const read = await waypoint.pod.exec(process.execPath, ['-e', "fetch('http://127.0.0.1:15000/config_dump').then((r) => r.json()).then((d) => console.log(JSON.stringify(d.memory ?? {})))"]);
  try {
    const heap = JSON.parse(read.stdout) as { heapTotal?: number; heapUsed?: number; heapReleases?: number; lastGcMs?: number; nativeReleases?: number; executableKibDropped?: number };
    return { ...resident, ...(heap.heapTotal !== undefined ? { heapTotal: heap.heapTotal, heapUsed: heap.heapUsed, heapReleases: heap.heapReleases, lastGcMs: heap.lastGcMs, nativeReleases: heap.nativeReleases, executableKibDropped: heap.executableKibDropped } : {}) };
  } catch {
    return resident;
  }
}

export function formatMemory(memory: WaypointMemory | undefined): string {
  if (!memory) return 'not read (the waypoint is gone)';
  const mb = (bytes: number | undefined) => formatNumber(bytes === undefined ? undefined : bytes / 1024 / 1024);
  const heap = memory.heapTotal !== undefined ? `; V8 heap ${mb(memory.heapUsed)} of ${mb(memory.heapTotal)} MB used, ${memory.heapReleases} heap releases${memory.nativeReleases !== undefined ? `, ${memory.nativeReleases} native releases (last dropped ${mb((memory.executableKibDropped ?? 0) * 1024)} MB of the binary)` : ''}` : '';
  return `RSS ${mb(memory.rss)} MB (anonymous ${mb(memory.anon)}, file ${mb(memory.file)})${heap}`;
}

/** Ends the waypoint with SIGTERM (it drains and exits, writing its --cpu-prof profile) and names the profile. */
async function stopForProfile(context: SuiteContext, pid: number): Promise<void> {
  process.kill(pid, 'SIGTERM');
  // It drains (up to 5 s) and then writes its profile, tens of MB of JSON: slow on a busy machine.
  const deadline = Date.now() + 60_000;
  while (existsSync(`/proc/${pid}`) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
  const written = readdirSync(context.profileDir!).find((file) => new RegExp(`^CPU\\.\\d+\\.\\d+\\.${pid}\\.`).test(file));
  if (written) await rename(join(context.profileDir!, written), join(context.profileDir!, 'waypoint.cpuprofile'));
  else context.log(`the waypoint (pid ${pid}) wrote no CPU profile`);
}

/** A rate step held: p99 under the limit, nothing failed, the offered rate achieved (within 5 %). */
function sustains(rate: number, result: LoadResult): boolean {
  return result.p99 < P99_LIMIT_US && result.failed === 0 && result.requestsPerSecond >= rate * 0.95;
}

async function writeAtomically(file: string, text: string): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(`${file}.tmp`, text);
  await rename(`${file}.tmp`, file);
}

/** A Service on port 80 (named http: HTTP/1.1 at the waypoint), or on GRPC_PORT (named grpc: gRPC at the waypoint). */
function service(name: string, vip: string, selector: Record<string, string>, labels: Record<string, string> = {}, kind: 'http' | 'grpc' = 'http'): string {
  const ports = kind === 'http' ? [{ name: 'http', port: 80, targetPort: APP_PORT }] : [{ name: 'grpc', port: GRPC_PORT, targetPort: GRPC_PORT }];
  return stringify({ apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: 'bench-mesh', labels }, spec: { clusterIP: vip, selector, ports } });
}

/** The waypoint's node process: the one whose environment names this run's root file and the waypoint's pod. */
function findWaypointPid(mesh: LocalMesh, podName: string): number {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (!readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes('waypoint/main.ts')) continue;
      const environ = readFileSync(`/proc/${entry}/environ`, 'utf8').split('\0');
      if (environ.includes(`AMBIT_POD_NAME=${podName}`) && environ.some((variable) => variable.startsWith('AMBIT_ROOT_CERT_FILE=') && variable.includes(mesh.caDir)) && readFileSync(`/proc/${entry}/comm`, 'utf8').trim() !== 'ip') return Number(entry);
    } catch {
      // gone meanwhile, or not ours to read
    }
  }
  throw new Error(`the waypoint process of pod ${podName} was not found`);
}

async function startInPod(processes: ProcessGroup, name: string, pod: Pod, port: number, command: string[]): Promise<number> {
  const wrapped = inPod(pod, 'ready-on-listen.ts', ['--port', String(port), '--', '/usr/bin/setpriv', '--pdeathsig', 'KILL', ...command]);
  const started = await processes.start(name, wrapped.command, wrapped.args);
  return Number(started.ready.pid);
}

function stunnelConfig(runDir: string, name: string, certs: BenchCertificates, side: { client: boolean; accept: string; connect: string }): string {
  const identity = side.client ? certs.client : certs.server;
  const file = join(runDir, `waypoint-${name}.conf`);
  writeFileSync(file, [
    'foreground = yes', 'pid =', 'debug = 4', 'syslog = no', '', '[bench]', ...(side.client ? ['client = yes'] : ['requireCert = yes']),
    `accept = ${side.accept}`, `connect = ${side.connect}`, `cert = ${identity.certPem}`, `key = ${identity.keyPem}`,
    'sslVersionMin = TLSv1.3', 'sslVersionMax = TLSv1.3', 'verifyChain = yes', 'libwrap = no', 'socket = l:TCP_NODELAY=1', 'socket = r:TCP_NODELAY=1', `CAfile = ${certs.caPem}`, '',
  ].join('\n'));
  return file;
}

export async function buildTopology(context: SuiteContext, mesh: LocalMesh): Promise<Topology> {
  const { cluster } = mesh;
  const client = await cluster.createPod({ node: 0, namespace: 'bench-mesh', name: 'client', serviceAccount: 'bench-client', namespaceLabels: ENROLLED });
  const servers = [
    await cluster.createPod({ node: 1, namespace: 'bench-mesh', name: 'server-v1', serviceAccount: 'bench-server', labels: { app: 'bench-http', version: 'v1' } }),
    await cluster.createPod({ node: 1, namespace: 'bench-mesh', name: 'server-v2', serviceAccount: 'bench-server', labels: { app: 'bench-http', version: 'v2' } }),
  ];
  const plainClient = await cluster.createPod({ node: 0, namespace: 'bench-plain', name: 'plain-client', serviceAccount: 'bench-client' });
  const haproxyPod = await cluster.createPod({ node: 1, namespace: 'bench-plain', name: 'haproxy', serviceAccount: 'bench-proxy' });
  const plainServer = await cluster.createPod({ node: 1, namespace: 'bench-plain', name: 'plain-server', serviceAccount: 'bench-server' });
  for (const pod of [client, plainClient]) await pod.exec('sysctl', ['-qw', 'net.ipv4.ip_local_port_range=10000 65000']);
  for (const [pod, name] of [[servers[0]!, 'v1'], [servers[1]!, 'v2'], [plainServer, 'plain']] as const) {
    const command = inPod(pod, 'http-target.ts', ['--port', String(APP_PORT), '--name', name]);
    await context.processes.start(`http target ${name}`, command.command, command.args);
    const grpc = inPod(pod, 'grpc-target.ts', ['--port', String(GRPC_PORT), '--name', name]);
    await context.processes.start(`gRPC target ${name}`, grpc.command, grpc.args);
  }
  // At info (its ready line is an info line); the HTTP path logs nothing per request.
  // --profile: the waypoint runs with --cpu-prof (its profile is written when it exits on SIGTERM, stopForProfile()).
  // AMBIT_BENCH_WAYPOINT_NODE_OPTIONS: Node/V8 flags for the waypoint alone, for A/B runs of flags.
  // The waypoint's own flags first (waypoint/config.ts), so a flag given here overrides them (the last one wins).
  const nodeOptions = [WAYPOINT_NODE_OPTIONS, process.env.AMBIT_BENCH_WAYPOINT_NODE_OPTIONS ?? '', context.profileDir ? `--cpu-prof --cpu-prof-dir=${context.profileDir}` : ''].join(' ').trim();
  // AMBIT_BENCH_WAYPOINT_ENV ('NAME=value NAME=value'): more environment for the waypoint alone (e.g. glibc's malloc tunables).
  const extraEnv = envPairs(process.env.AMBIT_BENCH_WAYPOINT_ENV);
  // AMBIT_BENCH_WAYPOINT_READY_MS: longer than the runtime's 30 s for the waypoint to be ready (under valgrind).
  const readyTimeoutMs = Number(process.env.AMBIT_BENCH_WAYPOINT_READY_MS) || undefined;
  const waypoint = await createWaypoint(mesh, { node: 1, namespace: 'bench-mesh', name: 'waypoint', env: { ...extraEnv, ...(nodeOptions ? { NODE_OPTIONS: nodeOptions } : {}) }, ...(readyTimeoutMs ? { readyTimeoutMs } : {}) });
  const dir = join(cluster.clusterDir, 'bench-waypoint');
  await writeAtomically(join(dir, 'direct.yaml'), service('direct', VIPS.direct, { app: 'bench-http', version: 'v1' }));
  await writeAtomically(join(dir, 'via.yaml'), service('via', VIPS.via, { app: 'bench-http', version: 'v1' }, { 'istio.io/use-waypoint': 'waypoint' }));
  await writeAtomically(join(dir, 'v1.yaml'), service('v1', VIPS.v1, { app: 'bench-http', version: 'v1' }));
  await writeAtomically(join(dir, 'v2.yaml'), service('v2', VIPS.v2, { app: 'bench-http', version: 'v2' }));
  await writeAtomically(join(dir, 'split.yaml'), service('split', VIPS.split, { app: 'bench-http' }, { 'istio.io/use-waypoint': 'waypoint' }));
  await writeAtomically(join(dir, 'direct-grpc.yaml'), service('direct-grpc', VIPS.directGrpc, { app: 'bench-http', version: 'v1' }, {}, 'grpc'));
  await writeAtomically(join(dir, 'via-grpc.yaml'), service('via-grpc', VIPS.viaGrpc, { app: 'bench-http', version: 'v1' }, { 'istio.io/use-waypoint': 'waypoint' }, 'grpc'));
  await writeAtomically(join(dir, 'policy.yaml'), service('policy', VIPS.policy, { app: 'bench-http', version: 'v1' }, { 'istio.io/use-waypoint': 'waypoint' }));
  const policyRequest = await writePolicies(join(dir, 'policies.yaml'));
  await writeAtomically(
    join(dir, 'split-route.yaml'),
    stringify({
      apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name: 'split', namespace: 'bench-mesh' },
      spec: { parentRefs: [{ group: '', kind: 'Service', name: 'split', port: 80 }], rules: [{ backendRefs: [{ name: 'v1', port: 80, weight: 90 }, { name: 'v2', port: 80, weight: 10 }] }] },
    }),
  );
  // Ready when the client's agent sends `via` to the waypoint and the waypoint knows the split route and its backends.
  const script = (what: string) => `fetch('http://127.0.0.1:15000/config_dump').then((r) => r.json()).then((d) => process.exit((${what}) ? 0 : 1), () => process.exit(1))`;
  const agentReady = script("['via', 'via-grpc', 'policy'].every((n) => d.services.some((s) => s.name === n && s.waypoint)) && ['direct', 'direct-grpc'].every((n) => d.services.some((s) => s.name === n && s.endpoints.length === 1))");
  // ... and holds all the policies that target `policy` and its RequestAuthentication.
  const policiesHeld = `d.policies.authorizationPolicies.filter((p) => p.namespace === 'bench-mesh' && p.targets.some((t) => t.kind === 'Service' && t.name === 'policy')).length === ${POLICY_COUNT} && d.policies.requestAuthentications.filter((r) => r.namespace === 'bench-mesh').length === 1`;
  const waypointReady = script(`JSON.stringify(d.routes).includes('v2.bench-mesh') && ['v1', 'v2', 'via', 'via-grpc', 'policy'].every((n) => d.services.some((s) => s.name === n && s.endpoints.length === 1)) && ${policiesHeld}`);
  const deadline = Date.now() + 120_000;
  while ((await cluster.node(0).exec(process.execPath, ['-e', agentReady])).code !== 0 || (await waypoint.pod.exec(process.execPath, ['-e', waypointReady])).code !== 0) {
    if (Date.now() > deadline) throw new Error(`the client's agent and the waypoint did not learn the services, route and ${POLICY_COUNT} policies in 120 s`);
    await new Promise((resolve) => setTimeout(resolve, 300));
  }
  // The anchors: stunnel pair, and stunnel -> haproxy (mTLS in, mTLS out) -> stunnel server.
  const { certs, runDir, processes } = context;
  const haproxyPem = join(runDir, 'haproxy-server.pem');
  writeFileSync(haproxyPem, readFileSync(certs.server.certPem, 'utf8') + readFileSync(certs.server.keyPem, 'utf8'), { mode: 0o600 });
  const haproxyClientPem = join(runDir, 'haproxy-client.pem');
  writeFileSync(haproxyClientPem, readFileSync(certs.client.certPem, 'utf8') + readFileSync(certs.client.keyPem, 'utf8'), { mode: 0o600 });
  const haproxyConfig = join(runDir, 'haproxy.cfg');
  writeFileSync(haproxyConfig, [
    'global', '  nbthread 1', '  maxconn 4096', '  ssl-default-bind-options ssl-min-ver TLSv1.3', '  ssl-default-server-options ssl-min-ver TLSv1.3',
    'defaults', '  mode http', '  timeout connect 5s', '  timeout client 60s', '  timeout server 60s', '  http-reuse always',
    'frontend bench', `  bind ${haproxyPod.ip}:${HAPROXY_PORT} ssl crt ${haproxyPem} ca-file ${certs.caPem} verify required`, '  default_backend servers',
    'backend servers', `  server plain ${plainServer.ip}:${STUNNEL_SERVER_PORT} ssl crt ${haproxyClientPem} ca-file ${certs.caPem} verify required`,
    // gRPC: HTTP/2 on both TLS legs (`proto h2`: the stunnel legs negotiate no ALPN).
    'frontend grpc', `  bind ${haproxyPod.ip}:${HAPROXY_GRPC_PORT} ssl crt ${haproxyPem} ca-file ${certs.caPem} verify required proto h2`, '  default_backend grpc_servers',
    'backend grpc_servers', `  server plain ${plainServer.ip}:${STUNNEL_GRPC_SERVER_PORT} ssl crt ${haproxyClientPem} ca-file ${certs.caPem} verify required proto h2`, '',
  ].join('\n'));
  await startInPod(processes, 'stunnel server', plainServer, STUNNEL_SERVER_PORT, [STUNNEL_BINARY, stunnelConfig(runDir, 'server', certs, { client: false, accept: `${plainServer.ip}:${STUNNEL_SERVER_PORT}`, connect: `127.0.0.1:${APP_PORT}` })]);
  await startInPod(processes, 'stunnel server (gRPC)', plainServer, STUNNEL_GRPC_SERVER_PORT, [STUNNEL_BINARY, stunnelConfig(runDir, 'server-grpc', certs, { client: false, accept: `${plainServer.ip}:${STUNNEL_GRPC_SERVER_PORT}`, connect: `127.0.0.1:${GRPC_PORT}` })]);
  const haproxyPid = await startInPod(processes, 'haproxy', haproxyPod, HAPROXY_PORT, ['/usr/sbin/haproxy', '-db', '-f', haproxyConfig]);
  await startInPod(processes, 'stunnel client', plainClient, STUNNEL_CLIENT_PORT, [STUNNEL_BINARY, stunnelConfig(runDir, 'client', certs, { client: true, accept: `127.0.0.1:${STUNNEL_CLIENT_PORT}`, connect: `${plainServer.ip}:${STUNNEL_SERVER_PORT}` })]);
  await startInPod(processes, 'stunnel client to haproxy', plainClient, STUNNEL_TO_HAPROXY_PORT, [STUNNEL_BINARY, stunnelConfig(runDir, 'client-haproxy', certs, { client: true, accept: `127.0.0.1:${STUNNEL_TO_HAPROXY_PORT}`, connect: `${haproxyPod.ip}:${HAPROXY_PORT}` })]);
  await startInPod(processes, 'stunnel client (gRPC)', plainClient, STUNNEL_GRPC_CLIENT_PORT, [STUNNEL_BINARY, stunnelConfig(runDir, 'client-grpc', certs, { client: true, accept: `127.0.0.1:${STUNNEL_GRPC_CLIENT_PORT}`, connect: `${plainServer.ip}:${STUNNEL_GRPC_SERVER_PORT}` })]);
  await startInPod(processes, 'stunnel client to haproxy (gRPC)', plainClient, STUNNEL_GRPC_TO_HAPROXY_PORT, [STUNNEL_BINARY, stunnelConfig(runDir, 'client-haproxy-grpc', certs, { client: true, accept: `127.0.0.1:${STUNNEL_GRPC_TO_HAPROXY_PORT}`, connect: `${haproxyPod.ip}:${HAPROXY_GRPC_PORT}` })]);
  return { mesh, waypoint, waypointPid: findWaypointPid(mesh, waypoint.pod.name), client, plainClient, haproxyPod, plainServer, haproxyPid, agentPids: [agentPid(mesh, 0), agentPid(mesh, 1)], policyRequest };
}

/**
 * Writes the l7policy suite's POLICY_COUNT AuthorizationPolicies and its RequestAuthentication, targeting Service
 * `policy`, as one manifest file, and picks the bench's request: the last ALLOW policy of the mix that admits a
 * request principal of the issuer on `/groups/N*` when the JWT's `groups` claim is `group-M` (it matches no DENY
 * policy: those need an x-debug header), so every request is allowed after the token is verified and the claim read.
 */
async function writePolicies(file: string): Promise<Topology['policyRequest']> {
  const manifests = await l7PolicyManifests(POLICY_COUNT, { namespace: 'bench-mesh', service: 'policy' });
  const byGroup = manifests.authorizationPolicies.filter((policy) => policy.spec?.action === 'ALLOW' && policy.spec.rules?.[0]?.when?.[0]?.key === 'request.auth.claims[groups]').at(-1);
  const rule = byGroup?.spec?.rules?.[0];
  const pathPrefix = rule?.to?.[0]?.operation?.paths?.[0];
  const group = rule?.when?.[0]?.values?.[0];
  if (!byGroup || !pathPrefix?.endsWith('*') || !group?.startsWith('group-')) throw new Error('the policy mix has no ALLOW policy on a groups claim');
  const token = await manifests.sign(Number(group.slice('group-'.length)));
  await writeAtomically(file, [...manifests.authorizationPolicies, manifests.requestAuthentication].map((object) => stringify(object)).join('---\n'));
  return { path: `${pathPrefix.slice(0, -1)}/bench`, authorization: `Bearer ${token}`, policy: `bench-mesh/${byGroup.metadata.name}` };
}

/** One protocol's figures: its table and its CPU and latency goals. */
function protocolResult(protocol: Protocol, sizes: Sizes, runs: Record<PathName, PathRun[]>, errors: string[], policyChecks: string[]): { table: Table; goals: Goal[] } {
  const med = (name: PathName, pick: (run: PathRun) => number | undefined): number | undefined => {
    const values = runs[name].map(pick).filter((value): value is number => value !== undefined);
    return values.length ? median(values) : undefined;
  };
  const cpuPerThousand = (name: PathName) => med(name, (entry) => (entry.hopCpu === undefined ? undefined : (entry.hopCpu * 1000 * 1000) / entry.requests));
  const waypointCpu = cpuPerThousand('waypoint');
  const haproxyCpu = cpuPerThousand('haproxy');
  const systemPerThousand = (name: PathName) => med(name, (entry) => (entry.hopSystemCpu === undefined ? undefined : (entry.hopSystemCpu * 1000 * 1000) / entry.requests));
  const waypointSystem = systemPerThousand('waypoint');
  const haproxySystem = systemPerThousand('haproxy');
  // Each round's difference between the hop's path and its base path measured in the same round, then the median of
  // those differences (as the mesh suite does): a median of differences, not a difference of medians taken from
  // different rounds, so one disturbed run of either path moves the figure less.
  const perRoundAdded = (hop: PathName, base: PathName, pick: (run: PathRun) => number): number[] =>
    runs[hop].flatMap((entry) => {
      const same = runs[base].find((other) => other.round === entry.round);
      return same === undefined ? [] : [pick(entry) - pick(same)];
    });
  const added = (hop: PathName, base: PathName, pick: (run: PathRun) => number) => {
    const values = perRoundAdded(hop, base, pick);
    return values.length ? median(values) : undefined;
  };
  const perRoundCpuRatios = runs.waypoint.map((entry) => {
    const same = runs.haproxy.find((other) => other.round === entry.round);
    return entry.hopCpu && same?.hopCpu ? formatRatio(entry.hopCpu / entry.requests / (same.hopCpu / same.requests)) : '?';
  });
  const waypointAdds = added('waypoint', 'mesh', (entry) => entry.p50);
  const haproxyAdds = added('haproxy', 'stunnel', (entry) => entry.p50);
  const ratio = (a: number | undefined, b: number | undefined) => (a === undefined || b === undefined || b <= 0 ? undefined : a / b);
  const cpuRatio = ratio(waypointCpu, haproxyCpu);
  const latencyRatio = ratio(waypointAdds, haproxyAdds);
  const label = PROTOCOL_LABELS[protocol];
  const goals: Goal[] = [
    { name: `${label}: waypoint CPU per 1,000 requests ÷ haproxy's`, value: cpuRatio, target: `≤ ${CPU_AT_MOST}x`, met: cpuRatio === undefined ? undefined : cpuRatio <= CPU_AT_MOST },
    { name: `${label}: p50 latency the waypoint adds ÷ what haproxy adds`, value: latencyRatio, target: `≤ ${LATENCY_AT_MOST}x`, met: latencyRatio === undefined ? undefined : latencyRatio <= LATENCY_AT_MOST },
  ];
  if (protocol === 'http1') goals.push(policyGoal(runs, cpuPerThousand('waypoint'), cpuPerThousand('policy'), errors));
  const rows = PATHS[protocol].map((name) => [
    LABELS[name],
    formatNumber(med(name, (entry) => entry.requestsPerSecond)),
    formatNumber(med(name, (entry) => entry.p50)),
    formatNumber(med(name, (entry) => entry.p99)),
    String(runs[name].reduce((sum, entry) => sum + entry.failed, 0)),
    name === 'waypoint' || name === 'policy' ? formatNumber(cpuPerThousand(name)) : name === 'haproxy' ? formatNumber(haproxyCpu) : '',
  ]);
  const shape = protocol === 'http1' ? '1 KiB POST -> 1 KiB, 1,000 requests/s over 16 keep-alive connections' : '1 KiB unary call -> 1 KiB, 1,000 calls/s over 4 HTTP/2 connections (haproxy in h2 mode)';
  const title = `${label}, ${shape}, ${sizes.seconds} s × ${sizes.rounds} round(s), medians`;
  return {
    table: {
      title,
      columns: ['path', 'achieved/s', 'p50 (µs)', 'p99 (µs)', 'failed', 'L7 hop CPU per 1,000 requests (ms)'],
      rows,
      notes: [
        `latency added (p50, median of each round's difference to its base path in the same round): waypoint ${formatNumber(waypointAdds)} µs over the L4 mesh (rounds: ${perRoundAdded('waypoint', 'mesh', (entry) => entry.p50).map(formatNumber).join(', ')}); haproxy ${formatNumber(haproxyAdds)} µs over the stunnel pair (rounds: ${perRoundAdded('haproxy', 'stunnel', (entry) => entry.p50).map(formatNumber).join(', ')}); ratio ${formatRatio(latencyRatio)} ${goalMark(goals[1]!)}`,
        `CPU per 1,000 requests: waypoint ${formatNumber(waypointCpu)} ms, haproxy ${formatNumber(haproxyCpu)} ms; ratio ${formatRatio(cpuRatio)} ${goalMark(goals[0]!)} (per round: ${perRoundCpuRatios.join(', ')})`,
        `of it in the kernel (system time): waypoint ${formatNumber(waypointSystem)} ms, haproxy ${formatNumber(haproxySystem)} ms; user space: waypoint ${formatNumber(difference(waypointCpu, waypointSystem))} ms, haproxy ${formatNumber(difference(haproxyCpu, haproxySystem))} ms`,
        ...(protocol === 'http1' ? [policyNote(runs, goals[2]!), ...policyChecks] : []),
        ...errors.filter((error) => error.startsWith(`${label} `)),
      ],
    },
    goals,
  };
}

/**
 * Issue 13's goal: the waypoint's CPU per request to the Service with the policies ÷ to the one without (ratio of the
 * medians over the interleaved rounds). Only when every request of the policy runs was answered 200 (a refused
 * request costs the waypoint less than a proxied one), and the policy check before measuring held.
 */
function policyGoal(runs: Record<PathName, PathRun[]>, without: number | undefined, withPolicies: number | undefined, errors: string[]): Goal {
  const refused = runs.policy.reduce((sum, entry) => sum + entry.failed, 0);
  const checkFailed = errors.some((error) => error.startsWith('HTTP/1.1 policy check'));
  const ratio = without === undefined || withPolicies === undefined || without <= 0 ? undefined : withPolicies / without;
  const valid = refused === 0 && !checkFailed && runs.policy.length > 0;
  const caveat = refused > 0 ? ` (NOT comparable: ${refused} requests not answered 200)` : checkFailed ? ' (NOT comparable: the policy check before measuring failed)' : '';
  return {
    name: `HTTP/1.1: CPU per request with ${POLICY_COUNT.toLocaleString('en-US')} L7 policies + JWT ÷ without (same waypoint)${caveat}`,
    value: valid ? ratio : undefined,
    target: `≤ ${POLICY_CPU_AT_MOST}x`,
    met: valid && ratio !== undefined ? ratio <= POLICY_CPU_AT_MOST : undefined,
  };
}

function policyNote(runs: Record<PathName, PathRun[]>, goal: Goal): string {
  const perRound = runs.policy.map((entry) => {
    const plain = runs.waypoint.find((other) => other.round === entry.round);
    return plain?.hopCpu && entry.hopCpu ? formatRatio(entry.hopCpu / entry.requests / (plain.hopCpu / plain.requests)) : '?';
  });
  const answered = runs.policy.reduce((sum, entry) => sum + entry.requests - entry.failed, 0);
  const sent = runs.policy.reduce((sum, entry) => sum + entry.requests, 0);
  return `${POLICY_COUNT.toLocaleString('en-US')} L7 policies + JWT: ${answered} of ${sent} measured requests answered 200; waypoint CPU per request ÷ without, per round: ${perRound.join(', ')}; medians ${goalMark(goal)}`;
}

function buildResult(sizes: Sizes, runs: Record<Protocol, Record<PathName, PathRun[]>>, rateSteps: RateStep[], loopbackReference: RateStep[], split: LoadResult | undefined, memory: WaypointMemoryReadings, errors: string[], policyChecks: string[]): SuiteResult {
  const perProtocol = PROTOCOLS.map((protocol) => protocolResult(protocol, sizes, runs[protocol], errors, policyChecks));
  const rssBytes = memory.afterRun?.rss;
  const rssMb = rssBytes === undefined ? undefined : rssBytes / 1024 / 1024;
  const laterMb = memory.later === undefined ? undefined : memory.later.rss / 1024 / 1024;
  // Each rate's best try: a step holds when one of its (at most two) tries held.
  const sustained = rateSteps.filter((step) => step.path === undefined && step.result && sustains(step.rate, step.result)).map((step) => step.rate);
  const haproxySustained = rateSteps.filter((step) => step.path === 'haproxy' && step.result && sustains(step.rate, step.result)).map((step) => step.rate);
  const haproxyClimbed = rateSteps.some((step) => step.path === 'haproxy') && !RATES_ONLY;
  const total = split ? Object.values(split.backends).reduce((sum, count) => sum + count, 0) : 0;
  const v2Share = split && total > 0 ? ((split.backends.v2 ?? 0) / total) * 100 : undefined;
  const splitOff = v2Share === undefined ? undefined : Math.abs(v2Share - 10);
  const rssGoal: Goal = { name: `waypoint RSS after the run ÷ ${RSS_AT_MOST_MB} MB`, value: rssMb === undefined ? undefined : rssMb / RSS_AT_MOST_MB, target: '≤ 1x', met: rssMb === undefined ? undefined : rssMb <= RSS_AT_MOST_MB };
  const splitGoal: Goal = { name: `90/10 split: |v2 share − 10 %| ÷ ${SPLIT_WITHIN_POINTS} point`, value: splitOff === undefined ? undefined : splitOff / SPLIT_WITHIN_POINTS, target: '≤ 1x', met: splitOff === undefined ? undefined : splitOff <= SPLIT_WITHIN_POINTS };
  const rssLaterGoal: Goal = { name: `waypoint RSS ${MEMORY_SETTLE_MS / 1000} s after the run ÷ ${RSS_AT_MOST_MB} MB`, value: laterMb === undefined ? undefined : laterMb / RSS_AT_MOST_MB, target: '≤ 1x', met: laterMb === undefined ? undefined : laterMb <= RSS_AT_MOST_MB };
  const goals: Goal[] = [...perProtocol.flatMap((entry) => entry.goals), rssGoal, rssLaterGoal, splitGoal];
  const tables: Table[] = perProtocol.map((entry) => entry.table);
  tables[0]!.notes.push(`waypoint RSS after the run (both protocols, the rate steps and the split): ${formatNumber(rssMb)} MB ${goalMark(rssGoal)}`);
  tables[0]!.notes.push(`waypoint RSS ${MEMORY_SETTLE_MS / 1000} s after the run: ${formatNumber(laterMb)} MB ${goalMark(rssLaterGoal)}`);
  tables[0]!.notes.push(`waypoint memory: at start ${formatMemory(memory.start)}; after the run ${formatMemory(memory.afterRun)}; ${MEMORY_SETTLE_MS / 1000} s later ${formatMemory(memory.later)}`);
  const otherErrors = errors.filter((error) => !PROTOCOLS.some((protocol) => error.startsWith(`${PROTOCOL_LABELS[protocol]} `)));
  tables[0]!.notes.push(...otherErrors);
  return {
    suite: 'waypoint',
    tables: [
      ...tables,
      {
        title: 'One waypoint (one thread), HTTP/1.1, open loop over 64 connections: highest rate with p99 < 10 ms (then haproxy\'s climb, same rules)',
        columns: ['offered/s', 'path', 'achieved/s', 'p50 (µs)', 'p99 (µs)', 'failed', 'L7 hop CPU per request (µs)'],
        rows: rateSteps.map((step) => {
          const path = RATE_PATH_LABELS[step.path ?? 'waypoint'];
          return step.result ? [String(step.rate), path, formatNumber(step.result.requestsPerSecond), formatNumber(step.result.p50), formatNumber(step.result.p99), String(step.result.failed), formatNumber(step.hopCpuUsPerRequest)] : [String(step.rate), path, step.error ?? 'failed', '', '', '', ''];
        }),
        notes: [
          `highest rate sustained with p99 < 10 ms: ${sustained.length ? `${Math.max(...sustained)}/s` : 'none of the rates tried'} (steps: ${sizes.rates.join(', ')}, each ${sizes.rateSeconds} s, a step that breaks is tried once more; the load tool shares the 2 cores)`,
          ...(haproxyClimbed ? [`highest rate one haproxy thread (mutual TLS both legs, the stunnel pair around it) sustains by the same rules in the same run: ${haproxySustained.length ? `${Math.max(...haproxySustained)}/s` : 'none of the rates tried'}`] : []),
          ...(loopbackReference.length ? [`this machine's own round trip (loopback TCP between two Node processes, no mesh, measured before the climb): ${loopbackReference.map((step) => (step.result ? `at ${step.rate}/s p50 ${formatNumber(step.result.p50)} µs, p99 ${formatNumber(step.result.p99)} µs` : `at ${step.rate}/s ${step.error ?? 'failed'}`)).join('; ')}: two process wake-ups per round trip, where a request through the waypoint takes eight (agent, waypoint, agent, server and back to the client), the L4 mesh and haproxy paths six and eight`] : []),
        ],
      },
      {
        title: `90/10 HTTPRoute split over ${formatNumber(total)} requests`,
        columns: ['backend', 'requests', 'share (%)'],
        rows: Object.entries(split?.backends ?? {}).sort().map(([name, count]) => [name, String(count), formatNumber((count / total) * 100)]),
        notes: [`v2 share ${formatNumber(v2Share)} % (goal 10 ± ${SPLIT_WITHIN_POINTS}) ${goalMark(splitGoal)}`],
      },
    ],
    goals,
    data: { sizes, runs, rateSteps, loopbackReference, split, rssBytes, memory, errors, policyChecks, protocols: PROTOCOLS },
  };
}
