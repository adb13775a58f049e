/**
 * What the client pool needs from one HBONE connection, whichever HTTP/2 implementation carries it: node:http2
 * (connection.ts) or ambit's own layer (h2/pooled-connection.ts). The pool (client-pool.ts) knows only this.
 *
 * Owns: the interface, and the mark on an error that says "the server refused this stream unprocessed, open it
 * again elsewhere" (REFUSED_STREAM, or a stream above a GOAWAY's last id: RFC 9113 8.7).
 * Must not know about: pools, keys, HTTP/2 frames.
 */
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import type { SpiffeId } from '../identity/index.ts';
import type { H2Stream } from './h2/stream.ts';
import type { HboneTarget } from './types.ts';

/** How a tunnel's splice ended, as both implementations' splices report it. */
export interface TunnelSpliceResult {
  bytesFromSocket: number;
  bytesToSocket: number;
  error?: Error;
}

/** A CONNECT stream the server answered 2xx, not yet joined to anything. */
export interface OpenedTunnelStream {
  /** Joins it to a downstream TCP socket until both are closed. */
  splice(socket: net.Socket): Promise<TunnelSpliceResult>;
  /**
   * `splice` without a promise: `done(target, result)` once both sides are closed (the client pool's tunnels: no
   * promise, resolve functions and reaction per tunnel; issue 14, the storm step).
   */
  spliceTo<T>(socket: net.Socket, done: (target: T, result: TunnelSpliceResult) => void, target: T): void;
  /** Hands it out as a Duplex (write: to the destination; read: what it sends back; end(): half-close). */
  duplex(): Duplex;
  /**
   * The own layer's stream itself, for a caller that becomes its handler (h2/stream.ts H2StreamHandler), as a splice
   * does: no Duplex in between. Absent on node:http2.
   */
  h2Stream?(): H2Stream;
}

/** A CONNECT sent and not answered yet. */
export interface PendingTunnelStream {
  /** Resolves once the server answered 2xx; rejects with a typed HboneError (also after `cancel`). */
  readonly opened: Promise<OpenedTunnelStream>;
  /** Gives the stream up: RST_STREAM CANCEL, so the server drops the connection to the target it may be making. */
  cancel(): void;
}

/**
 * Told how a CONNECT sent with `openTunnelStreamFor` ended: exactly one of the two, once, never before that call
 * returned. The pool's per-tunnel object implements it (client-pool.ts): no promise per stream.
 */
export interface TunnelOpenHandler {
  tunnelOpened(stream: OpenedTunnelStream): void;
  tunnelFailed(error: Error): void;
}

/** A CONNECT sent with `openTunnelStreamFor` and not answered yet. */
export interface TunnelOpening {
  /** As PendingTunnelStream.cancel: RST_STREAM CANCEL; the handler then hears `tunnelFailed`. */
  cancel(): void;
}

export interface PooledConnection {
  /** The identity the server's certificate proved. */
  readonly peerIdentity: SpiffeId;
  /** True while the connection may take one more stream. */
  readonly available: boolean;
  /** Streams open now. */
  readonly activeStreams: number;
  /** True once the connection is gone. */
  readonly isClosed: boolean;
  /**
   * Sends CONNECT for `target`; `opened` resolves once the server answered 2xx, rejects with a typed HboneError
   * (marked with `markRefusedUnprocessed` when it is safe to try again). undefined: the connection takes no stream now.
   */
  openTunnelStream(target: HboneTarget): PendingTunnelStream | undefined;
  /**
   * As openTunnelStream, the outcome told to `handler` instead of a promise (the own layer: one object per CONNECT).
   * Absent on node:http2, whose pool uses openTunnelStream.
   */
  openTunnelStreamFor?(target: HboneTarget, handler: TunnelOpenHandler): TunnelOpening | undefined;
  /** Stops new streams; closes when the open ones finish. */
  close(): void;
  /** Closes now; open streams are reset. */
  destroy(): void;
  /** `listener` runs once the connection is gone (at once if it already is). */
  onceClosed(listener: () => void): void;
}

const refusedUnprocessed = new WeakSet<Error>();

/** Marks `error` as a stream the server did nothing with (REFUSED_STREAM): the pool may open it again elsewhere. */
export function markRefusedUnprocessed<E extends Error>(error: E): E {
  refusedUnprocessed.add(error);
  return error;
}

export function isRefusedUnprocessed(error: unknown): boolean {
  return error instanceof Error && refusedUnprocessed.has(error);
}
