/**
 * Preloaded into a Node process (`--import`) by bench/waypoint-instructions.ts: replaces the process, same pid, same
 * network namespace and environment, with valgrind's callgrind running the same command, instrumentation off until
 * `callgrind_control -i on` (start-up and warm-up run at valgrind's uninstrumented speed). Needed because the local
 * runtime starts the waypoint itself (runtime/waypoint.ts, `process.execPath`), so no wrapper can be put before it.
 * Does nothing unless AMBIT_CALLGRIND_OUT_DIR is set. In the process it started (AMBIT_UNDER_CALLGRIND) it counts
 * V8's garbage collections by kind and writes the counts so far to AMBIT_CALLGRIND_OUT_DIR/gc-<pid>.json on each
 * SIGUSR2 (the harness reads them around the measured rounds).
 *
 * Owns: that re-exec. Must not know about: what the process is.
 */
import { writeFileSync } from 'node:fs';
import { PerformanceObserver, constants } from 'node:perf_hooks';

const outDir = process.env.AMBIT_CALLGRIND_OUT_DIR;
const GC_KINDS: Record<number, string> = { [constants.NODE_PERFORMANCE_GC_MINOR]: 'minor', [constants.NODE_PERFORMANCE_GC_MAJOR]: 'major', [constants.NODE_PERFORMANCE_GC_INCREMENTAL]: 'incremental', [constants.NODE_PERFORMANCE_GC_WEAKCB]: 'weak' };
if (outDir !== undefined && process.env.AMBIT_UNDER_CALLGRIND !== undefined) {
  const counts: Record<string, number> = {};
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      const kind = GC_KINDS[(entry as unknown as { detail: { kind: number } }).detail.kind] ?? 'other';
      counts[kind] = (counts[kind] ?? 0) + 1;
    }
  }).observe({ entryTypes: ['gc'] });
  process.on('SIGUSR2', () => writeFileSync(`${outDir}/gc-${process.pid}.json`, JSON.stringify(counts)));
} else if (outDir !== undefined && process.execve !== undefined) {
  process.execve('/usr/bin/valgrind', [
    'valgrind', '--tool=callgrind', '--separate-threads=yes', '--instr-atstart=no', '--smc-check=all-non-file',
    `--callgrind-out-file=${outDir}/callgrind.%p`, process.execPath, ...process.execArgv, ...process.argv.slice(1),
  ], { ...process.env, AMBIT_UNDER_CALLGRIND: '1' });
}
