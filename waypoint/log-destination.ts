/**
 * The waypoint's log destination: lines gathered as bytes in one buffer (a JsonTextBuffer) and handed to the file
 * writer (sonic-boom, pino's destination, in its `contentMode: 'buffer'`) as one Buffer per batch, once
 * ACCESS_LOG_BATCH_BYTES are gathered or every ACCESS_LOG_FLUSH_MS. Pino's own lines come as strings (`write`); the
 * access log writes its lines straight into the batch (`lineBuffer`, then `lineWritten`: access-log.ts), so a
 * request's line is never a string at all.
 *
 * Why not sonic-boom's own batching (`minLength`): its `write` measures the pending batch it appends the line to
 * (`Buffer.byteLength` of a string that `+=` made a rope) on every line, which flattens the whole pending batch once
 * per line (session s9). Why bytes rather than a list of strings joined per batch (session s9 to s11): the join made
 * the batch's string (about 0.9 KB of V8 heap per request) and sonic-boom measured and encoded it again (s12).
 *
 * Owns: the batching and flushing what is gathered before the process exits. Must not know about: what the lines say.
 */
import { pino } from 'pino';
import { JsonTextBuffer } from './json-text-buffer.ts';

/** What this needs of the file writer: sonic-boom's write (buffer mode: it keeps the Buffer until written) and flushSync. */
export interface LogSink {
  write(bytes: Buffer): unknown;
  flushSync(): void;
}

/**
 * Sonic-boom on `dest` (a descriptor or a file path), asynchronous, taking Buffers (`contentMode: 'buffer'`; its
 * types declare the string form's `write` only).
 */
export function bufferFileSink(dest: number | string): LogSink {
  return pino.destination({ dest, sync: false, contentMode: 'buffer' }) as unknown as LogSink;
}

function flushBatch(destination: BatchedLogDestination): void {
  destination.flush();
}

/** Room in a batch beyond its threshold, so that the line that crosses it rarely makes the buffer grow. */
const BATCH_SLACK_BYTES = 4096;

export class BatchedLogDestination {
  readonly #sink: LogSink;
  readonly #batchBytes: number;
  /** The batch being gathered; a new one after each flush (the sink keeps the old one until it is written). */
  #batch: JsonTextBuffer;
  readonly #timer: NodeJS.Timeout;

  /** `batchBytes`: a batch goes once it holds this many bytes; `flushMs`: whatever is gathered goes this often. */
  constructor(sink: LogSink, batchBytes: number, flushMs: number) {
    this.#sink = sink;
    this.#batchBytes = batchBytes;
    this.#batch = new JsonTextBuffer(batchBytes + BATCH_SLACK_BYTES);
    this.#timer = setInterval(flushBatch, flushMs, this);
    this.#timer.unref();
  }

  /** One line (pino's, with its line end). */
  write(line: string): boolean {
    this.#batch.text(line);
    this.lineWritten();
    return true;
  }

  /**
   * The batch, for a writer that writes its line into it (the access log): whole lines only, then lineWritten().
   * Valid until lineWritten() (a flush hands it to the sink).
   */
  get lineBuffer(): JsonTextBuffer {
    return this.#batch;
  }

  /** A line was written into lineBuffer: the batch goes if it is full. */
  lineWritten(): void {
    if (this.#batch.length >= this.#batchBytes) this.flush();
  }

  /** Hands what is gathered to the writer now (asynchronously written). */
  flush(): void {
    const batch = this.#batch;
    if (batch.length === 0) return;
    this.#batch = new JsonTextBuffer(this.#batchBytes + BATCH_SLACK_BYTES);
    this.#sink.write(batch.bytes.subarray(0, batch.length));
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
