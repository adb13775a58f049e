/**
 * Benchmark: per-connection L4 authorization decision time with 10,000 AuthorizationPolicies in scope for one
 * destination workload (issue 5's goal: p99 at most 50 µs).
 *
 *   node bench/policy.ts [--quick]     runs alone and prints the table
 *   runPolicyBench({ quick })          what bench/run.ts imports; `policySuite` fits bench/lib/suite.ts
 *
 * The policies are a seeded, repeatable mix written as the YAML objects users write, then validated and
 * compiled by shared/policy exactly as the control plane does: ALLOW and DENY; exact principals, prefix ones
 * (`<td>/ns/<ns>/sa/` then `*`) and suffix ones (`*` then `/sa/<name>`); service accounts; namespaces exact and
 * prefixed; IPv4 blocks from /20 to /28; ports and notPorts; `when` on destination.port, source.ip and
 * destination.ip; 1% dry-run. The connections are a seeded mix of mTLS peers from the same namespaces and
 * service accounts (some matching, most not) and 10% plaintext. Each decision is timed alone with performance.now() after a warm-up; the figure includes parsing
 * the connection's addresses, and nothing else (no I/O).
 *
 * Owns: the policy mix, the timing loop and the table. Must not know about: other suites.
 */
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { compileAuthorizationPolicy } from '../shared/policy/compile.ts';
import type { AuthorizationPolicyObject, RuleSpec } from '../shared/policy/crd-schema.ts';
import { AuthorizationIndex, type Connection } from '../shared/policy/evaluate.ts';
import type { Authorization } from '../shared/policy/model.ts';
import { validatePolicy } from '../shared/policy/validate.ts';
import type { Suite, SuiteResult } from './lib/suite.ts';
import { summarizeLatencies, type LatencySummary } from './lib/stats.ts';

/** The goal from issue 5. */
export const POLICY_P99_GOAL_MICROSECONDS = 50;

export interface PolicyBenchRow {
  /** What was measured, e.g. "10,000 policies, mixed". */
  scenario: string;
  policies: number;
  decisions: number;
  /** Microseconds per decision. */
  p50: number;
  p99: number;
  max: number;
  mean: number;
  /** CPU time of the timed loop per decision, in µs (less sensitive than wall time to other load on the box). */
  cpuMean: number;
  /** Share of decisions that allowed the connection (shows the mix exercises both outcomes). */
  allowedShare: number;
  /** Groups the index could not file under a key, checked on every decision. */
  unindexedGroups: number;
  /** Milliseconds to validate and compile the YAML objects, and to build the index. */
  compileMs: number;
  indexMs: number;
  /** p99 ÷ 50 µs: at most 1.0 meets the goal. */
  p99OverGoal: number;
  met: boolean;
}

export interface PolicyBenchResult {
  rows: PolicyBenchRow[];
  /** 1-minute load average and core count when the run started: other work on the box inflates wall times. */
  loadAverage: number;
  cpus: number;
}

/** Mulberry32: small, fast, seeded, so every run uses the same policies and connections. */
function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const NAMESPACES = 200;
const SERVICE_ACCOUNTS = 50;
const PORTS = [80, 443, 8080, 8443, 9090, 3306, 5432, 6379, 9000, 15010, 2379, 27017, 5672, 9200, 8000, 8081, 7000, 11211, 4222, 6443];
const DESTINATION_IP = '10.200.0.5';

function makePolicies(count: number, random: () => number): AuthorizationPolicyObject[] {
  const pick = <T>(list: readonly T[]): T => list[Math.floor(random() * list.length)]!;
  const int = (below: number): number => Math.floor(random() * below);
  const principal = (): string => `cluster.local/ns/ns-${int(NAMESPACES)}/sa/sa-${int(SERVICE_ACCOUNTS)}`;
  const ports = (): string[] => Array.from({ length: 1 + int(2) }, () => String(pick(PORTS)));
  const cidr = (): string => {
    const length = 20 + int(9);
    const address = (10 << 24) | (int(256) << 16) | (int(256) << 8) | int(256);
    const masked = (address & ((0xffffffff << (32 - length)) >>> 0)) >>> 0;
    return `${masked >>> 24}.${(masked >>> 16) & 255}.${(masked >>> 8) & 255}.${masked & 255}/${length}`;
  };
  const policies: AuthorizationPolicyObject[] = [];
  for (let index = 0; index < count; index++) {
    const roll = random();
    let action: 'ALLOW' | 'DENY' = 'ALLOW';
    let rule: RuleSpec;
    if (roll < 0.3) {
      rule = { from: [{ source: { principals: Array.from({ length: 1 + int(3) }, principal) } }], to: [{ operation: { ports: ports() } }] };
    } else if (roll < 0.45) {
      const wildcard = random() < 0.5 ? `cluster.local/ns/ns-${int(NAMESPACES)}/sa/*` : `*/sa/sa-${int(SERVICE_ACCOUNTS)}`;
      rule = { from: [{ source: { principals: [wildcard] } }], to: [{ operation: { ports: ports() } }] };
    } else if (roll < 0.6) {
      const namespace = random() < 0.7 ? `ns-${int(NAMESPACES)}` : `ns-${int(NAMESPACES)}-canary*`;
      rule = { from: [{ source: { namespaces: [namespace] } }], to: [{ operation: { notPorts: [String(pick(PORTS))] } }] };
    } else if (roll < 0.72) {
      rule = { from: [{ source: { serviceAccounts: [`ns-${int(NAMESPACES)}/sa-${int(SERVICE_ACCOUNTS)}`] } }] };
    } else if (roll < 0.87) {
      action = 'DENY';
      rule = { from: [{ source: { ipBlocks: [cidr(), cidr()] } }], to: [{ operation: { notPorts: ['15021'] } }] };
    } else if (roll < 0.97) {
      action = 'DENY';
      rule = { from: [{ source: { principals: [principal()] } }], when: [{ key: 'destination.port', values: [String(pick(PORTS))] }] };
    } else if (roll < 0.98) {
      // "only ns-X may reach port P": broad DENY on ports the connections here rarely use.
      action = 'DENY';
      rule = { from: [{ source: { notNamespaces: [`ns-${int(NAMESPACES)}`] } }], to: [{ operation: { ports: [String(20_000 + int(1000))] } }] };
    } else {
      rule = { when: [{ key: 'source.ip', values: [cidr()] }, { key: 'destination.ip', values: [`${DESTINATION_IP}/32`] }] };
    }
    policies.push({
      apiVersion: 'security.istio.io/v1',
      kind: 'AuthorizationPolicy',
      metadata: { name: `policy-${index}`, namespace: 'bench', ...(random() < 0.01 && { annotations: { 'istio.io/dry-run': 'true' } }) },
      spec: { action, selector: { matchLabels: { app: 'bench' } }, rules: [rule] },
    });
  }
  return policies;
}

function makeConnections(count: number, random: () => number): Connection[] {
  const int = (below: number): number => Math.floor(random() * below);
  return Array.from({ length: count }, () => {
    const sourceIp = `10.${int(256)}.${int(256)}.${int(256)}`;
    const destinationPort = PORTS[int(PORTS.length)]!;
    if (random() < 0.1) return { sourceIp, destinationIp: DESTINATION_IP, destinationPort };
    return { sourcePrincipal: `spiffe://cluster.local/ns/ns-${int(NAMESPACES)}/sa/sa-${int(SERVICE_ACCOUNTS)}`, sourceIp, destinationIp: DESTINATION_IP, destinationPort };
  });
}

export function compileAll(objects: readonly AuthorizationPolicyObject[]): Authorization[] {
  const out: Authorization[] = [];
  for (const object of objects) {
    const result = validatePolicy(object);
    if (!result.ok) throw result.error;
    if (result.kind !== 'AuthorizationPolicy') continue;
    const { authorization } = compileAuthorizationPolicy(result.object);
    if (authorization) out.push(authorization);
  }
  return out;
}

export interface PolicyBenchScenario {
  /** The AuthorizationPolicy objects, as users write them. */
  objects: AuthorizationPolicyObject[];
  connections: Connection[];
}

/** The seeded mix of policies and connections the benchmark times (also handy for profiling). */
export function policyBenchScenario(policyCount: number, connectionCount: number, seed: number): PolicyBenchScenario {
  const random = seededRandom(seed);
  const objects = makePolicies(policyCount, random);
  return { objects, connections: makeConnections(connectionCount, random) };
}

function measure(scenario: string, policyCount: number, decisions: number, seed: number): PolicyBenchRow {
  const { objects, connections } = policyBenchScenario(policyCount, Math.min(decisions, 20_000), seed);
  const compileStart = performance.now();
  const policies = compileAll(objects);
  const compileMs = performance.now() - compileStart;
  const indexStart = performance.now();
  const index = new AuthorizationIndex(policies);
  const indexMs = performance.now() - indexStart;

  // Warm-up: let the JIT settle on the hot path before timing.
  for (let round = 0; round < 2; round++) for (const connection of connections) index.evaluate(connection);

  const samples = new Float64Array(decisions);
  let allowed = 0;
  const cpuStart = process.cpuUsage();
  for (let index_ = 0; index_ < decisions; index_++) {
    const connection = connections[index_ % connections.length]!;
    const start = performance.now();
    const decision = index.evaluate(connection);
    samples[index_] = (performance.now() - start) * 1000;
    if (decision.allowed) allowed++;
  }
  const cpu = process.cpuUsage(cpuStart);
  const summary: LatencySummary = summarizeLatencies(samples);
  return {
    scenario,
    policies: policies.length,
    decisions,
    p50: summary.p50,
    p99: summary.p99,
    max: summary.max,
    mean: summary.mean,
    cpuMean: (cpu.user + cpu.system) / decisions,
    allowedShare: allowed / decisions,
    unindexedGroups: index.unindexedGroups,
    compileMs,
    indexMs,
    p99OverGoal: summary.p99 / POLICY_P99_GOAL_MICROSECONDS,
    met: summary.p99 <= POLICY_P99_GOAL_MICROSECONDS,
  };
}

/** Runs the policy benchmark: 10,000 policies (and 1,000 for scale), 100,000 decisions each (10,000 with quick). */
export async function runPolicyBench(options: { quick?: boolean } = {}): Promise<PolicyBenchResult> {
  const decisions = options.quick ? 10_000 : 100_000;
  const loadAverage = os.loadavg()[0]!;
  const rows = [measure('10,000 policies in scope, mixed', 10_000, decisions, 5), measure('1,000 policies in scope, mixed', 1_000, decisions, 7)];
  return { rows, loadAverage, cpus: os.availableParallelism() };
}

const format = (value: number): string => (value >= 100 ? value.toFixed(0) : value >= 10 ? value.toFixed(1) : value.toFixed(2));

function goalLine(row: PolicyBenchRow): string {
  return `${row.met ? '✓' : '✗'} ${row.scenario}: p99 ${format(row.p99)} µs against the goal of at most ${POLICY_P99_GOAL_MICROSECONDS} µs (${format(row.p99OverGoal)}x of the budget)`;
}

/** The suite in bench/lib/suite.ts's shape, for bench/suites/index.ts. */
export const policySuite: Suite = {
  name: 'policy',
  summary: 'L4 authorization decision time with 10,000 policies in scope (issue 5)',
  async run(context): Promise<SuiteResult> {
    context.log('policy: compiling 10,000 policies and timing decisions');
    const { rows, loadAverage, cpus } = await runPolicyBench({ quick: context.quick });
    return {
      suite: 'policy',
      tables: [
        {
          title: 'L4 authorization: time per connection decision (µs)',
          columns: ['policies in scope', 'decisions', 'p50 µs', 'p99 µs', 'max µs', 'CPU µs/decision', 'allowed', 'unindexed groups', 'compile ms', 'index ms'],
          rows: rows.map((row) => [
            row.scenario,
            String(row.decisions),
            format(row.p50),
            format(row.p99),
            format(row.max),
            format(row.cpuMean),
            `${Math.round(row.allowedShare * 100)}%`,
            String(row.unindexedGroups),
            format(row.compileMs),
            format(row.indexMs),
          ]),
          notes: [
            'One decision = shared/policy AuthorizationIndex.evaluate() on a new connection, timed alone after warm-up; in-process, no I/O.',
            `Load average ${loadAverage.toFixed(1)} on ${cpus} cores when the suite started: wall-clock percentiles grow with other load; CPU µs/decision less so.`,
            ...rows.map(goalLine),
          ],
        },
      ],
      goals: rows
        .filter((row) => row.policies >= 10_000)
        .map((row) => ({ name: `decision p99 ÷ ${POLICY_P99_GOAL_MICROSECONDS} µs, ${row.scenario}`, value: row.p99OverGoal, target: '≤ 1.0x', met: row.met })),
      data: rows,
    };
  },
};

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const quick = process.argv.includes('--quick');
  const { rows, loadAverage, cpus } = await runPolicyBench({ quick });
  process.stdout.write(`load average ${loadAverage.toFixed(1)} on ${cpus} cores\n`);
  process.stdout.write('| scenario | decisions | p50 µs | p99 µs | max µs | CPU µs/decision | allowed | unindexed groups | compile ms | index ms |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n');
  for (const row of rows) {
    process.stdout.write(
      `| ${row.scenario} | ${row.decisions} | ${format(row.p50)} | ${format(row.p99)} | ${format(row.max)} | ${format(row.cpuMean)} | ${Math.round(row.allowedShare * 100)}% | ${row.unindexedGroups} | ${format(row.compileMs)} | ${format(row.indexMs)} |\n`,
    );
  }
  for (const row of rows) process.stdout.write(`${goalLine(row)}\n`);
}
