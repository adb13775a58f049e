/**
 * An H2Stream as a node:stream Duplex, for callers that want a stream object (`HboneClientPool.open`, tests,
 * the waypoint's shape) rather than a splice. The agent's tunnels never go through here: they splice the
 * H2Stream directly (h2/splice.ts).
 *
 * Owns: backpressure both ways (a `write` the stream refuses waits for `onDrain`; a `push` the reader refuses
 * holds back the peer's credit until `_read`), half-close both ways (end() -> END_STREAM, END_STREAM -> 'end'),
 * and resets both ways (destroy() -> RST_STREAM CANCEL; the peer's RST_STREAM or a lost connection -> 'error'
 * with the code, so a truncated stream is never mistaken for a complete one).
 * Must not know about: HBONE, TLS, frames.
 */
import { Duplex } from 'node:stream';
import { H2_CANCEL, h2ErrorName } from './errors.ts';
import type { H2Stream, H2StreamHandler } from './stream.ts';

export class H2DuplexStream extends Duplex implements H2StreamHandler {
  readonly stream: H2Stream;
  #writeCallback: ((error?: Error | null) => void) | undefined;

  constructor(stream: H2Stream) {
    super({ allowHalfOpen: true });
    this.stream = stream;
    stream.setHandler(this);
  }

  /** The RST_STREAM code the stream was reset with (by either side), undefined while open or after a clean end. */
  get rstCode(): number | undefined {
    return this.stream.rstCode;
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (this.stream.closed) {
      callback(new Error(`HBONE stream ${this.stream.id} is closed`));
      return;
    }
    if (this.stream.write(chunk)) callback();
    else this.#writeCallback = callback;
  }

  override _final(callback: (error?: Error | null) => void): void {
    // END_STREAM follows whatever data still waits for window: from here on the stream owns it.
    this.stream.end();
    callback();
  }

  override _read(): void {
    if (this.stream.readingPaused) this.stream.resumeReading();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    // Both sides ended (END_STREAM maybe still queued behind data): a clean end, not a reset.
    const stream = this.stream;
    if (!stream.closed && (error !== null || !(stream.localEnded && stream.remoteEnded))) stream.reset(H2_CANCEL);
    callback(error);
  }

  onData(_stream: H2Stream, chunk: Buffer): void {
    if (!this.push(chunk)) this.stream.pauseReading();
  }

  onEnd(): void {
    this.push(null);
  }

  onDrain(): void {
    const callback = this.#writeCallback;
    this.#writeCallback = undefined;
    callback?.();
  }

  onClose(stream: H2Stream): void {
    const writeCallback = this.#writeCallback;
    this.#writeCallback = undefined;
    if (stream.rstCode === H2_CANCEL) {
      // As node:http2: CANCEL is an abort (ours, or the connection torn down), not an 'error'; the readable side
      // closes without 'end', so no reader takes what it got for the whole.
      writeCallback?.(new Error(`HBONE stream ${stream.id} was cancelled`));
      this.destroy();
      return;
    }
    if (stream.rstCode !== undefined) {
      const error = Object.assign(new Error(`HBONE stream ${stream.id} ${stream.resetByPeer ? 'reset by the peer' : 'reset'} with ${h2ErrorName(stream.rstCode)}`), { code: 'ERR_HTTP2_STREAM_ERROR', rstCode: stream.rstCode });
      writeCallback?.(error);
      this.destroy(error);
      return;
    }
    writeCallback?.();
  }
}
