/**
 * Joins one TCP socket and one HTTP/2 stream: the body of every HBONE tunnel, on both the client and the server.
 *
 * Owns: data both ways with backpressure; half-close both ways (TCP FIN -> END_STREAM, END_STREAM -> FIN);
 * reset both ways (TCP RST or error -> RST_STREAM CONNECT_ERROR, local abort -> CANCEL; RST_STREAM -> TCP RST
 * via `resetSocket`); the byte counts, read from the socket's own counters at the end (nothing per chunk).
 * Must not know about: TLS, pools, policy, which side of the tunnel it is on.
 *
 * Hot path: per chunk, one `write` and a length check; no closure or object is made per chunk (every handler is
 * allocated once per splice). Writes into the TCP socket are corked until the event loop's check phase
 * (setImmediate): Node's HTTP/2 hands data to JavaScript one callback per piece, cut at TLS record and frame
 * boundaries (16375 + 9 bytes, 8 KiB, ...), and corking turns one loop turn's pieces into one writev syscall
 * (measured: 32768 write calls for 256 MiB became 1029 writev calls; no added latency, as the check phase
 * follows the I/O phase in the same loop turn). A source is paused only when its destination holds more than
 * SPLICE_BUFFER_BYTES unsent (not at the 64 KiB high-water mark), so a steady flow never stops and restarts reading.
 * The TCP socket is read into pooled buffers (pooled-reads.ts: no allocation per read, which in bulk drove V8 to a
 * full mark-compact every ~190 ms); each buffer goes back to the pool from its stream write's completion callback.
 * The stream's DATA arrives in buffers node:http2 allocates per read: counted (buffer-scavenge.ts), so a scavenge
 * frees them before V8 runs a full mark-compact for them.
 */
import http2 from 'node:http2';
import type net from 'node:net';
import { SPLICE_BUFFER_BYTES } from './config.ts';
import { readSocketInto, type PooledReader } from './pooled-reads.ts';
import { relayedInReadBuffers } from './buffer-scavenge.ts';

const { NGHTTP2_NO_ERROR, NGHTTP2_CANCEL, NGHTTP2_CONNECT_ERROR } = http2.constants;

export interface SpliceResult {
  /** Bytes read from the TCP socket and carried into the stream. */
  bytesFromSocket: number;
  /** Bytes the stream delivered and the socket accepted. */
  bytesToSocket: number;
  /** Why the tunnel ended abnormally: the socket's error or the stream's error/reset. Absent when both closed cleanly. */
  error?: Error;
  /** The RST_STREAM code the stream closed with (0 when it ended cleanly). */
  rstCode: number;
  /** True when the stream was reset (by the peer or by us) rather than ended. */
  reset: boolean;
}

/**
 * Splices `socket` and `stream` and resolves when both are closed. Never rejects: failures are in the result.
 * The socket is switched to half-open mode so a FIN in one direction leaves the other flowing.
 */
export function splice(socket: net.Socket, stream: http2.Http2Stream): Promise<SpliceResult> {
  return new Promise((resolve) => {
    new Splice(socket, stream, resolve);
  });
}

function skipFinal(callback: (error?: Error | null) => void): void {
  callback();
}

/**
 * Sends RST_STREAM with `code` and nothing else. Http2Stream.close() first ends the writable side, which sends
 * END_STREAM just before the RST_STREAM: the peer's application would see a clean end (FIN) before the reset, and
 * could take a truncated response for a complete one. With `_final` skipped on this one stream, close() sends
 * only the reset.
 */
export function resetStream(stream: http2.Http2Stream, code: number): void {
  if (stream.destroyed || stream.closed) return;
  if (!stream.writableEnded) stream._final = skipFinal;
  stream.close(code);
}

/**
 * Resets a TCP socket (RST, so its peer sees a failure, not a clean end) and always frees its descriptor. Node's
 * resetAndDestroy() asks libuv for uv_tcp_close_reset, which refuses (EINVAL) a socket whose FIN has begun (end()
 * was called), and Node then never closes the handle: the descriptor leaked, one per tunnel a client reset after
 * its stream had reported its end. Such a socket has already told its peer the data ended: it is closed instead.
 */
export function resetSocket(socket: net.Socket): void {
  if (socket.destroyed) return;
  if (socket.writableEnded) socket.destroy();
  else socket.resetAndDestroy();
}

function uncorkSocket(splice: Splice): void {
  splice.uncork();
}

class Splice {
  readonly #socket: net.Socket;
  readonly #stream: http2.Http2Stream;
  readonly #resolve: (result: SpliceResult) => void;
  readonly #bytesReadAtStart: number;
  readonly #bytesWrittenAtStart: number;
  #openSides = 2;
  #error: Error | undefined;
  #socketCorked = false;
  #reader: PooledReader | undefined;

  constructor(socket: net.Socket, stream: http2.Http2Stream, resolve: (result: SpliceResult) => void) {
    this.#socket = socket;
    this.#stream = stream;
    this.#resolve = resolve;
    // Bytes the socket already read into its buffer (while the stream was being opened) are still to be carried.
    this.#bytesReadAtStart = socket.bytesRead - socket.readableLength;
    this.#bytesWrittenAtStart = socket.bytesWritten;
    // net.Socket ends its writable side when the readable side ends unless half-open; a tunnel must not.
    socket.allowHalfOpen = true;
    if (!socket.connecting && !socket.destroyed) socket.setNoDelay(true);
    socket.on('error', this.#onSocketError);
    stream.on('error', this.#onStreamError);
    if (socket.destroyed) {
      this.#onSocketClose();
    } else {
      socket.once('close', this.#onSocketClose);
    }
    if (stream.destroyed) {
      this.#onStreamClose();
    } else {
      stream.once('close', this.#onStreamClose);
    }
    if (!socket.destroyed && !stream.destroyed) {
      // What the socket read before the splice (while the stream was being opened) goes first.
      this.#reader = readSocketInto(socket, this.#onSocketChunk, this.#onSocketData);
      socket.on('end', this.#onSocketEnd);
      stream.on('drain', this.#onStreamDrain);
      stream.on('data', this.#onStreamData);
      stream.on('end', this.#onStreamEnd);
      socket.on('drain', this.#onSocketDrain);
      // A FIN that arrived with nothing before it, before the splice began, has already emitted its 'end' (Node
      // emits 'end' at EOF once the buffer is empty, read or not): pass it on now, or it never is (measured: after
      // a 5,000/s storm, 452 client connections closed before their tunnels were up sat in CLOSE-WAIT for good,
      // each with its tunnel and its connection to the application). An END_STREAM that came before the splice
      // waits in the stream until it is read (test/unit/hbone-early-end.test.ts).
      if (socket.readableEnded) this.#onSocketEnd();
    }
  }

  // TCP -> stream. A FIN becomes END_STREAM once everything before it is written.
  readonly #onSocketData = (chunk: Buffer): void => {
    const stream = this.#stream;
    relayedInReadBuffers(chunk.length);
    if (!stream.write(chunk) && stream.writableLength >= SPLICE_BUFFER_BYTES) this.#socket.pause();
  };

  // TCP -> stream, pooled reads: the chunk's buffer goes back to the pool once the stream has written it.
  readonly #onSocketChunk = (chunk: Buffer): boolean => {
    const stream = this.#stream;
    return stream.write(chunk, this.#reader!.written) || stream.writableLength < SPLICE_BUFFER_BYTES;
  };

  readonly #onStreamDrain = (): void => {
    this.#socket.resume();
  };

  readonly #onSocketEnd = (): void => {
    if (!this.#stream.destroyed && !this.#stream.writableEnded) this.#stream.end();
  };

  // Stream -> TCP. END_STREAM becomes a FIN once everything before it is written.
  readonly #onStreamData = (chunk: Buffer): void => {
    const socket = this.#socket;
    relayedInReadBuffers(chunk.length);
    if (!this.#socketCorked) {
      this.#socketCorked = true;
      socket.cork();
      setImmediate(uncorkSocket, this);
    }
    if (!socket.write(chunk) && socket.writableLength >= SPLICE_BUFFER_BYTES) this.#stream.pause();
  };

  uncork(): void {
    this.#socketCorked = false;
    this.#socket.uncork();
  }

  readonly #onSocketDrain = (): void => {
    this.#stream.resume();
  };

  readonly #onStreamEnd = (): void => {
    // Node also ends the readable side of a stream that was reset: that is no END_STREAM, and must not be a FIN.
    if ((this.#stream.rstCode ?? NGHTTP2_NO_ERROR) !== NGHTTP2_NO_ERROR) return;
    if (!this.#socket.destroyed && !this.#socket.writableEnded) this.#socket.end();
  };

  readonly #onSocketError = (error: Error): void => {
    this.#error ??= error;
    // RFC 9113 8.5: a TCP error or RST on the proxied connection is a stream error of type CONNECT_ERROR.
    resetStream(this.#stream, NGHTTP2_CONNECT_ERROR);
  };

  readonly #onStreamError = (error: Error): void => {
    this.#error ??= error;
  };

  readonly #onSocketClose = (): void => {
    const socket = this.#socket;
    const stream = this.#stream;
    const clean = socket.readableEnded && socket.writableFinished;
    if (!clean) {
      // The socket went away without finishing both directions: the stream cannot finish either.
      resetStream(stream, this.#error ? NGHTTP2_CONNECT_ERROR : NGHTTP2_CANCEL);
    }
    this.#sideDone();
  };

  readonly #onStreamClose = (): void => {
    const socket = this.#socket;
    const stream = this.#stream;
    const rstCode = stream.rstCode ?? NGHTTP2_NO_ERROR;
    if ((rstCode !== NGHTTP2_NO_ERROR || !stream.readableEnded) && !socket.destroyed) {
      // RST_STREAM (or a stream torn down with its session) becomes a TCP RST, so the application sees a reset
      // rather than a clean end it might mistake for a complete response.
      resetSocket(socket);
    }
    this.#sideDone();
  };

  #sideDone(): void {
    if (--this.#openSides > 0) return;
    const stream = this.#stream;
    const rstCode = stream.rstCode ?? NGHTTP2_NO_ERROR;
    const reset = rstCode !== NGHTTP2_NO_ERROR || !stream.readableEnded;
    const result: SpliceResult = {
      bytesFromSocket: this.#socket.bytesRead - this.#bytesReadAtStart,
      bytesToSocket: this.#socket.bytesWritten - this.#bytesWrittenAtStart,
      rstCode,
      reset,
    };
    const error = this.#error ?? (reset ? new Error(`stream reset with RST_STREAM code ${rstCode}`) : undefined);
    if (error) result.error = error;
    this.#resolve(result);
  }
}
