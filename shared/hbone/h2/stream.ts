/**
 * One HTTP/2 stream of an H2Connection: its state, its send queue and windows, and the receive side's credit.
 *
 * Owns: the stream's state (open, half-closed either way, closed; reset codes both ways), `write` with flow
 * control (what the windows do not allow waits in a queue on this object; `write` says false past a high-water
 * mark and the handler's `onDrain` follows), `end` (END_STREAM after everything queued), `reset` (RST_STREAM),
 * receive-side credit (WINDOW_UPDATE once half the window is consumed, held back while the reader is paused),
 * and delivery to one handler object: data, end, response headers, close. Data that arrives before a handler is
 * attached (a server deciding whether to accept) waits here, bounded by the stream window (no credit is given
 * back until a handler takes it).
 * Must not know about: sockets, frames' bytes, HPACK, HBONE. The connection does the wire; this file decides.
 *
 * Hot path: `write` of a chunk that fits the windows goes straight to the connection's frame writer; a piece of
 * received DATA goes straight to `handler.onData`. No object is made per chunk beyond the payload view itself.
 */
import type { H2Connection } from './connection.ts';
import { H2_CANCEL, H2_NO_ERROR } from './errors.ts';
import type { HeaderList } from './hpack.ts';
import type { SharedReadBuffer } from '../pooled-reads.ts';

/** Called by a stream; one object per stream (or shared), methods, no closures per chunk. */
export interface H2StreamHandler {
  /** A piece of the peer's data, in order. The buffer may be kept (it is never reused). */
  onData(stream: H2Stream, chunk: Buffer): void;
  /**
   * Optional, instead of onData for pieces read into a pooled buffer (the connection's TLS reads): `chunk` is a view
   * of `shared.buffer`, valid during this call only unless the handler `shared.hold()`s it, and then until its
   * `shared.release()` (one per hold; with the error of a failed write, the buffer is never reused). A handler
   * without it gets such pieces as copies in onData.
   */
  onSharedData?(stream: H2Stream, chunk: Buffer, shared: SharedReadBuffer): void;
  /** The peer sent END_STREAM: no more data will come. */
  onEnd(stream: H2Stream): void;
  /** `write` returned false earlier; there is room again. */
  onDrain(stream: H2Stream): void;
  /** The stream is closed (both sides ended, or reset either way, or the connection went). Last call. */
  onClose(stream: H2Stream): void;
  /** Client side: the response headers (the final, non-1xx ones); `endStream`: nothing follows them. */
  onResponse?(stream: H2Stream, headers: HeaderList, endStream: boolean): void;
  /** The peer's trailers (a header block with END_STREAM after the first), just before onEnd. */
  onTrailers?(stream: H2Stream, trailers: HeaderList): void;
}

/**
 * Told once the connection is done with a chunk given to `write` (its bytes encrypted or copied, or written to a
 * plain socket): the caller may reuse the buffer from then on. Called in the order the chunks were written, with
 * the socket's error if the write that carried it failed; never called for a chunk dropped unsent (the stream
 * reset or the connection closed), which is always among the last a stream was given.
 */
export type H2WriteDone = (error?: Error | null) => void;

/** `write` says false once this much waits for window or for the socket. */
export const STREAM_WRITE_HIGH_WATER_BYTES = 256 * 1024;

export class H2Stream {
  readonly id: number;
  readonly connection: H2Connection;
  /** The request headers (server side) or the request we sent (client side). */
  readonly requestHeaders: HeaderList;
  /** Client side: the response's :status once it arrived. */
  status = 0;
  responseHeaders: HeaderList | undefined;
  /** The response headers came with END_STREAM (a trailers-only or empty answer). */
  responseEndStream = false;
  /** The peer's trailers, once they came. */
  trailers: HeaderList | undefined;
  /** We sent END_STREAM (or queued it behind data). */
  localEnded = false;
  /** The peer sent END_STREAM. */
  remoteEnded = false;
  closed = false;
  /** The RST_STREAM code the stream closed with (ours or the peer's); undefined when it ended cleanly. */
  rstCode: number | undefined;
  /** True when the reset came from the peer. */
  resetByPeer = false;
  /** Server side: the response headers were sent (a server that hands streams on reads it, as node's headersSent). */
  responded = false;
  /**
   * Set by a splice: this stream's DATA written inside a read callback may wait for the loop's check phase, so that
   * what one poll phase reads for the connection leaves in one TLS record (connection.ts, #write's `coalesce`).
   */
  coalesceWrites = false;

  // Send side (state the connection reads and updates).
  /** What the peer lets us send on this stream now (may go negative when the peer lowers its initial window). */
  sendWindow: number;
  /** Data waiting for window: chunks in order, the first possibly partly sent (`pendingOffset`). */
  readonly pending: Buffer[] = [];
  /** Beside `pending`, each chunk's H2WriteDone (or undefined). */
  readonly pendingDone: Array<H2WriteDone | undefined> = [];
  pendingOffset = 0;
  pendingBytes = 0;
  /** END_STREAM is to follow the pending data. */
  endQueued = false;
  /** Trailers to send once the pending data is sent (endWithTrailers), with END_STREAM. */
  trailersQueued: readonly string[] | undefined;
  /** `write` returned false; onDrain is owed. */
  wantsDrain = false;

  // Receive side.
  /** What the peer may still send on this stream before our next WINDOW_UPDATE. */
  receiveWindow: number;
  /** Received bytes (padding included) not yet given back as window. */
  receivedUncredited = 0;
  #readingPaused = false;

  #handler: H2StreamHandler | undefined;
  /** Data and events that arrived before a handler was attached. */
  #early: Buffer[] | undefined;

  constructor(connection: H2Connection, id: number, requestHeaders: HeaderList, sendWindow: number, receiveWindow: number) {
    this.connection = connection;
    this.id = id;
    this.requestHeaders = requestHeaders;
    this.sendWindow = sendWindow;
    this.receiveWindow = receiveWindow;
  }

  get handler(): H2StreamHandler | undefined {
    return this.#handler;
  }

  /** Attaches the handler and hands it whatever arrived before (response, data, end, close, in that order). */
  setHandler(handler: H2StreamHandler): void {
    this.#handler = handler;
    const early = this.#early;
    this.#early = undefined;
    if (this.status !== 0 && this.responseHeaders && handler.onResponse) handler.onResponse(this, this.responseHeaders, this.responseEndStream);
    if (early) for (const chunk of early) handler.onData(this, chunk);
    if (this.trailers && handler.onTrailers) handler.onTrailers(this, this.trailers);
    if (this.remoteEnded) handler.onEnd(this);
    if (this.closed) handler.onClose(this);
    else this.connection.creditStream(this);
  }

  /**
   * Detaches the handler: until the next `setHandler`, arriving data and events wait here. Lets a one-shot
   * handler (waiting for a response) hand the stream on without losing data that came with the response.
   */
  releaseHandler(): void {
    this.#handler = undefined;
  }

  /** Request (or response) header value by lower-case name, the first if repeated. */
  header(name: string): string | undefined {
    const list = this.requestHeaders;
    for (let index = 0; index < list.length; index += 2) if (list[index] === name) return list[index + 1];
    return undefined;
  }

  /**
   * Sends `chunk` as DATA (now, as far as the windows allow; the rest waits here). Returns false once more than
   * STREAM_WRITE_HIGH_WATER_BYTES wait here or in the socket: stop writing until `onDrain`. Writing after
   * `end` or `reset` is ignored (returns false; `done` is not called). With `done`, the chunk's buffer stays the
   * caller's to reuse once `done` is called (pooled reads); without, it is never reused by the caller.
   */
  write(chunk: Buffer, done?: H2WriteDone): boolean {
    if (this.closed || this.localEnded) return false;
    if (chunk.length === 0) {
      done?.();
      return true;
    }
    if (this.pendingBytes === 0) {
      const sent = this.connection.sendData(this, chunk, 0, false, done);
      if (sent < chunk.length) this.#queue(sent === 0 ? chunk : chunk.subarray(sent), done);
    } else {
      this.#queue(chunk, done);
    }
    if (this.pendingBytes < STREAM_WRITE_HIGH_WATER_BYTES && this.connection.socketHasRoom()) return true;
    this.wantsDrain = true;
    this.connection.waitForDrain(this);
    return false;
  }

  /**
   * Sends `pieces` (`bytes` in all, in order) as DATA: one frame whose payload is the pieces as they are when nothing
   * waits here and the windows and the peer's frame size take them all now, else their concatenation through
   * `write`. The pieces are never reused by the caller. Returns as `write`.
   */
  writePieces(pieces: readonly Buffer[], bytes: number): boolean {
    if (pieces.length === 1) return this.write(pieces[0]!);
    if (this.closed || this.localEnded) return false;
    if (this.pendingBytes > 0 || !this.connection.sendDataPieces(this, pieces, bytes)) return this.write(Buffer.concat(pieces, bytes));
    if (this.connection.socketHasRoom()) return true;
    this.wantsDrain = true;
    this.connection.waitForDrain(this);
    return false;
  }

  #queue(chunk: Buffer, done: H2WriteDone | undefined): void {
    this.pending.push(chunk);
    this.pendingDone.push(done);
    this.pendingBytes += chunk.length;
    this.connection.blockedOnWindow(this);
  }

  /** Half-closes our side (after writing `chunk`, if given): END_STREAM once every written byte is sent. */
  end(chunk?: Buffer): void {
    if (this.closed || this.localEnded) return;
    if (chunk !== undefined) this.write(chunk);
    this.localEnded = true;
    if (this.pendingBytes > 0) {
      this.endQueued = true;
      return;
    }
    this.connection.sendData(this, undefined, 0, true);
    this.connection.maybeCloseStream(this);
  }

  /**
   * Half-closes our side with `trailers` ([name, value, ...], no pseudo-headers): a HEADERS block with END_STREAM
   * once every written byte is sent. An empty list is a plain `end`.
   */
  endWithTrailers(trailers: readonly string[]): void {
    if (trailers.length === 0) {
      this.end();
      return;
    }
    if (this.closed || this.localEnded) return;
    this.localEnded = true;
    if (this.pendingBytes > 0) {
      this.endQueued = true;
      this.trailersQueued = trailers;
      return;
    }
    this.connection.sendTrailers(this, trailers);
  }

  /** Resets the stream (RST_STREAM `code`, CANCEL by default): queued data is dropped, the handler hears onClose. */
  reset(code: number = H2_CANCEL): void {
    if (this.closed) return;
    this.connection.resetStream(this, code);
  }

  /** Server side: sends the response headers (`:status` first). */
  respond(status: number, headers: readonly string[] = [], endStream = false): void {
    if (this.closed || this.localEnded) return;
    this.responded = true;
    this.connection.sendResponse(this, status, headers, endStream);
  }

  /** Stops giving the peer window back: it may send at most what is left of the stream window. */
  pauseReading(): void {
    this.#readingPaused = true;
  }

  /** Gives back the window consumed while paused (if enough to be worth a frame) and keeps doing so. */
  resumeReading(): void {
    this.#readingPaused = false;
    this.connection.creditStream(this);
  }

  get readingPaused(): boolean {
    return this.#readingPaused;
  }

  // Called by the connection.

  /** `shared`: the pooled buffer `chunk` is a view of (valid during this call only), or undefined for a buffer of its own. */
  deliverData(chunk: Buffer, shared: SharedReadBuffer | undefined): void {
    const handler = this.#handler;
    if (shared === undefined) {
      if (handler) handler.onData(this, chunk);
      else (this.#early ??= []).push(chunk);
    } else if (handler?.onSharedData) {
      handler.onSharedData(this, chunk, shared);
    } else if (handler) {
      handler.onData(this, Buffer.from(chunk));
    } else {
      (this.#early ??= []).push(Buffer.from(chunk));
    }
  }

  deliverResponse(headers: HeaderList, endStream: boolean): void {
    this.responseHeaders = headers;
    this.responseEndStream = endStream;
    this.#handler?.onResponse?.(this, headers, endStream);
  }

  deliverTrailers(trailers: HeaderList): void {
    this.trailers = trailers;
    this.#handler?.onTrailers?.(this, trailers);
  }

  deliverEnd(): void {
    this.remoteEnded = true;
    this.#handler?.onEnd(this);
  }

  /** Marks the stream closed (clean when `rstCode` is undefined) and tells the handler. */
  deliverClose(rstCode: number | undefined, byPeer: boolean): void {
    if (this.closed) return;
    this.closed = true;
    // RST_STREAM NO_ERROR after the peer's END_STREAM is a server saying "complete, send no more" (RFC 9113
    // 8.1): a clean end, as node:http2's splice treats it too.
    if (rstCode !== undefined && !(rstCode === H2_NO_ERROR && this.remoteEnded)) {
      this.rstCode = rstCode;
      this.resetByPeer = byPeer;
    }
    // Dropped unsent: their H2WriteDones are not called (the buffers stay out of their pool; see H2WriteDone).
    this.pending.length = 0;
    this.pendingDone.length = 0;
    this.pendingBytes = 0;
    this.#handler?.onClose(this);
  }
}
