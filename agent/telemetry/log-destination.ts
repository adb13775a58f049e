/**
 * Where the agent's log lines go: standard output, one write per event-loop turn. With the access log on (info, the
 * default) the agent writes a line per connection, and under load many connections end in the same turn: their lines
 * are joined and written with one system call at the end of the turn (setImmediate) instead of one each. A line waits
 * at most until the end of the turn it was logged in, so a reader (an operator's tail, a test reading the log file)
 * sees it as soon as before, in the same order, and nothing is held across turns that a crash could lose.
 *
 * Owns: gathering the turn's lines and writing them out, and writing what is pending when the thread exits.
 * Must not know about: what is logged, or what reads standard output (a file, a pipe, a terminal).
 */
import { pino } from 'pino';

/** What pino needs of a destination. */
export interface LogOutput {
  write(line: string): boolean;
  /** Writes what is pending now (at exit, before a fatal process.exit). */
  flushSync(): void;
}

/** Lines gathered within one event-loop turn, written at its end by `out` (a sonic-boom destination, or any writer). */
export class TurnBatchedOutput implements LogOutput {
  readonly #out: { write(text: string): unknown };
  #pending = '';
  #scheduled = false;
  readonly #flush = (): void => {
    this.#scheduled = false;
    this.flushSync();
  };

  constructor(out: { write(text: string): unknown }) {
    this.#out = out;
  }

  write(line: string): boolean {
    this.#pending += line;
    if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(this.#flush);
    }
    return true;
  }

  flushSync(): void {
    if (this.#pending === '') return;
    const text = this.#pending;
    this.#pending = '';
    this.#out.write(text);
  }
}

/**
 * The agent's standard output: a synchronous sonic-boom destination (it retries a full pipe and partial writes), fed
 * one batch per turn; what is pending is written when the thread exits (a process.exit() after a fatal error must not
 * lose the lines that explain it).
 */
export function batchedStdout(): LogOutput {
  const output = new TurnBatchedOutput(pino.destination({ dest: 1, sync: true }));
  process.once('exit', () => {
    try {
      output.flushSync();
    } catch {
      // standard output gone: nothing to write to
    }
  });
  return output;
}
