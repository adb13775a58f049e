/**
 * The HBONE server: terminates mutual-TLS HTTP/2 on 15008 and turns each CONNECT into a TCP connection.
 *
 * Owns: accepting raw TCP sockets from any listener (`handle`), the TLS layer per presented certificate, demanding
 * a client certificate chained to the roots and in the trust domain, checking each request (400 not CONNECT or a
 * bad `:authority`, as ztunnel), asking the caller's `decide` (its status, 401 by default) and `connect` (503),
 * answering 200 only once the target is connected, splicing, and graceful shutdown (GOAWAY, drain until a
 * deadline, then cut). Also what one client connection may cost: it ends with the client's FIN, a PING keepalive
 * finds a client that vanished without one, an idle timeout ends a connection with no streams, at most
 * `maxConcurrentStreams` streams at once, and a budget of streams reset before they were answered (then GOAWAY
 * ENHANCE_YOUR_CALM).
 * Must not know about: what policy says, how target sockets are made (namespaces, marks), metrics names.
 * A peer's garbage (bad TLS, bad frames, vanishing) is counted, reported to `onRejected`/`onError` and closed,
 * never thrown.
 */
import http2 from 'node:http2';
import net from 'node:net';
import tls from 'node:tls';
import type { SpiffeId, WorkloadCertificate } from '../identity/index.ts';
import { parseAuthority } from './authority.ts';
import {
  DEFAULT_CONNECT_TIMEOUT_MS,
  DEFAULT_CONNECTION_WINDOW_BYTES,
  DEFAULT_DRAIN_DEADLINE_MS,
  DEFAULT_MAX_FRAME_SIZE,
  DEFAULT_MAX_SESSION_MEMORY_MIB,
  DEFAULT_SERVER_IDLE_TIMEOUT_MS,
  DEFAULT_SERVER_KEEPALIVE_INTERVAL_MS,
  DEFAULT_SERVER_KEEPALIVE_TIMEOUT_MS,
  SERVER_PREMATURE_RESET_BURST,
  SERVER_PREMATURE_RESET_RATE_PER_SECOND,
  SERVER_STREAM_RESET_BURST,
  SERVER_STREAM_RESET_RATE_PER_SECOND,
  DEFAULT_SERVER_MAX_CONCURRENT_STREAMS,
  DEFAULT_STREAM_WINDOW_BYTES,
  DEFAULT_TARGET_CONNECT_TIMEOUT_MS,
  SESSION_SOCKET_END_STALL_MS,
  SESSION_SOCKET_QUEUE_LIMIT_BYTES,
  hboneImplementation,
  type HboneImplementation,
} from './config.ts';
import { HboneError } from './errors.ts';
import { H2TunnelServer } from './h2/tunnel-server.ts';
import { SessionSocket } from './session-socket.ts';
import { resetStream, splice } from './splice.ts';
import { serverTlsOptions, verifyClient } from './tls.ts';
import type { HboneDecision, HboneRejection, HboneRejectionReason, HboneRequest, HboneServerOptions, HostPort, RefusalStatus } from './types.ts';

export interface ServerStats {
  /** TLS connections accepted as HBONE sessions. */
  sessionsAccepted: number;
  /** Connections closed because the client certificate, ALPN or identity was not acceptable. */
  connectionsRejected: number;
  /** Sessions or handshakes that ended in a protocol or socket error. */
  connectionErrors: number;
  /** CONNECT streams answered 200, and answered with an error status. */
  tunnelsOpened: number;
  requestsRefused: number;
  /** Sessions open now. */
  activeSessions: number;
  /** Sessions closed because a keepalive PING went unanswered, because they had no stream for the idle timeout. */
  keepaliveTimeouts: number;
  idleTimeouts: number;
  /** Sessions closed with GOAWAY ENHANCE_YOUR_CALM: too many streams reset before they were answered. */
  streamFloods: number;
}

/** One client connection: who it is, and what it may still cost. */
interface SessionState {
  session: http2.ServerHttp2Session;
  /** The TLS socket under the session's SessionSocket: cut directly when the client is known to be gone. */
  tlsSocket: tls.TLSSocket;
  peerIdentity: SpiffeId;
  remoteAddress: string;
  /** Streams open now (the idle timer runs only at 0). */
  openStreams: number;
  idleTimer: NodeJS.Timeout | undefined;
  keepaliveTimer: NodeJS.Timeout | undefined;
  /** Rapid-reset budget: tokens left, and when they were last refilled (performance.now()). */
  resetTokens: number;
  resetRefilledAt: number;
  /** Set once the reset budget ran out: the session is on its way out (GOAWAY sent, destroy follows). */
  flooded: boolean;
}

const { NGHTTP2_CANCEL, NGHTTP2_ENHANCE_YOUR_CALM } = http2.constants;

const allow: HboneDecision = { allow: true };

function ignoreError(): void {}

/** What `onTargetSettled` is told when the client's stream closed before its target connect ended. */
const STREAM_GONE = new HboneError('HBONE_DOWNSTREAM_CLOSED', 'the client closed its stream before the target connected');

/** Resolves after the event loop's current I/O has been handled (setImmediate runs after the poll phase). */
function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** Turns of the event loop a GOAWAY may take to leave its session before the session is destroyed anyway. */
const GOAWAY_FLUSH_TURNS = 20;

/** Destroys `session` with `code` once nghttp2's queue is empty (the GOAWAY queued before is on the socket), or after GOAWAY_FLUSH_TURNS. */
function destroyOnceGoawaySent(session: http2.ServerHttp2Session, error: Error, code: number, turn = 0): void {
  if (session.destroyed) return;
  if (turn > 0 && (session.state.outboundQueueSize === 0 || turn >= GOAWAY_FLUSH_TURNS)) {
    session.destroy(error, code);
    return;
  }
  setImmediate(destroyOnceGoawaySent, session, error, code, turn + 1);
}

function defaultTargetConnector(request: HboneRequest): net.Socket {
  return net.connect({ host: request.target.host, port: request.target.port, allowHalfOpen: true, noDelay: true });
}

export class HboneServer {
  readonly #options: HboneServerOptions;
  readonly #tlsServers = new WeakMap<WorkloadCertificate, tls.Server>();
  readonly #sessions = new Map<http2.ServerHttp2Session, SessionState>();
  readonly #sockets = new Set<net.Socket>();
  readonly #streams = new Set<http2.ServerHttp2Stream>();
  readonly #listeners: net.Server[] = [];
  readonly #stats: ServerStats = {
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
  readonly #sessionOptions: http2.ServerSessionOptions;
  readonly #connectionWindowBytes: number;
  readonly #keepaliveIntervalMs: number;
  readonly #keepaliveTimeoutMs: number;
  readonly #idleTimeoutMs: number;
  readonly #resetBurst: number;
  readonly #resetRatePerMs: number;
  #shuttingDown = false;
  #drained: (() => void) | undefined;
  /** Which HTTP/2 implementation serves: with `own`, every call goes to the own layer's server. */
  readonly implementation: HboneImplementation;
  readonly #own: H2TunnelServer | undefined;

  constructor(options: HboneServerOptions) {
    this.#options = options;
    // `terminate` hands out node:http2 streams (the waypoint's HTTP proxy), so such a server stays on node:http2.
    this.implementation = options.terminate ? 'node' : (options.implementation ?? hboneImplementation());
    this.#own = this.implementation === 'own' ? new H2TunnelServer(options) : undefined;
    this.#connectionWindowBytes = options.connectionWindowBytes ?? DEFAULT_CONNECTION_WINDOW_BYTES;
    this.#keepaliveIntervalMs = options.keepaliveIntervalMs ?? DEFAULT_SERVER_KEEPALIVE_INTERVAL_MS;
    this.#keepaliveTimeoutMs = options.keepaliveTimeoutMs ?? DEFAULT_SERVER_KEEPALIVE_TIMEOUT_MS;
    this.#idleTimeoutMs = options.idleTimeoutMs ?? DEFAULT_SERVER_IDLE_TIMEOUT_MS;
    this.#resetBurst = options.prematureResetBurst ?? SERVER_PREMATURE_RESET_BURST;
    this.#resetRatePerMs = (options.prematureResetRatePerSecond ?? SERVER_PREMATURE_RESET_RATE_PER_SECOND) / 1000;
    this.#sessionOptions = {
      settings: {
        enablePush: false,
        initialWindowSize: options.streamWindowBytes ?? DEFAULT_STREAM_WINDOW_BYTES,
        maxFrameSize: DEFAULT_MAX_FRAME_SIZE,
        maxConcurrentStreams: options.maxConcurrentStreams ?? DEFAULT_SERVER_MAX_CONCURRENT_STREAMS,
      },
      maxSessionMemory: DEFAULT_MAX_SESSION_MEMORY_MIB,
      // Node 24 options, not yet in @types/node.
      ...{ streamResetBurst: SERVER_STREAM_RESET_BURST, streamResetRate: SERVER_STREAM_RESET_RATE_PER_SECOND },
    };
  }

  /** Takes a raw TCP socket accepted by any listener (the agent's in-pod listeners) and serves HBONE on it. */
  handle(socket: net.Socket): void {
    if (this.#own) {
      this.#own.handle(socket);
      return;
    }
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
    // The client's FIN ends the connection. Listeners that carry FIN through a proxy (the agent's in-pod ones)
    // accept half-open sockets, and the TLS socket inherits that: the HTTP/2 session would then sit in CLOSE-WAIT
    // for good after a client that exits without a GOAWAY, with every tunnel on it still connected to the app.
    // Half-close of a tunnel is END_STREAM inside the session, never a FIN of the connection.
    socket.allowHalfOpen = false;
    this.#sockets.add(socket);
    socket.once('close', () => this.#sockets.delete(socket));
    this.#tlsServerFor(certificate).emit('connection', socket);
  }

  /** Listens on `address` (port 0 picks one) and serves every accepted socket; resolves with the bound address. */
  listen(address: HostPort): Promise<HostPort> {
    if (this.#own) return this.#own.listen(address);
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

  stats(): ServerStats {
    if (this.#own) return this.#own.stats();
    return { ...this.#stats, activeSessions: this.#sessions.size };
  }

  /** Streams open now on all sessions (refused and spliced ones alike, until they close). */
  get openStreams(): number {
    if (this.#own) return this.#own.openStreams;
    return this.#streams.size;
  }

  /**
   * Graceful shutdown: stop listening, send GOAWAY on every session so clients open new streams elsewhere, let
   * open streams finish until `deadlineMs`, then cut whatever is left. Resolves when everything is closed.
   */
  async shutdown(deadlineMs: number = DEFAULT_DRAIN_DEADLINE_MS): Promise<void> {
    if (this.#own) return this.#own.shutdown(deadlineMs);
    this.#shuttingDown = true;
    const listenersClosed = this.#listeners.map((server) => new Promise<void>((resolve) => server.close(() => resolve())));
    for (const session of this.#sessions.keys()) {
      if (!session.closed) session.close();
    }
    if (this.#sessions.size > 0) {
      let deadline: NodeJS.Timeout | undefined;
      await new Promise<void>((resolve) => {
        this.#drained = resolve;
        deadline = setTimeout(resolve, deadlineMs);
      });
      clearTimeout(deadline);
      this.#drained = undefined;
    }
    // Past the deadline: reset what is left (RST_STREAM CANCEL, so neither end mistakes it for a clean end).
    for (const stream of this.#streams) resetStream(stream, NGHTTP2_CANCEL);
    for (const session of this.#sessions.keys()) session.destroy();
    for (const socket of this.#sockets) socket.destroy();
    await Promise.all(listenersClosed);
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
    socket.on('error', this.#onSocketError);
    if (this.#shuttingDown) {
      socket.destroy();
      return;
    }
    let peerIdentity: SpiffeId;
    try {
      peerIdentity = verifyClient(socket, this.#options.trustDomain);
    } catch (error) {
      this.#stats.connectionsRejected++;
      this.#report(error as HboneError);
      const rejection = error as HboneError;
      this.#reject({ reason: rejection.code === 'HBONE_PEER_IDENTITY' ? 'peer_identity' : 'tls', error: rejection, remoteAddress: socket.remoteAddress ?? '' });
      socket.destroy();
      return;
    }
    // On a SessionSocket, not the TLS socket: there the session stops reading while its write waits for a full
    // send buffer, and two such ends moving bulk both ways deadlock (session-socket.ts).
    const session = http2.performServerHandshake(new SessionSocket(socket, SESSION_SOCKET_QUEUE_LIMIT_BYTES, SESSION_SOCKET_END_STALL_MS), this.#sessionOptions);
    const state: SessionState = {
      session, tlsSocket: socket, peerIdentity, remoteAddress: socket.remoteAddress ?? '', openStreams: 0, idleTimer: undefined, keepaliveTimer: undefined,
      resetTokens: this.#resetBurst, resetRefilledAt: performance.now(), flooded: false,
    };
    this.#sessions.set(session, state);
    this.#stats.sessionsAccepted++;
    session.on('error', this.#onSessionError);
    session.on('stream', (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => {
      void this.#onStream(stream, headers, state);
    });
    session.once('close', () => {
      clearTimeout(state.idleTimer);
      clearTimeout(state.keepaliveTimer);
      this.#sessions.delete(session);
      if (this.#sessions.size === 0) this.#drained?.();
    });
    this.#armIdleTimer(state);
    this.#scheduleKeepalive(state);
    const windowBytes = this.#connectionWindowBytes;
    if (session.connecting) session.once('connect', () => session.setLocalWindowSize(windowBytes));
    else session.setLocalWindowSize(windowBytes);
  };

  readonly #onSocketError = (): void => {
    // The session (or the destroy that follows) handles it; counted in #onSessionError when a session existed.
  };

  readonly #onSessionError = (error: Error): void => {
    // A session this server tore down itself (keepalive, flood) was reported when it decided to.
    if (error instanceof HboneError) return;
    this.#stats.connectionErrors++;
    this.#report(new HboneError('HBONE_CONNECTION_CLOSED', `HBONE session error: ${error.message}`, { cause: error }));
  };

  #report(error: HboneError): void {
    this.#options.onError?.(error);
  }

  #reject(rejection: HboneRejection): void {
    this.#options.onRejected?.(rejection);
  }

  /** The idle timer runs while a session has no stream: at its end the session is closed with GOAWAY NO_ERROR. */
  #armIdleTimer(state: SessionState): void {
    if (this.#idleTimeoutMs <= 0) return;
    clearTimeout(state.idleTimer);
    state.idleTimer = setTimeout(() => {
      state.idleTimer = undefined;
      if (state.openStreams > 0 || state.session.closed || state.session.destroyed) return;
      this.#stats.idleTimeouts++;
      state.session.close();
    }, this.#idleTimeoutMs);
    state.idleTimer.unref();
  }

  /** One PING per interval; an answer schedules the next, silence past the timeout destroys the session. */
  #scheduleKeepalive(state: SessionState): void {
    if (this.#keepaliveIntervalMs <= 0) return;
    state.keepaliveTimer = setTimeout(() => this.#sendKeepalive(state), this.#keepaliveIntervalMs);
    state.keepaliveTimer.unref();
  }

  #sendKeepalive(state: SessionState): void {
    const { session } = state;
    if (session.closed || session.destroyed) return;
    let answered = false;
    const sent = session.ping((error) => {
      answered = true;
      clearTimeout(state.keepaliveTimer);
      // A failed ping means the session is going away, which its own close handles.
      if (!error) this.#scheduleKeepalive(state);
    });
    if (!sent) return;
    if (answered) return;
    state.keepaliveTimer = setTimeout(() => {
      if (session.destroyed) return;
      this.#stats.keepaliveTimeouts++;
      const error = new HboneError(
        'HBONE_KEEPALIVE_TIMEOUT',
        `HBONE client ${state.remoteAddress} (${state.peerIdentity.uri}) did not answer a keepalive PING within ${this.#keepaliveTimeoutMs} ms: it or the path to it is gone; closed the connection and its ${state.openStreams} tunnel(s)`,
      );
      this.#report(error);
      // CANCEL, so neither end takes a tunnel cut here for a clean end.
      for (const stream of this.#streams) if (stream.session === session) resetStream(stream, NGHTTP2_CANCEL);
      session.destroy(error);
      // Node would first flush what is queued for a client that reads nothing: cut the connection instead.
      state.tlsSocket.destroy();
    }, this.#keepaliveTimeoutMs);
    state.keepaliveTimer.unref();
  }

  /**
   * A stream the client reset before it was answered spends one token of the session's budget; tokens come back at
   * the budget's rate. An empty budget ends the session with GOAWAY ENHANCE_YOUR_CALM, as nghttp2 and Envoy do.
   */
  #onPrematureReset(state: SessionState): void {
    const now = performance.now();
    state.resetTokens = Math.min(this.#resetBurst, state.resetTokens + (now - state.resetRefilledAt) * this.#resetRatePerMs);
    state.resetRefilledAt = now;
    state.resetTokens -= 1;
    if (state.resetTokens >= 0) return;
    const { session } = state;
    if (session.destroyed || state.flooded) return;
    state.flooded = true;
    this.#stats.streamFloods++;
    const error = new HboneError(
      'HBONE_STREAM_FLOOD',
      `HBONE client ${state.remoteAddress} (${state.peerIdentity.uri}) reset more than ${this.#resetBurst} streams before they were answered ` +
        `(then ${Math.round(this.#resetRatePerMs * 1000)}/s): closed its connection with GOAWAY ENHANCE_YOUR_CALM`,
    );
    this.#report(error);
    this.#reject({ reason: 'stream_flood', error, remoteAddress: state.remoteAddress, peerIdentity: state.peerIdentity });
    // GOAWAY ENHANCE_YOUR_CALM first, then destroy (every stream and its target closes) once the GOAWAY has left the
    // session: destroy(error, code) sends its own GOAWAY only when no write of the session is in flight, and on a
    // SessionSocket one nearly always is (Node completes each of its writes a turn later), so the client would see
    // the connection end with no reason.
    session.goaway(NGHTTP2_ENHANCE_YOUR_CALM);
    destroyOnceGoawaySent(session, error, NGHTTP2_ENHANCE_YOUR_CALM);
  }

  #refuse(stream: http2.ServerHttp2Stream, status: number): void {
    this.#stats.requestsRefused++;
    if (stream.destroyed || stream.closed || stream.headersSent) return;
    stream.respond({ ':status': status }, { endStream: true });
  }

  /** Refuses a stream with `status` and tells `onRejected` why. */
  #refuseWith(stream: http2.ServerHttp2Stream, status: RefusalStatus, reason: HboneRejectionReason, error: HboneError, state: SessionState, request?: HboneRequest): void {
    this.#refuse(stream, status);
    this.#reject({ reason, error, remoteAddress: state.remoteAddress, peerIdentity: state.peerIdentity, status, ...(request ? { request } : {}) });
  }

  async #onStream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, state: SessionState): Promise<void> {
    stream.on('error', this.#onStreamError);
    this.#streams.add(stream);
    state.openStreams++;
    clearTimeout(state.idleTimer);
    stream.once('close', () => {
      this.#streams.delete(stream);
      // Reset by the client before any answer: the server did the work (a decision, maybe a connect) for nothing.
      if (!stream.headersSent && !this.#shuttingDown && !state.session.destroyed) this.#onPrematureReset(state);
      if (--state.openStreams === 0 && !state.session.destroyed) this.#armIdleTimer(state);
    });
    if (headers[':method'] !== 'CONNECT') {
      const error = new HboneError('HBONE_BAD_METHOD', `HBONE client ${state.remoteAddress} (${state.peerIdentity.uri}) sent ${JSON.stringify(headers[':method'])}, not CONNECT: answered 400`);
      this.#report(error);
      this.#refuseWith(stream, 400, 'method', error, state);
      return;
    }
    let target: HostPort;
    try {
      target = parseAuthority(headers[':authority']);
    } catch (error) {
      this.#report(error as HboneError);
      this.#refuseWith(stream, 400, 'authority', error as HboneError, state);
      return;
    }
    const request: HboneRequest = { peerIdentity: state.peerIdentity, target, headers, remoteAddress: state.remoteAddress };
    let decision: HboneDecision = allow;
    if (this.#options.decide) {
      try {
        decision = await this.#options.decide(request);
      } catch (cause) {
        this.#report(new HboneError('HBONE_DENIED', `the policy decision for ${state.peerIdentity.uri} -> ${String(headers[':authority'])} failed, denying: ${(cause as Error).message}`, { cause }));
        decision = { allow: false, reason: 'policy evaluation failed' };
      }
    }
    if (!decision.allow) {
      const status = decision.status ?? 401;
      const code = status === 401 ? 'HBONE_DENIED' : status === 400 ? 'HBONE_MISDIRECTED' : 'HBONE_REFUSED';
      const error = new HboneError(code, `HBONE CONNECT from ${state.peerIdentity.uri} (${state.remoteAddress}) to ${String(headers[':authority'])} answered ${status}: ${decision.reason}`);
      this.#refuseWith(stream, status, 'denied', error, state, request);
      return;
    }
    // Let the rest of what the client sent with this request be read first: a stream it reset in the same packet
    // (a flood of CONNECT + RST_STREAM) then costs no connection to the target.
    await nextTurn();
    if (stream.destroyed || stream.closed) return;
    if (this.#options.terminate) {
      this.#stats.tunnelsOpened++;
      this.#options.terminate(request, stream);
      return;
    }
    const started = performance.now();
    let socket: net.Socket;
    try {
      socket = (this.#options.connect ?? defaultTargetConnector)(request);
    } catch (cause) {
      const error = new HboneError('HBONE_REFUSED', `could not open a connection to ${String(headers[':authority'])}: ${(cause as Error).message}`, { cause });
      this.#report(error);
      this.#options.onTargetSettled?.(request, error, false);
      this.#refuse(stream, 503);
      return;
    }
    const connected = await this.#targetConnected(socket, stream, request);
    if (!connected) {
      this.#refuse(stream, 503);
      return;
    }
    this.#stats.tunnelsOpened++;
    stream.respond({ ':status': 200 });
    const result = await splice(socket, stream);
    this.#options.onTunnel?.({
      request,
      bytesIn: result.bytesToSocket,
      bytesOut: result.bytesFromSocket,
      durationMs: performance.now() - started,
      ...(result.error ? { error: result.error.message } : {}),
    });
  }

  /**
   * Resolves true once `socket` is connected; false (socket destroyed) on error, timeout, or the stream going away.
   * `onTargetSettled` is told which, first.
   */
  #targetConnected(socket: net.Socket, stream: http2.ServerHttp2Stream, request: HboneRequest): Promise<boolean> {
    const settled = (failure: Error | undefined): boolean => {
      const streamGone = stream.destroyed || stream.closed;
      const ok = failure === undefined && !streamGone;
      this.#options.onTargetSettled?.(request, ok ? undefined : streamGone ? STREAM_GONE : failure, streamGone);
      return ok;
    };
    if (socket.destroyed) {
      // Failed inside connect() (a socket Node connects in the call): its 'error' is still to come, on a tick.
      socket.on('error', ignoreError);
      return Promise.resolve(settled(new HboneError('HBONE_REFUSED', `the connection to ${String(request.headers[':authority'])} was closed before it connected`)));
    }
    // remoteAddress is set only once connected (a socket may also be handed back before connect() was called).
    if (!socket.connecting && socket.remoteAddress !== undefined) return Promise.resolve(settled(undefined));
    return new Promise((resolve) => {
      const timeoutMs = this.#options.connectTimeoutMs ?? DEFAULT_TARGET_CONNECT_TIMEOUT_MS;
      const done = (failure: Error | undefined): void => {
        clearTimeout(timer);
        socket.off('connect', onConnect);
        socket.off('error', onError);
        stream.off('close', onStreamClose);
        const ok = settled(failure);
        if (!ok) socket.destroy();
        resolve(ok);
      };
      const onConnect = (): void => done(undefined);
      const onError = (error: Error): void => {
        this.#report(new HboneError('HBONE_REFUSED', `target ${socket.remoteAddress ?? ''} unreachable: ${error.message}`, { cause: error }));
        done(error);
      };
      const onStreamClose = (): void => done(STREAM_GONE);
      const timer = setTimeout(() => {
        const error = new HboneError('HBONE_REFUSED', `target connect timed out after ${timeoutMs} ms`);
        this.#report(error);
        done(error);
      }, timeoutMs);
      socket.once('connect', onConnect);
      socket.once('error', onError);
      stream.once('close', onStreamClose);
    });
  }

  readonly #onStreamError = (): void => {
    // A reset or a vanished client: the splice (or the pending response) sees the stream close and cleans up.
  };
}
