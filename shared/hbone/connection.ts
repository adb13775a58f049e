/**
 * One pooled HBONE client connection: an HTTP/2 session over mutual TLS to one HBONE endpoint.
 *
 * Owns: dialing (TCP from the caller's connector, TLS, the server's SETTINGS, all within the connect timeout; the
 * session runs on a SessionSocket over the TLS socket),
 * opening CONNECT streams and waiting for their status, counting open streams, keepalive PINGs with a timeout,
 * the idle timer, and draining on GOAWAY.
 * Must not know about: pool keys, which connection a stream should use, splicing, policy.
 */
import http2 from 'node:http2';
import type { SpiffeId, WorkloadCertificate } from '../identity/index.ts';
import { formatAuthority } from './authority.ts';
import { DEFAULT_MAX_FRAME_SIZE, DEFAULT_MAX_SESSION_MEMORY_MIB, SESSION_SOCKET_QUEUE_LIMIT_BYTES, SESSION_SOCKET_END_STALL_MS } from './config.ts';
import { hboneErrors, HboneError, isHboneError } from './errors.ts';
import { markRefusedUnprocessed, type OpenedTunnelStream, type PendingTunnelStream, type PooledConnection, type TunnelSpliceResult } from './pooled-connection.ts';
import { SessionSocket } from './session-socket.ts';
import { splice } from './splice.ts';
import { connectTls } from './tls.ts';
import type { HboneTarget, HostPort, TcpConnector } from './types.ts';
import type net from 'node:net';
import type tls from 'node:tls';
import type { Duplex } from 'node:stream';

const { NGHTTP2_CANCEL, NGHTTP2_NO_ERROR, NGHTTP2_REFUSED_STREAM } = http2.constants;

/** A CONNECT stream the server accepted, over node:http2: the stream object is already a Duplex. */
class NodeOpenedStream implements OpenedTunnelStream {
  readonly #stream: http2.ClientHttp2Stream;

  constructor(stream: http2.ClientHttp2Stream) {
    this.#stream = stream;
  }

  splice(socket: net.Socket): Promise<TunnelSpliceResult> {
    return splice(socket, this.#stream);
  }

  spliceTo<T>(socket: net.Socket, done: (target: T, result: TunnelSpliceResult) => void, target: T): void {
    void splice(socket, this.#stream).then((result) => done(target, result));
  }

  duplex(): Duplex {
    return this.#stream;
  }
}

/** A CONNECT on node:http2 waiting for its answer. */
class NodePendingStream implements PendingTunnelStream {
  readonly opened: Promise<OpenedTunnelStream>;
  readonly #stream: http2.ClientHttp2Stream;

  constructor(stream: http2.ClientHttp2Stream, response: Promise<http2.ClientHttp2Stream>) {
    this.#stream = stream;
    this.opened = response.then(
      (accepted) => new NodeOpenedStream(accepted),
      (error: Error) => {
        // REFUSED_STREAM (a GOAWAY raced our request) guarantees the server did nothing with it (RFC 9113 8.7).
        throw stream.rstCode === NGHTTP2_REFUSED_STREAM ? markRefusedUnprocessed(error) : error;
      },
    );
  }

  cancel(): void {
    if (!this.#stream.closed && !this.#stream.destroyed) this.#stream.close(NGHTTP2_CANCEL);
  }
}

/** Every limit a connection enforces, already resolved from the caller's options and the defaults. */
export interface ConnectionSettings {
  maxStreamsPerConnection: number;
  idleTimeoutMs: number;
  keepaliveIntervalMs: number;
  keepaliveTimeoutMs: number;
  connectTimeoutMs: number;
  streamWindowBytes: number;
  connectionWindowBytes: number;
}

export interface DialParams {
  proxy: HostPort;
  certificate: WorkloadCertificate;
  trustDomain: string;
  expectedIdentities: readonly string[];
  connect: TcpConnector;
  settings: ConnectionSettings;
}

/** Called once when the connection is gone (closed, failed, idle-released). */
export type ConnectionClosedListener = (connection: HboneConnection) => void;

export class HboneConnection implements PooledConnection {
  readonly proxy: HostPort;
  /** The identity the server's certificate proved (chain, trust domain and expected set all checked). */
  readonly peerIdentity: SpiffeId;
  readonly session: http2.ClientHttp2Session;
  /** The TLS socket under the session's SessionSocket: cut directly when the server is known to be gone. */
  readonly #tlsSocket: tls.TLSSocket;
  /** Streams opened on this connection and not yet closed. */
  activeStreams = 0;
  /** Total streams ever opened here. */
  streamsOpened = 0;
  readonly #settings: ConnectionSettings;
  readonly #onClosed: ConnectionClosedListener;
  #draining = false;
  #closed = false;
  #lastError: Error | undefined;
  #idleTimer: NodeJS.Timeout | undefined;
  #keepaliveTimer: NodeJS.Timeout | undefined;
  #pingTimer: NodeJS.Timeout | undefined;

  private constructor(proxy: HostPort, peerIdentity: SpiffeId, session: http2.ClientHttp2Session, tlsSocket: tls.TLSSocket, settings: ConnectionSettings, onClosed: ConnectionClosedListener) {
    this.proxy = proxy;
    this.peerIdentity = peerIdentity;
    this.session = session;
    this.#tlsSocket = tlsSocket;
    this.#settings = settings;
    this.#onClosed = onClosed;
    session.on('error', this.#onSessionError);
    session.on('goaway', this.#onGoaway);
    session.once('close', this.#onSessionClose);
    if (settings.keepaliveIntervalMs > 0) {
      this.#keepaliveTimer = setInterval(this.#sendPing, settings.keepaliveIntervalMs).unref();
    }
    this.#armIdleTimer();
  }

  /**
   * Dials `proxy`: TCP, TLS 1.3 with the peer's SPIFFE identity checked, then HTTP/2 until the server's SETTINGS
   * arrive (the proof that it accepted our certificate). Rejects with a typed HboneError.
   */
  static dial(params: DialParams, onClosed: ConnectionClosedListener = ignoreClosed): Promise<HboneConnection> {
    const { proxy, settings } = params;
    return new Promise((resolve, reject) => {
      const tcp = params.connect(proxy);
      tcp.setNoDelay(true);
      let tcpConnected = !tcp.connecting;
      let tlsDone = false;
      let session: http2.ClientHttp2Session | undefined;
      let settled = false;

      const fail = (error: HboneError): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        session?.destroy();
        tlsSocket.destroy();
        tcp.destroy();
        reject(error);
      };
      const timer = setTimeout(() => fail(hboneErrors.connectTimeout(proxy, settings.connectTimeoutMs)), settings.connectTimeoutMs);
      tcp.once('connect', () => {
        tcpConnected = true;
      });

      let peerIdentity: SpiffeId | undefined;
      const tlsSocket = connectTls(tcp, {
        ...params,
        onPeerVerified: (identity) => {
          peerIdentity = identity;
        },
      });
      const onTlsError = (error: Error): void => {
        if (isHboneError(error)) fail(error);
        else if (!tcpConnected) fail(hboneErrors.connectFailed(proxy, error));
        else if (!tlsDone) fail(hboneErrors.tls(proxy, error));
        else fail(hboneErrors.rejectedByServer(proxy, params.trustDomain));
      };
      tlsSocket.on('error', onTlsError);
      tlsSocket.once('secureConnect', () => {
        tlsDone = true;
        if (tlsSocket.alpnProtocol !== 'h2') {
          fail(hboneErrors.noAlpn(proxy, tlsSocket.alpnProtocol));
          return;
        }
        const established = http2.connect(`https://${formatAuthority(proxy)}`, {
          // Not the TLS socket itself: on it the session stops reading while its write waits for a full send buffer,
          // and two such ends moving bulk both ways deadlock (session-socket.ts).
          createConnection: () => new SessionSocket(tlsSocket, SESSION_SOCKET_QUEUE_LIMIT_BYTES, SESSION_SOCKET_END_STALL_MS),
          settings: {
            enablePush: false,
            initialWindowSize: settings.streamWindowBytes,
            maxFrameSize: DEFAULT_MAX_FRAME_SIZE,
          },
          maxSessionMemory: DEFAULT_MAX_SESSION_MEMORY_MIB,
        });
        session = established;
        const onEarlyClose = (): void => fail(hboneErrors.rejectedByServer(proxy, params.trustDomain));
        const onEarlyError = (error: Error): void => {
          if (isHboneError(error)) fail(error);
          else onEarlyClose();
        };
        established.on('error', onEarlyError);
        established.once('close', onEarlyClose);
        established.once('connect', () => {
          if (!established.destroyed) established.setLocalWindowSize(settings.connectionWindowBytes);
        });
        established.once('remoteSettings', () => {
          if (settled) return;
          // checkServerIdentity runs on every handshake; without its verdict the peer is not known, so not trusted.
          if (!peerIdentity) {
            fail(hboneErrors.peerIdentity(proxy, 'the server identity was never verified'));
            return;
          }
          settled = true;
          clearTimeout(timer);
          established.off('error', onEarlyError);
          established.off('close', onEarlyClose);
          tlsSocket.off('error', onTlsError);
          resolve(new HboneConnection(proxy, peerIdentity, established, tlsSocket, settings, onClosed));
        });
      });
    });
  }

  /** True while this connection may take one more stream. */
  get available(): boolean {
    if (this.#draining || this.#closed) return false;
    const remoteLimit = this.session.remoteSettings.maxConcurrentStreams ?? Infinity;
    return this.activeStreams < Math.min(this.#settings.maxStreamsPerConnection, remoteLimit);
  }

  get draining(): boolean {
    return this.#draining;
  }

  /**
   * Sends CONNECT for `target`; `response` then waits for the status. Returns undefined when the session can no
   * longer open streams (GOAWAY raced the check): the caller picks another connection.
   */
  request(target: HboneTarget): http2.ClientHttp2Stream | undefined {
    const headers: http2.OutgoingHttpHeaders = { ...target.headers };
    headers[':method'] = 'CONNECT';
    headers[':authority'] = formatAuthority(target.destination);
    let stream: http2.ClientHttp2Stream;
    try {
      stream = this.session.request(headers, { endStream: false });
    } catch {
      this.#draining = true;
      return undefined;
    }
    this.activeStreams++;
    this.streamsOpened++;
    if (this.#idleTimer) {
      clearTimeout(this.#idleTimer);
      this.#idleTimer = undefined;
    }
    stream.once('close', this.#onStreamClose);
    return stream;
  }

  get isClosed(): boolean {
    return this.#closed || this.session.destroyed;
  }

  onceClosed(listener: () => void): void {
    if (this.isClosed) listener();
    else this.session.once('close', listener);
  }

  openTunnelStream(target: HboneTarget): PendingTunnelStream | undefined {
    const stream = this.request(target);
    if (!stream) return undefined;
    return new NodePendingStream(stream, this.response(stream, target));
  }

  /** Resolves with `stream` once the server answers 2xx; rejects with a typed HboneError otherwise. */
  response(stream: http2.ClientHttp2Stream, target: HboneTarget): Promise<http2.ClientHttp2Stream> {
    return awaitResponse(stream, target, this);
  }

  /** Stops new streams; the connection closes when its streams finish. */
  close(): void {
    this.#draining = true;
    if (!this.session.closed && !this.session.destroyed) this.session.close();
  }

  /** Closes now; open streams are reset. */
  destroy(error?: Error): void {
    this.#draining = true;
    if (!this.session.destroyed) this.session.destroy(error);
  }

  /** The error that ended the connection, if one did. */
  get lastError(): Error | undefined {
    return this.#lastError;
  }

  readonly #onStreamClose = (): void => {
    this.activeStreams--;
    if (this.activeStreams === 0) {
      if (this.#draining) this.close();
      else this.#armIdleTimer();
    }
  };

  #armIdleTimer(): void {
    if (this.#settings.idleTimeoutMs > 0 && !this.#closed) {
      this.#idleTimer = setTimeout(this.#onIdle, this.#settings.idleTimeoutMs).unref();
    }
  }

  readonly #onIdle = (): void => {
    this.#idleTimer = undefined;
    if (this.activeStreams === 0) this.close();
  };

  readonly #sendPing = (): void => {
    if (this.#pingTimer || this.session.destroyed || this.session.connecting) return;
    if (!this.session.ping(this.#onPong)) return;
    this.#pingTimer = setTimeout(this.#onPingTimeout, this.#settings.keepaliveTimeoutMs).unref();
  };

  readonly #onPong = (): void => {
    clearTimeout(this.#pingTimer);
    this.#pingTimer = undefined;
  };

  readonly #onPingTimeout = (): void => {
    this.#pingTimer = undefined;
    this.destroy(hboneErrors.keepaliveTimeout(this.proxy, this.#settings.keepaliveTimeoutMs));
    // Node would first flush what is queued for a server that reads nothing: cut the connection instead.
    this.#tlsSocket.destroy();
  };

  readonly #onSessionError = (error: Error): void => {
    this.#lastError ??= error;
  };

  readonly #onGoaway = (): void => {
    // The server is draining (or shutting down): finish what is open here, open new streams elsewhere.
    this.#draining = true;
  };

  readonly #onSessionClose = (): void => {
    this.#closed = true;
    this.#draining = true;
    clearInterval(this.#keepaliveTimer);
    clearTimeout(this.#idleTimer);
    clearTimeout(this.#pingTimer);
    this.#onClosed(this);
  };
}

function ignoreClosed(): void {}

/** Waits for the CONNECT response; 200 resolves with the stream, anything else rejects with a typed error. */
function awaitResponse(stream: http2.ClientHttp2Stream, target: HboneTarget, connection: HboneConnection): Promise<http2.ClientHttp2Stream> {
  return new Promise((resolve, reject) => {
    const onResponse = (headers: http2.IncomingHttpHeaders): void => {
      stream.off('close', onClose);
      stream.off('error', onError);
      const status = Number(headers[':status']);
      if (status >= 200 && status < 300) {
        resolve(stream);
        return;
      }
      // End our side instead of sending RST_STREAM: the server already ended its side, so the stream closes
      // cleanly. (nghttp2 servers rate-limit incoming RST_STREAM, the "rapid reset" defence: after a burst of
      // 1000 at more than 33/s they kill the whole connection, so a storm of denials must not be a storm of resets.)
      stream.resume();
      stream.end();
      if (status === 401 || status === 403) reject(hboneErrors.denied(target.destination, target.proxy));
      else if (status === 503 || status === 502 || status === 504) reject(hboneErrors.refused(target.destination, target.proxy));
      else reject(hboneErrors.badStatus(target.destination, target.proxy, status));
    };
    let streamError: Error | undefined;
    const onError = (error: Error): void => {
      streamError ??= error;
    };
    const onClose = (): void => {
      stream.off('response', onResponse);
      stream.off('error', onError);
      const cause = connection.lastError ?? streamError;
      if (isHboneError(cause)) reject(cause);
      else if (stream.rstCode !== undefined && stream.rstCode !== NGHTTP2_NO_ERROR && stream.rstCode !== NGHTTP2_CANCEL) {
        reject(hboneErrors.streamReset(target.destination, stream.rstCode));
      } else reject(hboneErrors.connectionClosed(target.proxy, cause));
    };
    stream.once('response', onResponse);
    stream.on('error', onError);
    stream.once('close', onClose);
  });
}
