/**
 * The HBONE server: terminates mutual-TLS HTTP/2 on 15008 and turns each CONNECT into a TCP connection.
 *
 * Owns: accepting raw TCP sockets from any listener (`handle`), the TLS layer per presented certificate, demanding
 * a client certificate chained to the roots and in the trust domain, checking each request (405 not CONNECT, 400
 * bad `:authority`), asking the caller's `decide` (401) and `connect` (503), answering 200 only once the target
 * is connected, splicing, and graceful shutdown (GOAWAY, drain until a deadline, then cut).
 * Must not know about: what policy says, how target sockets are made (namespaces, marks), metrics names.
 * A peer's garbage (bad TLS, bad frames, vanishing) is counted and closed, never thrown.
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
  SERVER_STREAM_RESET_BURST,
  SERVER_STREAM_RESET_RATE_PER_SECOND,
  DEFAULT_SERVER_MAX_CONCURRENT_STREAMS,
  DEFAULT_STREAM_WINDOW_BYTES,
  DEFAULT_TARGET_CONNECT_TIMEOUT_MS,
} from './config.ts';
import { HboneError } from './errors.ts';
import { resetStream, splice } from './splice.ts';
import { serverTlsOptions, verifyClient } from './tls.ts';
import type { HboneDecision, HboneRequest, HboneServerOptions, HostPort } from './types.ts';

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
}

interface SessionState {
  peerIdentity: SpiffeId;
  remoteAddress: string;
}

const { NGHTTP2_CANCEL } = http2.constants;

const allow: HboneDecision = { allow: true };

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
  };
  readonly #sessionOptions: http2.ServerSessionOptions;
  readonly #connectionWindowBytes: number;
  #shuttingDown = false;
  #drained: (() => void) | undefined;

  constructor(options: HboneServerOptions) {
    this.#options = options;
    this.#connectionWindowBytes = options.connectionWindowBytes ?? DEFAULT_CONNECTION_WINDOW_BYTES;
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

  stats(): ServerStats {
    return { ...this.#stats, activeSessions: this.#sessions.size };
  }

  /**
   * Graceful shutdown: stop listening, send GOAWAY on every session so clients open new streams elsewhere, let
   * open streams finish until `deadlineMs`, then cut whatever is left. Resolves when everything is closed.
   */
  async shutdown(deadlineMs: number = DEFAULT_DRAIN_DEADLINE_MS): Promise<void> {
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
    this.#report(new HboneError('HBONE_TLS', `TLS handshake with ${socket.remoteAddress ?? '?'} failed: ${error.message}`, { cause: error }));
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
      socket.destroy();
      return;
    }
    const session = http2.performServerHandshake(socket, this.#sessionOptions);
    const state: SessionState = { peerIdentity, remoteAddress: socket.remoteAddress ?? '' };
    this.#sessions.set(session, state);
    this.#stats.sessionsAccepted++;
    session.on('error', this.#onSessionError);
    session.on('stream', (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => {
      void this.#onStream(stream, headers, state);
    });
    session.once('close', () => {
      this.#sessions.delete(session);
      if (this.#sessions.size === 0) this.#drained?.();
    });
    const windowBytes = this.#connectionWindowBytes;
    if (session.connecting) session.once('connect', () => session.setLocalWindowSize(windowBytes));
    else session.setLocalWindowSize(windowBytes);
  };

  readonly #onSocketError = (): void => {
    // The session (or the destroy that follows) handles it; counted in #onSessionError when a session existed.
  };

  readonly #onSessionError = (error: Error): void => {
    this.#stats.connectionErrors++;
    this.#report(new HboneError('HBONE_CONNECTION_CLOSED', `HBONE session error: ${error.message}`, { cause: error }));
  };

  #report(error: HboneError): void {
    this.#options.onError?.(error);
  }

  #refuse(stream: http2.ServerHttp2Stream, status: number): void {
    this.#stats.requestsRefused++;
    if (stream.destroyed || stream.closed || stream.headersSent) return;
    stream.respond({ ':status': status }, { endStream: true });
  }

  async #onStream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, state: SessionState): Promise<void> {
    stream.on('error', this.#onStreamError);
    this.#streams.add(stream);
    stream.once('close', () => this.#streams.delete(stream));
    if (headers[':method'] !== 'CONNECT') {
      this.#refuse(stream, 405);
      return;
    }
    let target: HostPort;
    try {
      target = parseAuthority(headers[':authority']);
    } catch (error) {
      this.#report(error as HboneError);
      this.#refuse(stream, 400);
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
      this.#refuse(stream, 401);
      return;
    }
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
      this.#report(new HboneError('HBONE_REFUSED', `could not open a connection to ${String(headers[':authority'])}: ${(cause as Error).message}`, { cause }));
      this.#refuse(stream, 503);
      return;
    }
    const connected = await this.#targetConnected(socket, stream);
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

  /** Resolves true once `socket` is connected; false (socket destroyed) on error, timeout, or the stream going away. */
  #targetConnected(socket: net.Socket, stream: http2.ServerHttp2Stream): Promise<boolean> {
    if (socket.destroyed) return Promise.resolve(false);
    // remoteAddress is set only once connected (a socket may also be handed back before connect() was called).
    if (!socket.connecting && socket.remoteAddress !== undefined) return Promise.resolve(!stream.destroyed && !stream.closed);
    return new Promise((resolve) => {
      const timeoutMs = this.#options.connectTimeoutMs ?? DEFAULT_TARGET_CONNECT_TIMEOUT_MS;
      const done = (ok: boolean): void => {
        clearTimeout(timer);
        socket.off('connect', onConnect);
        socket.off('error', onError);
        stream.off('close', onStreamClose);
        if (!ok) socket.destroy();
        resolve(ok);
      };
      const onConnect = (): void => done(!stream.destroyed && !stream.closed);
      const onError = (error: Error): void => {
        this.#report(new HboneError('HBONE_REFUSED', `target ${socket.remoteAddress ?? ''} unreachable: ${error.message}`, { cause: error }));
        done(false);
      };
      const onStreamClose = (): void => done(false);
      const timer = setTimeout(() => {
        this.#report(new HboneError('HBONE_REFUSED', `target connect timed out after ${timeoutMs} ms`));
        done(false);
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
