/**
 * HBONE's client side on this HTTP/2 layer: dial one mutual-TLS connection, open CONNECT streams on it.
 *
 * Owns: TCP + TLS (shared/hbone/tls.ts: SPIFFE check, ALPN h2) + our H2Connection until the server's SETTINGS
 * arrive, within the connect timeout; CONNECT requests (`:method CONNECT`, `:authority ip:port`, no :scheme or
 * :path, extra headers such as traceparent) and turning the response status into a typed HboneError, the same
 * way shared/hbone/connection.ts does over node:http2, a refusal the server did not process (REFUSED_STREAM) marked
 * so the pool retries it. h2/pooled-connection.ts builds the pool's connection on these two.
 * Must not know about: pools, policy, splicing (the caller splices the stream it gets).
 */
import type { SpiffeId, WorkloadCertificate } from '../../identity/index.ts';
import { formatAuthority } from '../authority.ts';
import { DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_CONNECTION_WINDOW_BYTES, DEFAULT_STREAM_WINDOW_BYTES } from '../config.ts';
import { hboneErrors, HboneError, isHboneError } from '../errors.ts';
import { connectTls } from '../tls.ts';
import { markRefusedUnprocessed } from '../pooled-connection.ts';
import type { HboneTarget, HostPort, TcpConnector } from '../types.ts';
import { H2Connection, type H2ConnectionOptions } from './connection.ts';
import { H2_CANCEL, H2_NO_ERROR, H2_REFUSED_STREAM, isH2Error } from './errors.ts';
import type { H2Stream, H2StreamHandler } from './stream.ts';

export interface H2DialParams {
  proxy: HostPort;
  certificate: WorkloadCertificate;
  trustDomain: string;
  expectedIdentities: readonly string[];
  connect: TcpConnector;
  connectTimeoutMs?: number;
  streamWindowBytes?: number;
  connectionWindowBytes?: number;
  keepaliveIntervalMs?: number;
  keepaliveTimeoutMs?: number;
  /** Told the server's SPIFFE identity once the TLS layer verified it (before the promise resolves). */
  onPeerVerified?: (identity: SpiffeId) => void;
}

/** Dials `proxy` and resolves with a client H2Connection once the server's SETTINGS arrived; rejects with HboneError. */
export function dialH2(params: H2DialParams): Promise<H2Connection> {
  const { proxy } = params;
  const timeoutMs = params.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  return new Promise((resolve, reject) => {
    const tcp = params.connect(proxy);
    tcp.setNoDelay(true);
    let tcpConnected = !tcp.connecting;
    let tlsDone = false;
    let settled = false;
    let connection: H2Connection | undefined;
    const fail = (error: HboneError): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      connection?.destroy();
      tlsSocket.destroy();
      tcp.destroy();
      reject(error);
    };
    const timer = setTimeout(() => fail(hboneErrors.connectTimeout(proxy, timeoutMs)), timeoutMs);
    tcp.once('connect', () => (tcpConnected = true));
    const tlsSocket = connectTls(tcp, params);
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
      const options: H2ConnectionOptions = {
        role: 'client',
        streamWindowBytes: params.streamWindowBytes ?? DEFAULT_STREAM_WINDOW_BYTES,
        connectionWindowBytes: params.connectionWindowBytes ?? DEFAULT_CONNECTION_WINDOW_BYTES,
        keepaliveIntervalMs: params.keepaliveIntervalMs ?? 0,
      };
      if (params.keepaliveTimeoutMs !== undefined) options.keepaliveTimeoutMs = params.keepaliveTimeoutMs;
      const established = new H2Connection(tlsSocket, options);
      connection = established;
      const onEarlyClose = (): void => fail(hboneErrors.rejectedByServer(proxy, params.trustDomain));
      established.once('close', onEarlyClose);
      established.once('remoteSettings', () => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        established.off('close', onEarlyClose);
        tlsSocket.off('error', onTlsError);
        // Socket errors after this point end the connection (H2Connection listens); nothing may throw.
        tlsSocket.on('error', ignore);
        resolve(established);
      });
    });
  });
}

function ignore(): void {}

/** The request headers of a CONNECT for `target` (pseudo-headers first, then the target's extra headers). */
export function connectRequestHeaders(target: Pick<HboneTarget, 'destination' | 'headers'>): string[] {
  const headers = [':method', 'CONNECT', ':authority', formatAuthority(target.destination)];
  if (target.headers) for (const [name, value] of Object.entries(target.headers)) headers.push(name.toLowerCase(), value);
  return headers;
}

/**
 * Waits for a CONNECT's response, then hands the stream on (`answered`) or says why not (`failed`): exactly one of the
 * two, once. A subclass is the per-CONNECT object itself (the pool's open, h2/pooled-connection.ts: no promise, no
 * closure per stream) or an adapter to a promise (`requestConnectStream`).
 */
export abstract class ConnectResponseWaiter implements H2StreamHandler {
  readonly #target: Pick<HboneTarget, 'destination' | 'proxy'>;
  #settled = false;

  constructor(target: Pick<HboneTarget, 'destination' | 'proxy'>) {
    this.#target = target;
  }

  /** The server answered 2xx: the stream is released (no handler) for whoever takes it. */
  protected abstract answered(stream: H2Stream): void;
  /** Refused (typed HboneError, marked with markRefusedUnprocessed when safe to retry), reset, or never sent. */
  protected abstract failed(error: Error): void;

  /**
   * Sends the CONNECT on `connection` with this waiter as the stream's handler; the stream, or undefined when none
   * could be opened (then `failed` was called, before this returns).
   */
  send(connection: H2Connection, target: Pick<HboneTarget, 'destination' | 'proxy' | 'headers'>): H2Stream | undefined {
    try {
      return connection.request(connectRequestHeaders(target), this);
    } catch (error) {
      this.#settled = true;
      if (isH2Error(error) || isHboneError(error)) this.failed(isHboneError(error) ? error : hboneErrors.connectionClosed(target.proxy, error));
      else this.failed(error as Error);
      return undefined;
    }
  }

  onResponse(stream: H2Stream): void {
    if (this.#settled) return;
    this.#settled = true;
    const status = stream.status;
    const { destination, proxy } = this.#target;
    if (status >= 200 && status < 300) {
      stream.releaseHandler();
      this.answered(stream);
      return;
    }
    // End our side rather than reset (servers rate-limit resets): the server already ended its side.
    stream.end();
    if (status === 401 || status === 403) this.failed(hboneErrors.denied(destination, proxy));
    else if (status === 502 || status === 503 || status === 504) this.failed(hboneErrors.refused(destination, proxy));
    else this.failed(hboneErrors.badStatus(destination, proxy, status));
  }

  onData(): void {}
  onEnd(): void {}
  onDrain(): void {}

  onClose(stream: H2Stream): void {
    if (this.#settled) return;
    this.#settled = true;
    const code = stream.rstCode;
    const connectionError = stream.connection.error;
    if (code !== undefined && code !== H2_NO_ERROR && code !== H2_CANCEL && code !== H2_REFUSED_STREAM) {
      this.failed(hboneErrors.streamReset(this.#target.destination, code));
    } else if (code === H2_REFUSED_STREAM) {
      // RFC 9113 8.7: the server did nothing with it (over its limit, or above its GOAWAY's last id): safe to retry.
      this.failed(markRefusedUnprocessed(hboneErrors.connectionClosed(this.#target.proxy, connectionError ?? 'refused unprocessed (REFUSED_STREAM or GOAWAY)')));
    } else {
      this.failed(hboneErrors.connectionClosed(this.#target.proxy, connectionError));
    }
  }
}

/** The promise form's waiter. */
class PromisedResponse extends ConnectResponseWaiter {
  readonly #resolve: (stream: H2Stream) => void;
  readonly #reject: (error: Error) => void;

  constructor(target: Pick<HboneTarget, 'destination' | 'proxy'>, resolve: (stream: H2Stream) => void, reject: (error: Error) => void) {
    super(target);
    this.#resolve = resolve;
    this.#reject = reject;
  }

  protected answered(stream: H2Stream): void {
    this.#resolve(stream);
  }

  protected failed(error: Error): void {
    this.#reject(error);
  }
}

/**
 * Opens a CONNECT stream for `target` on `connection` and resolves with it once the server answered 2xx (attach
 * your handler with `setHandler`, e.g. spliceH2). Rejects with HboneError: denied (401/403), refused (5xx),
 * bad status, reset, or connection closed (including H2_UNAVAILABLE when no stream may be opened now).
 */
export function openConnectStream(connection: H2Connection, target: Pick<HboneTarget, 'destination' | 'proxy' | 'headers'>): Promise<H2Stream> {
  return requestConnectStream(connection, target).opened;
}

/** openConnectStream, with the stream as soon as it is requested (undefined if it could not be): to cancel it. */
export function requestConnectStream(connection: H2Connection, target: Pick<HboneTarget, 'destination' | 'proxy' | 'headers'>): { stream: H2Stream | undefined; opened: Promise<H2Stream> } {
  let stream: H2Stream | undefined;
  const opened = new Promise<H2Stream>((resolve, reject) => {
    stream = new PromisedResponse(target, resolve, reject).send(connection, target);
  });
  return { stream, opened };
}
