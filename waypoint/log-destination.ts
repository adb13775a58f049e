/**
 * The waypoint's log destination: lines gathered in a list and handed to the file writer (sonic-boom, pino's
 * destination) as one string per batch, once ACCESS_LOG_BATCH_BYTES are gathered or every ACCESS_LOG_FLUSH_MS.
 *
 * Why not sonic-boom's own batching (`minLength`): its `write` measures the pending batch it appends the line to
 * (`Buffer.byteLength` of a string that `+=` made a rope) on every line, which flattens the whole pending batch once
 * per line. With 8 KiB batches of ~600-byte access-log lines that was several KB allocated and copied per request:
 * `byteLength` alone was 12.6 % of every byte the waypoint allocated in an HTTP/1.1 bench run (heap sampling,
 * BENCHMARKS.md). Here a line costs an array push, and the batch is joined and measured once.
 *
 * Owns: the batching and flushing what is gathered before the process exits. Must not know about: what the lines say.
 */

/** What this needs of the file writer: sonic-boom's write and flushSync. */
export interface LogSink {
  write(text: string): unknown;
  flushSync(): void;
}

function flushBatch(destination: BatchedLogDestination): void {
  destination.flush();
}

export class BatchedLogDestination {
  readonly #sink: LogSink;
  readonly #batchChars: number;
  #lines: string[] = [];
  #chars = 0;
  readonly #timer: NodeJS.Timeout;

  /** `batchChars`: a batch goes once it holds this many characters; `flushMs`: whatever is gathered goes this often. */
  constructor(sink: LogSink, batchChars: number, flushMs: number) {
    this.#sink = sink;
    this.#batchChars = batchChars;
    this.#timer = setInterval(flushBatch, flushMs, this);
    this.#timer.unref();
  }

  /** One line (pino's, with its line end). */
  write(line: string): boolean {
    this.#lines.push(line);
    this.#chars += line.length;
    if (this.#chars >= this.#batchChars) this.flush();
    return true;
  }

  /** Hands what is gathered to the writer now (asynchronously written). */
  flush(): void {
    const lines = this.#lines;
    if (lines.length === 0) return;
    this.#lines = [];
    this.#chars = 0;
    this.#sink.write(lines.length === 1 ? lines[0]! : lines.join(''));
  }

  /** Writes everything gathered, synchronously (before the process exits). */
  flushSync(): void {
    this.flush();
    this.#sink.flushSync();
  }

  /** Stops the interval (tests). */
  close(): void {
    clearInterval(this.#timer);
  }
}
