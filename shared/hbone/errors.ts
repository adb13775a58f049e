/**
 * The HBONE library's one catalogue of what can go wrong.
 *
 * Owns: the `HboneError` class, its stable `code`s (callers branch on these, never on message text), a message
 * for each case that tells an operator what to check, and the Envoy-style `responseFlags` each case reports in
 * metrics and access logs.
 * Must not know about: pools, sessions or sockets (callers pass in the facts: addresses, identities, causes).
 */
import type { HostPort } from './types.ts';

export type HboneErrorCode =
  | 'HBONE_CONNECT_TIMEOUT'
  | 'HBONE_CONNECT_FAILED'
  | 'HBONE_TLS'
  | 'HBONE_PEER_IDENTITY'
  | 'HBONE_NO_CERTIFICATE'
  | 'HBONE_KEEPALIVE_TIMEOUT'
  | 'HBONE_CONNECTION_CLOSED'
  | 'HBONE_STREAM_RESET'
  | 'HBONE_BAD_AUTHORITY'
  | 'HBONE_BAD_METHOD'
  | 'HBONE_MISDIRECTED'
  | 'HBONE_STREAM_FLOOD'
  | 'HBONE_DENIED'
  | 'HBONE_REFUSED'
  | 'HBONE_BAD_STATUS'
  | 'HBONE_POOL_CLOSED'
  | 'HBONE_DOWNSTREAM_CLOSED'
  | 'HBONE_SHUTTING_DOWN';

/**
 * Envoy response flags, the column Istio's access logs and dashboards already show:
 * UF upstream connection failure, UT upstream timeout, UC upstream connection termination, UR upstream reset,
 * UAEX unauthorized (denied by policy), DPE downstream protocol error, UPE upstream protocol error,
 * LR local reset (we closed it ourselves), DC downstream connection termination.
 */
export const RESPONSE_FLAGS: Readonly<Record<HboneErrorCode, string>> = {
  HBONE_CONNECT_TIMEOUT: 'UF',
  HBONE_CONNECT_FAILED: 'UF',
  HBONE_TLS: 'UF',
  HBONE_PEER_IDENTITY: 'UF',
  HBONE_NO_CERTIFICATE: 'UF',
  HBONE_KEEPALIVE_TIMEOUT: 'UC',
  HBONE_CONNECTION_CLOSED: 'UC',
  HBONE_STREAM_RESET: 'UR',
  HBONE_BAD_AUTHORITY: 'DPE',
  HBONE_BAD_METHOD: 'DPE',
  HBONE_MISDIRECTED: 'DPE',
  HBONE_STREAM_FLOOD: 'DPE',
  HBONE_DENIED: 'UAEX',
  HBONE_REFUSED: 'UF',
  HBONE_BAD_STATUS: 'UPE',
  HBONE_POOL_CLOSED: 'LR',
  HBONE_DOWNSTREAM_CLOSED: 'DC',
  HBONE_SHUTTING_DOWN: 'LR',
};

export class HboneError extends Error {
  readonly code: HboneErrorCode;
  /** The Envoy-style flag for metrics and access logs (UF, UC, UAEX, ...). */
  readonly responseFlags: string;

  constructor(code: HboneErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'HboneError';
    this.code = code;
    this.responseFlags = RESPONSE_FLAGS[code];
  }
}

export function isHboneError(error: unknown, code?: HboneErrorCode): error is HboneError {
  return error instanceof HboneError && (code === undefined || error.code === code);
}

function where(address: HostPort): string {
  return address.host.includes(':') ? `[${address.host}]:${address.port}` : `${address.host}:${address.port}`;
}

function seconds(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${ms} ms`;
}

function causeText(cause: unknown): string {
  if (cause instanceof Error) {
    const code = (cause as { code?: unknown }).code;
    return typeof code === 'string' && !cause.message.includes(code) ? `${code}: ${cause.message}` : cause.message;
  }
  return String(cause);
}

/** Constructors for every case, so each message is written once. */
export const hboneErrors = {
  connectTimeout(proxy: HostPort, timeoutMs: number): HboneError {
    return new HboneError(
      'HBONE_CONNECT_TIMEOUT',
      `HBONE connect to ${where(proxy)} timed out after ${seconds(timeoutMs)}: check that port ${proxy.port} is reachable ` +
        `(a NetworkPolicy or firewall may block it) and that the destination's agent is running`,
    );
  },
  connectFailed(proxy: HostPort, cause: unknown): HboneError {
    const code = (cause as { code?: string } | undefined)?.code;
    const hint =
      code === 'ECONNREFUSED'
        ? `nothing listens on port ${proxy.port} there: is the destination's agent running and is the pod captured?`
        : `check that port ${proxy.port} is reachable (a NetworkPolicy or firewall may block it)`;
    return new HboneError('HBONE_CONNECT_FAILED', `HBONE connect to ${where(proxy)} failed (${causeText(cause)}): ${hint}`, { cause });
  },
  tls(proxy: HostPort, cause: unknown): HboneError {
    return new HboneError(
      'HBONE_TLS',
      `HBONE TLS handshake with ${where(proxy)} failed (${causeText(cause)}): check that both sides hold certificates from the same mesh root and that they have not expired`,
      { cause },
    );
  },
  rejectedByServer(proxy: HostPort, trustDomain: string): HboneError {
    return new HboneError(
      'HBONE_TLS',
      `HBONE server ${where(proxy)} closed the connection right after the TLS handshake, before speaking HTTP/2: it did not accept our ` +
        `client certificate (is it signed by the same mesh root, in trust domain ${trustDomain}, and still valid?)`,
    );
  },
  noAlpn(proxy: HostPort, negotiated: string | false | null): HboneError {
    return new HboneError(
      'HBONE_TLS',
      `HBONE server ${where(proxy)} did not negotiate ALPN h2 (got ${negotiated ? negotiated : 'none'}): is port ${proxy.port} really an HBONE listener?`,
    );
  },
  peerIdentity(proxy: HostPort, why: string): HboneError {
    return new HboneError('HBONE_PEER_IDENTITY', `HBONE server ${where(proxy)} is not who we expected: ${why}`);
  },
  noCertificate(identity: string): HboneError {
    return new HboneError(
      'HBONE_NO_CERTIFICATE',
      `no valid certificate is held for ${identity} yet: the CA has not issued it (check the agent's connection to the control plane's CA) or it expired`,
    );
  },
  keepaliveTimeout(proxy: HostPort, timeoutMs: number): HboneError {
    return new HboneError(
      'HBONE_KEEPALIVE_TIMEOUT',
      `HBONE connection to ${where(proxy)} did not answer a keepalive PING within ${seconds(timeoutMs)}: the peer or the path to it is gone; the connection was closed`,
    );
  },
  connectionClosed(proxy: HostPort, cause?: unknown): HboneError {
    return new HboneError(
      'HBONE_CONNECTION_CLOSED',
      `HBONE connection to ${where(proxy)} closed before the stream finished${cause === undefined ? '' : ` (${causeText(cause)})`}`,
      { cause },
    );
  },
  streamReset(destination: HostPort, rstCode: number): HboneError {
    return new HboneError('HBONE_STREAM_RESET', `HBONE stream to ${where(destination)} was reset by the peer (RST_STREAM code ${rstCode})`);
  },
  badAuthority(authority: unknown, why: string): HboneError {
    return new HboneError(
      'HBONE_BAD_AUTHORITY',
      `malformed HBONE :authority ${JSON.stringify(authority)}: ${why} (expected the original destination as ip:port, IPv6 in brackets)`,
    );
  },
  denied(destination: HostPort, proxy: HostPort): HboneError {
    return new HboneError(
      'HBONE_DENIED',
      `HBONE CONNECT to ${where(destination)} via ${where(proxy)} was denied (401) by the destination's authorization policy: check the AuthorizationPolicies that select it`,
    );
  },
  refused(destination: HostPort, proxy: HostPort): HboneError {
    return new HboneError(
      'HBONE_REFUSED',
      `HBONE server ${where(proxy)} could not reach the target ${where(destination)} (503): the application refused the connection or is not listening on port ${destination.port}` +
        ` (or ${destination.port} is one of the pod's own proxy ports, 15001/15006/15008, which are never tunneled to)`,
    );
  },
  badStatus(destination: HostPort, proxy: HostPort, status: number): HboneError {
    const why =
      status === 400
        ? `the server rejected the request: a malformed :authority, or a destination that is not the server's own pod (it relays to no other address)`
        : status === 405
          ? 'the server does not accept CONNECT'
          : 'unexpected status';
    return new HboneError('HBONE_BAD_STATUS', `HBONE CONNECT to ${where(destination)} via ${where(proxy)} answered ${status}: ${why}`);
  },
  poolClosed(): HboneError {
    return new HboneError('HBONE_POOL_CLOSED', 'the HBONE client pool is closed (the agent is shutting down)');
  },
  downstreamClosed(destination: HostPort, proxy: HostPort, cancelled: boolean): HboneError {
    return new HboneError(
      'HBONE_DOWNSTREAM_CLOSED',
      `the client closed its connection to ${where(destination)} before the HBONE stream via ${where(proxy)} was answered` +
        (cancelled ? ': the stream was cancelled (RST_STREAM CANCEL), the server drops its connection to the target' : ': no stream was opened'),
    );
  },
  shuttingDown(): HboneError {
    return new HboneError('HBONE_SHUTTING_DOWN', 'the HBONE server is shutting down and accepts no new connections');
  },
};
