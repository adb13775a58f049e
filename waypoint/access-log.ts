/**
 * One JSON access-log line per HTTP request the waypoint handled, with Envoy's field names (as in Istio's JSON
 * access log: method, path, protocol, response_code, response_flags, duration, bytes_received, bytes_sent,
 * upstream_host, route_name, request_id, authority) and ztunnel's src/dst blocks for the identities.
 *
 * Owns: the line's shape. Must not know about: how the request was served. One object per request, none per chunk.
 */
import type { Logger } from 'pino';
import type { AuthzLogFields } from './authz/request-gate.ts';

export interface RequestRecord {
  method: string;
  /** The path (and query) as the client sent it. */
  path: string;
  protocol: string;
  authority: string;
  status: number;
  flags: string;
  /** Why the waypoint answered itself (no route, redirect, timeout, ...), as Envoy's response_code_details. */
  details: string;
  durationMs: number;
  bytesReceived: number;
  bytesSent: number;
  /** `ip:port` of the endpoint that answered; '' when none did. */
  upstreamHost: string;
  /** `<namespace>/<hostname>` of the Service the request went to. */
  upstreamCluster: string;
  attempts: number;
  routeName: string;
  ruleName: string;
  requestId: string;
  traceId: string;
  spanId: string;
  src: { principal: string; workload: string; namespace: string; address: string };
  dst: { principal: string; workload: string; namespace: string; service: string };
  /** The gRPC status of a gRPC answer (Envoy's %GRPC_STATUS(NUMBER)%), when there was one. */
  grpcStatus?: string;
  /** The L7 policy outcome (decision, policy, rule, JWT principal, rate limit), when a policy applied. */
  authz?: AuthzLogFields | undefined;
}

export function logRequest(log: Logger, record: RequestRecord): void {
  log.info(
    {
      method: record.method,
      path: record.path,
      protocol: record.protocol,
      authority: record.authority,
      response_code: record.status,
      response_flags: record.flags,
      ...(record.grpcStatus !== undefined ? { grpc_status: record.grpcStatus } : {}),
      response_code_details: record.details,
      duration: Math.round(record.durationMs),
      bytes_received: record.bytesReceived,
      bytes_sent: record.bytesSent,
      upstream_host: record.upstreamHost || '-',
      upstream_cluster: record.upstreamCluster,
      attempts: record.attempts,
      route_name: record.routeName || '-',
      rule_name: record.ruleName || '-',
      request_id: record.requestId,
      trace_id: record.traceId,
      span_id: record.spanId,
      src: record.src,
      dst: record.dst,
      ...(record.authz ? { authz: record.authz } : {}),
    },
    'request',
  );
}
