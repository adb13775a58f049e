/**
 * Writes to a socket's native handle with one reused write request, without net.Socket's Writable state machine.
 *
 * Why: a relay end at one 1 KiB request per wake-up makes two socket writes per request (the HTTP/2 connection's TLS
 * socket, the splice's TCP socket). Through `socket.write` each runs Node's Writable code (`writeOrBuffer`,
 * `_write`, `_writeGeneric`, `writeGeneric`, a fresh `WriteWrap` with five properties, `afterWriteDispatched`,
 * then `onwrite`/`afterWrite` at completion), which at this rate runs in V8's baseline tier through generic inline
 * caches (BENCHMARKS.md, "Instructions per request", sessions s10 and s11). Here a write is one call into the
 * handle (`writeBuffer` or `writev`) with a request object made once per socket.
 *
 * What the handle does with it (Node 24's StreamBase): a TCP handle tries the write at once (`uv_try_write`); when
 * the kernel takes it all, nothing is left in flight and no request is attached (the write is done when the call
 * returns). A TLS handle encrypts the bytes before the call returns (OpenSSL copies what it cannot take yet), so the
 * caller's buffers are free at once, but its completion always comes later (a native immediate, or the encrypted
 * write's own completion), and it accepts only one write at a time (`CHECK(!current_write_)` in TLSWrap: a second
 * write in flight aborts the process). So a writer has at most one write in flight; its owner gathers what comes
 * meanwhile and writes it from the completion callback (`onWritten`), and never writes the socket through
 * `socket.write` while the writer is busy, nor `end`s it (a shutdown behind a write in flight).
 *
 * Owns: that use of Node internals (`process.binding('stream_wrap').WriteWrap` and `streamBaseState`, the socket's
 * `_handle`), found once, with the fallback: where this Node lacks any of it, or `AMBIT_HBONE_STREAM_WRITES=1` forces
 * it, `DirectWriter.attach` returns undefined and the owner writes with `socket.write` as before. Byte counts stay
 * right either way: net.Socket's `bytesWritten` reads the handle's own count. Not done here: a socket timeout's
 * refresh on write (`_unrefTimer`): nothing on the data path sets one.
 * Must not know about: HTTP/2, splices, what the bytes are.
 */
import type net from 'node:net';
import { getSystemErrorName } from 'node:util';

/** What a write did: taken by the kernel before the call returned, in flight (onWritten follows), or failed. */
export const WRITE_DONE = 0;
export const WRITE_PENDING = 1;
export const WRITE_FAILED = 2;
export type DirectWriteResult = typeof WRITE_DONE | typeof WRITE_PENDING | typeof WRITE_FAILED;

interface WriteRequest {
  oncomplete: ((status: number) => void) | undefined;
  handle: unknown;
  /** The buffers of the write in flight: the handle reads them until it completes (a TCP write the kernel did not take). */
  buffers: Buffer | Buffer[] | undefined;
  /** The native write's async id while one is attached to this object (in flight), -1 once it has completed. */
  getAsyncId(): number;
}

interface StreamHandle {
  writeBuffer(request: WriteRequest, buffer: Buffer): number;
  writev(request: WriteRequest, chunks: Buffer[], allBuffers: boolean): number;
}

interface StreamWrapBinding {
  WriteWrap: new () => WriteRequest;
  streamBaseState: Int32Array;
  kLastWriteWasAsync: number;
}

/** Node's write request class and the state its writes report into, or undefined (fallback: `socket.write`). */
function nodeStreamWrap(): StreamWrapBinding | undefined {
  try {
    const binding = (process as unknown as { binding(name: string): unknown }).binding('stream_wrap') as Partial<StreamWrapBinding>;
    if (typeof binding.WriteWrap !== 'function' || !(binding.streamBaseState instanceof Int32Array) || typeof binding.kLastWriteWasAsync !== 'number') return undefined;
    return binding as StreamWrapBinding;
  } catch {
    return undefined;
  }
}

const streamWrap = process.env.AMBIT_HBONE_STREAM_WRITES === '1' ? undefined : nodeStreamWrap();

/**
 * Completions on demand (`attach`'s `completionOnDemand`): Node enters JavaScript for a finished write only when its
 * request object has an `oncomplete` function (stream_base.cc, ReportWritesToJSStreamListener::OnStreamAfterReqFinished:
 * `req_wrap_obj->Has(oncomplete)`, then AsyncWrap::MakeCallback by name, which returns without a call when the value
 * is not a function), and a request object's `getAsyncId()` is the native write's id while one is
 * attached to it, -1 once it completed and was detached. So a writer whose writes complete in C++ on their own (a
 * TLS write: encrypted before the call returns, completed from a native immediate) can leave `oncomplete` undefined and,
 * when it wants to write again, ask the request of its last write whether it is still attached: not attached, the
 * socket is free; attached, `oncomplete` is set on it then, and the owner waits for that one call. A relay end at one
 * request per wake-up saves one of its three C++ -> JS callbacks per request. AMBIT_HBONE_WRITE_COMPLETIONS=1 keeps
 * a completion callback on every write (the behaviour before), as does a Node whose request objects lack `getAsyncId`.
 */
const completionsOnDemand = process.env.AMBIT_HBONE_WRITE_COMPLETIONS !== '1'
  && streamWrap !== undefined && typeof (new streamWrap.WriteWrap() as Partial<WriteRequest>).getAsyncId === 'function';

/** Which way the data path writes sockets in this process: 'handle' (this file) or 'stream' (`socket.write`). */
export const socketWriteMode: 'handle' | 'stream' = streamWrap ? 'handle' : 'stream';

/**
 * This thread's direct writes: taken by the kernel at once (TCP), completed later (every TLS write, TCP ones the
 * kernel could not take), failed. Tests read them to see the direct path in use.
 */
export interface DirectWriteStats {
  writesAtOnce: number;
  writesInFlight: number;
  writesFailed: number;
  /**
   * Writes whose completion callback is awaited now: at rest, zero; a completion that never ran stays here. (A write
   * completed in C++ with nobody waiting for it, see completionsOnDemand, is not counted.)
   */
  writesPending: number;
}

const stats: DirectWriteStats = { writesAtOnce: 0, writesInFlight: 0, writesFailed: 0, writesPending: 0 };

/** A copy of this thread's direct write counts. */
export function directWriteStats(): DirectWriteStats {
  return { ...stats };
}

/** Called when the write in flight has completed (`error` set when it failed; the socket is being destroyed then). */
export type WrittenCallback = (error: Error | undefined) => void;

function writeError(status: number): Error {
  let name: string;
  try {
    name = getSystemErrorName(status);
  } catch {
    name = `E${-status}`;
  }
  return Object.assign(new Error(`write ${name}`), { code: name, errno: status, syscall: 'write' });
}

export class DirectWriter {
  readonly #socket: net.Socket;
  /**
   * Two request objects, used in turn: Node detaches the native request from its object only after `oncomplete`
   * returns, so a write made from the completion (the gathered rest) needs the other one.
   */
  readonly #requests: [WriteRequest, WriteRequest];
  #next = 0;
  readonly #state: Int32Array;
  readonly #asyncSlot: number;
  readonly #onWritten: WrittenCallback;
  /** A write may be in flight (on demand: not yet seen detached), its request `#requests[#next ^ 1]`. */
  #busy = false;
  /** Completions on demand (completionsOnDemand): `oncomplete` undefined unless the owner waits for one. */
  readonly #onDemand: boolean;

  /**
   * A writer for `socket`, or undefined where this Node offers no handle writes (or they are switched off). With
   * `completionOnDemand` (for sockets whose writes never hold the caller's buffers past the call: TLS), a write's
   * completion runs no JavaScript unless the owner asked `busy` while it was in flight (see completionsOnDemand).
   */
  static attach(socket: net.Socket, onWritten: WrittenCallback, options: { completionOnDemand?: boolean } = {}): DirectWriter | undefined {
    if (streamWrap === undefined) return undefined;
    return new DirectWriter(socket, streamWrap, onWritten, options.completionOnDemand === true && completionsOnDemand);
  }

  private constructor(socket: net.Socket, binding: StreamWrapBinding, onWritten: WrittenCallback, onDemand: boolean) {
    this.#socket = socket;
    this.#onDemand = onDemand;
    this.#requests = [this.#request(binding), this.#request(binding)];
    this.#state = binding.streamBaseState;
    this.#asyncSlot = binding.kLastWriteWasAsync;
    this.#onWritten = onWritten;
  }

  /**
   * A request object with every property it will carry, in one order, from the start: its shape never changes. On
   * demand, `oncomplete` is undefined between waits, not deleted: a `delete` turns Node's request object (an API
   * object) into a dictionary-mode object for good (checked with %HasFastProperties on this Node), after which every
   * store and load on it (`handle` per write, `oncomplete` per wait) is a hash lookup in V8's generic IC handlers.
   * Node's completion asks `Has(oncomplete)` and then calls it only if it is a function (async_wrap-inl.h,
   * `AsyncWrap::MakeCallback` by name): undefined runs no JavaScript, as an absent property does.
   */
  #request(binding: StreamWrapBinding): WriteRequest {
    const request = new binding.WriteWrap();
    request.oncomplete = this.#onDemand ? undefined : this.#onComplete;
    request.handle = undefined;
    request.buffers = undefined;
    return request;
  }

  /**
   * A write is in flight: the owner must gather, and write from `onWritten`. On demand, asking is what makes the
   * completion call `onWritten`: a write seen detached is over (the socket is free), one still attached gets its
   * `oncomplete` now.
   */
  get busy(): boolean {
    if (!this.#busy || !this.#onDemand) return this.#busy;
    const request = this.#requests[this.#next ^ 1]!;
    if (request.getAsyncId() === -1) {
      this.#busy = false;
      return false;
    }
    if (request.oncomplete === undefined) {
      request.oncomplete = this.#onComplete;
      stats.writesPending++;
    }
    return true;
  }

  /**
   * Whether the socket can take a direct write now: connected, open, nothing in flight here, and nothing queued
   * or corked in its Writable (whose own write in flight would collide with ours).
   */
  ready(): boolean {
    const socket = this.#socket;
    return !this.busy && !socket.connecting && !socket.destroyed && socket.writableLength === 0 && !socket.writableCorked
      && (socket as unknown as { _handle: unknown })._handle != null;
  }

  /** Writes `buffer` (only when `ready()`). On WRITE_FAILED the socket is being destroyed with the error. */
  write(buffer: Buffer): DirectWriteResult {
    const handle = (this.#socket as unknown as { _handle: StreamHandle })._handle;
    const request = this.#requests[this.#next]!;
    request.handle = handle;
    return this.#dispatched(handle.writeBuffer(request, buffer), buffer);
  }

  /** Writes `chunks` as one gathered write (only when `ready()`). The array is kept until the write completes. */
  writev(chunks: Buffer[]): DirectWriteResult {
    const handle = (this.#socket as unknown as { _handle: StreamHandle })._handle;
    const request = this.#requests[this.#next]!;
    request.handle = handle;
    return this.#dispatched(handle.writev(request, chunks, true), chunks);
  }

  #dispatched(status: number, buffers: Buffer | Buffer[]): DirectWriteResult {
    if (status !== 0) {
      stats.writesFailed++;
      this.#socket.destroy(writeError(status));
      return WRITE_FAILED;
    }
    if (this.#state[this.#asyncSlot] === 0) {
      stats.writesAtOnce++;
      return WRITE_DONE;
    }
    stats.writesInFlight++;
    this.#busy = true;
    const request = this.#requests[this.#next]!;
    if (this.#onDemand) {
      // Nothing of the caller's is held (TLS encrypted it), and nobody waits yet: no oncomplete (see busy).
      this.#next ^= 1;
      return WRITE_PENDING;
    }
    stats.writesPending++;
    request.buffers = buffers;
    // This request stays attached until its completion has returned: the next write takes the other one.
    this.#next ^= 1;
    return WRITE_PENDING;
  }

  // Node calls this (as the request's `oncomplete`) once the write in flight has completed or failed.
  readonly #onComplete = (status: number): void => {
    stats.writesPending--;
    this.#busy = false;
    const request = this.#requests[this.#next ^ 1]!;
    request.buffers = undefined;
    // On demand, the next completion of this object runs no JavaScript unless someone waits for it again.
    if (this.#onDemand) request.oncomplete = undefined;
    if (status < 0) {
      const error = writeError(status);
      if (!this.#socket.destroyed) this.#socket.destroy(error);
      this.#onWritten(error);
      return;
    }
    this.#onWritten(undefined);
  };
}
