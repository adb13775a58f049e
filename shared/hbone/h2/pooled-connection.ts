/**
 * One pooled HBONE client connection on ambit's own HTTP/2 layer: what shared/hbone/connection.ts is over
 * node:http2, behind the same PooledConnection interface, so the pool (client-pool.ts) does not know which.
 *
 * Owns: dialing (dialH2: TCP from the caller's connector, TLS with the SPIFFE check, the server's SETTINGS, all
 * within the connect timeout), the stream limit (ours and the server's SETTINGS_MAX_CONCURRENT_STREAMS),
 * keepalive PINGs with a timeout (the H2Connection's), the idle release, draining on GOAWAY, and handing out
 * opened streams for a splice (h2/splice.ts) or as a Duplex (h2/duplex.ts).
 * Must not know about: pool keys, which connection a stream should use, policy.
 */
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import type { SpiffeId, WorkloadCertificate } from '../../identity/index.ts';
import type { ConnectionSettings } from '../connection.ts';
import { hboneErrors, isHboneError } from '../errors.ts';
import type { OpenedTunnelStream, PendingTunnelStream, PooledConnection, TunnelOpenHandler, TunnelOpening, TunnelSpliceResult } from '../pooled-connection.ts';
import type { HboneTarget, HostPort, TcpConnector } from '../types.ts';
import type { H2Connection } from './connection.ts';
import { H2DuplexStream } from './duplex.ts';
import { spliceH2, spliceH2To } from './splice.ts';
import type { H2Stream } from './stream.ts';
import { ConnectResponseWaiter, dialH2, requestConnectStream } from './tunnel-client.ts';
import { H2_CANCEL } from './errors.ts';

export interface H2PooledDialParams {
  proxy: HostPort;
  certificate: WorkloadCertificate;
  trustDomain: string;
  expectedIdentities: readonly string[];
  connect: TcpConnector;
  settings: ConnectionSettings;
}

/** A CONNECT stream the server accepted; spliced or wrapped once, by whoever takes it. */
class H2OpenedStream implements OpenedTunnelStream {
  readonly #stream: H2Stream;

  constructor(stream: H2Stream) {
    this.#stream = stream;
  }

  splice(socket: net.Socket): Promise<TunnelSpliceResult> {
    return spliceH2(socket, this.#stream);
  }

  spliceTo<T>(socket: net.Socket, done: (target: T, result: TunnelSpliceResult) => void, target: T): void {
    spliceH2To(socket, this.#stream, done, target);
  }

  duplex(): Duplex {
    return new H2DuplexStream(this.#stream);
  }

  h2Stream(): H2Stream {
    return this.#stream;
  }
}

/** A CONNECT on the own layer waiting for its answer. */
class H2PendingStream implements PendingTunnelStream {
  readonly opened: Promise<OpenedTunnelStream>;
  readonly #stream: H2Stream | undefined;

  constructor(stream: H2Stream | undefined, opened: Promise<OpenedTunnelStream>) {
    this.#stream = stream;
    this.opened = opened;
  }

  cancel(): void {
    this.#stream?.reset(H2_CANCEL);
  }
}

/**
 * One CONNECT opened for the pool's handler, from request to the answer and then as the opened stream: one object per
 * tunnel (the waiter, the cancel handle and the OpenedTunnelStream), no promise.
 */
class H2TunnelOpen extends ConnectResponseWaiter implements TunnelOpening, OpenedTunnelStream {
  readonly #pooled: H2PooledConnection;
  readonly #handler: TunnelOpenHandler;
  #stream: H2Stream | undefined;

  constructor(pooled: H2PooledConnection, target: HboneTarget, handler: TunnelOpenHandler) {
    super(target);
    this.#pooled = pooled;
    this.#handler = handler;
  }

  /** Sends it; false when no stream could be opened (the handler hears why, on a microtask: never inside this call). */
  start(target: HboneTarget): boolean {
    this.#stream = this.send(this.#pooled.connection, target);
    return this.#stream !== undefined;
  }

  cancel(): void {
    this.#stream?.reset(H2_CANCEL);
  }

  protected answered(stream: H2Stream): void {
    this.#stream = stream;
    this.#handler.tunnelOpened(this);
  }

  protected failed(error: Error): void {
    const mapped = this.#pooled.streamError(error);
    // `send` reports a request the connection refused before returning: told after it, as the promise form would.
    if (this.#stream === undefined) queueMicrotask(() => this.#handler.tunnelFailed(mapped));
    else this.#handler.tunnelFailed(mapped);
  }

  splice(socket: net.Socket): Promise<TunnelSpliceResult> {
    return spliceH2(socket, this.#stream!);
  }

  spliceTo<T>(socket: net.Socket, done: (target: T, result: TunnelSpliceResult) => void, target: T): void {
    spliceH2To(socket, this.#stream!, done, target);
  }

  duplex(): Duplex {
    return new H2DuplexStream(this.#stream!);
  }

  h2Stream(): H2Stream {
    return this.#stream!;
  }
}

export class H2PooledConnection implements PooledConnection {
  readonly proxy: HostPort;
  readonly peerIdentity: SpiffeId;
  readonly connection: H2Connection;
  readonly #settings: ConnectionSettings;
  readonly #closeListeners: Array<() => void> = [];
  #idleTimer: NodeJS.Timeout | undefined;
  #closing = false;

  private constructor(proxy: HostPort, peerIdentity: SpiffeId, connection: H2Connection, settings: ConnectionSettings) {
    this.proxy = proxy;
    this.peerIdentity = peerIdentity;
    this.connection = connection;
    this.#settings = settings;
    connection.onStreamClosed = this.#onStreamClosed;
    connection.once('close', this.#onClose);
    this.#armIdleTimer();
  }

  /** Dials `proxy` and resolves once the server's SETTINGS arrived; rejects with a typed HboneError. */
  static async dial(params: H2PooledDialParams): Promise<H2PooledConnection> {
    const { settings } = params;
    let peerIdentity: SpiffeId | undefined;
    const connection = await dialH2({
      proxy: params.proxy,
      certificate: params.certificate,
      trustDomain: params.trustDomain,
      expectedIdentities: params.expectedIdentities,
      connect: params.connect,
      connectTimeoutMs: settings.connectTimeoutMs,
      streamWindowBytes: settings.streamWindowBytes,
      connectionWindowBytes: settings.connectionWindowBytes,
      keepaliveIntervalMs: settings.keepaliveIntervalMs,
      keepaliveTimeoutMs: settings.keepaliveTimeoutMs,
      onPeerVerified: (identity) => {
        peerIdentity = identity;
      },
    });
    // checkServerIdentity runs on every handshake; without its verdict the peer is not known, so not trusted.
    if (!peerIdentity) {
      connection.destroy();
      throw hboneErrors.peerIdentity(params.proxy, 'the server identity was never verified');
    }
    return new H2PooledConnection(params.proxy, peerIdentity, connection, settings);
  }

  get available(): boolean {
    return !this.#closing && this.connection.available && this.connection.activeStreams < this.#settings.maxStreamsPerConnection;
  }

  get activeStreams(): number {
    return this.connection.activeStreams;
  }

  get isClosed(): boolean {
    return this.connection.closed;
  }

  openTunnelStream(target: HboneTarget): PendingTunnelStream | undefined {
    if (!this.available) return undefined;
    // The idle timer is left running: it finds a stream open and does nothing (pushed back when the last one closes).
    const { stream, opened } = requestConnectStream(this.connection, target);
    return new H2PendingStream(
      stream,
      opened.then(
        (accepted) => new H2OpenedStream(accepted),
        (error: unknown) => {
          throw this.streamError(error as Error);
        },
      ),
    );
  }

  openTunnelStreamFor(target: HboneTarget, handler: TunnelOpenHandler): TunnelOpening | undefined {
    if (!this.available) return undefined;
    // The idle timer is left running: it finds a stream open and does nothing (pushed back when the last one closes).
    const open = new H2TunnelOpen(this, target, handler);
    open.start(target);
    return open;
  }

  /** A stream's failure as the pool reports it: a connection that died of an unanswered PING says so, as node:http2's does. */
  streamError(error: Error): Error {
    if (this.connection.error?.code === 'H2_TIMEOUT' && !isHboneError(error, 'HBONE_DENIED')) return hboneErrors.keepaliveTimeout(this.proxy, this.#settings.keepaliveTimeoutMs);
    return error;
  }

  close(): void {
    this.#closing = true;
    this.connection.close();
  }

  destroy(): void {
    this.#closing = true;
    this.connection.destroy();
  }

  onceClosed(listener: () => void): void {
    if (this.connection.closed) listener();
    else this.#closeListeners.push(listener);
  }

  /** From now, the idle timeout: the running timer pushed back (`refresh`: no timer made per stream), or a new one. */
  #armIdleTimer(): void {
    if (this.#settings.idleTimeoutMs > 0 && !this.connection.closed) {
      if (this.#idleTimer) this.#idleTimer.refresh();
      else this.#idleTimer = setTimeout(this.#onIdle, this.#settings.idleTimeoutMs).unref();
    }
  }

  readonly #onIdle = (): void => {
    this.#idleTimer = undefined;
    if (this.connection.activeStreams === 0) this.close();
  };

  readonly #onStreamClosed = (): void => {
    if (this.connection.activeStreams === 0 && !this.connection.closed) this.#armIdleTimer();
  };

  readonly #onClose = (): void => {
    this.#closing = true;
    clearTimeout(this.#idleTimer);
    for (const listener of this.#closeListeners.splice(0)) listener();
  };
}
