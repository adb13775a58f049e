/**
 * Reads a TCP socket into buffers from a per-thread pool, each given back once the data read into it has been
 * written on, instead of the fresh buffer Node allocates for every read.
 *
 * Why: for every read Node allocates a 64 KiB backing store (V8 external memory) and shrinks it to the bytes read. A
 * tunnel moving 150 MB/s allocated 150 MB/s of it, and V8 answers external memory growth with full mark-compacts of
 * the whole heap: measured in the mesh suite's 1-stream run, one every ~190 ms in each agent (`--trace-gc`: "GC in
 * old space requested", no scavenge in between), and V8's concurrent-marking threads took a quarter of the agents'
 * CPU samples (perf). A reused buffer is allocated once.
 *
 * Owns: the pool, the switch of one socket to Node's user-buffer reads (net.Socket's `onread` mode, which Node offers
 * for sockets it connects but not for the ones a server accepts: the switch uses the socket's own `kBuffer`,
 * `kBufferCb` and `kBufferGen` slots and its handle's `useUserBuffer`, and where it can the handle calls the reader
 * without Node's `onStreamRead`: handle-reads.ts; where a Node lacks them, `attach` returns undefined and the caller
 * keeps 'data' events), and the order in which buffers come back.
 * Must not know about: what the chunks are written into (HTTP/2 or anything else).
 *
 * Sizes: a socket holds its next read buffer while idle, so an idle socket holds a SMALL one (4 KiB: a thousand idle
 * tunnels hold 4 MiB, where Node's own reads hold nothing between reads); a read that fills its buffer makes the
 * next one LARGE (64 KiB, Node's own read size), a read under SMALL bytes makes it small again.
 * Integrity: a buffer goes back to the pool only from the write's completion callback, in the order the writes were
 * made (a Writable completes its writes in order); a write that failed drops its buffer instead (whoever failed may
 * still hold it). A socket's idle buffer (the one its next read would have used, never handed out) goes back when the
 * socket has closed: its handle is gone then, so nothing reads into it. Without that, every short connection of a
 * storm (one read, then close) took one buffer from the pool for good: once the pool was empty, each connection
 * allocated a fresh 4 KiB backing store per socket (`createUnsafeBuffer` 4.8 % of the client agent's busy time at
 * 3,000 connections/s, and external memory that V8 answers with more collections).
 *
 * Shared reads (`SharedPooledReader`, an HTTP/2 connection's TLS socket): one read's plaintext is cut into many
 * pieces (frames, DATA payloads), each handed to whoever it is for, so a buffer has any number of holders. Each
 * buffer lives in a `SharedReadBuffer` that counts them: the reader holds it while its sink runs, a consumer that
 * keeps a piece past that call `hold`s it and `release`s it once done (a splice: from the piece's socket write's
 * completion), and the buffer goes back to the pool when the count falls to zero (or is dropped, if a release
 * carried a write's error). A TLS socket hands its plaintext over one record (at most 16 KiB) per read, so a
 * shared reader's large buffers are RECORD_READ_BYTES, not 64 KiB.
 */
import type net from 'node:net';
import { emptyList } from './lists.ts';
import { runReadTurn } from './read-turn.ts';
import { readHandleDirectly } from './handle-reads.ts';

export const SMALL_READ_BYTES = 4 * 1024;
export const LARGE_READ_BYTES = 64 * 1024;
/** TLS's largest record plaintext (RFC 8446 5.1): what one read of a TLS socket hands over at most. */
export const RECORD_READ_BYTES = 16 * 1024;
/** Free buffers kept per thread: 2 MiB of large ones (a few bulk tunnels' worth), 1 MiB of small ones. */
const MAX_FREE_LARGE = 32;
const MAX_FREE_SMALL = 256;

/** Free shared buffers kept per thread: 2 MiB of record-sized ones (a 4 MiB stream window's in-flight half), 1 MiB of small ones. */
const MAX_FREE_SHARED_RECORD = 128;
const MAX_FREE_SHARED_SMALL = 256;

/**
 * A pooled read buffer of a `PooledReader` and the last view of it that was handed out: reads of the same size (a
 * request's size usually repeats) hand out that view again instead of a new one (a `subarray` is a typed array
 * allocated on the V8 heap: ~100 bytes and a `CreateTypedArray` per read). Safe because the buffer, and so the
 * view, is handed out again only after its previous chunk was written (`written`).
 */
class ReadBuffer {
  readonly buffer: Buffer;
  #view: Buffer | undefined;

  constructor(bytes: number) {
    this.buffer = Buffer.allocUnsafeSlow(bytes);
  }

  /** `buffer[0, bytes)`. */
  head(bytes: number): Buffer {
    const view = this.#view;
    if (view !== undefined && view.length === bytes) return view;
    return (this.#view = this.buffer.subarray(0, bytes));
  }
}

const freeLarge: ReadBuffer[] = [];
const freeSmall: ReadBuffer[] = [];

function takeBuffer(large: boolean): ReadBuffer {
  const free = large ? freeLarge.pop() : freeSmall.pop();
  if (free !== undefined) return free;
  stats.buffersAllocated++;
  return new ReadBuffer(large ? LARGE_READ_BYTES : SMALL_READ_BYTES);
}

function giveBack(read: ReadBuffer): void {
  if (read.buffer.length === LARGE_READ_BYTES) {
    if (freeLarge.length < MAX_FREE_LARGE) freeLarge.push(read);
  } else if (freeSmall.length < MAX_FREE_SMALL) {
    freeSmall.push(read);
  }
}

/**
 * Sockets this thread switched to pooled reads, and sockets it could not switch because this Node lacks the slots
 * (plain reads instead: correct, but every read allocates again). The agent's admin endpoint shows them (/memory),
 * and the mesh suite reads them, so a Node upgrade that removed the slots does not go unnoticed.
 */
export interface PooledReadStats {
  pooledSockets: number;
  unsupportedSockets: number;
  /** Read buffers allocated because the pool had none free (a working pool allocates few after warm-up). */
  buffersAllocated: number;
}

const stats: PooledReadStats = { pooledSockets: 0, unsupportedSockets: 0, buffersAllocated: 0 };

/** This thread's counts of sockets switched to pooled reads, and of sockets left on plain reads by this Node. */
export function pooledReadStats(): PooledReadStats {
  return { ...stats };
}

/** How many free buffers this thread holds (tests). */
export function pooledReadBuffers(): { large: number; small: number } {
  return { large: freeLarge.length, small: freeSmall.length };
}

interface UserBufferSlots {
  buffer: symbol;
  callback: symbol;
  generator: symbol;
}

let slots: UserBufferSlots | null | undefined;

/** net.Socket's private symbols of its `onread` mode, found once by their descriptions; null if this Node has none. */
function userBufferSlots(socket: net.Socket): UserBufferSlots | null {
  if (slots !== undefined) return slots;
  const byName = new Map(Object.getOwnPropertySymbols(socket).map((symbol) => [symbol.description, symbol]));
  const buffer = byName.get('kBuffer');
  const callback = byName.get('kBufferCb');
  const generator = byName.get('kBufferGen');
  slots = buffer && callback && generator ? { buffer, callback, generator } : null;
  return slots;
}

interface UserBufferHandle {
  useUserBuffer?: (buffer: Uint8Array) => void;
}

/** What switching one socket to user-buffer reads needs: its private slots and its handle's method. */
interface UserBufferSwitch {
  slots: UserBufferSlots;
  handle: Required<UserBufferHandle>;
}

/**
 * The socket's user-buffer slots and handle, or undefined where it cannot switch: a socket closing or not yet
 * connected, or this Node without them (counted in `unsupportedSockets`).
 */
function userBufferSwitch(socket: net.Socket): UserBufferSwitch | undefined {
  if (socket.destroyed || socket.connecting) return undefined;
  const handle = (socket as unknown as { _handle?: UserBufferHandle | null })._handle;
  const slots = userBufferSlots(socket);
  if (!slots || typeof handle?.useUserBuffer !== 'function') {
    // No handle at all is a socket closing under us, not this Node's doing: only a handle without the method counts.
    if (!slots || handle) stats.unsupportedSockets++;
    return undefined;
  }
  return { slots, handle: handle as Required<UserBufferHandle> };
}

/**
 * Points the socket's reads at `first`, then at what `next` hands out; `onRead` gets each read's size. The handle
 * calls the reader itself where it can (handle-reads.ts: true), else through Node's `onStreamRead` and the socket's
 * user-buffer slots (false: the slot holds the next read's buffer, kept up to date by Node).
 */
function switchToUserBuffer(
  socket: net.Socket,
  { slots, handle }: UserBufferSwitch,
  first: Buffer,
  onRead: (bytes: number) => boolean,
  next: () => Buffer,
): boolean {
  const target = socket as unknown as Record<symbol, unknown>;
  target[slots.buffer] = first;
  target[slots.callback] = onRead;
  target[slots.generator] = next;
  handle.useUserBuffer(first);
  stats.pooledSockets++;
  return readHandleDirectly(socket, onRead, next);
}

/** What a pooled reader hands its owner: one chunk per read. Return false to stop reading until `socket.resume()`. */
export type ChunkSink = (chunk: Buffer) => boolean;

/**
 * How a splice starts reading its TCP socket: into pooled buffers when it can (`sink` gets each read; what the socket
 * had read and buffered before goes to `onData` first, then the socket resumes), otherwise the plain way (`onData` on
 * every 'data' event). Returns the reader, or undefined on plain reads.
 */
export function readSocketInto(socket: net.Socket, sink: ChunkSink, onData: (chunk: Buffer) => void): PooledReader | undefined {
  const reader = PooledReader.attach(socket, sink);
  if (reader) {
    for (let chunk = socket.read() as Buffer | null; chunk !== null; chunk = socket.read() as Buffer | null) onData(chunk);
    socket.resume();
  } else {
    socket.on('data', onData);
  }
  return reader;
}

export class PooledReader {
  readonly #sink: ChunkSink;
  readonly #socket: net.Socket;
  /** The socket's `kBuffer` slot: the buffer its next read goes into. */
  readonly #bufferSlot: symbol;
  /** The buffer the socket reads into next (it holds it between reads). */
  #current: ReadBuffer;
  /**
   * Buffers whose chunk was handed out and not yet written, oldest first, from `#inFlightHead` on: a queue taken
   * from the front by index (an array's `shift` trims its backing store, so the next `push` allocated it again:
   * one allocation per read). Emptied when the last one comes back.
   */
  readonly #inFlight: ReadBuffer[] = [];
  #inFlightHead = 0;
  #nextLarge = false;
  /** The handle calls #onRead itself (handle-reads.ts), so the socket's buffer slot is not kept up to date. */
  #handleCalls = false;

  /**
   * Switches `socket` to pooled reads and returns the reader, or undefined (socket unchanged) when this Node does not
   * expose user-buffer reads or the socket has no open handle. Data the socket had already read and buffered stays in
   * its readable buffer: the caller takes it with `socket.read()` before anything the sink receives.
   */
  static attach(socket: net.Socket, sink: ChunkSink): PooledReader | undefined {
    const found = userBufferSwitch(socket);
    if (!found) return undefined;
    const reader = new PooledReader(sink, socket, found.slots.buffer, takeBuffer(false));
    reader.#handleCalls = switchToUserBuffer(socket, found, reader.#current.buffer, reader.#onRead, reader.#nextBuffer);
    socket.once('close', reader.#onClose);
    return reader;
  }

  private constructor(sink: ChunkSink, socket: net.Socket, bufferSlot: symbol, first: ReadBuffer) {
    this.#sink = sink;
    this.#socket = socket;
    this.#bufferSlot = bufferSlot;
    this.#current = first;
  }

  /**
   * Completion callback for the write of a chunk this reader handed out: pass it as the write's callback, once per
   * chunk. Returns the oldest in-flight buffer to the pool (or drops it when the write failed).
   */
  readonly written = (error?: Error | null): void => {
    const inFlight = this.#inFlight;
    const head = this.#inFlightHead;
    if (head >= inFlight.length) return;
    const read = inFlight[head]!;
    if (head + 1 === inFlight.length) {
      this.#inFlightHead = 0;
      emptyList(inFlight);
    } else {
      this.#inFlightHead = head + 1;
    }
    if (!error) giveBack(read);
  };

  // Node calls this with the bytes read into the current buffer (from offset 0), then asks #nextBuffer for the next.
  readonly #onRead = (bytes: number): boolean => {
    const read = this.#current;
    this.#inFlight.push(read);
    if (bytes === read.buffer.length) this.#nextLarge = true;
    else if (bytes < SMALL_READ_BYTES) this.#nextLarge = false;
    return runReadTurn(this.#sink, read.head(bytes), undefined);
  };

  readonly #nextBuffer = (): Buffer => {
    this.#current = takeBuffer(this.#nextLarge);
    return this.#current.buffer;
  };

  // The handle is closed: the buffer set for its next read was never handed out, so it is free again.
  readonly #onClose = (): void => {
    const slots = this.#socket as unknown as Record<symbol, unknown>;
    const idle = slots[this.#bufferSlot];
    slots[this.#bufferSlot] = null;
    // #current is the buffer the handle would have read into next (on Node's path, the slot says so too).
    const current = this.#current;
    if ((this.#handleCalls || idle === current.buffer) && !this.#inFlight.includes(current, this.#inFlightHead)) giveBack(current);
  };
}

/**
 * A pooled read buffer and the count of those holding pieces of it (see the top comment). The object stays with its
 * buffer for good, so holding and releasing allocate nothing.
 */
export class SharedReadBuffer {
  readonly buffer: Buffer;
  #holds = 0;
  #dropped = false;
  /** The last piece view handed out (`piece`) and where it starts: the next read's pieces often repeat it. */
  #piece: Buffer | undefined;
  #pieceStart = 0;

  constructor(bytes: number) {
    this.buffer = Buffer.allocUnsafeSlow(bytes);
  }

  /**
   * `buffer[start, end)` as a view: the same object as the last call's when the range repeats (a 1 KiB request's
   * DATA payload sits at the same place of every read), instead of a typed array allocated per piece. Safe because
   * the buffer is read into again only once every holder of the pieces of its last read has released them.
   */
  piece(start: number, end: number): Buffer {
    const view = this.#piece;
    if (view !== undefined && this.#pieceStart === start && view.length === end - start) return view;
    this.#pieceStart = start;
    return (this.#piece = this.buffer.subarray(start, end));
  }

  /** Keeps the buffer out of the pool until the matching `release`. */
  hold(): void {
    if (this.#holds++ === 0) sharedStats.heldBuffers++;
  }

  /**
   * Lets go of one hold; the last one returns the buffer to the pool. With an error (the write that carried a piece
   * failed, and whoever failed may still hold it) the buffer is never reused.
   */
  release(error?: Error | null): void {
    if (error && !this.#dropped) {
      this.#dropped = true;
      sharedStats.droppedBuffers++;
    }
    if (--this.#holds > 0) return;
    sharedStats.heldBuffers--;
    if (!this.#dropped) giveBackShared(this);
  }
}

/**
 * This thread's shared read buffers with holders now (pieces handed on and not yet released: at rest, with no read
 * running and every write completed, none), and those dropped for good because a write that carried a piece of
 * them failed. Tests read them to see that every hold came back, whatever happened to the sockets.
 */
export interface SharedReadStats {
  heldBuffers: number;
  droppedBuffers: number;
}

const sharedStats: SharedReadStats = { heldBuffers: 0, droppedBuffers: 0 };

/** A copy of this thread's shared read buffer counts. */
export function sharedReadStats(): SharedReadStats {
  return { ...sharedStats };
}

const freeSharedRecord: SharedReadBuffer[] = [];
const freeSharedSmall: SharedReadBuffer[] = [];

function takeShared(large: boolean): SharedReadBuffer {
  if (large) return freeSharedRecord.pop() ?? new SharedReadBuffer(RECORD_READ_BYTES);
  return freeSharedSmall.pop() ?? new SharedReadBuffer(SMALL_READ_BYTES);
}

function giveBackShared(shared: SharedReadBuffer): void {
  if (shared.buffer.length === RECORD_READ_BYTES) {
    if (freeSharedRecord.length < MAX_FREE_SHARED_RECORD) freeSharedRecord.push(shared);
  } else if (freeSharedSmall.length < MAX_FREE_SHARED_SMALL) {
    freeSharedSmall.push(shared);
  }
}

/** How many free shared buffers this thread holds (tests). */
export function sharedReadBuffers(): { record: number; small: number } {
  return { record: freeSharedRecord.length, small: freeSharedSmall.length };
}

/**
 * What a shared reader hands its owner: one read's bytes, `shared.buffer[0, bytes)` (no view of them is made: the
 * owner cuts what it keeps with `shared.piece`), and the buffer they live in (held for the call).
 */
export type SharedChunkSink = (shared: SharedReadBuffer, bytes: number) => void;

/**
 * Reads a socket (an HTTP/2 connection's TLS socket) into shared pooled buffers, for good: the owner never pauses it
 * (HTTP/2's windows bound what the peer sends).
 */
export class SharedPooledReader {
  readonly #sink: SharedChunkSink;
  /** The buffer Node reads into next (the socket holds it between reads). */
  #current: SharedReadBuffer;
  #nextLarge = false;

  /**
   * Switches `socket` to shared pooled reads (false, socket unchanged, where `PooledReader.attach` would return
   * undefined). Data the socket had read and buffered before stays in its readable buffer for the caller to take
   * with `socket.read()` first; the caller then resumes the socket.
   */
  static attach(socket: net.Socket, sink: SharedChunkSink): boolean {
    const found = userBufferSwitch(socket);
    if (!found) return false;
    const reader = new SharedPooledReader(sink, takeShared(false));
    switchToUserBuffer(socket, found, reader.#current.buffer, reader.#onRead, reader.#nextBuffer);
    return true;
  }

  private constructor(sink: SharedChunkSink, first: SharedReadBuffer) {
    this.#sink = sink;
    this.#current = first;
  }

  // Node calls this with the bytes read into the current buffer (from offset 0), then asks #nextBuffer for the next.
  readonly #onRead = (bytes: number): boolean => {
    const shared = this.#current;
    const buffer = shared.buffer;
    if (bytes === buffer.length) this.#nextLarge = true;
    else if (bytes < SMALL_READ_BYTES) this.#nextLarge = false;
    shared.hold();
    try {
      runReadTurn(this.#sink, shared, bytes);
    } finally {
      shared.release();
    }
    return true;
  };

  readonly #nextBuffer = (): Buffer => {
    this.#current = takeShared(this.#nextLarge);
    return this.#current.buffer;
  };
}
