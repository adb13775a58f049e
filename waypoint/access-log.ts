/**
 * One JSON access-log line per HTTP request the waypoint handled, with Envoy's field names (as in Istio's JSON
 * access log: method, path, protocol, response_code, response_flags, duration, bytes_received, bytes_sent,
 * upstream_host, route_name, request_id, authority) and ztunnel's src/dst blocks for the identities.
 *
 * Into the waypoint's own destination (log-destination.ts) the line is written as bytes straight into the batch the
 * destination hands to the file writer, with pino's framing (shared/telemetry/raw-log-line.ts): member names encoded
 * once, numbers as digits, reused src/dst blocks as their bytes, strings copied as they are checked (JSON.stringify
 * escapes any that needs it): no string, template or object per request (session s12: the text form's strings, the
 * batch's join and the record were about 3.5 KB of V8 heap per request). Through another plain pino logger the
 * same bytes go as text; any other logger gets the object (`requestLogLine`), the same fields in the same order (a
 * unit test holds the forms equal for generated records, with quotes, backslashes, control and non-ASCII text).
 *
 * Owns: the line's shape. Must not know about: how the request was served. No object per request on the text path,
 * nothing per chunk.
 */
import type { Logger } from 'pino';
import type { HboneRequest } from '../shared/hbone/index.ts';
import type { Service } from '../shared/mesh/service.ts';
import { workloadIdentity, type Workload } from '../shared/mesh/workload.ts';
import { rawLineLogger, type RawLineLogger } from '../shared/telemetry/raw-log-line.ts';
import { encodedOnce, JsonTextBuffer } from './json-text-buffer.ts';
import { BatchedLogDestination } from './log-destination.ts';
import type { AuthzLogFields } from './authz/request-gate.ts';
import { cachedServiceKey } from './service-keys.ts';

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

// The members' names and the text between values, encoded once.
const METHOD = encodedOnce(',"method":');
const PATH = encodedOnce(',"path":');
const PROTOCOL = encodedOnce(',"protocol":');
const AUTHORITY = encodedOnce(',"authority":');
const RESPONSE_CODE = encodedOnce(',"response_code":');
const RESPONSE_FLAGS = encodedOnce(',"response_flags":');
const GRPC_STATUS = encodedOnce(',"grpc_status":');
const DETAILS = encodedOnce(',"response_code_details":');
const DURATION = encodedOnce(',"duration":');
const BYTES_RECEIVED = encodedOnce(',"bytes_received":');
const BYTES_SENT = encodedOnce(',"bytes_sent":');
const UPSTREAM_HOST = encodedOnce(',"upstream_host":');
const UPSTREAM_CLUSTER = encodedOnce(',"upstream_cluster":');
const ATTEMPTS = encodedOnce(',"attempts":');
const ROUTE_NAME = encodedOnce(',"route_name":');
const RULE_NAME = encodedOnce(',"rule_name":');
const REQUEST_ID = encodedOnce(',"request_id":');
const TRACE_ID = encodedOnce(',"trace_id":');
const SPAN_ID = encodedOnce(',"span_id":');
const SRC = encodedOnce(',"src":');
const DST = encodedOnce(',"dst":');
const AUTHZ = encodedOnce(',"authz":');
const SRC_PRINCIPAL = encodedOnce('{"principal":');
const DST_PRINCIPAL = SRC_PRINCIPAL;
const SRC_WORKLOAD = encodedOnce(',"workload":');
const NAMESPACE = encodedOnce(',"namespace":');
const SRC_ADDRESS = encodedOnce(',"address":');
const DST_SERVICE = encodedOnce(',"service":');
const BLOCK_END = encodedOnce('}');
const DASH = encodedOnce('"-"');
const TIME = encodedOnce(',"time":');
const MESSAGE = encodedOnce(`,"msg":${REQUEST_LOG_MESSAGE_JSON}`);

/**
 * The JSON of src/dst blocks a caller reuses across requests (a client stream's source, an endpoint's destination),
 * encoded once: `reusedBlock(block)` registers one; a block not registered is written field by field per line.
 */
const blockBytes = new WeakMap<object, Uint8Array>();

function writeSrc(buffer: JsonTextBuffer, src: RequestRecord['src']): void {
  buffer.raw(SRC_PRINCIPAL);
  buffer.quoted(src.principal);
  buffer.raw(SRC_WORKLOAD);
  buffer.quoted(src.workload);
  buffer.raw(NAMESPACE);
  buffer.quoted(src.namespace);
  buffer.raw(SRC_ADDRESS);
  buffer.quoted(src.address);
  buffer.raw(BLOCK_END);
}

function writeDst(buffer: JsonTextBuffer, dst: RequestRecord['dst']): void {
  buffer.raw(DST_PRINCIPAL);
  buffer.quoted(dst.principal);
  buffer.raw(SRC_WORKLOAD);
  buffer.quoted(dst.workload);
  buffer.raw(NAMESPACE);
  buffer.quoted(dst.namespace);
  buffer.raw(DST_SERVICE);
  buffer.quoted(dst.service);
  buffer.raw(BLOCK_END);
}

/** A scratch buffer for text made once (reused blocks) and for loggers that take the fields as a string. */
const scratch = new JsonTextBuffer(2048);

/** Marks a src or dst block as reused by later lines (it must not change): its JSON is encoded now, once. */
export function reusedBlock<T extends RequestRecord['src'] | RequestRecord['dst']>(block: T): T {
  scratch.truncate(0);
  if ('address' in block) writeSrc(scratch, block);
  else writeDst(scratch, block as RequestRecord['dst']);
  blockBytes.set(block, Buffer.from(scratch.bytes.subarray(0, scratch.length)));
  return block;
}

/** What the line reads of a request's client stream (both HTTP paths' stream contexts): the src block is made at its first line. */
export interface LoggedStream {
  readonly hbone: HboneRequest;
  readonly source: Workload | undefined;
  srcBlock?: RequestRecord['src'];
}

/**
 * What the line reads of a forwarded request, whichever path served it: TryRequestBase's fields (http-proxy.ts's
 * LeanRequest, h2-proxy.ts's H2Request) or http-proxy.ts's record on Node's path.
 */
export interface TriedRequest {
  readonly context: LoggedStream;
  readonly requestId: string;
  readonly trace: { readonly traceId: string; readonly spanId: string };
  readonly entry: { readonly route: string; readonly ruleName: string } | undefined;
  readonly destination: Service;
  readonly endpoint: Workload | undefined;
  readonly upstreamHost: string;
  readonly attempts: number;
  readonly responseBytes: number;
}

/** Per endpoint object, the dst block of its last Service (reused while both stay the same objects). */
const dstBlocks = new WeakMap<Workload, { service: Service; block: RequestRecord['dst'] }>();

/** The dst block of a request answered by `endpoint` (none: 'unknown') of `destination`, made once per endpoint and Service. */
function dstBlockOf(endpoint: Workload | undefined, destination: Service): RequestRecord['dst'] {
  if (endpoint === undefined) return { principal: 'unknown', workload: 'unknown', namespace: 'unknown', service: destination.hostname };
  const cached = dstBlocks.get(endpoint);
  if (cached !== undefined && cached.service === destination) return cached.block;
  const block = reusedBlock({ principal: workloadIdentity(endpoint).uri, workload: endpoint.workloadName, namespace: endpoint.namespace, service: destination.hostname });
  dstBlocks.set(endpoint, { service: destination, block });
  return block;
}

/** The src block of a client stream's requests, made by its first line and kept on the stream's context. */
function srcBlockOf(context: LoggedStream): RequestRecord['src'] {
  const hbone = context.hbone;
  const source = context.source;
  const address = hbone.remoteAddress;
  return (context.srcBlock ??= reusedBlock({
    principal: hbone.peerIdentity.uri,
    workload: source?.workloadName ?? 'unknown',
    namespace: source?.namespace ?? hbone.peerIdentity.namespace,
    address: address.startsWith('::ffff:') ? address.slice(7) : address,
  }));
}

/**
 * Fills in the members of a request's line that both HTTP paths read the same way from the request (the bytes, the
 * upstream host and cluster, attempts, route and rule names, request and trace ids, the src and dst blocks, the
 * policy outcome); each path sets its own (method, path, protocol, authority, status, flags, details, duration,
 * grpc_status). `requestBytes`: the body's bytes as the path counted them; `authz`: the gate's fields of the request
 * object the gate saw.
 */
export function fillTryFields(line: RequestRecord, request: TriedRequest, requestBytes: number, authz: AuthzLogFields | undefined): void {
  const entry = request.entry;
  line.bytesReceived = requestBytes;
  line.bytesSent = request.responseBytes;
  line.upstreamHost = request.upstreamHost;
  line.upstreamCluster = cachedServiceKey(request.destination);
  line.attempts = request.attempts;
  line.routeName = entry?.route ?? '';
  line.ruleName = entry?.ruleName ?? '';
  line.requestId = request.requestId;
  line.traceId = request.trace.traceId;
  line.spanId = request.trace.spanId;
  line.src = srcBlockOf(request.context);
  line.dst = dstBlockOf(request.endpoint, request.destination);
  line.authz = authz;
}

/**
 * The members of `requestLogLine(record)` written into `buffer` with a leading comma, in the same order and with the
 * same values: numbers as digits, reused blocks as their bytes, strings copied as checked; every string a peer or a
 * configuration can choose that needs escaping goes through JSON.stringify.
 */
export function writeRequestFields(buffer: JsonTextBuffer, record: RequestRecord): void {
  buffer.raw(METHOD);
  buffer.quoted(record.method);
  buffer.raw(PATH);
  buffer.quoted(record.path);
  buffer.raw(PROTOCOL);
  buffer.quoted(record.protocol);
  buffer.raw(AUTHORITY);
  buffer.quoted(record.authority);
  buffer.raw(RESPONSE_CODE);
  buffer.number(record.status);
  buffer.raw(RESPONSE_FLAGS);
  buffer.quoted(record.flags);
  if (record.grpcStatus !== undefined) {
    buffer.raw(GRPC_STATUS);
    buffer.quoted(record.grpcStatus);
  }
  buffer.raw(DETAILS);
  buffer.quoted(record.details);
  buffer.raw(DURATION);
  buffer.number(Math.round(record.durationMs));
  buffer.raw(BYTES_RECEIVED);
  buffer.number(record.bytesReceived);
  buffer.raw(BYTES_SENT);
  buffer.number(record.bytesSent);
  buffer.raw(UPSTREAM_HOST);
  if (record.upstreamHost === '') buffer.raw(DASH);
  else buffer.quoted(record.upstreamHost);
  buffer.raw(UPSTREAM_CLUSTER);
  buffer.quoted(record.upstreamCluster);
  buffer.raw(ATTEMPTS);
  buffer.number(record.attempts);
  buffer.raw(ROUTE_NAME);
  if (record.routeName === '') buffer.raw(DASH);
  else buffer.quoted(record.routeName);
  buffer.raw(RULE_NAME);
  if (record.ruleName === '') buffer.raw(DASH);
  else buffer.quoted(record.ruleName);
  buffer.raw(REQUEST_ID);
  buffer.quoted(record.requestId);
  buffer.raw(TRACE_ID);
  buffer.quoted(record.traceId);
  buffer.raw(SPAN_ID);
  buffer.quoted(record.spanId);
  buffer.raw(SRC);
  const src = blockBytes.get(record.src);
  if (src !== undefined) buffer.raw(src);
  else writeSrc(buffer, record.src);
  buffer.raw(DST);
  const dst = blockBytes.get(record.dst);
  if (dst !== undefined) buffer.raw(dst);
  else writeDst(buffer, record.dst);
  if (record.authz) {
    buffer.raw(AUTHZ);
    buffer.text(JSON.stringify(record.authz));
  }
}

/** The members of `requestLogLine(record)` as JSON text with a leading comma (writeRequestFields' text). */
export function requestLogFieldsJson(record: RequestRecord): string {
  scratch.truncate(0);
  writeRequestFields(scratch, record);
  return scratch.toString();
}

/** How a logger's request lines are written: its text writer and, when its stream gathers bytes, that stream. */
interface LineTarget {
  raw: RawLineLogger;
  destination: BatchedLogDestination | undefined;
  /** The bindings' text last seen and its encoding (a child's bindings are read per line: they can change). */
  bindings: string;
  bindingsBytes: Uint8Array;
}

/** Each logger's target (null: no plain pino logger, it gets objects), found once. */
const lineTargets = new WeakMap<Logger, LineTarget | null>();

function lineTargetOf(log: Logger): LineTarget | null {
  let target = lineTargets.get(log);
  if (target === undefined) {
    const raw = rawLineLogger(log);
    target = raw === undefined ? null : { raw, destination: raw.stream instanceof BatchedLogDestination ? raw.stream : undefined, bindings: '', bindingsBytes: new Uint8Array(0) };
    lineTargets.set(log, target);
  }
  return target;
}

/**
 * One request's line. Into a BatchedLogDestination (the waypoint's own) it is written straight into the batch's
 * bytes, framed as pino frames a line (level, time, bindings, the fields, the message, the end); through another
 * plain pino logger as text; any other logger gets the object.
 */
export function logRequest(log: Logger, record: RequestRecord): void {
  const target = lineTargetOf(log);
  if (target === null) {
    log.info(requestLogLine(record), REQUEST_LOG_MESSAGE);
    return;
  }
  const raw = target.raw;
  if (!raw.enabled('info')) return;
  const destination = target.destination;
  if (destination === undefined) {
    raw.write('info', requestLogFieldsJson(record), REQUEST_LOG_MESSAGE_JSON);
    return;
  }
  const buffer = destination.lineBuffer;
  const start = buffer.length;
  try {
    buffer.text(raw.levelJson('info'));
    if (raw.epochTime) {
      buffer.raw(TIME);
      buffer.number(Date.now());
    } else {
      buffer.text(raw.timeJson());
    }
    const bindings = raw.bindingsJson();
    if (bindings !== target.bindings) {
      target.bindings = bindings;
      target.bindingsBytes = encodedOnce(bindings);
    }
    buffer.raw(target.bindingsBytes);
    writeRequestFields(buffer, record);
    buffer.raw(MESSAGE);
    buffer.text(raw.end);
  } catch (error) {
    // No half line in the batch.
    buffer.truncate(start);
    throw error;
  }
  destination.lineWritten();
}
