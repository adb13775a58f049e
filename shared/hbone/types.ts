/**
 * The HBONE library's public contract: what the agent and the waypoint hand in and get back.
 *
 * HBONE is HTTP/2 CONNECT over mutual TLS 1.3 (ALPN h2) to port 15008; one TCP connection per stream;
 * `:authority` is the original destination `ip:port`; `forwarded`, `baggage`, `traceparent` ride along.
 * Must not know about: pods, policy, xDS. Sockets come from the caller's factory (the socket-factory seam).
 */
import type http2 from 'node:http2';
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import type { SpiffeId, WorkloadCertificate } from '../identity/index.ts';
import type { HboneImplementation } from './config.ts';
import type { HboneError } from './errors.ts';

export interface HostPort {
  host: string;
  port: number;
}

/** Makes the TCP connection a tunnel rides on; the agent's factory dials from a pod's namespace with mark 0x539. */
export type TcpConnector = (target: HostPort) => net.Socket;

/** Where one HBONE stream goes and who may answer. */
export interface HboneTarget {
  /** The HBONE endpoint: the destination pod's (or waypoint's) address, port 15008. */
  proxy: HostPort;
  /** The original destination, sent as `:authority` (`ip:port`, IPv6 in brackets). */
  destination: HostPort;
  /** The identity this stream is opened under (the source workload). */
  sourceIdentity: SpiffeId;
  /** SPIFFE URIs the server may present; the connection is refused with any other. Empty means any in-mesh identity. */
  expectedIdentities: readonly string[];
  /** Extra request headers: forwarded, baggage, traceparent. */
  headers?: Readonly<Record<string, string>>;
}

export interface HboneClientOptions {
  /**
   * The certificate to present for a source identity (the caller's store; undefined when none is held yet).
   * Return the same object for the same certificate: the TLS context is cached per object.
   */
  certificateFor: (identity: SpiffeId) => WorkloadCertificate | undefined | Promise<WorkloadCertificate | undefined>;
  /** Trust domain peers must belong to. */
  trustDomain: string;
  /** Dials the underlying TCP connection; Node's net.connect when absent. */
  connect?: TcpConnector;
  /** At most this many streams share one pooled connection, then a new connection opens. Default 100. */
  maxStreamsPerConnection?: number;
  /** A pooled connection with no streams for this long is closed. Default 5 minutes. */
  idleTimeoutMs?: number;
  /**
   * Connections beyond the first per pool key are closed after two sweeps this far apart that found them without
   * a stream. Default 5 s; 0 keeps them for idleTimeoutMs like the first.
   */
  surplusIdleSweepMs?: number;
  /** Interval between keepalive PINGs on a pooled connection. Default 10 s. */
  keepaliveIntervalMs?: number;
  /** A PING unanswered for this long closes the connection. Default 5 s. */
  keepaliveTimeoutMs?: number;
  /** TCP + TLS + SETTINGS must complete within this. Default 10 s. */
  connectTimeoutMs?: number;
  /** HTTP/2 flow-control window per stream. Default 4 MiB. */
  streamWindowBytes?: number;
  /** HTTP/2 flow-control window per connection. Default 16 MiB. */
  connectionWindowBytes?: number;
  /** The HTTP/2 implementation (config.ts): AMBIT_HBONE_IMPL when absent, the own layer when that is unset. */
  implementation?: HboneImplementation;
}

/** What the server asks the caller for each CONNECT. */
export interface HboneRequest {
  /** Verified identity from the client certificate. */
  peerIdentity: SpiffeId;
  /** Parsed `:authority`. */
  target: HostPort;
  /** All request headers (lower-case names), pseudo-headers included. */
  headers: Readonly<Record<string, string | string[] | undefined>>;
  /** Remote address of the TLS connection. */
  remoteAddress: string;
  /**
   * The server's caller's own state for this request (what its `decide` found, for its `connect`, `onTargetSettled`
   * and `onTunnel` to use): the server keeps it with the request and never reads it. Undefined until set.
   */
  callerState?: unknown;
}

/**
 * A refused CONNECT's status, as ztunnel answers them: 400 a request that can never succeed (not for this
 * destination), 401 denied by authorization policy, 503 a destination the server will not or cannot connect to.
 */
export type RefusalStatus = 400 | 401 | 503;

/** `status` defaults to 401 (policy). */
export type HboneDecision = { allow: true } | { allow: false; reason: string; status?: RefusalStatus };

/**
 * Why the server turned a client away, for an operator's logs and counters:
 *   tls            the TLS handshake failed or its client certificate was not acceptable (none, another mesh's,
 *                  expired, no ALPN h2, not TLS at all)
 *   peer_identity  the certificate chained to the roots but names no SPIFFE identity of the trust domain
 *   method         a request that is not CONNECT (400)
 *   authority      a malformed `:authority` (400)
 *   denied         the caller's `decide` refused it (its status: 400, 401 or 503)
 *   stream_flood   the client reset too many streams before they were answered: GOAWAY ENHANCE_YOUR_CALM
 */
export type HboneRejectionReason = 'tls' | 'peer_identity' | 'method' | 'authority' | 'denied' | 'stream_flood';

export interface HboneRejection {
  reason: HboneRejectionReason;
  error: HboneError;
  /** The client's address (the TCP peer of the HBONE connection). */
  remoteAddress: string;
  /** The verified client identity, once the handshake succeeded. */
  peerIdentity?: SpiffeId;
  /** The request, for a refused stream. */
  request?: HboneRequest;
  /** The status answered, for a refused stream. */
  status?: RefusalStatus;
}

export interface HboneServerOptions {
  /**
   * The certificate the server presents on a connection accepted by `socket` (e.g. the destination pod's).
   * Return the same object for the same certificate: the TLS context is cached per object.
   */
  certificateFor: (socket: net.Socket) => WorkloadCertificate | undefined;
  /** Trust roots and domain client certificates must chain to. */
  rootsPem: string[];
  trustDomain: string;
  /** Allow or deny a CONNECT (policy, destination checks). Denied -> the decision's status, 401 by default. Default: allow. */
  decide?: (request: HboneRequest) => HboneDecision | Promise<HboneDecision>;
  /**
   * Takes over an allowed CONNECT stream instead of connecting to its target (a waypoint terminates the stream and
   * chooses where it goes): the handler answers it (`stream.respond`) and owns it from then on. Default: absent.
   */
  terminate?: (request: HboneRequest, stream: http2.ServerHttp2Stream) => void;
  /** Opens the connection to the target; refused/unreachable -> 503. Default: net.connect to target. */
  connect?: (request: HboneRequest) => net.Socket;
  /**
   * Told how each target connect ended, before the server answers the stream: `error` undefined when the socket
   * connected (the 200 and the splice follow; `onTunnel` when it ends), else why not (`connect` threw, the socket
   * failed or timed out: a 503 follows; or `streamGone`: the client's stream closed first, nothing is answered). Once
   * per `connect` call. The caller needs no listeners of its own on the socket for this.
   */
  onTargetSettled?: (request: HboneRequest, error: Error | undefined, streamGone: boolean) => void;
  /** Called with each established stream's TCP pair (for telemetry), optional. */
  onTunnel?: (event: HboneTunnelEvent) => void;
  streamWindowBytes?: number;
  connectionWindowBytes?: number;
  /** The target connect must complete within this, else 503. Default 10 s. */
  connectTimeoutMs?: number;
  /** A client's TLS handshake must complete within this. Default 10 s. */
  handshakeTimeoutMs?: number;
  /** Streams one client connection may hold open at once (SETTINGS_MAX_CONCURRENT_STREAMS). Default 200. */
  maxConcurrentStreams?: number;
  /** PING every client connection this often; 0 turns keepalive off. Default 10 s. */
  keepaliveIntervalMs?: number;
  /** A PING unanswered for this long closes the connection and its tunnels. Default 20 s. */
  keepaliveTimeoutMs?: number;
  /** A client connection with no open stream for this long is closed (GOAWAY NO_ERROR); 0 never. Default 10 min. */
  idleTimeoutMs?: number;
  /** Streams a client may reset before they were answered: this many at once, then `prematureResetRatePerSecond`. */
  prematureResetBurst?: number;
  prematureResetRatePerSecond?: number;
  /** Told about every rejected connection, protocol error and refused request (for logs and counters). */
  onError?: (error: HboneError) => void;
  /** Told about every client turned away (a failed handshake, a refused request, a flood), with the facts known. */
  onRejected?: (rejection: HboneRejection) => void;
  /**
   * The HTTP/2 implementation (config.ts): AMBIT_HBONE_IMPL when absent, the own layer when that is unset. `terminate`
   * hands out node:http2 streams, so a server with it is always `node`.
   */
  implementation?: HboneImplementation;
}

export interface HboneTunnelEvent {
  request: HboneRequest;
  /** Bytes from the client to the target, and back. */
  bytesIn: number;
  bytesOut: number;
  durationMs: number;
  error?: string;
}

/** An open HBONE stream: write to send to the destination, read what it sends back. end() half-closes. */
export type HboneStream = Duplex;
