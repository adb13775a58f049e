/**
 * One JSON access-log line per HTTP request the waypoint handled, with Envoy's field names (as in Istio's JSON
 * access log: method, path, protocol, response_code, response_flags, duration, bytes_received, bytes_sent,
 * upstream_host, route_name, request_id, authority) and ztunnel's src/dst blocks for the identities.
 *
 * Through a plain pino logger the line is built as JSON text with one template and written on the logger's own
 * stream with pino's framing (shared/telemetry/raw-log-line.ts), instead of an object per request that pino walks
 * and serialises key by key: that object and its serialisation were about 16 µs of CPU per request, a twentieth of
 * the waypoint's whole cost per HTTP/1.1 request. Any other logger gets the object (`requestLogLine`), the same
 * fields in the same order (a unit test holds the two equal for generated records).
 *
 * Owns: the line's shape. Must not know about: how the request was served. No object per request on the text path,
 * nothing per chunk.
 */
import type { Logger } from 'pino';
import { rawLineLogger, type RawLineLogger } from '../shared/telemetry/raw-log-line.ts';
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

export const REQUEST_LOG_MESSAGE = 'request';
const REQUEST_LOG_MESSAGE_JSON = JSON.stringify(REQUEST_LOG_MESSAGE);

/** The line's fields as an object (for loggers that are no plain pino logger, and to hold the text form to). */
export function requestLogLine(record: RequestRecord): Record<string, unknown> {
  return {
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
  };
}

/** A number as JSON writes it (non-finite numbers are null, as in JSON.stringify and pino). */
function numberJson(value: number): string {
  return Number.isFinite(value) ? String(value) : 'null';
}

const json = JSON.stringify;

/**
 * A string as JSON.stringify writes it: printable ASCII without `"` or `\` needs no escaping and is only quoted (no
 * call into the engine's serialiser, which costs more than the loop for the line's short strings); anything else
 * goes through JSON.stringify.
 */
function quote(text: string): string {
  for (let index = 0; index < text.length; index++) {
    const code = text.charCodeAt(index);
    if (code < 0x20 || code === 0x22 || code === 0x5c || code > 0x7e) return json(text);
  }
  return `"${text}"`;
}

/**
 * The JSON text of src/dst blocks a caller reuses across requests (a client stream's source, an endpoint's
 * destination), made once: `reusedBlock(block)` registers one; a block not registered is serialised per line.
 */
const blockJson = new WeakMap<object, string>();

function srcJson(src: RequestRecord['src']): string {
  return `{"principal":${quote(src.principal)},"workload":${quote(src.workload)},"namespace":${quote(src.namespace)},"address":${quote(src.address)}}`;
}

function dstJson(dst: RequestRecord['dst']): string {
  return `{"principal":${quote(dst.principal)},"workload":${quote(dst.workload)},"namespace":${quote(dst.namespace)},"service":${quote(dst.service)}}`;
}

/** Marks a src or dst block as reused by later lines (it must not change): its JSON text is made now, once. */
export function reusedBlock<T extends RequestRecord['src'] | RequestRecord['dst']>(block: T): T {
  blockJson.set(block, 'address' in block ? srcJson(block) : dstJson(block));
  return block;
}

/**
 * The fields of `requestLogLine(record)` as JSON object members with a leading comma, in the same order and with the
 * same values. Every string a peer or a configuration can choose is escaped by JSON.stringify.
 */
export function requestLogFieldsJson(record: RequestRecord): string {
  const { src, dst } = record;
  let fields = `,"method":${quote(record.method)},"path":${quote(record.path)},"protocol":${quote(record.protocol)},"authority":${quote(record.authority)},` +
    `"response_code":${numberJson(record.status)},"response_flags":${quote(record.flags)}`;
  if (record.grpcStatus !== undefined) fields += `,"grpc_status":${quote(record.grpcStatus)}`;
  fields += `,"response_code_details":${quote(record.details)},"duration":${numberJson(Math.round(record.durationMs))},"bytes_received":${numberJson(record.bytesReceived)},` +
    `"bytes_sent":${numberJson(record.bytesSent)},"upstream_host":${quote(record.upstreamHost || '-')},"upstream_cluster":${quote(record.upstreamCluster)},` +
    `"attempts":${numberJson(record.attempts)},"route_name":${quote(record.routeName || '-')},"rule_name":${quote(record.ruleName || '-')},` +
    `"request_id":${quote(record.requestId)},"trace_id":${quote(record.traceId)},"span_id":${quote(record.spanId)},` +
    `"src":${blockJson.get(src) ?? srcJson(src)},"dst":${blockJson.get(dst) ?? dstJson(dst)}`;
  if (record.authz) fields += `,"authz":${json(record.authz)}`;
  return fields;
}

/** Each logger's text writer (null: no plain pino logger, it gets objects), found once. */
const rawWriters = new WeakMap<Logger, RawLineLogger | null>();

export function logRequest(log: Logger, record: RequestRecord): void {
  let raw = rawWriters.get(log);
  if (raw === undefined) {
    raw = rawLineLogger(log) ?? null;
    rawWriters.set(log, raw);
  }
  if (raw !== null) {
    if (raw.enabled('info')) raw.write('info', requestLogFieldsJson(record), REQUEST_LOG_MESSAGE_JSON);
    return;
  }
  log.info(requestLogLine(record), REQUEST_LOG_MESSAGE);
}
