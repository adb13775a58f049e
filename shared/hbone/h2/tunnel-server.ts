/**
 * HBONE's server side on ambit's own HTTP/2 layer: the whole HboneServer contract (shared/hbone/server.ts, which
 * delegates here when its implementation is `own`), without node:http2.
 *
 * Owns: accepting raw TCP sockets from any listener (`handle`), the TLS layer per presented certificate (client
 * certificate demanded, SPIFFE identity checked: shared/hbone/tls.ts), one server H2Connection per TLS connection,
 * each CONNECT's checks (400 not CONNECT or a bad `:authority`, as ztunnel; the caller's `decide`: its status, 401
 * by default), the target connect (503 on failure, 200 only once connected), splicing (h2/splice.ts), and what one
 * client connection may cost: it ends with the client's FIN, a PING keepalive finds a client that vanished without
 * one, an idle timeout ends a connection with no streams, at most `maxConcurrentStreams` streams at once (the
 * layer refuses more), and a budget of streams reset before they were answered (then GOAWAY ENHANCE_YOUR_CALM).
 * Graceful shutdown: GOAWAY, drain until a deadline, then cut. Counters and rejections as server.ts reports them.
 * Must not know about: what policy says, how target sockets are made beyond the caller's `connect`, metrics names.
 * A peer's garbage (bad TLS, bad frames, floods, vanishing) is counted, reported and closed, never thrown.
 */
import net from 'node:net';
import tls from 'node:tls';
import type { SpiffeId, WorkloadCertificate } from '../../identity/index.ts';
import { parseAuthority } from '../authority.ts';
import {
  DEFAULT_CONNECT_TIMEOUT_MS,
  DEFAULT_DRAIN_DEADLINE_MS,
  DEFAULT_SERVER_IDLE_TIMEOUT_MS,
  DEFAULT_SERVER_KEEPALIVE_INTERVAL_MS,
  DEFAULT_SERVER_KEEPALIVE_TIMEOUT_MS,
  DEFAULT_TARGET_CONNECT_TIMEOUT_MS,
  SERVER_PREMATURE_RESET_BURST,
  SERVER_PREMATURE_RESET_RATE_PER_SECOND,
} from '../config.ts';
import { HboneError } from '../errors.ts';
import { serverTlsOptions, verifyClient } from '../tls.ts';
import type { HboneDecision, HboneRejection, HboneRejectionReason, HboneRequest, HboneServerOptions, HboneTunnelEvent, HostPort, RefusalStatus } from '../types.ts';
import { H2Connection, type H2ConnectionOptions } from './connection.ts';
import { H2_ENHANCE_YOUR_CALM, H2Error } from './errors.ts';
import { runReadTurn } from '../read-turn.ts';
import { spliceH2To, type H2SpliceResult } from './splice.ts';
import type { H2Stream } from './stream.ts';

export interface H2TunnelServerOptions extends HboneServerOptions {
  /** Told about every connection-level protocol error and stream the layer reset for the peer's fault. */
  onProtocolError?: (error: H2Error) => void;
  /** Overrides for the HTTP/2 layer (limits in hostile-input tests). */
  h2?: Partial<H2ConnectionOptions>;
  /**
   * HboneServerOptions.terminate on this layer (the waypoint): takes over an allowed CONNECT stream instead of
   * connecting to its target; the handler answers it (`stream.respond`) and owns it from then on. A stream reset by
   * the client before the handler answered it counts against the rapid-reset budget, as one refused here does.
   */
  terminateStream?: (request: HboneRequest, stream: H2Stream) => void;
}

/** The counters HboneServer.stats() reports (the same fields for both implementations). */
export interface H2TunnelServerStats {
  sessionsAccepted: number;
  connectionsRejected: number;
  connectionErrors: number;
  tunnelsOpened: number;
  requestsRefused: number;
  activeSessions: number;
  keepaliveTimeouts: number;
  idleTimeouts: number;
  streamFloods: number;
}

/** One client connection: who it is, and what it may still cost. */
interface ClientConnection {
  connection: H2Connection;
  peerIdentity: SpiffeId;
  remoteAddress: string;
  idleTimer: NodeJS.Timeout | undefined;
  /** Rapid-reset budget: tokens left, and when they were last refilled (performance.now()). */
  resetTokens: number;
  resetRefilledAt: number;
  /** Set once this connection's flood was reported (the layer's own close error then says nothing new). */
  floodReported: boolean;
}

/**
 * One allowed CONNECT from its decision to its answer: what the turn's end and the target's connect need. One object
 * per stream in place of the promises, closures and timer each stream used to cost (issue 14, the storm step).
 */
class StreamSetUp implements HboneTunnelEvent {
  readonly server: H2TunnelServer;
  readonly stream: H2Stream;
  readonly request: StreamRequest;
  /** The `:authority` as sent (for messages). */
  readonly authority: string | undefined;
  /** The target socket once asked for, and when its connect gives up (performance.now()). */
  socket: net.Socket | undefined = undefined;
  started = 0;
  deadline = 0;
  /** Once spliced and closed, what `onTunnel` is told (this object is the event: none made per tunnel). */
  bytesIn = 0;
  bytesOut = 0;
  durationMs = 0;
  error: string | undefined = undefined;

  constructor(server: H2TunnelServer, stream: H2Stream, request: StreamRequest, authority: string | undefined) {
    this.server = server;
    this.stream = stream;
    this.request = request;
    this.authority = authority;
  }
}

/**
 * The HboneRequest of a CONNECT on this layer: the header record is built only when someone reads it (policy and
 * the agent read the peer, target and address; the waypoint reads headers), not for every stream.
 */
class StreamRequest implements HboneRequest {
  readonly peerIdentity: SpiffeId;
  readonly target: HostPort;
  readonly remoteAddress: string;
  callerState: unknown = undefined;
  readonly #list: readonly string[];
  #headers: Record<string, string | string[]> | undefined;

  constructor(peerIdentity: SpiffeId, target: HostPort, remoteAddress: string, list: readonly string[]) {
    this.peerIdentity = peerIdentity;
    this.target = target;
    this.remoteAddress = remoteAddress;
    this.#list = list;
  }

  get headers(): Readonly<Record<string, string | string[]>> {
    if (this.#headers !== undefined) return this.#headers;
    const headers: Record<string, string | string[]> = {};
    const list = this.#list;
    for (let index = 0; index < list.length; index += 2) {
      const name = list[index]!;
      const value = list[index + 1]!;
      const existing = headers[name];
      headers[name] = existing === undefined ? value : Array.isArray(existing) ? [...existing, value] : [existing, value];
    }
    return (this.#headers = headers);
  }
}

const allow: HboneDecision = { allow: true };

/**
 * A target socket while it connects carries its stream's set-up under this key: how the listeners every such socket
 * shares find their stream (no closure, no map entry per stream).
 */
const kSetUp = Symbol('ambit.hbone.targetSetUp');
interface TargetSocket extends net.Socket {
  [kSetUp]?: StreamSetUp | undefined;
}

function defaultTargetConnector(request: HboneRequest): net.Socket {
  return net.connect({ host: request.target.host, port: request.target.port, allowHalfOpen: true, noDelay: true });
}

function ignore(): void {}

/** What `onTargetSettled` is told when the client's stream closed before its target connect ended. */
const STREAM_GONE = new HboneError('HBONE_DOWNSTREAM_CLOSED', 'the client closed its stream before the target connected');

/** After the drain, sockets get this long to carry the GOAWAY and the TLS close out before they are cut. */
const SHUTDOWN_FLUSH_MS = 500;

export class H2TunnelServer {
  readonly #options: H2TunnelServerOptions;
  readonly #tlsServers = new WeakMap<WorkloadCertificate, tls.Server>();
  readonly #clients = new Map<H2Connection, ClientConnection>();
  readonly #sockets = new Set<net.Socket>();
  readonly #listeners: net.Server[] = [];
  readonly #stats: H2TunnelServerStats = {
    sessionsAccepted: 0,
    connectionsRejected: 0,
    connectionErrors: 0,
    tunnelsOpened: 0,
    requestsRefused: 0,
    activeSessions: 0,
    keepaliveTimeouts: 0,
    idleTimeouts: 0,
    streamFloods: 0,
  };
  readonly #idleTimeoutMs: number;
  readonly #resetBurst: number;
  readonly #resetRatePerMs: number;
  readonly #targetConnectTimeoutMs: number;
  /** Streams allowed this turn, set up at its end (#runAfterTurn). */
  #afterTurn: (StreamSetUp | undefined)[] = [];
  #afterTurnCount = 0;
  /** The list the running turn's end left, swapped in for the next turn: no array made per turn. */
  #afterTurnSpare: (StreamSetUp | undefined)[] = [];
  /** Streams whose target is connecting, in deadline order, and the one timer for the earliest deadline. */
  readonly #connecting = new Map<H2Stream, StreamSetUp>();
  #targetTimer: NodeJS.Timeout | undefined;
  #openStreams = 0;
  #shuttingDown = false;
  #drained: (() => void) | undefined;

  constructor(options: H2TunnelServerOptions) {
    this.#options = options;
    this.#idleTimeoutMs = options.idleTimeoutMs ?? DEFAULT_SERVER_IDLE_TIMEOUT_MS;
    this.#resetBurst = options.prematureResetBurst ?? SERVER_PREMATURE_RESET_BURST;
    this.#resetRatePerMs = (options.prematureResetRatePerSecond ?? SERVER_PREMATURE_RESET_RATE_PER_SECOND) / 1000;
    this.#targetConnectTimeoutMs = options.connectTimeoutMs ?? DEFAULT_TARGET_CONNECT_TIMEOUT_MS;
  }

  get activeConnections(): number {
    return this.#clients.size;
  }

  get tunnelsOpened(): number {
    return this.#stats.tunnelsOpened;
  }

  get requestsRefused(): number {
    return this.#stats.requestsRefused;
  }

  /** Streams open now on all connections (refused and spliced ones alike, until they close). */
  get openStreams(): number {
    return this.#openStreams;
  }

  stats(): H2TunnelServerStats {
    return { ...this.#stats, activeSessions: this.#clients.size };
  }

  /** Takes a raw TCP socket accepted by any listener (the agent's in-pod listeners) and serves HBONE on it. */
  handle(socket: net.Socket): void {
    if (this.#shuttingDown) {
      socket.destroy();
      return;
    }
    let certificate: WorkloadCertificate | undefined;
    try {
      certificate = this.#options.certificateFor(socket);
    } catch (cause) {
      this.#report(new HboneError('HBONE_NO_CERTIFICATE', `certificateFor failed: ${(cause as Error).message}`, { cause }));
    }
    if (!certificate) {
      this.#stats.connectionsRejected++;
      this.#report(new HboneError('HBONE_NO_CERTIFICATE', `no certificate to present on a connection to ${socket.localAddress ?? '?'}:${socket.localPort ?? '?'}: the destination's certificate has not been issued yet`));
      socket.destroy();
      return;
    }
    socket.setNoDelay(true);
    // The client's FIN ends the connection (see server.ts): half-close of a tunnel is END_STREAM, never a FIN.
    socket.allowHalfOpen = false;
    this.#sockets.add(socket);
    socket.once('close', () => this.#sockets.delete(socket));
    this.#tlsServerFor(certificate).emit('connection', socket);
  }

  /** Listens on `address` (port 0 picks one) and serves every accepted socket; resolves with the bound address. */
  listen(address: HostPort): Promise<HostPort> {
    const server = net.createServer({ noDelay: true, allowHalfOpen: false }, (socket) => this.handle(socket));
    this.#listeners.push(server);
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: address.host, port: address.port }, () => {
        server.off('error', reject);
        server.on('error', (error) => this.#report(new HboneError('HBONE_CONNECT_FAILED', `HBONE listener error: ${error.message}`, { cause: error })));
        const bound = server.address() as net.AddressInfo;
        resolve({ host: bound.address, port: bound.port });
      });
    });
  }

  /** GOAWAY on every connection, streams finish until `deadlineMs`, then everything is cut (RST_STREAM CANCEL). */
  async shutdown(deadlineMs: number = DEFAULT_DRAIN_DEADLINE_MS): Promise<void> {
    this.#shuttingDown = true;
    const listenersClosed = this.#listeners.map((server) => new Promise<void>((resolve) => server.close(() => resolve())));
    for (const connection of this.#clients.keys()) connection.close();
    if (this.#clients.size > 0) {
      let deadline: NodeJS.Timeout | undefined;
      await new Promise<void>((resolve) => {
        this.#drained = resolve;
        deadline = setTimeout(resolve, deadlineMs);
      });
      clearTimeout(deadline);
      this.#drained = undefined;
    }
    for (const connection of [...this.#clients.keys()]) connection.destroy();
    // Every connection has now written its GOAWAY and ended its TLS side; the TCP sockets get a moment to carry
    // that out (a client that reads the GOAWAY retries its new streams elsewhere; one cut short sees a lost
    // connection instead), then whatever is left is cut.
    await this.#socketsClosed(SHUTDOWN_FLUSH_MS);
    for (const socket of this.#sockets) socket.destroy();
    await Promise.all(listenersClosed);
  }

  /** Resolves once every accepted socket closed, or after `timeoutMs`. */
  async #socketsClosed(timeoutMs: number): Promise<void> {
    if (this.#sockets.size === 0) return;
    let timer: NodeJS.Timeout | undefined;
    const closed = [...this.#sockets].map((socket) => new Promise<void>((resolve) => (socket.destroyed ? resolve() : socket.once('close', () => resolve()))));
    await Promise.race([Promise.all(closed), new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)))]);
    clearTimeout(timer);
  }

  #tlsServerFor(certificate: WorkloadCertificate): tls.Server {
    let server = this.#tlsServers.get(certificate);
    if (!server) {
      server = tls.createServer(serverTlsOptions(certificate, this.#options.rootsPem, this.#options.handshakeTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS));
      server.on('secureConnection', this.#onSecureConnection);
      server.on('tlsClientError', this.#onTlsClientError);
      this.#tlsServers.set(certificate, server);
    }
    return server;
  }

  readonly #onTlsClientError = (error: Error, socket: tls.TLSSocket): void => {
    this.#stats.connectionErrors++;
    const rejection = new HboneError('HBONE_TLS', `TLS handshake with HBONE client ${socket.remoteAddress ?? '?'} failed: ${error.message} (is it a mesh workload with a certificate from this mesh's root?)`, { cause: error });
    this.#report(rejection);
    this.#reject({ reason: 'tls', error: rejection, remoteAddress: socket.remoteAddress ?? '' });
    socket.destroy();
  };

  readonly #onSecureConnection = (socket: tls.TLSSocket): void => {
    socket.on('error', ignore);
    if (this.#shuttingDown) {
      socket.destroy();
      return;
    }
    let peerIdentity: SpiffeId;
    try {
      peerIdentity = verifyClient(socket, this.#options.trustDomain);
    } catch (error) {
      const rejection = error as HboneError;
      this.#stats.connectionsRejected++;
      this.#report(rejection);
      this.#reject({ reason: rejection.code === 'HBONE_PEER_IDENTITY' ? 'peer_identity' : 'tls', error: rejection, remoteAddress: socket.remoteAddress ?? '' });
      socket.destroy();
      return;
    }
    const options: H2ConnectionOptions = {
      role: 'server',
      keepaliveIntervalMs: this.#options.keepaliveIntervalMs ?? DEFAULT_SERVER_KEEPALIVE_INTERVAL_MS,
      keepaliveTimeoutMs: this.#options.keepaliveTimeoutMs ?? DEFAULT_SERVER_KEEPALIVE_TIMEOUT_MS,
      ...this.#options.h2,
    };
    if (this.#options.streamWindowBytes !== undefined) options.streamWindowBytes = this.#options.streamWindowBytes;
    if (this.#options.connectionWindowBytes !== undefined) options.connectionWindowBytes = this.#options.connectionWindowBytes;
    if (this.#options.maxConcurrentStreams !== undefined) options.maxConcurrentStreams = this.#options.maxConcurrentStreams;
    const connection = new H2Connection(socket, options);
    const client: ClientConnection = {
      connection, peerIdentity, remoteAddress: socket.remoteAddress ?? '', idleTimer: undefined,
      resetTokens: this.#resetBurst, resetRefilledAt: performance.now(), floodReported: false,
    };
    this.#clients.set(connection, client);
    this.#stats.sessionsAccepted++;
    connection.on('stream', (stream: H2Stream) => this.#onStream(stream, client));
    connection.on('error', (error: H2Error) => this.#onConnectionError(error, client));
    connection.on('streamError', (error: H2Error) => this.#options.onProtocolError?.(error));
    connection.onStreamClosed = (stream) => this.#onStreamClosed(stream, client);
    connection.once('close', () => {
      clearTimeout(client.idleTimer);
      this.#clients.delete(connection);
      if (this.#clients.size === 0) this.#drained?.();
    });
    this.#armIdleTimer(client);
  };

  /** The error that ended a client connection: counted and reported once, by kind. */
  #onConnectionError(error: H2Error, client: ClientConnection): void {
    this.#options.onProtocolError?.(error);
    if (error.code === 'H2_TIMEOUT') {
      this.#stats.keepaliveTimeouts++;
      this.#report(new HboneError(
        'HBONE_KEEPALIVE_TIMEOUT',
        `HBONE client ${client.remoteAddress} (${client.peerIdentity.uri}) did not answer a keepalive PING within ${this.#options.keepaliveTimeoutMs ?? DEFAULT_SERVER_KEEPALIVE_TIMEOUT_MS} ms: it or the path to it is gone; closed the connection and its tunnel(s)`,
      ));
      return;
    }
    // A flood the layer itself caught (streams over the limit refused too fast, reset storms, CONTINUATION or
    // empty-DATA floods): reported as the server's own stream_flood.
    if (client.floodReported) return;
    if (error.code === 'H2_PEER_PROTOCOL' && error.wireCode === H2_ENHANCE_YOUR_CALM) {
      this.#flood(client, `HBONE client ${client.remoteAddress} (${client.peerIdentity.uri}) flooded its connection (${error.message}): closed it with GOAWAY ENHANCE_YOUR_CALM`);
      return;
    }
    // The peer went away (its GOAWAY with an error, its FIN or RST mid-stream): its tunnels say so themselves.
    if (error.code === 'H2_CONNECTION_CLOSED') return;
    this.#stats.connectionErrors++;
    this.#report(new HboneError('HBONE_CONNECTION_CLOSED', `HBONE session error with ${client.remoteAddress} (${client.peerIdentity.uri}): ${error.message}`, { cause: error }));
  }

  #flood(client: ClientConnection, message: string): void {
    client.floodReported = true;
    this.#stats.streamFloods++;
    const error = new HboneError('HBONE_STREAM_FLOOD', message);
    this.#report(error);
    this.#reject({ reason: 'stream_flood', error, remoteAddress: client.remoteAddress, peerIdentity: client.peerIdentity });
  }

  #report(error: HboneError): void {
    this.#options.onError?.(error);
  }

  #reject(rejection: HboneRejection): void {
    this.#options.onRejected?.(rejection);
  }

  /** The idle timer runs while a connection has no stream: at its end the connection is closed with GOAWAY NO_ERROR. */
  #armIdleTimer(client: ClientConnection): void {
    if (this.#idleTimeoutMs <= 0) return;
    // One timer per connection, pushed back each time its last stream closes (a stream opening leaves it running:
    // at its end it finds the stream and does nothing), not a new timer per stream.
    if (client.idleTimer !== undefined) {
      client.idleTimer.refresh();
      return;
    }
    client.idleTimer = setTimeout(() => {
      if (client.connection.activeStreams > 0 || client.connection.draining) return;
      this.#stats.idleTimeouts++;
      client.connection.close();
    }, this.#idleTimeoutMs);
    client.idleTimer.unref();
  }

  #onStreamClosed(stream: H2Stream, client: ClientConnection): void {
    this.#openStreams--;
    const connecting = this.#connecting.get(stream);
    if (connecting !== undefined) this.#targetSettled(connecting, STREAM_GONE);
    // Reset by the client before any answer: the server did the work (a decision, maybe a connect) for nothing.
    if (!stream.responded && stream.resetByPeer && !this.#shuttingDown && !client.connection.closed) this.#onPrematureReset(client);
    if (client.connection.activeStreams === 0 && !client.connection.closed) this.#armIdleTimer(client);
  }

  /**
   * A stream the client reset before it was answered spends one token of the connection's budget; tokens come back
   * at the budget's rate. An empty budget ends the connection with GOAWAY ENHANCE_YOUR_CALM, as nghttp2 and Envoy do.
   */
  #onPrematureReset(client: ClientConnection): void {
    const now = performance.now();
    client.resetTokens = Math.min(this.#resetBurst, client.resetTokens + (now - client.resetRefilledAt) * this.#resetRatePerMs);
    client.resetRefilledAt = now;
    client.resetTokens -= 1;
    if (client.resetTokens >= 0) return;
    const message =
      `HBONE client ${client.remoteAddress} (${client.peerIdentity.uri}) reset more than ${this.#resetBurst} streams before they were answered ` +
      `(then ${Math.round(this.#resetRatePerMs * 1000)}/s): closed its connection with GOAWAY ENHANCE_YOUR_CALM`;
    this.#flood(client, message);
    client.connection.destroy(new H2Error('H2_PEER_PROTOCOL', H2_ENHANCE_YOUR_CALM, message));
  }

  #refuse(stream: H2Stream, status: number): void {
    this.#stats.requestsRefused++;
    stream.respond(status, [], true);
  }

  /** Refuses a stream with `status` and tells `onRejected` why. */
  #refuseWith(stream: H2Stream, status: RefusalStatus, reason: HboneRejectionReason, error: HboneError, client: ClientConnection, request?: HboneRequest): void {
    this.#refuse(stream, status);
    this.#reject({ reason, error, remoteAddress: client.remoteAddress, peerIdentity: client.peerIdentity, status, ...(request ? { request } : {}) });
  }

  #onStream(stream: H2Stream, client: ClientConnection): void {
    this.#openStreams++;
    const method = stream.header(':method');
    if (method !== 'CONNECT') {
      const error = new HboneError('HBONE_BAD_METHOD', `HBONE client ${client.remoteAddress} (${client.peerIdentity.uri}) sent ${JSON.stringify(method)}, not CONNECT: answered 400`);
      this.#report(error);
      this.#refuseWith(stream, 400, 'method', error, client);
      return;
    }
    const authority = stream.header(':authority');
    let target: HostPort;
    try {
      target = parseAuthority(authority);
    } catch (error) {
      this.#report(error as HboneError);
      this.#refuseWith(stream, 400, 'authority', error as HboneError, client);
      return;
    }
    const request = new StreamRequest(client.peerIdentity, target, client.remoteAddress, stream.requestHeaders);
    if (this.#options.decide === undefined) {
      this.#decided(stream, client, request, authority, allow);
      return;
    }
    let decision: HboneDecision | Promise<HboneDecision>;
    try {
      decision = this.#options.decide(request);
    } catch (cause) {
      this.#decided(stream, client, request, authority, this.#decisionFailed(client, authority, cause));
      return;
    }
    // The agent decides at once (policy is evaluated in place): no promise, no microtask per stream. A decision that
    // is a promise (a caller that asks elsewhere) is waited for.
    if (typeof (decision as Promise<HboneDecision>).then !== 'function') {
      this.#decided(stream, client, request, authority, decision as HboneDecision);
      return;
    }
    (decision as Promise<HboneDecision>).then(
      (settled) => this.#decided(stream, client, request, authority, settled),
      (cause: unknown) => this.#decided(stream, client, request, authority, this.#decisionFailed(client, authority, cause)),
    );
  }

  #decisionFailed(client: ClientConnection, authority: string | undefined, cause: unknown): HboneDecision {
    this.#report(new HboneError('HBONE_DENIED', `the policy decision for ${client.peerIdentity.uri} -> ${String(authority)} failed, denying: ${(cause as Error).message}`, { cause }));
    return { allow: false, reason: 'policy evaluation failed' };
  }

  /** A CONNECT's decision is in: refused with its status, or queued for the turn's end (its target connect). */
  #decided(stream: H2Stream, client: ClientConnection, request: StreamRequest, authority: string | undefined, decision: HboneDecision): void {
    if (stream.closed) return;
    if (!decision.allow) {
      const status = decision.status ?? 401;
      const code = status === 401 ? 'HBONE_DENIED' : status === 400 ? 'HBONE_MISDIRECTED' : 'HBONE_REFUSED';
      const error = new HboneError(code, `HBONE CONNECT from ${client.peerIdentity.uri} (${client.remoteAddress}) to ${String(authority)} answered ${status}: ${decision.reason}`);
      this.#refuseWith(stream, status, 'denied', error, client, request);
      return;
    }
    // Let the rest of what the client sent with this request be read first: a stream it reset in the same packet
    // (a flood of CONNECT + RST_STREAM) then costs no connection to the target. Every stream allowed in this turn
    // waits for the same setImmediate (one per turn, not one promise and immediate per stream).
    this.#afterTurn[this.#afterTurnCount++] = new StreamSetUp(this, stream, request, authority);
    if (this.#afterTurnCount === 1) setImmediate(this.#runAfterTurn);
  }

  /** The streams allowed in the turn that just ended: each is terminated or has its target connected. */
  readonly #runAfterTurn = (): void => {
    const setUps = this.#afterTurn;
    const count = this.#afterTurnCount;
    // Streams allowed while these run (a decision that resolves in between) wait for the next turn's immediate.
    this.#afterTurn = this.#afterTurnSpare;
    this.#afterTurnCount = 0;
    for (let index = 0; index < count; index++) {
      const setUp = setUps[index]!;
      setUps[index] = undefined;
      this.#connectTarget(setUp);
    }
    this.#afterTurnSpare = setUps;
  };

  #connectTarget(setUp: StreamSetUp): void {
    const { stream, request } = setUp;
    if (stream.closed) return;
    if (this.#options.terminateStream) {
      this.#stats.tunnelsOpened++;
      this.#options.terminateStream(request, stream);
      return;
    }
    setUp.started = performance.now();
    let socket: net.Socket;
    try {
      socket = (this.#options.connect ?? defaultTargetConnector)(request);
    } catch (cause) {
      const error = new HboneError('HBONE_REFUSED', `could not open a connection to ${String(setUp.authority)}: ${(cause as Error).message}`, { cause });
      this.#report(error);
      this.#targetSettled(setUp, error);
      return;
    }
    setUp.socket = socket;
    if (socket.destroyed) {
      // Failed inside connect() (a socket Node connects in the call): its 'error' is still to come, on a tick.
      socket.on('error', ignore);
      this.#targetSettled(setUp, new HboneError('HBONE_REFUSED', `the connection to ${String(setUp.authority)} was closed before it connected`));
      return;
    }
    // remoteAddress is set only once connected (a socket may also be handed back before connect() was called).
    if (!socket.connecting && socket.remoteAddress !== undefined) {
      this.#targetSettled(setUp, undefined);
      return;
    }
    // The connect's give-up time: the streams connecting share one timer, armed for the earliest deadline (every
    // stream of a server has the same timeout, so the map's insertion order is the deadlines' order).
    setUp.deadline = setUp.started + this.#targetConnectTimeoutMs;
    this.#connecting.set(setUp.stream, setUp);
    (socket as TargetSocket)[kSetUp] = setUp;
    socket.on('connect', H2TunnelServer.#onTargetConnect);
    socket.on('error', H2TunnelServer.#onTargetError);
    // Left running when the last connect settles (it then finds none and stops): no timer made per connection.
    // Unref'd: a connecting socket keeps the process alive by itself.
    if (this.#targetTimer === undefined) this.#targetTimer = setTimeout(this.#onTargetTimer, this.#targetConnectTimeoutMs).unref();
  }

  /** The earliest deadline passed: the connects past theirs give up; the timer is armed again for the next one. */
  readonly #onTargetTimer = (): void => {
    this.#targetTimer = undefined;
    const now = performance.now();
    for (const setUp of this.#connecting.values()) {
      if (setUp.deadline > now) {
        this.#targetTimer = setTimeout(this.#onTargetTimer, Math.max(1, setUp.deadline - now)).unref();
        return;
      }
      const error = new HboneError('HBONE_REFUSED', `target connect timed out after ${this.#targetConnectTimeoutMs} ms`);
      this.#report(error);
      this.#targetSettled(setUp, error);
    }
  };

  /** The 'connect' listener every connecting target socket shares (`this` is the socket): no closure per stream. */
  static readonly #onTargetConnect = function (this: net.Socket): void {
    const setUp = (this as TargetSocket)[kSetUp];
    // The 200 (and whatever the splice writes at once) is flushed when this returns, not on a tick of its own.
    if (setUp !== undefined) runReadTurn(H2TunnelServer.#connected, setUp, undefined);
  };

  static readonly #connected = (setUp: StreamSetUp): void => setUp.server.#targetSettled(setUp, undefined);

  /** The 'error' listener every connecting target socket shares. */
  static readonly #onTargetError = function (this: net.Socket, error: Error): void {
    const setUp = (this as TargetSocket)[kSetUp];
    if (setUp === undefined) return;
    setUp.server.#report(new HboneError('HBONE_REFUSED', `target ${this.remoteAddress ?? ''} unreachable: ${error.message}`, { cause: error }));
    setUp.server.#targetSettled(setUp, error);
  };

  /**
   * The target connected (`failure` undefined) or will not (`connect` threw, the socket failed or timed out, the
   * stream is gone): the caller is told (onTargetSettled), then the stream is answered and spliced, or refused 503.
   */
  #targetSettled(setUp: StreamSetUp, failure: Error | undefined): void {
    const { stream, socket } = setUp;
    if (socket !== undefined && this.#connecting.delete(stream)) {
      (socket as TargetSocket)[kSetUp] = undefined;
      socket.off('connect', H2TunnelServer.#onTargetConnect);
      socket.off('error', H2TunnelServer.#onTargetError);
    }
    const streamGone = stream.closed;
    const ok = failure === undefined && !streamGone;
    this.#options.onTargetSettled?.(setUp.request, ok ? undefined : streamGone ? STREAM_GONE : failure, streamGone);
    if (!ok) {
      socket?.destroy();
      if (!stream.closed) this.#refuse(stream, 503);
      return;
    }
    this.#stats.tunnelsOpened++;
    stream.respond(200);
    // The splice calls back with the set-up: no promise, reaction or closure per tunnel (issue 14).
    spliceH2To(socket!, stream, H2TunnelServer.#spliced, setUp);
  }

  /** The tunnel's splice ended (both sides closed): `onTunnel` is told, with the set-up as the event. */
  static readonly #spliced = (setUp: StreamSetUp, result: H2SpliceResult): void => {
    setUp.bytesIn = result.bytesToSocket;
    setUp.bytesOut = result.bytesFromSocket;
    setUp.durationMs = performance.now() - setUp.started;
    if (result.error) setUp.error = result.error.message;
    setUp.server.#options.onTunnel?.(setUp);
  };
}
