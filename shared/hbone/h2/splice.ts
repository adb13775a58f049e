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
 * `stream.write` as is; stream data goes to `socket.write` as is, gathered until the end of the tick (or of the pooled
 * read's callback that delivered it: ../read-turn.ts) and written then, one write or one corked writev; to a socket
 * with nothing queued without write callbacks (writeTurn: a write the kernel takes at once then costs no tick). (Node hands a
 * TLS socket's plaintext over in 16 KiB pieces and runs the tick queue after each, so that is a write per piece.
 * Corked until the check phase instead, a loop turn's pieces left in one writev and the relay pairs used less CPU,
 * but the receiving agent in the mesh used more: 4.6-8.9 s/GiB against 2.3-4.0, load 6-8; BENCHMARKS.md, "The own
 * layer's single-stream throughput". Not kept.) The TCP socket is read into pooled buffers (../pooled-reads.ts, as
 * node:http2's splice does: no allocation per read); each goes back to the pool from the stream write's
 * H2WriteDone, once the connection has encrypted or copied it. The stream's chunks arrive as views of the
 * connection's pooled TLS read buffers (onSharedData): each piece holds its buffer until the socket write that
 * carries it has completed (at once when the kernel took it inside `write`, else from a write callback), so nothing
 * is allocated per TLS read either. Chunks in buffers Node allocated per read (a connection Node would not switch to
 * pooled reads, and the TCP socket's where this Node has no user-buffer reads) are counted
 * (../buffer-scavenge.ts), so a scavenge frees them before V8 runs a full mark-compact for them.
 */
import type net from 'node:net';
import { relayedInReadBuffers } from '../buffer-scavenge.ts';
import { SPLICE_BUFFER_BYTES } from '../config.ts';
import { readSocketInto, type PooledReader, type SharedReadBuffer } from '../pooled-reads.ts';
import { resetSocket } from '../splice.ts';
import { emptyList } from '../lists.ts';
import { deferToTurnEnd } from '../read-turn.ts';
import { DirectWriter, WRITE_DONE, WRITE_FAILED } from '../direct-writes.ts';
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
    new H2Splice(socket, stream, resolveWith as (target: unknown, result: H2SpliceResult) => void, resolve);
  });
}

function resolveWith(resolve: (result: H2SpliceResult) => void, result: H2SpliceResult): void {
  resolve(result);
}

/**
 * Splices `socket` and `stream`; calls `done(target, result)` once both are closed: spliceH2 without a promise, its
 * resolve functions and a reaction per tunnel (the HBONE server's, issue 14's storm step).
 */
export function spliceH2To<T>(socket: net.Socket, stream: H2Stream, done: (target: T, result: H2SpliceResult) => void, target: T): void {
  new H2Splice(socket, stream, done as (target: unknown, result: H2SpliceResult) => void, target);
}

function writeSpliceTurn(splice: H2Splice): void {
  splice.writeTurn();
}

/** Released with this when a direct write failed: its buffers are not reused (the failed write may still hold them). */
const FAILED_WRITE = new Error('the write failed');

/** The zero-byte write whose completion says that every write queued before it has completed (see writeTurn). */
const WRITES_BEFORE_DONE = Buffer.alloc(0);

class H2Splice implements H2StreamHandler {
  readonly #socket: net.Socket;
  readonly #stream: H2Stream;
  readonly #done: (target: unknown, result: H2SpliceResult) => void;
  readonly #doneTarget: unknown;
  readonly #bytesReadAtStart: number;
  readonly #bytesWrittenAtStart: number;
  #openSides = 2;
  #error: Error | undefined;
  #reader: PooledReader | undefined;
  /** The stream's pieces of this turn, written to the socket when it ends (writeTurn). */
  readonly #turnChunks: Buffer[] = [];
  /** Beside `#turnChunks`: the shared read buffer each piece is a view of (held), or undefined for a piece of its own. */
  readonly #turnShared: Array<SharedReadBuffer | undefined> = [];
  /**
   * The shared read buffers of pieces written to the socket and not known to be written yet, oldest first: each
   * released by its write's callback, or by the zero-byte write after a turn's callback-less writes (#batchCounts).
   */
  readonly #heldForWrites: SharedReadBuffer[] = [];
  /** Per zero-byte write in flight, oldest first: how many of `#heldForWrites` its completion releases. */
  readonly #batchCounts: number[] = [];
  /**
   * Writes to the socket's handle without its Writable (../direct-writes.ts), one in flight; what the stream delivers
   * meanwhile stays in the turn's lists and is written from its completion. Undefined: `socket.write` (fallback).
   */
  readonly #direct: DirectWriter | undefined;
  /** The pieces of the direct write in flight (a writev's array, kept until it completes). */
  readonly #flightChunks: Buffer[] = [];
  /** Beside `#flightChunks`: their shared read buffers, released by the write's completion. */
  readonly #flightShared: Array<SharedReadBuffer | undefined> = [];
  /** Bytes gathered in the turn's lists (while a direct write is in flight they wait there). */
  #turnBytes = 0;
  /** The stream's reading was paused because the gathered bytes behind a direct write in flight grew too many. */
  #pausedForDirect = false;
  /** The stream ended while a direct write was in flight: the socket is ended once everything gathered is written. */
  #endAfterWrites = false;

  constructor(socket: net.Socket, stream: H2Stream, done: (target: unknown, result: H2SpliceResult) => void, doneTarget: unknown) {
    this.#socket = socket;
    this.#stream = stream;
    this.#done = done;
    this.#doneTarget = doneTarget;
    this.#bytesReadAtStart = socket.bytesRead - socket.readableLength;
    this.#bytesWrittenAtStart = socket.bytesWritten;
    this.#direct = DirectWriter.attach(socket, this.#onDirectWritten);
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
    // The socket's reads in one poll phase leave in one TLS write (connection.ts: #write's `coalesce`).
    stream.coalesceWrites = true;
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

  // Stream -> TCP: a piece of its own (kept as is), written when the turn ends.
  onData(_stream: H2Stream, chunk: Buffer): void {
    if (this.#socket.destroyed) return;
    relayedInReadBuffers(chunk.length);
    this.#gather(chunk, undefined);
  }

  // Stream -> TCP, a piece of a pooled read buffer: held until its write has completed.
  onSharedData(_stream: H2Stream, chunk: Buffer, shared: SharedReadBuffer): void {
    const socket = this.#socket;
    // A write after end would fail at once, ahead of writes still in flight: its release would come out of turn.
    if (socket.destroyed || socket.writableEnded) return;
    shared.hold();
    this.#gather(chunk, shared);
  }

  #gather(chunk: Buffer, shared: SharedReadBuffer | undefined): void {
    if (this.#turnChunks.length === 0) deferToTurnEnd(writeSpliceTurn, this);
    this.#turnChunks.push(chunk);
    this.#turnShared.push(shared);
    this.#turnBytes += chunk.length;
  }

  /**
   * Writes the turn's pieces (one write, or one writev when there are several). On an idle socket they go without
   * write callbacks: a write the kernel takes at once completes inside `write` (Node then schedules nothing for it,
   * where a callback costs a tick and an object per write), and the socket's queue being empty afterwards says so,
   * so their holds are released here. What the kernel did not take at once is followed by a zero-byte write whose
   * callback runs once every write before it completed (a Writable completes its writes in order) and releases
   * them. On a socket that is already busy each held piece takes a callback of its own, as before.
   */
  writeTurn(): void {
    const chunks = this.#turnChunks;
    const shared = this.#turnShared;
    const count = chunks.length;
    if (count === 0) return;
    const socket = this.#socket;
    if (socket.destroyed || socket.writableEnded) {
      // Dropped unsent (the socket is gone or ended under a reset): nothing reads the pieces, the holds go.
      for (let index = 0; index < count; index++) shared[index]?.release();
      emptyList(chunks);
      emptyList(shared);
      this.#turnBytes = 0;
      return;
    }
    const direct = this.#direct;
    if (direct !== undefined) {
      if (direct.busy) {
        // Written from the completion; past SPLICE_BUFFER_BYTES the stream stops crediting its peer.
        if (this.#turnBytes >= SPLICE_BUFFER_BYTES && !this.#pausedForDirect) {
          this.#pausedForDirect = true;
          this.#stream.pauseReading();
        }
        return;
      }
      if (direct.ready()) {
        this.#writeDirect(direct, chunks, shared, count);
        return;
      }
    }
    this.#turnBytes = 0;
    let room: boolean;
    if (socket.writableLength === 0 && !socket.writableCorked) {
      let held = 0;
      if (count === 1) {
        room = socket.write(chunks[0]!);
      } else {
        socket.cork();
        for (let index = 0; index < count; index++) socket.write(chunks[index]!);
        socket.uncork();
        room = socket.writableLength < socket.writableHighWaterMark;
      }
      for (let index = 0; index < count; index++) {
        const piece = shared[index];
        if (piece === undefined) continue;
        this.#heldForWrites.push(piece);
        held++;
      }
      if (held > 0) this.#settleIdleWrites(socket, held);
    } else {
      room = true;
      for (let index = 0; index < count; index++) {
        const piece = shared[index];
        if (piece === undefined) {
          room = socket.write(chunks[index]!);
        } else {
          this.#heldForWrites.push(piece);
          room = socket.write(chunks[index]!, this.#onHeldWritten);
        }
      }
    }
    emptyList(chunks);
    emptyList(shared);
    if (!room && socket.writableLength >= SPLICE_BUFFER_BYTES) this.#stream.pauseReading();
  }

  /**
   * The turn's pieces to the socket's handle in one write. The kernel usually takes them before the call returns:
   * their holds are released here and nothing runs later. Otherwise the pieces and their holds wait for the
   * completion (#onDirectWritten).
   */
  #writeDirect(direct: DirectWriter, chunks: Buffer[], shared: Array<SharedReadBuffer | undefined>, count: number): void {
    this.#turnBytes = 0;
    const flight = this.#flightChunks;
    let result;
    if (count === 1) {
      result = direct.write(chunks[0]!);
    } else {
      for (let index = 0; index < count; index++) flight.push(chunks[index]!);
      result = direct.writev(flight);
    }
    if (result === WRITE_DONE) {
      emptyList(flight);
      for (let index = 0; index < count; index++) shared[index]?.release();
    } else if (result === WRITE_FAILED) {
      // The socket is being destroyed with the error: the pieces may still be referenced by the failed write.
      emptyList(flight);
      for (let index = 0; index < count; index++) shared[index]?.release(FAILED_WRITE);
    } else {
      if (count === 1) flight.push(chunks[0]!);
      for (let index = 0; index < count; index++) this.#flightShared.push(shared[index]);
    }
    emptyList(chunks);
    emptyList(shared);
  }

  // The direct write in flight completed (or failed): its holds go, then what was gathered meanwhile, then an end.
  readonly #onDirectWritten = (error: Error | undefined): void => {
    const flightShared = this.#flightShared;
    for (let index = 0; index < flightShared.length; index++) flightShared[index]?.release(error);
    emptyList(flightShared);
    emptyList(this.#flightChunks);
    if (error !== undefined) {
      // The socket is destroyed: what was gathered behind the write is dropped unsent, and its holds go with it
      // (writeTurn on a destroyed socket), or those buffers stayed out of their pool for good.
      this.writeTurn();
      return;
    }
    if (this.#turnChunks.length > 0) this.writeTurn();
    if (this.#direct!.busy) return;
    if (this.#pausedForDirect) {
      this.#pausedForDirect = false;
      this.#stream.resumeReading();
    }
    const socket = this.#socket;
    if (this.#endAfterWrites && !socket.destroyed && !socket.writableEnded) {
      this.#endAfterWrites = false;
      socket.end();
    }
  };

  /** The last `held` of `#heldForWrites` were just written without callbacks to a socket that had nothing queued. */
  #settleIdleWrites(socket: net.Socket, held: number): void {
    if (socket.writableLength === 0 && !socket.destroyed) {
      // Completed inside `write`: the kernel has the bytes. (Callbacks of earlier writes still owed by a tick
      // release from the head of the list: the count is what matters, every entry is one hold.)
      for (let index = 0; index < held; index++) this.#heldForWrites.pop()!.release();
      return;
    }
    this.#batchCounts.push(held);
    socket.write(WRITES_BEFORE_DONE, this.#onBatchWritten);
  }

  // A Writable completes its writes in order (failed ones too, with the error), so the oldest hold is this write's.
  readonly #onHeldWritten = (error?: Error | null): void => {
    this.#heldForWrites.shift()?.release(error);
  };

  readonly #onBatchWritten = (error?: Error | null): void => {
    const held = this.#batchCounts.shift() ?? 0;
    for (let index = 0; index < held; index++) this.#heldForWrites.shift()?.release(error);
  };

  readonly #onSocketDrain = (): void => {
    this.#stream.resumeReading();
  };

  onEnd(): void {
    const socket = this.#socket;
    // The turn's pieces go before the FIN (the zero-byte write, if one is owed, may not follow an end).
    this.writeTurn();
    if (socket.destroyed || socket.writableEnded) return;
    // Behind a direct write in flight the FIN waits for it and for what it holds back (#onDirectWritten).
    if (this.#direct?.busy) this.#endAfterWrites = true;
    else socket.end();
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
    this.#done(this.#doneTarget, result);
  }
}
