/**
 * Turning suite results into markdown: tables, goal marks, the machine header; and writing
 * bench/results/latest.md and latest.json.
 *
 * Owns: number formatting and layout. Must not know about: how figures were measured.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Goal, SuiteResult, Table } from './suite.ts';
import type { MachineInfo } from './machine.ts';

/** Three significant figures at most, never in exponent form. */
export function formatNumber(value: number | undefined): string {
  if (value === undefined || !Number.isFinite(value)) return '—';
  const magnitude = Math.abs(value);
  if (magnitude >= 100) return Math.round(value).toString();
  if (magnitude >= 10) return value.toFixed(1);
  return value.toFixed(2);
}

export function formatRatio(value: number | undefined): string {
  return value === undefined || !Number.isFinite(value) ? '—' : `${formatNumber(value)}x`;
}

export function goalMark(goal: Goal): string {
  const mark = goal.met === undefined ? '?' : goal.met ? '✓' : '✗';
  const phrase = goal.phrase ? ` ${goal.phrase}` : '';
  return `${mark} ${formatRatio(goal.value)}${phrase} (goal ${goal.target}${phrase})`;
}

export function renderTable(table: Table): string {
  const escape = (cell: string): string => cell.replaceAll('|', '\\|');
  const lines = [
    `### ${table.title}`,
    '',
    `| ${table.columns.map(escape).join(' | ')} |`,
    `|${table.columns.map((_, index) => (index === 0 ? '---' : '---:')).join('|')}|`,
    ...table.rows.map((row) => `| ${row.map(escape).join(' | ')} |`),
  ];
  if (table.notes.length > 0) lines.push('', ...table.notes.map((note) => `- ${note}`));
  return lines.join('\n');
}

export function renderGoals(goals: readonly Goal[]): string {
  if (goals.length === 0) return '';
  return ['| goal | result |', '|---|---|', ...goals.map((goal) => `| ${goal.name} | ${goalMark(goal)} |`)].join('\n');
}

export function renderMachine(machine: MachineInfo): string {
  return [
    `Run ${machine.date} · Node ${machine.node} (OpenSSL ${machine.openssl}) · ${machine.cpus} × ${machine.cpuModel}` +
      ` · kernel ${machine.kernel} · ${machine.stunnel} · load average (1 min) ${machine.loadAverage[0]?.toFixed(1)}` +
      `${machine.loadAverageAfter ? ` at start, ${machine.loadAverageAfter[0]?.toFixed(1)} at end` : ''}` +
      `${machine.quick ? ' · **--quick** (smoke sizes, not for comparison)' : ''}`,
  ].join('\n');
}

export function renderSuite(result: SuiteResult): string {
  const parts = result.tables.map(renderTable);
  const goals = renderGoals(result.goals);
  if (goals) parts.push(goals);
  return parts.join('\n\n');
}

/** Writes `<directory>/<name>.md` and `.json` (`latest` for a full run; smoke and profiled runs use their own names). */
export function writeResults(
  directory: string,
  name: string,
  machine: MachineInfo,
  results: readonly SuiteResult[],
  failures: readonly string[],
): { markdown: string; json: string } {
  mkdirSync(directory, { recursive: true });
  const markdown = path.join(directory, `${name}.md`);
  const json = path.join(directory, `${name}.json`);
  const body = [
    '# ambit benchmark results',
    '',
    renderMachine(machine),
    '',
    'How each figure is measured: see BENCHMARKS.md.',
    '',
    ...results.map((result) => `## Suite: ${result.suite}\n\n${renderSuite(result)}\n`),
    ...(failures.length > 0 ? ['## Failures', '', ...failures.map((failure) => `- ${failure}`), ''] : []),
  ].join('\n');
  writeFileSync(markdown, body);
  writeFileSync(json, `${JSON.stringify({ machine, results, failures }, null, 2)}\n`);
  return { markdown, json };
}
