/**
 * What the proxy tells telemetry about each connection: once when it opens, once when it ends. Metrics and
 * access logs (agent/telemetry/) implement ConnectionReporter; the proxy only calls it.
 *
 * Owns: the shape of a connection's record and the contract of the two calls.
 * Must not know about: metric names, label rules, log formats.
 */
import type { HostPort } from '../../shared/hbone/index.ts';
import type { Workload } from '../../shared/mesh/workload.ts';

/** Bytes moved so far, with the same meaning as ConnectionRecord's bytesSent/bytesReceived. */
export interface ByteCounts {
  sent: number;
  received: number;
}

/** The service a client addressed (Istio's destination_service labels), when the proxy knows it. */
export interface ServiceRef {
  /** e.g. `reviews.default.svc.cluster.local` */
  hostname: string;
  name: string;
  namespace: string;
}

export interface ConnectionRecord {
  direction: 'outbound' | 'inbound';
  source?: Workload | undefined;
  /** Verified peer identity (inbound HBONE). */
  sourcePrincipal?: string;
  sourceAddress?: string;
  destination?: Workload | undefined;
  /**
   * Verified peer identity (outbound HBONE): the SPIFFE URI the destination's certificate proved, set when the
   * tunnel is established. Telemetry reports it, never the identity the workload table expected.
   */
  destinationPrincipal?: string;
  destinationAddress: HostPort;
  destinationService?: ServiceRef | undefined;
  mtls: boolean;
  /** Bytes the agent sent towards the remote peer: the destination for outbound, the source for inbound. */
  bytesSent: number;
  /** Bytes the agent received from the remote peer. */
  bytesReceived: number;
  durationMs: number;
  error?: Error;
  /** Envoy-style response flag (UF, UAEX, ...); derived from `error` when absent. */
  responseFlags?: string;
  /**
   * Reads the live byte counts (socket.bytesRead/bytesWritten), so counters move while a long connection is
   * open. Telemetry calls it when metrics are scraped, never per chunk; it must be cheap and never throw.
   */
  liveBytes?: () => ByteCounts;
}

export interface ConnectionReporter {
  /**
   * A connection was accepted and its path chosen. Pass the same record object to `closed` when it ends
   * (fill in bytes, duration, error on it): telemetry matches the two calls by object identity.
   */
  opened(record: ConnectionRecord): void;
  /**
   * Whether a connection that ends cleanly needs its source address (the access log writes a line for it: info or
   * below). False: the proxy may leave `sourceAddress` out and read it only when the connection fails, sparing a
   * getpeername per connection. Absent: true.
   */
  sourceAddressWanted?(): boolean;
  /** The connection ended; call exactly once. A record never `opened` counts as opened and closed at once. */
  closed(record: ConnectionRecord): void;
  /**
   * A connection or tunnel request turned away before it reached the application (a failed handshake, a request
   * for another destination, a flood), never `opened`: counted like a closed connection with its response flags
   * and under `reason`, logged at a bounded rate (a peer can cause these as fast as it likes).
   */
  rejected?(record: ConnectionRecord, reason: RejectionReason): void;
}

/**
 * Why a connection was turned away, the `reason` label of `ambit_connections_rejected_total`:
 *   tls, peer_identity   the HBONE handshake failed / the certificate names no identity of the trust domain
 *   bad_method, bad_authority   a request that is not CONNECT / a malformed `:authority` (400)
 *   misdirected          a CONNECT for an address that is not the pod's: a relay attempt (400)
 *   proxy_port           a CONNECT for the pod's own proxy ports 15001/15006/15008: a tunnel in a tunnel (503)
 *   stream_flood         too many streams reset before they were answered: GOAWAY ENHANCE_YOUR_CALM
 */
export type RejectionReason = 'tls' | 'peer_identity' | 'bad_method' | 'bad_authority' | 'misdirected' | 'proxy_port' | 'stream_flood';

/** Writes one line per finished connection through `log` (pino-compatible); kept for tools without telemetry. */
export function loggingReporter(log: { info: (object: object, message: string) => void }): ConnectionReporter {
  return {
    opened() {},
    closed(record) {
      log.info(
        {
          direction: record.direction,
          src: { workload: record.source?.name, namespace: record.source?.namespace, principal: record.sourcePrincipal, address: record.sourceAddress },
          dst: { workload: record.destination?.name, namespace: record.destination?.namespace, principal: record.destinationPrincipal, address: `${record.destinationAddress.host}:${record.destinationAddress.port}` },
          mtls: record.mtls,
          bytes_sent: record.bytesSent,
          bytes_received: record.bytesReceived,
          duration_ms: Math.round(record.durationMs * 1000) / 1000,
          error: record.error?.message,
        },
        'connection closed',
      );
    },
  };
}
