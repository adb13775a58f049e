/**
 * bench/tools/goal-medians.ts, how several runs of one tree become the README's figure for a noisy row: each goal's
 * median over the runs that measured it, judged against the goal's own target, a run without a figure ('?') left
 * out rather than counted as zero.
 */
import test from 'ava';
import { goalsAcrossRuns, parseTarget } from '../../bench/tools/goal-medians.ts';
import type { SuiteResult } from '../../bench/lib/suite.ts';

function run(goals: { name: string; value: number | undefined; target: string }[]): { machine: { date: string }; results: SuiteResult[] } {
  return { machine: { date: '2026-12-07T23:00:00Z' }, results: [{ suite: 'waypoint', tables: [], data: {}, goals: goals.map((goal) => ({ ...goal, met: undefined })) }] };
}

test('targets read as the goals print them', (t) => {
  t.deepEqual(parseTarget('≤ 1.5x'), { atMost: true, bound: 1.5 });
  t.deepEqual(parseTarget('≥ 1.0x'), { atMost: false, bound: 1 });
  t.deepEqual(parseTarget('≤ 1x'), { atMost: true, bound: 1 });
  t.is(parseTarget('whatever'), undefined);
});

test('the median over the runs decides, and a run without the figure is left out', (t) => {
  const cpu = "HTTP/1.1: waypoint CPU per 1,000 requests ÷ haproxy's";
  const latency = 'gRPC unary: p50 latency the waypoint adds ÷ what haproxy adds';
  const rows = goalsAcrossRuns([
    run([{ name: cpu, value: 1.55, target: '≤ 1.5x' }, { name: latency, value: undefined, target: '≤ 1.5x' }]),
    run([{ name: cpu, value: 1.41, target: '≤ 1.5x' }, { name: latency, value: 0.9, target: '≤ 1.5x' }]),
    run([{ name: cpu, value: 1.47, target: '≤ 1.5x' }, { name: latency, value: 1.7, target: '≤ 1.5x' }]),
  ]);
  const cpuRow = rows.find((row) => row.name === cpu)!;
  t.is(cpuRow.median, 1.47);
  t.is(cpuRow.measured, 3);
  t.true(cpuRow.met);
  const latencyRow = rows.find((row) => row.name === latency)!;
  // Two runs measured it (0.9, 1.7): their median 1.3, not the median of (0, 0.9, 1.7).
  t.is(latencyRow.measured, 2);
  t.is(latencyRow.median, 1.3);
  t.true(latencyRow.met);
  t.deepEqual(latencyRow.values, [undefined, 0.9, 1.7]);
});

test('an at-least goal is met only when the median reaches it', (t) => {
  const name = 'throughput: mesh ÷ stunnel';
  const rows = goalsAcrossRuns([run([{ name, value: 0.98, target: '≥ 1.0x' }]), run([{ name, value: 1.02, target: '≥ 1.0x' }]), run([{ name, value: 0.97, target: '≥ 1.0x' }])]);
  t.is(rows[0]!.median, 0.98);
  t.false(rows[0]!.met);
});
