/**
 * Several runs of the same suites reduced to one table per goal: each run's ratio, the median over the runs and the
 * verdict on that median. For the rows that are differences or ratios of noisy medians (the waypoint's latency and
 * policy rows, the mesh's CPU and latency rows), read over three or more runs of one tree.
 *
 *   node bench/tools/goal-medians.ts RUN.json [RUN.json ...] [--suite waypoint]
 *
 * RUN.json is what bench/run.ts writes (`bench/results/<suite>-latest.json` or `latest.json`: machine, results).
 * Prints markdown on stdout: the runs (date, load average at start and end, quick or full), then one row per goal
 * with each run's value, the median of the runs that measured it, how many did, and whether the median meets the
 * goal's target.
 *
 * Owns: reading run files and reducing goals across runs. Must not know about: how any suite measures.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { median } from '../lib/stats.ts';
import type { Goal, SuiteResult } from '../lib/suite.ts';

interface RunFile {
  machine: { date: string; loadAverage?: number[]; loadAverageAfter?: number[]; quick?: boolean };
  results: SuiteResult[];
}

/** A target as the goals print it ('≤ 1.5x', '≥ 1.0x', '≤ 1x'): the comparison and the bound, or undefined. */
export function parseTarget(target: string): { atMost: boolean; bound: number } | undefined {
  const match = /^\s*([≤≥])\s*([\d.]+)x?/.exec(target);
  return match ? { atMost: match[1] === '≤', bound: Number(match[2]) } : undefined;
}

export interface GoalAcrossRuns {
  suite: string;
  name: string;
  target: string;
  values: (number | undefined)[];
  median: number | undefined;
  measured: number;
  met: boolean | undefined;
}

/** One entry per (suite, goal name) in first-seen order, its value in every run (undefined where a run lacks it). */
export function goalsAcrossRuns(runs: readonly RunFile[], suite?: string): GoalAcrossRuns[] {
  const rows = new Map<string, GoalAcrossRuns>();
  runs.forEach((run, index) => {
    for (const result of run.results) {
      if (suite !== undefined && result.suite !== suite) continue;
      for (const goal of result.goals as Goal[]) {
        const key = `${result.suite}\u0000${goal.name}`;
        let row = rows.get(key);
        if (row === undefined) {
          row = { suite: result.suite, name: goal.name, target: goal.target, values: new Array<number | undefined>(runs.length).fill(undefined), median: undefined, measured: 0, met: undefined };
          rows.set(key, row);
        }
        row.values[index] = goal.value;
      }
    }
  });
  for (const row of rows.values()) {
    const measured = row.values.filter((value): value is number => value !== undefined && Number.isFinite(value));
    row.measured = measured.length;
    row.median = measured.length ? median(measured) : undefined;
    const target = parseTarget(row.target);
    row.met = row.median === undefined || target === undefined ? undefined : target.atMost ? row.median <= target.bound : row.median >= target.bound;
  }
  return [...rows.values()];
}

function ratio(value: number | undefined): string {
  return value === undefined ? '?' : `${value.toFixed(2)}x`;
}

function main(argv: string[]): void {
  const suiteAt = argv.indexOf('--suite');
  const suite = suiteAt >= 0 ? argv[suiteAt + 1] : undefined;
  const files = argv.filter((arg, index) => !arg.startsWith('--') && (suiteAt < 0 || index !== suiteAt + 1));
  if (files.length === 0) {
    process.stderr.write('usage: node bench/tools/goal-medians.ts RUN.json [RUN.json ...] [--suite NAME]\n');
    process.exit(2);
  }
  const runs = files.map((file) => JSON.parse(readFileSync(file, 'utf8')) as RunFile);
  const lines: string[] = ['| run | file | date (UTC) | load at start / end | size |', '|---|---|---|---|---|'];
  runs.forEach((run, index) => {
    const load = `${run.machine.loadAverage?.[0] ?? '?'} / ${run.machine.loadAverageAfter?.[0] ?? '?'}`;
    lines.push(`| ${index + 1} | ${path.basename(files[index]!)} | ${run.machine.date} | ${load} | ${run.machine.quick ? 'quick' : 'full'} |`);
  });
  lines.push('', `| goal | target | ${runs.map((_, index) => `run ${index + 1}`).join(' | ')} | median (runs) | met by the median |`, `|---|---|${runs.map(() => '---:|').join('')}---:|---|`);
  for (const row of goalsAcrossRuns(runs, suite)) {
    const verdict = row.met === undefined ? '?' : row.met ? '✓' : '✗';
    lines.push(`| ${row.suite}: ${row.name.replaceAll('|', '\\|')} | ${row.target} | ${row.values.map(ratio).join(' | ')} | ${ratio(row.median)} (${row.measured}) | ${verdict} |`);
  }
  process.stdout.write(`${lines.join('\n')}\n`);
}

if (import.meta.url === `file://${process.argv[1]}`) main(process.argv.slice(2));
