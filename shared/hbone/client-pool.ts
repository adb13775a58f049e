/**
 * The HBONE client: a pool of HTTP/2-over-mTLS connections that CONNECT streams share.
 *
 * Owns: the pool key (source identity, sorted expected identities, HBONE endpoint), choosing a connection with a
 * free stream slot (the oldest first, so a burst's extra connections empty out), dialing a new one when all are
 * full (one dial in flight per key; concurrent opens wait for it), closing the extra connections a burst opened
 * once they are idle (the surplus sweep: one connection per key stays for the idle timeout), forgetting
 * connections that close, and `tunnel`, which splices a downstream TCP socket into a new stream.
 * Must not know about: pods, policy, xDS, how sockets are made (the caller's connector does that).
 */
import net from 'node:net';
import {
  CANCELLED_PENDING_BURST,
  CANCELLED_PENDING_RATE_PER_SECOND,
  DEFAULT_CONNECT_TIMEOUT_MS,
  DEFAULT_CONNECTION_WINDOW_BYTES,
  DEFAULT_IDLE_TIMEOUT_MS,
  DEFAULT_KEEPALIVE_INTERVAL_MS,
  DEFAULT_KEEPALIVE_TIMEOUT_MS,
  DEFAULT_MAX_STREAMS_PER_CONNECTION,
  DEFAULT_STREAM_WINDOW_BYTES,
  DEFAULT_SURPLUS_IDLE_SWEEP_MS,
  hboneImplementation,
  type HboneImplementation,
} from './config.ts';
import { HboneConnection, type ConnectionSettings } from './connection.ts';
import type { SpiffeId, WorkloadCertificate } from '../identity/index.ts';
import { hboneErrors } from './errors.ts';
import { H2PooledConnection } from './h2/pooled-connection.ts';
import type { H2Stream } from './h2/stream.ts';
import { isRefusedUnprocessed, type OpenedTunnelStream, type PendingTunnelStream, type PooledConnection } from './pooled-connection.ts';
import { resetSocket } from './splice.ts';
import { noteMemoryFreed } from '../memory/release-hint.ts';
import type { HboneClientOptions, HboneStream, HboneTarget, TcpConnector } from './types.ts';

/** What a finished tunnel carried, for telemetry. */
export interface TunnelResult {
  /** Bytes from the downstream socket to the destination, and back. */
  bytesSent: number;
  bytesReceived: number;
  durationMs: number;
  /** The identity the server's certificate proved. */
  peerIdentity: SpiffeId;
  /** Why it ended abnormally (reset, socket error); absent when both sides ended cleanly. */
  error?: Error;
}

export interface PoolStats {
  /** Connections open now (including draining ones). */
  connections: number;
  /** Connections dialed successfully since the pool was made. */
  dials: number;
  /** Dials that failed. */
  dialFailures: number;
  /** Streams open now across all connections. */
  activeStreams: number;
  /** Connections the surplus sweep closed (beyond the first per key, idle for two sweeps). */
  surplusClosed: number;
}

/** The connections for one pool key. */
class PoolEntry {
  readonly connections: PooledConnection[] = [];
  dialing: Promise<PooledConnection> | undefined;
  /** Pending CONNECTs this key may still cancel (a token bucket: CANCELLED_PENDING_BURST, refilled per second). */
  cancelTokens = CANCELLED_PENDING_BURST;
  cancelTokensAt = 0;

  /** Takes one cancel token if there is one (see CANCELLED_PENDING_BURST for why cancels are rationed). */
  takeCancelToken(now: number): boolean {
    this.cancelTokens = Math.min(CANCELLED_PENDING_BURST, this.cancelTokens + ((now - this.cancelTokensAt) * CANCELLED_PENDING_RATE_PER_SECOND) / 1000);
    this.cancelTokensAt = now;
    if (this.cancelTokens < 1) return false;
    this.cancelTokens -= 1;
    return true;
  }

  pick(): PooledConnection | undefined {
    for (const connection of this.connections) {
      if (connection.available) return connection;
    }
    return undefined;
  }
}

const defaultConnector: TcpConnector = (target) => net.connect({ host: target.host, port: target.port });

/**
 * Which connections may carry a stream: same source identity, same expected peers, same proxy address. Built for
 * every stream, so it only joins strings (the address is validated where it becomes an :authority).
 */
function poolKey(target: HboneTarget): string {
  const expected = target.expectedIdentities.length <= 1 ? target.expectedIdentities.join(',') : [...target.expectedIdentities].sort().join(',');
  return `${target.sourceIdentity.uri} ${expected} ${target.proxy.host} ${target.proxy.port}`;
}

/** A stream the server accepted, and who the server proved to be. */
interface OpenedStream {
  stream: OpenedTunnelStream;
  peerIdentity: SpiffeId;
}

/** What one dial needs, whichever HTTP/2 implementation carries the connection. */
interface DialRequest {
  proxy: HboneTarget['proxy'];
  certificate: WorkloadCertificate;
  trustDomain: string;
  expectedIdentities: readonly string[];
  connect: TcpConnector;
  settings: ConnectionSettings;
}

/** node:http2 (connection.ts) or ambit's own layer (h2/pooled-connection.ts): the one place the pool chooses. */
function dialerFor(implementation: HboneImplementation): (request: DialRequest) => Promise<PooledConnection> {
  return implementation === 'own' ? (request) => H2PooledConnection.dial(request) : (request) => HboneConnection.dial(request);
}

/**
 * One `tunnel` call's downstream socket while its stream is being opened: whether its client has gone, and the
 * CONNECT in flight, cancelled when it goes (if the key's cancel budget allows).
 */
class DownstreamWatch {
  readonly socket: net.Socket;
  gone = false;
  /** The CONNECT sent and not yet answered, and its pool entry (for the cancel budget). */
  pending: PendingTunnelStream | undefined;
  entry: PoolEntry | undefined;
  /** True once a pending CONNECT was cancelled because the client left. */
  cancelled = false;

  constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('error', ignoreEarlyError);
    socket.once('close', this.#onClose);
  }

  /** The splice owns the socket from here (or the tunnel failed): stop watching. */
  stop(): void {
    this.socket.off('error', ignoreEarlyError);
    this.socket.off('close', this.#onClose);
    this.pending = undefined;
  }

  readonly #onClose = (): void => {
    this.gone = true;
    const { pending, entry } = this;
    if (pending && entry && entry.takeCancelToken(performance.now())) {
      this.cancelled = true;
      pending.cancel();
    }
  };
}

/** Until the splice owns it, an error on the waiting socket must not crash the process. */
function ignoreEarlyError(): void {}

/** Retries of a stream the server refused unprocessed: one GOAWAY race per attempt is already rare. */
const MAX_REFUSED_STREAM_RETRIES = 3;

export class HboneClientPool {
  readonly #options: HboneClientOptions;
  readonly #settings: ConnectionSettings;
  readonly #connect: TcpConnector;
  readonly #dial: (request: DialRequest) => Promise<PooledConnection>;
  /** Which HTTP/2 implementation carries this pool's connections. */
  readonly implementation: HboneImplementation;
  readonly #entries = new Map<string, PoolEntry>();
  #closed = false;
  #dials = 0;
  #dialFailures = 0;
  #surplusClosed = 0;
  readonly #surplusIdleSweepMs: number;
  /** Runs while some key has more than one connection; unref'd. */
  #surplusSweep: NodeJS.Timeout | undefined;
  /** Surplus connections the last sweep found without a stream: closed if the next one finds them so too. */
  #idleAtLastSweep = new WeakSet<PooledConnection>();

  constructor(options: HboneClientOptions) {
    this.#options = options;
    this.#connect = options.connect ?? defaultConnector;
    this.implementation = options.implementation ?? hboneImplementation();
    this.#dial = dialerFor(this.implementation);
    this.#surplusIdleSweepMs = options.surplusIdleSweepMs ?? DEFAULT_SURPLUS_IDLE_SWEEP_MS;
    this.#settings = {
      maxStreamsPerConnection: options.maxStreamsPerConnection ?? DEFAULT_MAX_STREAMS_PER_CONNECTION,
      idleTimeoutMs: options.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS,
      keepaliveIntervalMs: options.keepaliveIntervalMs ?? DEFAULT_KEEPALIVE_INTERVAL_MS,
      keepaliveTimeoutMs: options.keepaliveTimeoutMs ?? DEFAULT_KEEPALIVE_TIMEOUT_MS,
      connectTimeoutMs: options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
      streamWindowBytes: options.streamWindowBytes ?? DEFAULT_STREAM_WINDOW_BYTES,
      connectionWindowBytes: options.connectionWindowBytes ?? DEFAULT_CONNECTION_WINDOW_BYTES,
    };
  }

  /**
   * Opens an HBONE stream to `target.destination` through `target.proxy`; resolves once the server answered 200.
   * Rejects with HboneError: HBONE_DENIED (401), HBONE_REFUSED (503), HBONE_CONNECT_TIMEOUT, HBONE_TLS,
   * HBONE_PEER_IDENTITY, HBONE_NO_CERTIFICATE, ...
   */
  async open(target: HboneTarget): Promise<HboneStream> {
    return (await this.#openStream(target)).stream.duplex();
  }

  /**
   * As open(), for a caller that drives the stream itself: on the own layer the H2Stream (the caller becomes its
   * handler, as a splice does: no Duplex, no stream machinery per chunk), on node:http2 the Duplex open() gives.
   */
  async openDirect(target: HboneTarget): Promise<HboneStream | H2Stream> {
    const opened = (await this.#openStream(target)).stream;
    return opened.h2Stream?.() ?? opened.duplex();
  }

  /**
   * Carries `socket` (a downstream TCP connection) through a new stream to `target`, and resolves when both sides
   * are closed. If the stream cannot be opened the socket is reset and the promise rejects with the HboneError.
   * `onEstablished` is told the server's verified identity once the server accepted the stream, before any byte moves.
   */
  async tunnel(target: HboneTarget, socket: net.Socket, onEstablished?: (peerIdentity: SpiffeId) => void): Promise<TunnelResult> {
    const started = performance.now();
    // A client that leaves while its stream is being opened: no CONNECT is sent for it, and one already sent is
    // cancelled (RST_STREAM CANCEL), so the server does not connect to the target for nobody.
    const watch = new DownstreamWatch(socket);
    let opened: OpenedStream;
    try {
      opened = await this.#openStream(target, watch);
    } catch (error) {
      watch.stop();
      resetSocket(socket);
      throw watch.cancelled ? hboneErrors.downstreamClosed(target.destination, target.proxy, true) : error;
    }
    watch.stop();
    // Gone after the answer, or its cancel was over budget: the splice resets the answered stream (no budget spent).
    onEstablished?.(opened.peerIdentity);
    const result = await opened.stream.splice(socket);
    const tunnel: TunnelResult = {
      bytesSent: result.bytesFromSocket,
      bytesReceived: result.bytesToSocket,
      durationMs: performance.now() - started,
      peerIdentity: opened.peerIdentity,
    };
    if (result.error) tunnel.error = result.error;
    return tunnel;
  }

  stats(): PoolStats {
    let connections = 0;
    let activeStreams = 0;
    for (const entry of this.#entries.values()) {
      connections += entry.connections.length;
      for (const connection of entry.connections) activeStreams += connection.activeStreams;
    }
    return { connections, dials: this.#dials, dialFailures: this.#dialFailures, activeStreams, surplusClosed: this.#surplusClosed };
  }

  /** Refuses new streams and closes every connection once its streams finish. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#stopSurplusSweep();
    const closing: Promise<void>[] = [];
    for (const entry of this.#entries.values()) {
      for (const connection of entry.connections) {
        closing.push(new Promise((resolve) => connection.onceClosed(resolve)));
        connection.close();
      }
    }
    await Promise.all(closing);
  }

  /** Closes every connection now, resetting open streams. */
  destroy(): void {
    this.#closed = true;
    this.#stopSurplusSweep();
    for (const entry of this.#entries.values()) {
      for (const connection of [...entry.connections]) connection.destroy();
    }
  }

  async #openStream(target: HboneTarget, watch?: DownstreamWatch): Promise<OpenedStream> {
    if (this.#closed) throw hboneErrors.poolClosed();
    const key = poolKey(target);
    let entry = this.#entries.get(key);
    if (!entry) {
      entry = new PoolEntry();
      this.#entries.set(key, entry);
    }
    let refusals = 0;
    for (;;) {
      // The client left while its stream waited for a connection (a dial): no CONNECT for nobody.
      if (watch?.gone) throw hboneErrors.downstreamClosed(target.destination, target.proxy, false);
      const connection = entry.pick();
      if (connection) {
        const opening = connection.openTunnelStream(target);
        // undefined: the connection stopped taking streams between the check and the request (GOAWAY); try another.
        if (!opening) continue;
        if (watch) {
          watch.pending = opening;
          watch.entry = entry;
        }
        try {
          return { stream: await opening.opened, peerIdentity: connection.peerIdentity };
        } catch (error) {
          if (watch) watch.pending = undefined;
          // REFUSED_STREAM (a GOAWAY raced our request, e.g. the peer agent is restarting) guarantees the server did
          // nothing with the stream (RFC 9113 8.7), so it is safe to open it again, on another connection.
          if (isRefusedUnprocessed(error) && refusals++ < MAX_REFUSED_STREAM_RETRIES) continue;
          throw error;
        }
      }
      if (this.#closed) throw hboneErrors.poolClosed();
      entry.dialing ??= this.#dialFor(key, entry, target);
      await entry.dialing;
    }
  }

  async #dialFor(key: string, entry: PoolEntry, target: HboneTarget): Promise<PooledConnection> {
    try {
      const certificate = await this.#options.certificateFor(target.sourceIdentity);
      if (!certificate || certificate.notAfter.getTime() <= Date.now()) throw hboneErrors.noCertificate(target.sourceIdentity.uri);
      const connection = await this.#dial({
        proxy: target.proxy,
        certificate,
        trustDomain: this.#options.trustDomain,
        expectedIdentities: target.expectedIdentities,
        connect: this.#connect,
        settings: this.#settings,
      });
      this.#dials++;
      entry.connections.push(connection);
      connection.onceClosed(() => this.#forget(key, entry, connection));
      if (this.#closed) connection.close();
      else if (entry.connections.length > 1) this.#startSurplusSweep();
      return connection;
    } catch (error) {
      this.#dialFailures++;
      if (entry.connections.length === 0 && this.#entries.get(key) === entry) this.#entries.delete(key);
      throw error;
    } finally {
      entry.dialing = undefined;
    }
  }

  #startSurplusSweep(): void {
    if (this.#surplusSweep || this.#surplusIdleSweepMs <= 0) return;
    this.#surplusSweep = setInterval(() => this.#sweepSurplus(), this.#surplusIdleSweepMs);
    this.#surplusSweep.unref();
  }

  #stopSurplusSweep(): void {
    clearInterval(this.#surplusSweep);
    this.#surplusSweep = undefined;
  }

  /**
   * Closes connections beyond the first per key that had no stream at this sweep and the previous one. The first
   * (oldest) connection of a key is never closed here: `pick` fills it first, so it is the one a steady load uses.
   */
  #sweepSurplus(): void {
    let closed = 0;
    let surplusLeft = false;
    for (const entry of this.#entries.values()) {
      for (let index = entry.connections.length - 1; index >= 1; index--) {
        const connection = entry.connections[index]!;
        if (connection.activeStreams > 0 || connection.isClosed) {
          this.#idleAtLastSweep.delete(connection);
        } else if (this.#idleAtLastSweep.has(connection)) {
          connection.close();
          closed++;
          continue;
        } else {
          this.#idleAtLastSweep.add(connection);
        }
        surplusLeft = true;
      }
    }
    if (!surplusLeft) this.#stopSurplusSweep();
    if (closed > 0) {
      this.#surplusClosed += closed;
      noteMemoryFreed();
    }
  }

  #forget(key: string, entry: PoolEntry, connection: PooledConnection): void {
    const index = entry.connections.indexOf(connection);
    if (index >= 0) entry.connections.splice(index, 1);
    if (entry.connections.length === 0 && !entry.dialing && this.#entries.get(key) === entry) this.#entries.delete(key);
  }
}
