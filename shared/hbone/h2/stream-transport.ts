/**
 * An H2Stream as the transport of a nested H2Connection (HTTP/2 inside an HBONE CONNECT stream: the waypoint's h2c
 * sessions with its clients and its endpoints), without a node:stream Duplex between the two layers.
 *
 * Owns: the outer stream's handler while the nested connection runs on it: received DATA goes straight to the nested
 * connection's reader (no Readable, no 'data' emit; a piece of the outer connection's pooled read parsed in place by
 * the nested connection when it offers a borrowed reader, not copied first); what the nested connection gathered in a tick goes to the outer
 * stream as one `writePieces` (one outer DATA frame whose payload is the nested frames as they are, no intermediate
 * Buffer, when the windows allow), END_STREAM both ways as `end()` / 'end', resets both ways (`destroy()` ->
 * RST_STREAM CANCEL unless both sides ended; the peer's RST_STREAM or a lost connection -> 'error' then 'close'),
 * and back-pressure: after the outer stream refused a write (`write` false), what the nested connection hands on
 * counts as `writableLength` (as a Writable's buffer) until the outer stream's onDrain, then 'drain'.
 * The face the nested H2Connection reads of its socket: `destroyed`, `writableEnded`, `writableLength`, `end`,
 * `destroy`, and the rare events 'drain', 'end', 'error', 'close'.
 * Must not know about: HTTP semantics, the waypoint, TLS.
 * Hot path: a received chunk is one call; a tick's nested frames one `writePieces`; nothing allocated per chunk here.
 */
import { EventEmitter } from 'node:events';
import { H2_CANCEL, H2_NO_ERROR, h2ErrorName } from './errors.ts';
import type { H2Stream, H2StreamHandler, H2WriteDone } from './stream.ts';

/** Where received bytes go: the nested connection's frame reader. */
export type H2TransportReader = (chunk: Buffer) => void;
/**
 * The reader for a piece of the outer connection's pooled read: valid during the call only (the reader copies what
 * it keeps). Without one, such pieces are copied for the plain reader.
 */
export type H2TransportBorrowedReader = (chunk: Buffer) => void;

/** Something that holds an H2Stream it reads and writes as a Duplex (h2/duplex.ts's H2DuplexStream). */
export interface H2StreamDuplexLike {
  readonly stream: H2Stream;
  pause(): unknown;
  read(): unknown;
}

export class H2StreamTransport extends EventEmitter implements H2StreamHandler {
  readonly stream: H2Stream;
  destroyed = false;
  writableEnded = false;
  /** Bytes received before the reader started (the sniffed first bytes, what a Duplex had buffered). */
  #held: Buffer[];
  #reader: H2TransportReader | undefined;
  #borrowedReader: H2TransportBorrowedReader | undefined;
  #started = false;
  #remoteEnded = false;
  #closeSeen = false;
  /** Set when the outer stream's `write` said false, until its onDrain. */
  #blocked = false;
  #blockedBytes = 0;

  /**
   * Takes `stream` over as its handler. `alreadyRead`: its bytes read before (in order), handed to the reader
   * first. Its end or close, if they happened, are said after them.
   */
  constructor(stream: H2Stream, alreadyRead: Buffer[] = []) {
    super();
    this.stream = stream;
    this.#held = alreadyRead;
    stream.setHandler(this);
    if (stream.readingPaused && !stream.closed) stream.resumeReading();
  }

  /**
   * The transport for the stream inside `duplex` (nothing else reads it from now on): `firstBytes` (read from it
   * already) and whatever it had buffered go first.
   */
  static takeOver(duplex: H2StreamDuplexLike, firstBytes: Buffer | undefined): H2StreamTransport {
    duplex.pause();
    const alreadyRead: Buffer[] = firstBytes === undefined ? [] : [firstBytes];
    for (let chunk = duplex.read() as Buffer | null; chunk !== null; chunk = duplex.read() as Buffer | null) alreadyRead.push(chunk);
    return new H2StreamTransport(duplex.stream, alreadyRead);
  }

  /** What has not been taken from the socket's queue (see the top comment). */
  get writableLength(): number {
    return this.#blocked ? this.#blockedBytes : 0;
  }

  /**
   * Starts delivering to `reader`, from the next tick on (its owner attaches its listeners first): what was held,
   * then the end or close that came meanwhile. One call per connection.
   */
  attach(reader: H2TransportReader, borrowedReader?: H2TransportBorrowedReader): void {
    this.#reader = reader;
    this.#borrowedReader = borrowedReader;
    process.nextTick(startTransport, this);
  }

  start(): void {
    this.#started = true;
    const held = this.#held;
    this.#held = [];
    for (let index = 0; index < held.length && !this.destroyed; index++) this.#reader!(held[index]!);
    if (this.#remoteEnded) this.emit('end');
    if (this.#closeSeen) this.#sayClosed(this.stream);
  }

  /**
   * A tick's nested frames, in order (`bytes` in all): one outer DATA frame of the pieces when the windows allow,
   * else one buffer; pieces with an H2WriteDone (`doneCount` > 0) go as their own writes, so each done keeps its turn.
   */
  writePieces(pieces: readonly Buffer[], dones: ReadonlyArray<H2WriteDone | undefined>, doneCount: number, bytes: number): void {
    const stream = this.stream;
    let room = true;
    if (doneCount === 0) {
      room = stream.writePieces(pieces, bytes);
    } else {
      for (let index = 0; index < pieces.length; index++) room = stream.write(pieces[index]!, dones[index]) && room;
    }
    if (!room) this.#blocked = true;
    if (this.#blocked) this.#blockedBytes += bytes;
  }

  /** Half-closes the outer stream (END_STREAM after what was written). */
  end(): void {
    if (this.writableEnded) return;
    this.writableEnded = true;
    this.stream.end();
  }

  /** Resets the outer stream (CANCEL) unless both sides ended cleanly; 'close' follows from the stream. */
  destroy(): void {
    const stream = this.stream;
    if (!stream.closed && !(stream.localEnded && stream.remoteEnded)) stream.reset(H2_CANCEL);
  }

  // ---- as the outer stream's handler ----

  onData(_stream: H2Stream, chunk: Buffer): void {
    if (this.#started) this.#reader!(chunk);
    else this.#held.push(chunk);
  }

  /** A piece of the outer connection's pooled read (valid during this call): to the borrowed reader, else copied. */
  onSharedData(stream: H2Stream, chunk: Buffer): void {
    const reader = this.#borrowedReader;
    if (this.#started && reader !== undefined) reader(chunk);
    else this.onData(stream, Buffer.from(chunk));
  }

  onEnd(): void {
    this.#remoteEnded = true;
    if (this.#started) this.emit('end');
  }

  onDrain(): void {
    this.#blocked = false;
    this.#blockedBytes = 0;
    this.emit('drain');
  }

  onClose(stream: H2Stream): void {
    this.destroyed = true;
    this.#closeSeen = true;
    if (this.#started) this.#sayClosed(stream);
  }

  #sayClosed(stream: H2Stream): void {
    // As H2DuplexStream: CANCEL (ours, or the outer connection torn down) and our own NO_ERROR are no 'error'.
    if (stream.rstCode !== undefined && stream.rstCode !== H2_CANCEL && !(stream.rstCode === H2_NO_ERROR && !stream.resetByPeer)) {
      const error = Object.assign(new Error(`HBONE stream ${stream.id} ${stream.resetByPeer ? 'reset by the peer' : 'reset'} with ${h2ErrorName(stream.rstCode)}`), { code: 'ERR_HTTP2_STREAM_ERROR', rstCode: stream.rstCode });
      if (this.listenerCount('error') > 0) this.emit('error', error);
    }
    this.emit('close');
  }
}

function startTransport(transport: H2StreamTransport): void {
  transport.start();
}
