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
import { countGcsByKind } from './gc-counts.ts';

const outDir = process.env.AMBIT_CALLGRIND_OUT_DIR;
if (outDir !== undefined && process.env.AMBIT_UNDER_CALLGRIND !== undefined) {
  const counts = countGcsByKind();
  process.on('SIGUSR2', () => writeFileSync(`${outDir}/gc-${process.pid}.json`, JSON.stringify(counts)));
} else if (outDir !== undefined && process.execve !== undefined) {
  process.execve('/usr/bin/valgrind', [
    'valgrind', '--tool=callgrind', '--separate-threads=yes', '--instr-atstart=no', '--smc-check=all-non-file',
    `--callgrind-out-file=${outDir}/callgrind.%p`, process.execPath, ...process.execArgv, ...process.argv.slice(1),
  ], { ...process.env, AMBIT_UNDER_CALLGRIND: '1' });
}
