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
import { isRefusedUnprocessed, type OpenedTunnelStream, type PooledConnection, type TunnelOpenHandler, type TunnelOpening, type TunnelSpliceResult } from './pooled-connection.ts';
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

/**
 * Told how a `tunnelFor` call went, without promises: `tunnelEstablished` once the server accepted the stream (before
 * any byte moves; not at all if it never did), then `tunnelClosed` exactly once. On a failure to open, the downstream
 * socket is reset after `tunnelClosed` returns (so the observer can still read its addresses).
 */
export interface TunnelObserver {
  tunnelEstablished(peerIdentity: SpiffeId): void;
  /** `error`: why it failed or ended abnormally; `spliced`: how the splice ended (undefined when no stream opened). */
  tunnelClosed(error: Error | undefined, spliced: TunnelSpliceResult | undefined): void;
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
  readonly key: string;
  readonly connections: PooledConnection[] = [];
  dialing: Promise<PooledConnection> | undefined;
  /** Pending CONNECTs this key may still cancel (a token bucket: CANCELLED_PENDING_BURST, refilled per second). */
  cancelTokens = CANCELLED_PENDING_BURST;
  cancelTokensAt = 0;

  constructor(key: string) {
    this.key = key;
  }

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
  const { proxy, expectedIdentities, sourceIdentity } = target;
  // A caller that reuses its proxy address and identity list (the agent's outbound path, per destination workload)
  // gets the key made once: no string built, and none hashed anew, per stream.
  const cached = poolKeyByProxy.get(proxy);
  if (cached !== undefined && cached.expected === expectedIdentities && cached.source === sourceIdentity.uri && cached.host === proxy.host && cached.port === proxy.port) return cached.key;
  const expected = expectedIdentities.length <= 1 ? expectedIdentities.join(',') : [...expectedIdentities].sort().join(',');
  // Flattened now, so the key's hash is computed once and kept with it.
  const key = `${sourceIdentity.uri} ${expected} ${proxy.host} ${proxy.port}`;
  poolKeyByProxy.set(proxy, { expected: expectedIdentities, source: sourceIdentity.uri, host: proxy.host, port: proxy.port, key });
  return key;
}

/** The last key made for a proxy address object, with what it was made from (identity lists are never mutated). */
const poolKeyByProxy = new WeakMap<HboneTarget['proxy'], { expected: readonly string[]; source: string; host: string; port: number; key: string }>();

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

/** The pool's steps a tunnel attempt calls back into (made once per pool: no closure per tunnel). */
interface AttemptHost {
  /** Opens the attempt's stream on a connection with a free slot, dialing one if none has (again after a refusal). */
  advance(attempt: TunnelAttempt): void;
}

/** The attempt waiting on a downstream socket (read by the socket's shared 'close' listener). */
const kAttempt = Symbol('ambit.tunnelAttempt');

type WatchedSocket = net.Socket & { [kAttempt]?: TunnelAttempt | undefined };

/**
 * One `tunnelFor` call, from the pool's pick to the splice's end: the downstream socket watched while its stream is
 * being opened (a client that leaves gets no CONNECT, and one already sent is cancelled if the key's budget allows),
 * the handler of the CONNECT's outcome, the refusal retries. One object per tunnel; no promise or closure until the
 * splice (whose end is a promise of its own).
 */
class TunnelAttempt implements TunnelOpenHandler {
  readonly target: HboneTarget;
  readonly socket: WatchedSocket;
  readonly observer: TunnelObserver;
  readonly #host: AttemptHost;
  entry: PoolEntry | undefined;
  /** The connection the CONNECT went out on (whose identity the server proved). */
  connection: PooledConnection | undefined;
  /** The CONNECT sent and not yet answered. */
  pending: TunnelOpening | undefined;
  /** The client left before the stream was answered. */
  gone = false;
  /** True once a pending CONNECT was cancelled because the client left. */
  cancelled = false;
  refusals = 0;
  #watching = true;

  constructor(target: HboneTarget, socket: net.Socket, observer: TunnelObserver, host: AttemptHost) {
    this.target = target;
    this.socket = socket as WatchedSocket;
    this.observer = observer;
    this.#host = host;
    this.socket[kAttempt] = this;
    socket.on('error', ignoreEarlyError);
    socket.on('close', onWatchedSocketClose);
  }

  /** The splice owns the socket from here (or the tunnel failed): stop watching. */
  #stopWatching(): void {
    if (!this.#watching) return;
    this.#watching = false;
    this.socket.off('error', ignoreEarlyError);
    this.socket.off('close', onWatchedSocketClose);
    this.socket[kAttempt] = undefined;
  }

  downstreamClosed(): void {
    this.gone = true;
    const { pending, entry } = this;
    if (pending && entry && entry.takeCancelToken(performance.now())) {
      this.cancelled = true;
      pending.cancel();
    }
  }

  tunnelOpened(stream: OpenedTunnelStream): void {
    this.pending = undefined;
    this.#stopWatching();
    // Gone after the answer, or its cancel was over budget: the splice resets the answered stream (no budget spent).
    this.observer.tunnelEstablished(this.connection!.peerIdentity);
    stream.spliceTo(this.socket, spliceEnded, this);
  }

  tunnelFailed(error: Error): void {
    this.pending = undefined;
    // REFUSED_STREAM (a GOAWAY raced our request, e.g. the peer agent is restarting) guarantees the server did
    // nothing with the stream (RFC 9113 8.7), so it is safe to open it again, on another connection.
    if (isRefusedUnprocessed(error) && this.refusals++ < MAX_REFUSED_STREAM_RETRIES) this.#host.advance(this);
    else this.fail(error);
  }

  /** Could not be opened: the observer is told, then the socket is reset. */
  fail(error: Error): void {
    this.#stopWatching();
    this.observer.tunnelClosed(this.cancelled ? hboneErrors.downstreamClosed(this.target.destination, this.target.proxy, true) : error, undefined);
    resetSocket(this.socket);
  }
}

/** A tunnel's splice ended: its observer is told (a callback shared by every attempt, no closure per tunnel). */
function spliceEnded(attempt: TunnelAttempt, spliced: TunnelSpliceResult): void {
  attempt.observer.tunnelClosed(spliced.error, spliced);
}

function onWatchedSocketClose(this: WatchedSocket): void {
  this[kAttempt]?.downstreamClosed();
}

/** `tunnel`'s promise over a TunnelObserver (tests and tools; the agent's outbound path observes directly). */
class PromisedTunnel implements TunnelObserver {
  readonly #started = performance.now();
  readonly #resolve: (result: TunnelResult) => void;
  readonly #reject: (error: Error) => void;
  readonly #onEstablished: ((peerIdentity: SpiffeId) => void) | undefined;
  #peerIdentity: SpiffeId | undefined;

  constructor(resolve: (result: TunnelResult) => void, reject: (error: Error) => void, onEstablished: ((peerIdentity: SpiffeId) => void) | undefined) {
    this.#resolve = resolve;
    this.#reject = reject;
    this.#onEstablished = onEstablished;
  }

  tunnelEstablished(peerIdentity: SpiffeId): void {
    this.#peerIdentity = peerIdentity;
    this.#onEstablished?.(peerIdentity);
  }

  tunnelClosed(error: Error | undefined, spliced: TunnelSpliceResult | undefined): void {
    if (spliced === undefined) {
      this.#reject(error!);
      return;
    }
    const tunnel: TunnelResult = {
      bytesSent: spliced.bytesFromSocket,
      bytesReceived: spliced.bytesToSocket,
      durationMs: performance.now() - this.#started,
      peerIdentity: this.#peerIdentity!,
    };
    if (spliced.error) tunnel.error = spliced.error;
    this.#resolve(tunnel);
  }
}

/** Until the splice owns it, an error on the waiting socket must not crash the process. */
function ignoreEarlyError(): void {}

/** Retries of a stream the server refused unprocessed: one GOAWAY race per attempt is already rare. */
const MAX_REFUSED_STREAM_RETRIES = 3;

/** node:http2's connections open by promise: the attempt is told from its settlement. */
function promisedOpening(connection: PooledConnection, target: HboneTarget, attempt: TunnelAttempt): TunnelOpening | undefined {
  const opening = connection.openTunnelStream(target);
  if (!opening) return undefined;
  opening.opened.then((stream) => attempt.tunnelOpened(stream), (error: Error) => attempt.tunnelFailed(error));
  return opening;
}

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
  tunnel(target: HboneTarget, socket: net.Socket, onEstablished?: (peerIdentity: SpiffeId) => void): Promise<TunnelResult> {
    return new Promise((resolve, reject) => this.tunnelFor(target, socket, new PromisedTunnel(resolve, reject, onEstablished)));
  }

  /**
   * `tunnel` without promises: `observer` is told when the stream is established and when the tunnel closed (with the
   * HboneError when it could not be opened: the socket is then reset). Never calls the observer before returning.
   */
  tunnelFor(target: HboneTarget, socket: net.Socket, observer: TunnelObserver): void {
    const attempt = new TunnelAttempt(target, socket, observer, this.#attemptHost);
    if (this.#closed) {
      queueMicrotask(() => attempt.fail(hboneErrors.poolClosed()));
      return;
    }
    const key = poolKey(target);
    let entry = this.#entries.get(key);
    if (!entry) {
      entry = new PoolEntry(key);
      this.#entries.set(key, entry);
    }
    attempt.entry = entry;
    this.#advance(attempt);
  }

  readonly #attemptHost: AttemptHost = { advance: (attempt) => this.#advance(attempt) };

  /**
   * Sends the attempt's CONNECT on the key's first connection with a free slot; without one, waits for the key's dial
   * (one in flight per key) and tries again. Failures reach the attempt (never thrown here).
   */
  #advance(attempt: TunnelAttempt): void {
    const entry = attempt.entry!;
    const { target } = attempt;
    for (;;) {
      if (this.#closed) return attempt.fail(hboneErrors.poolClosed());
      // The client left while its stream waited for a connection (a dial): no CONNECT for nobody.
      if (attempt.gone) return attempt.fail(hboneErrors.downstreamClosed(target.destination, target.proxy, false));
      const connection = entry.pick();
      if (connection) {
        const opening = connection.openTunnelStreamFor ? connection.openTunnelStreamFor(target, attempt) : promisedOpening(connection, target, attempt);
        // undefined: the connection stopped taking streams between the check and the request (GOAWAY); try another.
        if (!opening) continue;
        attempt.connection = connection;
        attempt.pending = opening;
        return;
      }
      entry.dialing ??= this.#dialFor(entry.key, entry, target);
      entry.dialing.then(() => this.#advance(attempt), (error: Error) => attempt.fail(error));
      return;
    }
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

  async #openStream(target: HboneTarget): Promise<OpenedStream> {
    if (this.#closed) throw hboneErrors.poolClosed();
    const key = poolKey(target);
    let entry = this.#entries.get(key);
    if (!entry) {
      entry = new PoolEntry(key);
      this.#entries.set(key, entry);
    }
    let refusals = 0;
    for (;;) {
      const connection = entry.pick();
      if (connection) {
        const opening = connection.openTunnelStream(target);
        // undefined: the connection stopped taking streams between the check and the request (GOAWAY); try another.
        if (!opening) continue;
        try {
          return { stream: await opening.opened, peerIdentity: connection.peerIdentity };
        } catch (error) {
          // REFUSED_STREAM: safe to open again, on another connection (see TunnelAttempt.tunnelFailed).
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
