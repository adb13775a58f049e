/**
 * ambitctl's three output formats: aligned tables for people (default), JSON and YAML for scripts.
 *
 * Owns: rendering rows and documents. Must not know about: where the data comes from.
 */
import { stringify } from 'yaml';

export type OutputFormat = 'table' | 'json' | 'yaml';
export const OUTPUT_FORMATS: readonly OutputFormat[] = ['table', 'json', 'yaml'];

export interface Column<T> {
  header: string;
  value: (row: T) => string;
}

/** Columns padded to their widest cell, separated by three spaces (kubectl's look). */
export function renderTable<T>(rows: readonly T[], columns: readonly Column<T>[]): string {
  const cells = [columns.map((column) => column.header), ...rows.map((row) => columns.map((column) => column.value(row) || '-'))];
  const widths = columns.map((_, index) => Math.max(...cells.map((line) => line[index]!.length)));
  return `${cells.map((line) => line.map((cell, index) => (index === line.length - 1 ? cell : cell.padEnd(widths[index]!))).join('   ').trimEnd()).join('\n')}\n`;
}

export function renderDocument(document: unknown, format: 'json' | 'yaml'): string {
  return format === 'json' ? `${JSON.stringify(document, null, 2)}\n` : stringify(document, { aliasDuplicateObjects: false, lineWidth: 0 });
}

/** "3d4h", "2h5m", "59s", "expired 3m ago": how long until a time, for people. */
export function humanDuration(seconds: number): string {
  const past = seconds < 0;
  let rest = Math.abs(Math.floor(seconds));
  const days = Math.floor(rest / 86400);
  rest -= days * 86400;
  const hours = Math.floor(rest / 3600);
  rest -= hours * 3600;
  const minutes = Math.floor(rest / 60);
  const secs = rest - minutes * 60;
  const text = days > 0 ? `${days}d${hours}h` : hours > 0 ? `${hours}h${minutes}m` : minutes > 0 ? `${minutes}m${secs}s` : `${secs}s`;
  return past ? `expired ${text} ago` : text;
}
