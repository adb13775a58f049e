/**
 * HBONE's server side on this HTTP/2 layer: mutual TLS on accepted sockets, CONNECT streams to TCP targets.
 *
 * Owns: the TLS layer (shared/hbone/tls.ts: client certificate demanded, SPIFFE identity checked), one server
 * H2Connection per TLS connection, each CONNECT's checks (405 not CONNECT, 400 bad :authority, the caller's
 * `decide`: 401), the target connect (503 on failure, 200 once connected), splicing, and graceful shutdown
 * (GOAWAY, drain, then cut). The same contract as shared/hbone/server.ts over node:http2, in the shape a later
 * step puts behind HboneServer.
 * Must not know about: what policy says, how target sockets are made beyond the caller's `connect`.
 */
import net from 'node:net';
import tls from 'node:tls';
import type { SpiffeId } from '../../identity/index.ts';
import { parseAuthority } from '../authority.ts';
import { DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_DRAIN_DEADLINE_MS, DEFAULT_TARGET_CONNECT_TIMEOUT_MS } from '../config.ts';
import { HboneError } from '../errors.ts';
import { serverTlsOptions, verifyClient } from '../tls.ts';
import type { HboneDecision, HboneRequest, HboneServerOptions, HostPort } from '../types.ts';
import { H2Connection, type H2ConnectionOptions } from './connection.ts';
import type { H2Error } from './errors.ts';
import { spliceH2 } from './splice.ts';
import type { H2Stream } from './stream.ts';

export interface H2TunnelServerOptions extends HboneServerOptions {
  /** Told about every connection-level protocol error and stream the layer reset for the peer's fault. */
  onProtocolError?: (error: H2Error) => void;
  /** Overrides for the HTTP/2 layer (limits in hostile-input tests). */
  h2?: Partial<H2ConnectionOptions>;
}

function defaultTargetConnector(request: HboneRequest): net.Socket {
  return net.connect({ host: request.target.host, port: request.target.port, allowHalfOpen: true, noDelay: true });
}

export class H2TunnelServer {
  readonly #options: H2TunnelServerOptions;
  readonly #tlsServers = new WeakMap<object, tls.Server>();
  readonly #connections = new Set<H2Connection>();
  readonly #sockets = new Set<net.Socket>();
  readonly #listeners: net.Server[] = [];
  #shuttingDown = false;
  #drained: (() => void) | undefined;
  tunnelsOpened = 0;
  requestsRefused = 0;

  constructor(options: H2TunnelServerOptions) {
    this.#options = options;
  }

  get activeConnections(): number {
    return this.#connections.size;
  }

  handle(socket: net.Socket): void {
    const certificate = this.#shuttingDown ? undefined : this.#options.certificateFor(socket);
    if (!certificate) {
      socket.destroy();
      return;
    }
    socket.setNoDelay(true);
    this.#sockets.add(socket);
    socket.once('close', () => this.#sockets.delete(socket));
    let server = this.#tlsServers.get(certificate);
    if (!server) {
      server = tls.createServer(serverTlsOptions(certificate, this.#options.rootsPem, this.#options.handshakeTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS));
      server.on('secureConnection', this.#onSecureConnection);
      server.on('tlsClientError', (error: Error, tlsSocket: tls.TLSSocket) => {
        this.#options.onError?.(new HboneError('HBONE_TLS', `TLS handshake failed: ${error.message}`, { cause: error }));
        tlsSocket.destroy();
      });
      this.#tlsServers.set(certificate, server);
    }
    server.emit('connection', socket);
  }

  listen(address: HostPort): Promise<HostPort> {
    const server = net.createServer({ noDelay: true }, (socket) => this.handle(socket));
    this.#listeners.push(server);
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: address.host, port: address.port, backlog: 4096 }, () => {
        server.off('error', reject);
        const bound = server.address() as net.AddressInfo;
        resolve({ host: bound.address, port: bound.port });
      });
    });
  }

  /** GOAWAY on every connection, streams finish until `deadlineMs`, then everything is cut. */
  async shutdown(deadlineMs: number = DEFAULT_DRAIN_DEADLINE_MS): Promise<void> {
    this.#shuttingDown = true;
    const listenersClosed = this.#listeners.map((server) => new Promise<void>((resolve) => server.close(() => resolve())));
    for (const connection of this.#connections) connection.close();
    if (this.#connections.size > 0) {
      let deadline: NodeJS.Timeout | undefined;
      await new Promise<void>((resolve) => {
        this.#drained = resolve;
        deadline = setTimeout(resolve, deadlineMs);
      });
      clearTimeout(deadline);
    }
    for (const connection of this.#connections) connection.destroy();
    for (const socket of this.#sockets) socket.destroy();
    await Promise.all(listenersClosed);
  }

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
      this.#options.onError?.(error as HboneError);
      socket.destroy();
      return;
    }
    const options: H2ConnectionOptions = { role: 'server', ...this.#options.h2 };
    if (this.#options.streamWindowBytes !== undefined) options.streamWindowBytes = this.#options.streamWindowBytes;
    if (this.#options.connectionWindowBytes !== undefined) options.connectionWindowBytes = this.#options.connectionWindowBytes;
    if (this.#options.maxConcurrentStreams !== undefined) options.maxConcurrentStreams = this.#options.maxConcurrentStreams;
    const connection = new H2Connection(socket, options);
    this.#connections.add(connection);
    const remoteAddress = socket.remoteAddress ?? '';
    connection.on('stream', (stream: H2Stream) => void this.#onStream(stream, peerIdentity, remoteAddress));
    connection.on('error', (error: H2Error) => this.#options.onProtocolError?.(error));
    connection.on('streamError', (error: H2Error) => this.#options.onProtocolError?.(error));
    connection.once('close', () => {
      this.#connections.delete(connection);
      if (this.#connections.size === 0) this.#drained?.();
    });
  };

  #refuse(stream: H2Stream, status: number): void {
    this.requestsRefused++;
    stream.respond(status, [], true);
  }

  async #onStream(stream: H2Stream, peerIdentity: SpiffeId, remoteAddress: string): Promise<void> {
    if (stream.header(':method') !== 'CONNECT') {
      this.#refuse(stream, 405);
      return;
    }
    let target: HostPort;
    try {
      target = parseAuthority(stream.header(':authority'));
    } catch (error) {
      this.#options.onError?.(error as HboneError);
      this.#refuse(stream, 400);
      return;
    }
    const headers: Record<string, string> = {};
    for (let index = 0; index < stream.requestHeaders.length; index += 2) headers[stream.requestHeaders[index]!] ??= stream.requestHeaders[index + 1]!;
    const request: HboneRequest = { peerIdentity, target, headers, remoteAddress };
    let decision: HboneDecision = { allow: true };
    if (this.#options.decide) {
      try {
        decision = await this.#options.decide(request);
      } catch {
        decision = { allow: false, reason: 'policy evaluation failed' };
      }
    }
    if (!decision.allow) {
      this.#refuse(stream, 401);
      return;
    }
    if (stream.closed) return;
    const started = performance.now();
    let socket: net.Socket;
    try {
      socket = (this.#options.connect ?? defaultTargetConnector)(request);
    } catch {
      this.#refuse(stream, 503);
      return;
    }
    if (!(await this.#targetConnected(socket, stream))) {
      this.#refuse(stream, 503);
      return;
    }
    this.tunnelsOpened++;
    stream.respond(200);
    const result = await spliceH2(socket, stream);
    this.#options.onTunnel?.({
      request,
      bytesIn: result.bytesToSocket,
      bytesOut: result.bytesFromSocket,
      durationMs: performance.now() - started,
      ...(result.error ? { error: result.error.message } : {}),
    });
  }

  #targetConnected(socket: net.Socket, stream: H2Stream): Promise<boolean> {
    if (socket.destroyed) return Promise.resolve(false);
    if (!socket.connecting && socket.remoteAddress !== undefined) return Promise.resolve(!stream.closed);
    return new Promise((resolve) => {
      const timeoutMs = this.#options.connectTimeoutMs ?? DEFAULT_TARGET_CONNECT_TIMEOUT_MS;
      const done = (ok: boolean): void => {
        clearTimeout(timer);
        socket.off('connect', onConnect);
        socket.off('error', onError);
        if (!ok) socket.destroy();
        resolve(ok);
      };
      const onConnect = (): void => done(!stream.closed);
      const onError = (): void => done(false);
      const timer = setTimeout(() => done(false), timeoutMs);
      socket.once('connect', onConnect);
      socket.once('error', onError);
    });
  }
}

function ignore(): void {}

