/**
 * The socket a node:http2 session runs on in HBONE: a Duplex between the TLS socket and the session that takes each
 * of the session's writes at once, so the session keeps reading while the network is slow to take its bytes.
 *
 * Why: Node's Http2Session stops reading its socket while one of its own writes is in progress, and resumes only
 * when that write completes (src/node_http2.cc, MaybeStopReading: a guard against peers that send PINGs or SETTINGS
 * and never read the answers). On a TLS socket a write completes only once the kernel took it. With bulk data both
 * ways on one connection, both ends' send buffers fill, each session waits on its write, neither reads: deadlock,
 * and not even a PING gets answered (test/net/agent-bulk-tunnels.test.ts: six tunnels stalled after 0.2-3 MB until
 * the keepalive ended the connection). Over this Duplex a write completes as soon as it is queued on the TLS socket.
 *
 * The guard's purpose still holds, through a bound: once more than `queueLimitBytes` wait in the TLS socket, a
 * write completes only at the TLS socket's 'drain', so the session stops reading again and a peer that never reads
 * cannot grow our memory past the bound (its keepalive PING then goes unanswered and the connection is closed). The
 * bound sits above what a peer that reads can ever make us queue: DATA we send is limited by the peer's connection
 * window (data in our queue has not reached the peer, so it was never acknowledged), control frames are small.
 *
 * Cost: node:http2 runs on Node's JSStreamSocket instead of the TLS socket's native handle: each write and read goes
 * through JavaScript and is copied once more (BENCHMARKS.md, suite hbone, has the figures).
 *
 * Owns: moving bytes between the session and the TLS socket, the bound and its counters, passing end, errors and
 * close through both ways, and cutting a closing session's TLS socket whose queue stopped moving.
 * Must not know about: HTTP/2 frames, streams, identities, pools.
 */
import { Duplex } from 'node:stream';
import type tls from 'node:tls';

type WriteCallback = (error?: Error | null) => void;

/** What the sessions of this thread did with the bound, for the admin endpoint and the tests. */
export interface SessionSocketStats {
  /** Writes that found the TLS socket's queue past the bound, so their completion waited for its 'drain'. */
  writesHeld: number;
  /** The most bytes any one session socket had queued in its TLS socket right after a write. */
  largestQueueBytes: number;
  /** Closing sessions whose queue did not move for the stall time: the TLS socket was cut instead of flushed. */
  endsCut: number;
}

const stats: SessionSocketStats = { writesHeld: 0, largestQueueBytes: 0, endsCut: 0 };

export function sessionSocketStats(): SessionSocketStats {
  return { ...stats };
}

export class SessionSocket extends Duplex {
  /** The TLS socket underneath (the HBONE layer reads the peer's identity and addresses from it, never the session's socket). */
  readonly tlsSocket: tls.TLSSocket;
  readonly #queueLimitBytes: number;
  readonly #endStallMs: number;
  /** The session's write whose completion waits for the TLS socket's 'drain'. */
  #heldCallback: WriteCallback | undefined;
  #endTimer: NodeJS.Timeout | undefined;

  constructor(tlsSocket: tls.TLSSocket, queueLimitBytes: number, endStallMs: number) {
    // The session reads in 'data' events (flowing), so the readable side buffers only while the session paused it.
    super({ allowHalfOpen: false, decodeStrings: false, emitClose: true });
    this.tlsSocket = tlsSocket;
    this.#queueLimitBytes = queueLimitBytes;
    this.#endStallMs = endStallMs;
    tlsSocket.on('data', this.#onData);
    tlsSocket.once('end', this.#onEnd);
    tlsSocket.on('drain', this.#onDrain);
    tlsSocket.on('error', this.#onError);
    tlsSocket.once('close', this.#onClose);
  }

  override _read(): void {
    if (this.tlsSocket.isPaused()) this.tlsSocket.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: WriteCallback): void {
    this.tlsSocket.write(chunk);
    this.#afterWrite(callback);
  }

  /** The session hands over each frame header and payload as its own chunk: one TLS write for all of them. */
  override _writev(chunks: { chunk: Buffer }[], callback: WriteCallback): void {
    if (chunks.length === 1) {
      this.tlsSocket.write(chunks[0]!.chunk);
    } else {
      let length = 0;
      for (let i = 0; i < chunks.length; i++) length += chunks[i]!.chunk.length;
      const joined = Buffer.allocUnsafe(length);
      let offset = 0;
      for (let i = 0; i < chunks.length; i++) {
        const { chunk } = chunks[i]!;
        chunk.copy(joined, offset);
        offset += chunk.length;
      }
      this.tlsSocket.write(joined);
    }
    this.#afterWrite(callback);
  }

  /**
   * The session ends its socket when it closes, and (as Node does on any socket) waits for the queue to flush first.
   * A peer that stopped reading never lets it flush: past `endStallMs` with no byte taken, the TLS socket is cut, so
   * a closed session cannot pin its queue (and itself) for as long as the peer's TCP stays up.
   */
  override _final(callback: WriteCallback): void {
    // Not end(callback): a socket cut before it finished would pass an error on to a session already gone.
    this.tlsSocket.end(() => callback());
    if (this.tlsSocket.writableLength === 0 || this.#endStallMs <= 0) return;
    let queuedAtLastCheck = this.tlsSocket.writableLength;
    const check = (): void => {
      const queued = this.tlsSocket.writableLength;
      if (this.tlsSocket.destroyed || queued === 0) return;
      if (queued >= queuedAtLastCheck) {
        stats.endsCut++;
        this.tlsSocket.destroy();
        return;
      }
      queuedAtLastCheck = queued;
      this.#endTimer = setTimeout(check, this.#endStallMs).unref();
    };
    this.#endTimer = setTimeout(check, this.#endStallMs).unref();
  }

  override _destroy(error: Error | null, callback: WriteCallback): void {
    clearTimeout(this.#endTimer);
    // A held write is dropped, not completed: the session's socket (JSStreamSocket) cancels its write request itself
    // when it closes, and a late completion would reach a handle already gone.
    this.#heldCallback = undefined;
    this.tlsSocket.off('data', this.#onData);
    this.tlsSocket.off('drain', this.#onDrain);
    if (!this.tlsSocket.destroyed) this.tlsSocket.destroy(error ?? undefined);
    callback(error);
  }

  #afterWrite(callback: WriteCallback): void {
    const queued = this.tlsSocket.writableLength;
    if (queued > stats.largestQueueBytes) stats.largestQueueBytes = queued;
    // At or past the bound, write() returned false (the bound is above the TLS socket's high-water mark), so 'drain' follows.
    if (queued < this.#queueLimitBytes) {
      callback();
      return;
    }
    stats.writesHeld++;
    this.#heldCallback = callback;
  }

  readonly #onData = (chunk: Buffer): void => {
    if (!this.push(chunk)) this.tlsSocket.pause();
  };

  readonly #onEnd = (): void => {
    this.push(null);
  };

  readonly #onDrain = (): void => {
    const held = this.#heldCallback;
    if (!held) return;
    this.#heldCallback = undefined;
    held();
  };

  readonly #onError = (error: Error): void => {
    this.destroy(error);
  };

  readonly #onClose = (): void => {
    this.destroy();
  };
}
