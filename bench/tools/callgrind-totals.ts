/**
 * Instruction totals of a measured window from callgrind's dump files, for the tools that run a process under
 * `valgrind --tool=callgrind --separate-threads=yes` and dump once around the window (bench/relay-instructions.ts,
 * bench/connection-counts.ts, bench/waypoint-instructions.ts, bench/waypoint-grpc-instructions.ts): every thread of
 * the process, and thread 1 (the main thread, the event loop) on its own.
 *
 * Owns: reading the dumps. Must not know about: what ran under callgrind.
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

export interface CallgrindTotals {
  /** Instructions of every thread. */
  all: number;
  /** Instructions of thread 1. */
  main: number;
  /** Instructions by thread number. */
  threads: number[];
  /** The main thread's dump file ('' when none matched), for callgrind_annotate. */
  mainFile: string;
}

/**
 * Sums the dumps in `directory` whose file name `belongs` accepts and whose header carries `trigger` (the name given
 * to the dump of the measured window): callgrind writes one file per thread and dump, ending in `-NN` by thread.
 */
export function callgrindTotals(directory: string, belongs: (file: string) => boolean, trigger: string): CallgrindTotals {
  const counted: CallgrindTotals = { all: 0, main: 0, threads: [], mainFile: '' };
  for (const file of readdirSync(directory).filter(belongs)) {
    const text = readFileSync(path.join(directory, file), 'utf8');
    if (!text.slice(0, 4000).includes(trigger)) continue;
    const total = /^(?:summary|totals): (\d+)/m.exec(text);
    if (!total) continue;
    counted.all += Number(total[1]);
    if (/-01$/.test(file)) {
      counted.main += Number(total[1]);
      counted.mainFile = path.join(directory, file);
    }
    const thread = /-(\d+)$/.exec(file);
    if (thread) counted.threads[Number(thread[1])] = Number(total[1]);
  }
  return counted;
}
