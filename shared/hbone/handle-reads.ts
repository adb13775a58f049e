/**
 * A pooled reader's own per-read callback on the socket's handle, in place of Node's `onStreamRead`.
 *
 * Why: with user-buffer reads (pooled-reads.ts) the handle calls its `onread` function for every read, and Node's
 * (lib/internal/stream_base_commons.js `onStreamRead`) does, per read, before and after handing the bytes on: the
 * owner lookup through a symbol, the socket's timeout refresh, the `destroyed` getter, three symbol-keyed loads of
 * the user-buffer slots, two calls through them, a type check of the next buffer and a symbol-keyed store of it
 * (`stream[kBuffer] = nextBuf`: a keyed store site that sees every socket class, the candidate BENCHMARKS.md's s12
 * section names for `KeyedStoreIC` calls). A relay end at one 1 KiB request per wake-up reads twice per request
 * (the TCP socket, the TLS socket). Here the handle calls the reader straight: the byte count from Node's shared
 * stream state, the socket's timeout refresh only while one is set (hasTimeout), the reader's callback, its next buffer returned to the handle (what `onStreamRead` returns, which
 * the handle's user-buffer listener takes as the next read's buffer).
 *
 * What stays Node's: every read that is not data (EOF, errors, zero bytes) goes to Node's own `onStreamRead`, so
 * 'end', errors and the socket's destruction are as before; net.Socket's `_destroy` sets the handle's `onread` to a
 * no-op, so nothing reaches the reader after a destroy. A reader that says stop (false) stops the handle's reading
 * as Node does (`reading = false`, `readStop()`); `socket.resume()` starts it again through net.Socket.
 *
 * Owns: that use of Node internals (`process.binding('stream_wrap')`'s `streamBaseState` and `kReadBytesOrError`,
 * the handle's `onread` accessor), found once, with the fallback: unless `AMBIT_HBONE_HANDLE_ONREAD=1` asks for it
 * (off by default, see readState), or where this Node lacks any of it, `readHandleDirectly` returns false and Node's
 * `onStreamRead` stays.
 * Must not know about: what the bytes are, pools.
 */
import type net from 'node:net';
import { getSystemErrorName } from 'node:util';

interface ReadState {
  streamBaseState: Int32Array;
  kReadBytesOrError: number;
}

function nodeReadState(): ReadState | undefined {
  try {
    const binding = (process as unknown as { binding(name: string): unknown }).binding('stream_wrap') as Partial<ReadState>;
    if (!(binding.streamBaseState instanceof Int32Array) || typeof binding.kReadBytesOrError !== 'number') return undefined;
    return binding as ReadState;
  } catch {
    return undefined;
  }
}

/**
 * Opt-in (AMBIT_HBONE_HANDLE_ONREAD=1) until a closed loop that warms the relays into the same JIT tiers says it
 * helps: in three side-by-side callgrind runs the client end was level or lower, the server end higher with more of
 * its code in baseline tier (BENCHMARKS.md, session s13-relaycpu).
 */
const readState = process.env.AMBIT_HBONE_HANDLE_ONREAD === '1' ? nodeReadState() : undefined;
const streamState = readState?.streamBaseState;
const bytesSlot = readState?.kReadBytesOrError ?? 0;

interface ReadHandle {
  onread: ((this: ReadHandle, arrayBuffer: unknown) => unknown) | undefined;
  reading: boolean;
  readStop(): number;
}

/** Whether this process replaces Node's per-read callback on pooled sockets ('handle') or keeps it ('node'). */
export const readCallbackMode: 'handle' | 'node' = streamState === undefined ? 'node' : 'handle';

/**
 * Points the handle of `socket` (already switched to user-buffer reads) at a callback that hands each read's byte
 * count to `onBytes` and returns `next()`'s buffer for the read after it. False (nothing changed) where this Node
 * does not allow it.
 */
export function readHandleDirectly(socket: net.Socket, onBytes: (bytes: number) => boolean, next: () => Buffer): boolean {
  const state = streamState;
  const handle = (socket as unknown as { _handle?: ReadHandle | null })._handle;
  if (state === undefined || handle == null) return false;
  const nodeOnRead = handle.onread;
  if (typeof nodeOnRead !== 'function') return false;
  const timed = socket as unknown as TimedSocket;
  handle.onread = function onPooledRead(this: ReadHandle, arrayBuffer: unknown): unknown {
    const bytes = state[bytesSlot]!;
    if (bytes <= 0) return nodeOnRead.call(this, arrayBuffer);
    if (hasTimeout(timed)) timed._unrefTimer();
    const more = onBytes(bytes);
    const buffer = next();
    if (!more) stopReading(socket, this);
    return buffer;
  };
  return true;
}

interface TimedSocket {
  /** net.Socket's: the last `setTimeout` in ms (0 once cleared), undefined if never set. */
  timeout?: number;
  _parent: TimedSocket | null;
  _unrefTimer(): void;
}

/**
 * A read counts as activity for a socket timeout (Node's `_unrefTimer`: the socket's and its parents'). Node refreshes
 * on every read whenever a timeout object was ever made, even one cleared since: a TLS server socket's handshake
 * timeout is set to 0 once the handshake is done, and each read then still ran `Timeout.refresh` and the timer
 * list's `insertGuarded` (which returns early for a cleared timer): one of each per request at the HBONE server end
 * (callgrind, BENCHMARKS.md session s13). Here the refresh runs only while a timeout is set.
 */
function hasTimeout(socket: TimedSocket): boolean {
  for (let current: TimedSocket | null = socket; current != null; current = current._parent) if (current.timeout) return true;
  return false;
}

/** What Node's onStreamRead does when the reader says stop: the handle stops reading until `socket.resume()`. */
function stopReading(socket: net.Socket, handle: ReadHandle): void {
  handle.reading = false;
  if (socket.destroyed) return;
  const status = handle.readStop();
  if (status === 0) return;
  let name: string;
  try {
    name = getSystemErrorName(status);
  } catch {
    name = `E${-status}`;
  }
  socket.destroy(Object.assign(new Error(`read ${name}`), { code: name, errno: status, syscall: 'read' }));
}
