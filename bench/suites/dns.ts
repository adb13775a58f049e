/**
 * Suite "dns": the agent's DNS proxy answering Service names, beside dnsmasq (Debian's, the anchor) serving the same
 * records from a hosts file on the same machine. Both listen on 127.0.0.1 over UDP and are driven by the same load
 * tool (bench/tools/dns-load.ts, its own process): A queries for 1,000 Service FQDNs in turn,
 *
 *   one at a time      concurrency 1: latency with no queue (p50, p99)
 *   saturated          concurrency 32: answered queries per second, and the latency at that load
 *
 * plus each server's CPU per 1,000 answered queries. The agent side is the real code path (DnsServer over a real
 * MeshState through MeshServiceRecords, served by one thread as in the agent), without the in-pod redirect, which
 * costs both servers the same NAT lookup.
 * Must not know about: how the agent captures a pod.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { CpuMeter } from '../lib/cpu.ts';
import { freePort } from '../lib/ports.ts';
import { formatNumber, formatRatio } from '../lib/report.ts';
import type { LatencySummary } from '../lib/stats.ts';
import type { Goal, Suite, SuiteContext, SuiteResult } from '../lib/suite.ts';
import { benchServiceAddress, benchServiceName } from '../tools/dns-names.ts';

interface Sizes {
  services: number;
  seconds: number;
  rounds: number;
}

const FULL: Sizes = { services: 1_000, seconds: 3, rounds: 5 };
const QUICK: Sizes = { services: 200, seconds: 1, rounds: 1 };
const SATURATING_CONCURRENCY = 32;

interface LoadResult {
  answered: number;
  answeredTotal: number;
  seconds: number;
  qps: number;
  lost: number;
  bad: number;
  latencyUs: LatencySummary;
}

interface Measured {
  oneAtATime: LoadResult;
  saturated: LoadResult;
  cpuMsPer1000: number;
}

type Server = 'dnsmasq' | 'agent';

export const dnsSuite: Suite = {
  name: 'dns',
  summary: 'the agent\'s DNS proxy answering Service names vs dnsmasq serving the same records from a hosts file: queries/s and latency',
  run,
};

const TOOLS = path.resolve(import.meta.dirname, '..', 'tools');

async function load(context: SuiteContext, server: Server, port: number, concurrency: number, sizes: Sizes): Promise<LoadResult> {
  return context.processes.run<LoadResult>(`dns-load ${server} c${concurrency}`, process.execPath, [
    path.join(TOOLS, 'dns-load.ts'), '--port', String(port), '--services', String(sizes.services), '--concurrency', String(concurrency), '--seconds', String(sizes.seconds),
  ]);
}

async function measure(context: SuiteContext, server: Server, pid: number, port: number, sizes: Sizes): Promise<Measured> {
  const oneAtATime = await load(context, server, port, 1, sizes);
  const meter = new CpuMeter({ server: pid }).start();
  const saturated = await load(context, server, port, SATURATING_CONCURRENCY, sizes);
  const cpu = meter.stop();
  // The meter spans the load tool's warm-up too: divide by every reply it got, warm-up included.
  return { oneAtATime, saturated, cpuMsPer1000: (cpu.server! * 1000 * 1000) / saturated.answeredTotal };
}

async function run(context: SuiteContext): Promise<SuiteResult> {
  const sizes = context.quick ? QUICK : FULL;
  const hosts = Array.from({ length: sizes.services }, (_, index) => `${benchServiceAddress(index)} ${benchServiceName(index)}`).join('\n') + '\n';
  const dir = path.join(context.runDir, 'dns');
  await mkdir(dir, { recursive: true });
  await writeFile(path.join(dir, 'hosts'), hosts);
  const dnsmasqPort = await freePort();
  const dnsmasq = await context.processes.start('dnsmasq', '/usr/sbin/dnsmasq', [
    '--keep-in-foreground', '--no-resolv', '--no-hosts', '--no-poll', '--user=root', '--pid-file=', '--conf-file=/dev/null',
    `--addn-hosts=${path.join(dir, 'hosts')}`, '--local=/cluster.local/', '--local-ttl=30',
    '--listen-address=127.0.0.1', '--bind-interfaces', `--port=${dnsmasqPort}`,
  ], { readyPort: dnsmasqPort });
  const agent = await context.processes.start('agent dns', process.execPath, [path.join(TOOLS, 'dns-server.ts'), '--services', String(sizes.services)]);
  const rounds: Record<Server, Measured[]> = { dnsmasq: [], agent: [] };
  // Interleaved rounds, so drift in the machine's load hits both alike.
  for (let round = 0; round < sizes.rounds; round++) {
    context.log(`round ${round + 1}/${sizes.rounds}: dnsmasq, then the agent (${sizes.seconds} s one at a time, ${sizes.seconds} s at concurrency ${SATURATING_CONCURRENCY}, each)`);
    rounds.dnsmasq.push(await measure(context, 'dnsmasq', dnsmasq.pid, dnsmasq.port, sizes));
    rounds.agent.push(await measure(context, 'agent', agent.pid, agent.port, sizes));
  }
  return buildResult(sizes, rounds);
}

function medianOf(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

/**
 * Each figure is the median over rounds per server; each ratio is the median of the per-round ratios (dnsmasq and the
 * agent measured back to back in one round), which a busy machine's drift between rounds disturbs least.
 */
function buildResult(sizes: Sizes, rounds: Record<Server, Measured[]>): SuiteResult {
  const ratioOf = (pick: (m: Measured) => number): number => medianOf(rounds.agent.map((m, index) => pick(m) / pick(rounds.dnsmasq[index]!)));
  const row = (label: string, pick: (m: Measured) => number, goal?: Goal): string[] => [
    label, formatNumber(medianOf(rounds.dnsmasq.map(pick))), formatNumber(medianOf(rounds.agent.map(pick))), formatRatio(ratioOf(pick)),
    goal ? `${goal.met ? '✓' : '✗'} ${formatRatio(goal.value)} (goal ${goal.target})` : '',
  ];
  const rateRatio = ratioOf((m) => m.saturated.qps);
  const p99Ratio = ratioOf((m) => m.oneAtATime.latencyUs.p99);
  const goals: Goal[] = [
    { name: 'DNS queries/s answered, one agent thread ÷ dnsmasq', value: rateRatio, target: '≥ 0.5x', met: rateRatio >= 0.5 },
    { name: 'DNS p99 latency, one at a time: agent ÷ dnsmasq', value: p99Ratio, target: '≤ 2x', met: p99Ratio <= 2 },
  ];
  const lost = (m: Measured[]): number => m.reduce((sum, each) => sum + each.saturated.lost + each.oneAtATime.lost, 0);
  const bad = (m: Measured[]): number => m.reduce((sum, each) => sum + each.saturated.bad + each.oneAtATime.bad, 0);
  return {
    suite: 'dns',
    tables: [{
      title: `DNS: A queries for ${sizes.services} Service names over UDP on loopback (medians of ${sizes.rounds} interleaved rounds; ratios: median of the per-round ratios)`,
      columns: ['measure', 'dnsmasq', 'agent', 'agent ÷ dnsmasq', 'goal'],
      rows: [
        row(`answered queries/s, ${SATURATING_CONCURRENCY} outstanding`, (m) => m.saturated.qps, goals[0]),
        row(`latency at that load, p50 (µs)`, (m) => m.saturated.latencyUs.p50),
        row(`latency at that load, p99 (µs)`, (m) => m.saturated.latencyUs.p99),
        row('one at a time, p50 (µs)', (m) => m.oneAtATime.latencyUs.p50),
        row('one at a time, p99 (µs)', (m) => m.oneAtATime.latencyUs.p99, goals[1]),
        row('one at a time, queries/s', (m) => m.oneAtATime.qps),
        row('server CPU per 1,000 answered queries, saturated (ms)', (m) => m.cpuMsPer1000),
      ],
      notes: [
        `Every round, saturated queries/s: dnsmasq ${rounds.dnsmasq.map((m) => formatNumber(m.saturated.qps)).join(' / ')}, agent ${rounds.agent.map((m) => formatNumber(m.saturated.qps)).join(' / ')}.`,
        `Every round, one-at-a-time p99 (µs): dnsmasq ${rounds.dnsmasq.map((m) => formatNumber(m.oneAtATime.latencyUs.p99)).join(' / ')}, agent ${rounds.agent.map((m) => formatNumber(m.oneAtATime.latencyUs.p99)).join(' / ')}.`,
        `Queries lost (no reply within 1 s, re-sent): dnsmasq ${lost(rounds.dnsmasq)}, agent ${lost(rounds.agent)}; answers without a record or with an error: dnsmasq ${bad(rounds.dnsmasq)}, agent ${bad(rounds.agent)}.`,
        'The load tool is one Node process on the same two cores; at saturation it and the server share them, for both servers alike.',
      ],
    }],
    goals,
    data: { sizes, rounds },
  };
}
