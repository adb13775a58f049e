/**
 * Benchmark: the waypoint's L7 policy step (issue 13) with 1,000 AuthorizationPolicies attached to one Service and a
 * JWT on every request, against the same step with no policy.
 *   1. Decision time: RequestGate.check (JWT from the token cache, attributes, decision) timed alone per request,
 *      in-process, after warm-up; p50/p99 (goal: p99 <= 50 µs).
 *   2. JWT verification: one ES256 signature check (a token never seen) vs a cache hit (the same token again).
 *   3. CPU per request of a Node HTTP/1.1 server (bench/tools/l7-gate-server.ts) answering locally, with the gate
 *      vs without, under h2load --h1 (goal: <= 1.2x). The server does less per request than the waypoint (no TLS,
 *      HBONE or upstream request), so this ratio is an upper bound on the waypoint's.
 *
 * Owns: the timing loops and the tables. Must not know about: other suites.
 */
import { execFile } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { benchGate } from '../l7-gate.ts';
import { l7Scenario, type BenchRequest, type L7Scenario } from '../l7-scenario.ts';
import { summarizeLatencies } from '../lib/stats.ts';
import type { Suite, SuiteContext, SuiteResult } from '../lib/suite.ts';

const run = promisify(execFile);
export const L7_DECISION_P99_GOAL_US = 50;
export const L7_CPU_RATIO_GOAL = 1.2;
const SERVER = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'tools', 'l7-gate-server.ts');
const SERVICE = { namespace: 'shop', name: 'web' };

interface DecisionRow {
  scenario: string;
  requests: number;
  p50: number;
  p99: number;
  max: number;
  cpuMean: number;
  outcomes: string;
}

const noop = (): void => {};

async function measureDecisions(label: string, scenario: L7Scenario, withPolicies: boolean, count: number): Promise<DecisionRow> {
  const { gate } = benchGate(withPolicies ? scenario : undefined);
  const requests = scenario.requests;
  const response = { status: 0, writeHead(status: number) { this.status = status; return this; }, end: noop };
  const copies: BenchRequest['headers'][] = new Array(count);
  for (let index = 0; index < count; index++) copies[index] = { ...requests[index % requests.length]!.headers };
  // Warm-up: JIT, per-Service index, and the token cache (a steady client's tokens are cached).
  for (let round = 0; round < 3; round++) {
    for (const request of requests) await gate.check({ method: request.method, url: request.url, headers: { ...request.headers }, resume: noop }, response, request.hbone, SERVICE);
  }
  const samples = new Float64Array(count);
  const statuses = new Map<number, number>();
  const cpuStart = process.cpuUsage();
  for (let index = 0; index < count; index++) {
    const source = requests[index % requests.length]!;
    const request = { method: source.method, url: source.url, headers: copies[index]!, resume: noop };
    response.status = 200;
    const start = performance.now();
    await gate.check(request, response, source.hbone, SERVICE);
    samples[index] = (performance.now() - start) * 1000;
    statuses.set(response.status, (statuses.get(response.status) ?? 0) + 1);
  }
  const cpu = process.cpuUsage(cpuStart);
  const summary = summarizeLatencies(samples);
  const outcomes = [...statuses].sort(([a], [b]) => a - b).map(([status, n]) => `${status}: ${Math.round((n / count) * 100)}%`).join(', ');
  return { scenario: label, requests: count, p50: summary.p50, p99: summary.p99, max: summary.max, cpuMean: (cpu.user + cpu.system) / count, outcomes };
}

async function measureJwt(scenario: L7Scenario, count: number): Promise<{ uncachedUs: number; cachedUs: number }> {
  const { table } = benchGate(scenario);
  const authenticator = table.forService(SERVICE).authenticator;
  const tokens = await scenario.freshTokens(count);
  const headers = tokens.map((token) => ({ authorization: `Bearer ${token}` }));
  const again = tokens.map((token) => ({ authorization: `Bearer ${token}` }));
  let start = performance.now();
  for (const entry of headers) await authenticator.authenticate(entry, '/');
  const uncachedUs = ((performance.now() - start) * 1000) / count;
  start = performance.now();
  for (const entry of again) await authenticator.authenticate(entry, '/');
  const cachedUs = ((performance.now() - start) * 1000) / count;
  return { uncachedUs, cachedUs };
}

interface CpuRow {
  server: string;
  requests: number;
  cpuUsPerRequest: number;
  statuses: string;
}

/** h2load against one server: CPU seconds the server spent on `count` requests (after a warm-up), per request. */
async function serverCpu(port: number, label: string, load: { token: string; paths: string[] }, count: number): Promise<CpuRow> {
  const base = `http://127.0.0.1:${port}`;
  const cpu = async (): Promise<number> => ((await (await fetch(`${base}/__cpu`)).json()) as { cpuSeconds: number }).cpuSeconds;
  const uris = load.paths.map((entry) => `${base}${entry}`);
  const args = ['--h1', '-c', '4', '-t', '1', '-H', `authorization: ${load.token}`, '-H', 'x-tenant: t-3', ...uris];
  await run('h2load', ['-n', String(Math.min(2000, count)), ...args]);
  const before = await cpu();
  const { stdout } = await run('h2load', ['-n', String(count), ...args], { maxBuffer: 4 * 1024 * 1024 });
  const after = await cpu();
  const done = Number(/requests: \d+ total, \d+ started, (\d+) done/.exec(stdout)?.[1] ?? count);
  const codes = /status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(stdout);
  return { server: label, requests: done, cpuUsPerRequest: ((after - before) * 1e6) / done, statuses: codes ? `${codes[1]}/${codes[3]}` : '?' };
}

/** Rounds of the two servers, interleaved: the machine's load moves between rounds, the per-round ratio less. */
const CPU_ROUNDS = 5;

/**
 * Both servers get the same requests: the token and paths the policy server announces (half allowed, half denied).
 * Rounds alternate between them; the rows sum the rounds, the ratio is the median of the per-round ratios.
 */
async function measureServers(context: SuiteContext, count: number): Promise<{ rows: CpuRow[]; ratio: number; ratios: number[] }> {
  const withPolicies = await context.processes.start('l7-gate-server-1000', process.execPath, [SERVER, '--policies', '1000'], { readyTimeoutMs: 60_000 });
  const without = await context.processes.start('l7-gate-server-0', process.execPath, [SERVER, '--policies', '0'], { readyTimeoutMs: 60_000 });
  const load = { token: String(withPolicies.ready.token), paths: withPolicies.ready.paths as string[] };
  const perRound = Math.max(1000, Math.floor(count / CPU_ROUNDS));
  const rounds: [CpuRow, CpuRow][] = [];
  for (let round = 0; round < CPU_ROUNDS; round++) {
    const plain = await serverCpu(without.port, 'no policy', load, perRound);
    const gated = await serverCpu(withPolicies.port, '1,000 policies + JWT', load, perRound);
    rounds.push([plain, gated]);
  }
  const ratios = rounds.map(([plain, gated]) => gated.cpuUsPerRequest / plain.cpuUsPerRequest).sort((a, b) => a - b);
  const total = (index: 0 | 1): CpuRow => {
    const rows = rounds.map((pair) => pair[index]);
    const requests = rows.reduce((sum, row) => sum + row.requests, 0);
    return { server: rows[0]!.server, requests, cpuUsPerRequest: rows.reduce((sum, row) => sum + row.cpuUsPerRequest * row.requests, 0) / requests, statuses: rows.map((row) => row.statuses).join(' | ') };
  };
  return { rows: [total(0), total(1)], ratio: ratios[Math.floor(ratios.length / 2)]!, ratios };
}

const format = (value: number): string => (value >= 100 ? value.toFixed(0) : value >= 10 ? value.toFixed(1) : value.toFixed(2));

export const l7PolicySuite: Suite = {
  name: 'l7policy',
  summary: 'waypoint L7 policy step: 1,000 AuthorizationPolicies + JWT per request (issue 13)',
  async run(context): Promise<SuiteResult> {
    const count = context.quick ? 20_000 : 200_000;
    context.log('l7policy: compiling 1,000 L7 policies and timing the waypoint gate');
    const scenario = await l7Scenario(1000);
    const decisions = [await measureDecisions('no policy', scenario, false, count), await measureDecisions('1,000 policies + JWT', scenario, true, count)];
    const jwt = await measureJwt(scenario, context.quick ? 200 : 2000);
    context.log('l7policy: HTTP server CPU per request with and without the gate (h2load)');
    const httpCount = context.quick ? 10_000 : 50_000;
    const servers = await measureServers(context, httpCount);
    const cpuRows = servers.rows;
    const cpuRatio = servers.ratio;
    const withPolicies = decisions[1]!;
    const loadAverage = os.loadavg()[0]!;
    return {
      suite: 'l7policy',
      tables: [
        {
          title: 'Waypoint L7 policy step per request (µs)',
          columns: ['policies', 'requests', 'p50 µs', 'p99 µs', 'max µs', 'CPU µs/request', 'outcomes'],
          rows: decisions.map((row) => [row.scenario, String(row.requests), format(row.p50), format(row.p99), format(row.max), format(row.cpuMean), row.outcomes]),
          notes: [
            'One request = RequestGate.check(): JWT (token cache), path normalisation, attributes, decision; in-process, timed alone after warm-up.',
            `JWT verification (ES256, jose): ${format(jwt.uncachedUs)} µs for a token never seen, ${format(jwt.cachedUs)} µs from the cache (${format(jwt.uncachedUs / jwt.cachedUs)}x).`,
            `Load average ${loadAverage.toFixed(1)} on ${os.availableParallelism()} cores.`,
          ],
        },
        {
          title: 'CPU per request, Node HTTP/1.1 server answering locally, h2load --h1 -c 4',
          columns: ['server', 'requests', 'CPU µs/request', '2xx/4xx per round'],
          rows: cpuRows.map((row) => [row.server, String(row.requests), format(row.cpuUsPerRequest), row.statuses]),
          notes: [
            `with ÷ without, median of ${CPU_ROUNDS} interleaved rounds: ${cpuRatio.toFixed(2)}x (rounds: ${servers.ratios.map((ratio) => ratio.toFixed(2)).join(', ')}; goal ≤ ${L7_CPU_RATIO_GOAL}x).`,
            'Both handlers copy the request headers as the waypoint does; the waypoint also does TLS, HBONE and an upstream request per request, so its ratio is lower than this one.',
          ],
        },
      ],
      goals: [
        { name: `L7 decision p99 ÷ ${L7_DECISION_P99_GOAL_US} µs, 1,000 policies + JWT`, value: withPolicies.p99 / L7_DECISION_P99_GOAL_US, target: '≤ 1.0x', met: withPolicies.p99 <= L7_DECISION_P99_GOAL_US },
        { name: 'CPU per request with 1,000 L7 policies + JWT ÷ without (HTTP server answering locally)', value: cpuRatio, target: `≤ ${L7_CPU_RATIO_GOAL}x`, met: cpuRatio <= L7_CPU_RATIO_GOAL },
      ],
      data: { decisions, jwt, cpuRows, cpuRatio, cpuRatios: servers.ratios, loadAverage },
    };
  },
};
