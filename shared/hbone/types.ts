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
}

export type HboneDecision = { allow: true } | { allow: false; reason: string };

export interface HboneServerOptions {
  /**
   * The certificate the server presents on a connection accepted by `socket` (e.g. the destination pod's).
   * Return the same object for the same certificate: the TLS context is cached per object.
   */
  certificateFor: (socket: net.Socket) => WorkloadCertificate | undefined;
  /** Trust roots and domain client certificates must chain to. */
  rootsPem: string[];
  trustDomain: string;
  /** Allow or deny a CONNECT (policy). Denied -> 401. Default: allow. */
  decide?: (request: HboneRequest) => HboneDecision | Promise<HboneDecision>;
  /**
   * Takes over an allowed CONNECT stream instead of connecting to its target (a waypoint terminates the stream and
   * chooses where it goes): the handler answers it (`stream.respond`) and owns it from then on. Default: absent.
   */
  terminate?: (request: HboneRequest, stream: http2.ServerHttp2Stream) => void;
  /** Opens the connection to the target; refused/unreachable -> 503. Default: net.connect to target. */
  connect?: (request: HboneRequest) => net.Socket;
  /** Called with each established stream's TCP pair (for telemetry), optional. */
  onTunnel?: (event: HboneTunnelEvent) => void;
  streamWindowBytes?: number;
  connectionWindowBytes?: number;
  /** The target connect must complete within this, else 503. Default 10 s. */
  connectTimeoutMs?: number;
  /** A client's TLS handshake must complete within this. Default 10 s. */
  handshakeTimeoutMs?: number;
  /** Streams one client connection may hold open at once (SETTINGS_MAX_CONCURRENT_STREAMS). Default 1000. */
  maxConcurrentStreams?: number;
  /** Told about every rejected connection, protocol error and refused request (for logs and counters). */
  onError?: (error: HboneError) => void;
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
