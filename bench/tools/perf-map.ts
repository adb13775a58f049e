/**
 * V8's perf map (`--perf-basic-prof`: /tmp/perf-PID.map), made usable for `perf report` after the run.
 *
 * Owns: the map's rewrite. Must not know about: what was recorded.
 */
import { readFileSync, writeFileSync } from 'node:fs';

/**
 * V8's `--perf-basic-prof` appends a line per code object it makes and never says when code space is reused, so
 * after start-up a hot function's address is often also a start-up function's (the YAML parser of the first reads,
 * for one) and perf names it by the older line. Rewrites the map with the latest definition of every address only.
 */
export function latestPerfMap(pid: number): void {
  const file = `/tmp/perf-${pid}.map`;
  let lines: string[];
  try {
    lines = readFileSync(file, 'utf8').split('\n');
  } catch {
    return;
  }
  const kept: Array<{ start: number; end: number; line: string }> = [];
  const starts: number[] = [];
  /** Index of the first kept entry whose start is >= `address` (kept is sorted by start). */
  const lowerBound = (address: number): number => {
    let low = 0;
    let high = starts.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if (starts[middle]! < address) low = middle + 1;
      else high = middle;
    }
    return low;
  };
  for (let index = lines.length - 1; index >= 0; index--) {
    const parts = /^([0-9a-f]+) ([0-9a-f]+) /.exec(lines[index]!);
    if (parts === null) continue;
    const start = parseInt(parts[1]!, 16);
    const end = start + parseInt(parts[2]!, 16);
    const at = lowerBound(start);
    // Overlaps a later definition: the one before it (ending after our start) or the one at/after it (starting before our end).
    if ((at > 0 && kept[at - 1]!.end > start) || (at < kept.length && kept[at]!.start < end)) continue;
    kept.splice(at, 0, { start, end, line: lines[index]! });
    starts.splice(at, 0, start);
  }
  writeFileSync(file, kept.map((entry) => entry.line).join('\n') + '\n');
}
