/**
 * Joins one TCP socket and one H2Stream: the body of an HBONE tunnel on this layer, either side.
 *
 * Owns: data both ways with backpressure (TCP reading paused while the stream says false, stream credit held back
 * while the socket holds SPLICE_BUFFER_BYTES unsent), half-close both ways (FIN -> END_STREAM, END_STREAM -> FIN),
 * resets both ways (TCP error -> RST_STREAM CONNECT_ERROR, TCP closed unfinished -> CANCEL; a stream reset or
 * torn down with its connection -> TCP RST), and the byte counts at the end (read from the socket's counters).
 * Must not know about: TLS, HPACK, pools, policy, which side of the tunnel it is on.
 *
 * Hot path: the splice object is the stream's handler (methods, no closures per chunk); socket data goes to
 * `stream.write` as is; stream data goes to `socket.write` as is, corked until the end of the tick (or of the pooled
 * read's callback that delivered it: ../read-turn.ts). (Node hands a
 * TLS socket's plaintext over in 16 KiB pieces and runs the tick queue after each, so that is a write per piece.
 * Corked until the check phase instead, a loop turn's pieces left in one writev and the relay pairs used less CPU,
 * but the receiving agent in the mesh used more: 4.6-8.9 s/GiB against 2.3-4.0, load 6-8; BENCHMARKS.md, "The own
 * layer's single-stream throughput". Not kept.) The TCP socket is read into pooled buffers (../pooled-reads.ts, as
 * node:http2's splice does: no allocation per read); each goes back to the pool from the stream write's
 * H2WriteDone, once the connection has encrypted or copied it. The stream's chunks arrive as views of the
 * connection's pooled TLS read buffers (onSharedData): each piece holds its buffer until the socket write that
 * carries it completes (a FIFO of holds, one per write, released in order by the writes' callbacks), so nothing is
 * allocated per TLS read either. Chunks in buffers Node allocated per read (a connection Node would not switch to
 * pooled reads, and the TCP socket's where this Node has no user-buffer reads) are counted
 * (../buffer-scavenge.ts), so a scavenge frees them before V8 runs a full mark-compact for them.
 */
import type net from 'node:net';
import { relayedInReadBuffers } from '../buffer-scavenge.ts';
import { SPLICE_BUFFER_BYTES } from '../config.ts';
import { readSocketInto, type PooledReader, type SharedReadBuffer } from '../pooled-reads.ts';
import { resetSocket } from '../splice.ts';
import { deferToTurnEnd } from '../read-turn.ts';
import { H2_CANCEL, H2_CONNECT_ERROR, h2ErrorName } from './errors.ts';
import type { H2Stream, H2StreamHandler } from './stream.ts';

export interface H2SpliceResult {
  bytesFromSocket: number;
  bytesToSocket: number;
  /** The RST_STREAM code when the stream was reset (by either side) or torn down; undefined when it ended cleanly. */
  rstCode: number | undefined;
  error?: Error;
}

/** Splices `socket` and `stream`; resolves once both are closed. Never rejects. */
export function spliceH2(socket: net.Socket, stream: H2Stream): Promise<H2SpliceResult> {
  return new Promise((resolve) => {
    new H2Splice(socket, stream, resolve);
  });
}

function uncorkSplice(splice: H2Splice): void {
  splice.uncork();
}

class H2Splice implements H2StreamHandler {
  readonly #socket: net.Socket;
  readonly #stream: H2Stream;
  readonly #resolve: (result: H2SpliceResult) => void;
  readonly #bytesReadAtStart: number;
  readonly #bytesWrittenAtStart: number;
  #openSides = 2;
  #error: Error | undefined;
  #corked = false;
  #reader: PooledReader | undefined;
  /** The shared read buffers of the pieces written to the socket and not yet completed, oldest first. */
  readonly #heldForWrites: SharedReadBuffer[] = [];

  constructor(socket: net.Socket, stream: H2Stream, resolve: (result: H2SpliceResult) => void) {
    this.#socket = socket;
    this.#stream = stream;
    this.#resolve = resolve;
    this.#bytesReadAtStart = socket.bytesRead - socket.readableLength;
    this.#bytesWrittenAtStart = socket.bytesWritten;
    socket.allowHalfOpen = true;
    if (!socket.connecting && !socket.destroyed) socket.setNoDelay(true);
    socket.on('error', this.#onSocketError);
    if (socket.destroyed) this.#onSocketClose();
    else {
      socket.once('close', this.#onSocketClose);
      // What the socket read before the splice (while the stream was being opened) goes first.
      this.#reader = readSocketInto(socket, this.#onSocketChunk, this.#onSocketData);
      socket.on('end', this.#onSocketEnd);
      socket.on('drain', this.#onSocketDrain);
    }
    stream.setHandler(this);
    // A FIN with nothing before it that arrived before the splice began has already emitted its 'end' (Node emits
    // it at EOF once the buffer is empty, read or not): pass it on now, or it never is. (The stream's own early
    // end is replayed by setHandler.)
    if (socket.readableEnded && !socket.destroyed) this.#onSocketEnd();
  }

  // TCP -> stream, plain reads (a buffer Node allocated for this read).
  readonly #onSocketData = (chunk: Buffer): void => {
    relayedInReadBuffers(chunk.length);
    if (!this.#stream.write(chunk)) this.#socket.pause();
  };

  // TCP -> stream, pooled reads: false stops reading until onDrain resumes the socket.
  readonly #onSocketChunk = (chunk: Buffer): boolean => this.#stream.write(chunk, this.#reader!.written);

  readonly #onSocketEnd = (): void => {
    this.#stream.end();
  };

  onDrain(): void {
    this.#socket.resume();
  }

  // Stream -> TCP.
  onData(_stream: H2Stream, chunk: Buffer): void {
    const socket = this.#socket;
    if (socket.destroyed) return;
    relayedInReadBuffers(chunk.length);
    this.#corkForTurn(socket);
    if (!socket.write(chunk) && socket.writableLength >= SPLICE_BUFFER_BYTES) this.#stream.pauseReading();
  }

  // Stream -> TCP, a piece of a pooled read buffer: held until its write completes.
  onSharedData(_stream: H2Stream, chunk: Buffer, shared: SharedReadBuffer): void {
    const socket = this.#socket;
    // A write after end would fail at once, ahead of writes still in flight: its release would come out of turn.
    if (socket.destroyed || socket.writableEnded) return;
    this.#corkForTurn(socket);
    shared.hold();
    this.#heldForWrites.push(shared);
    if (!socket.write(chunk, this.#onSharedWritten) && socket.writableLength >= SPLICE_BUFFER_BYTES) this.#stream.pauseReading();
  }

  // A Writable completes its writes in order (failed ones too, with the error), so the oldest hold is this write's.
  readonly #onSharedWritten = (error?: Error | null): void => {
    this.#heldForWrites.shift()?.release(error);
  };

  #corkForTurn(socket: net.Socket): void {
    if (this.#corked) return;
    this.#corked = true;
    socket.cork();
    deferToTurnEnd(uncorkSplice, this);
  }

  uncork(): void {
    this.#corked = false;
    this.#socket.uncork();
  }

  readonly #onSocketDrain = (): void => {
    this.#stream.resumeReading();
  };

  onEnd(): void {
    const socket = this.#socket;
    if (!socket.destroyed && !socket.writableEnded) socket.end();
  }

  onClose(stream: H2Stream): void {
    const socket = this.#socket;
    if (stream.rstCode !== undefined && !socket.destroyed) {
      // A reset (either way, or the connection torn down) becomes a TCP RST: the application must not take a
      // truncated stream for a complete one.
      this.#error ??= new Error(`stream ${stream.resetByPeer ? 'reset by the peer' : 'reset'} with ${h2ErrorName(stream.rstCode)}`);
      resetSocket(socket);
    }
    this.#sideDone();
  }

  readonly #onSocketError = (error: Error): void => {
    this.#error ??= error;
    // RFC 9113 8.5: a TCP error on the proxied connection is a stream error of type CONNECT_ERROR.
    this.#stream.reset(H2_CONNECT_ERROR);
  };

  readonly #onSocketClose = (): void => {
    const socket = this.#socket;
    if (!(socket.readableEnded && socket.writableFinished)) {
      this.#stream.reset(this.#error ? H2_CONNECT_ERROR : H2_CANCEL);
    }
    this.#sideDone();
  };

  #sideDone(): void {
    if (--this.#openSides > 0) return;
    const result: H2SpliceResult = {
      bytesFromSocket: this.#socket.bytesRead - this.#bytesReadAtStart,
      bytesToSocket: this.#socket.bytesWritten - this.#bytesWrittenAtStart,
      rstCode: this.#stream.rstCode,
    };
    if (this.#error) result.error = this.#error;
    this.#resolve(result);
  }
}
