/**
 * Garbage collections of this process counted by kind (minor, major, incremental, weak) from V8's GC performance
 * entries, for the preloads that report them around a measured window (exec-under-callgrind.ts,
 * bench/waypoint-grpc-preload.ts).
 *
 * Owns: the observer and the counts. Must not know about: what the process is.
 */
import { PerformanceObserver, constants } from 'node:perf_hooks';

const GC_KINDS: Record<number, string> = { [constants.NODE_PERFORMANCE_GC_MINOR]: 'minor', [constants.NODE_PERFORMANCE_GC_MAJOR]: 'major', [constants.NODE_PERFORMANCE_GC_INCREMENTAL]: 'incremental', [constants.NODE_PERFORMANCE_GC_WEAKCB]: 'weak' };

/** Starts counting; the returned record (kind -> collections so far) is updated in place. */
export function countGcsByKind(): Record<string, number> {
  const counts: Record<string, number> = {};
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      const kind = GC_KINDS[(entry as unknown as { detail: { kind: number } }).detail.kind] ?? 'other';
      counts[kind] = (counts[kind] ?? 0) + 1;
    }
  }).observe({ entryTypes: ['gc'] });
  return counts;
}
