/**
 * An H2Stream as a node:stream Duplex, for callers that want a stream object (`HboneClientPool.open`, tests,
 * the waypoint's shape) rather than a splice. The agent's tunnels never go through here: they splice the
 * H2Stream directly (h2/splice.ts).
 *
 * Owns: backpressure both ways (a `write` the stream refuses waits for `onDrain`; a `push` the reader refuses
 * holds back the peer's credit until `_read`), half-close both ways (end() -> END_STREAM, END_STREAM -> 'end'),
 * and resets both ways (destroy() -> RST_STREAM CANCEL; the peer's RST_STREAM or a lost connection -> 'error'
 * with the code, so a truncated stream is never mistaken for a complete one).
 * Also the two node:http2 stream methods callers written against one use (the waypoint's HBONE legs):
 * `setTimeout` ('timeout' after that long with no data either way) and `close(code)` (RST_STREAM with that code; a
 * close of our own with NO_ERROR or CANCEL is no 'error', as node:http2's).
 * Must not know about: HBONE, TLS, frames.
 */
import { Duplex } from 'node:stream';
import { H2_CANCEL, H2_NO_ERROR, h2ErrorName } from './errors.ts';
import type { H2Stream, H2StreamHandler } from './stream.ts';

export class H2DuplexStream extends Duplex implements H2StreamHandler {
  readonly stream: H2Stream;
  #writeCallback: ((error?: Error | null) => void) | undefined;
  /** setTimeout's state: the idle limit, its timer, and chunks moved (either way) since the timer was armed. */
  #timeoutMs = 0;
  #timer: NodeJS.Timeout | undefined;
  #activity = 0;

  constructor(stream: H2Stream) {
    super({ allowHalfOpen: true });
    this.stream = stream;
    stream.setHandler(this);
  }

  /** The RST_STREAM code the stream was reset with (by either side), undefined while open or after a clean end. */
  get rstCode(): number | undefined {
    return this.stream.rstCode;
  }

  /**
   * As node:http2's Http2Stream.setTimeout: 'timeout' once no data moved either way for `ms` (0 stops it); a
   * callback is added as a 'timeout' listener (taken off with `setTimeout(0, callback)`). One timer per stream,
   * armed again only when it fires after data moved: a chunk costs a counter, not a timer refresh, so the idle time
   * it finds is between `ms` and twice that.
   */
  setTimeout(ms: number, callback?: () => void): this {
    if (callback && ms === 0) this.removeListener('timeout', callback);
    else if (callback) this.once('timeout', callback);
    this.#timeoutMs = ms;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (ms > 0 && !this.destroyed) this.#armTimer();
    return this;
  }

  #armTimer(): void {
    const seen = this.#activity;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      if (this.destroyed || this.#timeoutMs === 0) return;
      if (this.#activity !== seen) this.#armTimer();
      else this.emit('timeout');
    }, this.#timeoutMs);
    this.#timer.unref();
  }

  /**
   * As node:http2's Http2Stream.close: resets the stream with `code` (NO_ERROR by default) and destroys this side.
   * Data still queued is dropped, END_STREAM is never sent after it.
   */
  close(code: number = H2_NO_ERROR): void {
    if (!this.stream.closed) this.stream.reset(code);
    if (!this.destroyed) this.destroy();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.#activity++;
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
    clearTimeout(this.#timer);
    this.#timer = undefined;
    // Both sides ended (END_STREAM maybe still queued behind data): a clean end, not a reset.
    const stream = this.stream;
    if (!stream.closed && (error !== null || !(stream.localEnded && stream.remoteEnded))) stream.reset(H2_CANCEL);
    callback(error);
  }

  onData(_stream: H2Stream, chunk: Buffer): void {
    this.#activity++;
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
    if (stream.rstCode === H2_CANCEL || (stream.rstCode === H2_NO_ERROR && !stream.resetByPeer)) {
      // As node:http2: CANCEL is an abort (ours, or the connection torn down), not an 'error', and neither is our own
      // close(NO_ERROR); the readable side closes without 'end', so no reader takes what it got for the whole.
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
