/**
 * The access log: one JSON line per connection when it ends, through pino, with the facts an operator looks
 * for: who talked to whom (address, workload, namespace, identity, service), which way, how many bytes each
 * way, for how long, and what went wrong.
 *
 * Owns: the line's fields and its level (info when the connection ended cleanly, error when it failed, as
 * ztunnel logs them).
 * Must not know about: metrics, sockets, where the log goes (the pino logger it is given decides).
 *
 * Identities appear only for mutual TLS, where they were proven (outbound, the destination's is the one its
 * certificate carried, so a destination that was never reached has none); bytes are from the agent's side:
 * `bytes_sent` went to the remote peer (the destination for outbound, the source for inbound).
 *
 * The line is on by default (as ztunnel's), so it is written for every connection: through a plain pino logger it
 * is built as JSON text with one template (shared/telemetry/raw-log-line.ts), each workload's part escaped once per Workload object,
 * instead of an object per line that pino walks and JSON.stringifies nested object by nested object. Any other
 * logger gets the object (`accessLogLine`), the same fields in the same order.
 */
import type { ConnectionRecord } from '../proxy/report.ts';
import { workloadIdentity, type Workload } from '../../shared/mesh/workload.ts';
import { destinationPrincipalFor, NO_RESPONSE_FLAGS, responseFlagsFor, securityPolicyFor } from './metrics.ts';
import { rawLineLogger, type RawLineLogger } from '../../shared/telemetry/raw-log-line.ts';

/** The pino methods the access log needs. */
export interface AccessLogger {
  info(object: object, message: string): void;
  error(object: object, message: string): void;
  debug(object: object, message: string): void;
  isLevelEnabled(level: string): boolean;
}

export const ACCESS_LOG_MESSAGE = 'connection closed';
export const ACCESS_LOG_OPENED_MESSAGE = 'connection opened';

export interface AccessLogLine {
  scope: 'access';
  direction: 'outbound' | 'inbound';
  src: { address?: string; workload?: string; namespace?: string; principal?: string };
  dst: { address: string; workload?: string; namespace?: string; principal?: string; service?: string };
  mtls: boolean;
  connection_security_policy: string;
  bytes_sent: number;
  bytes_received: number;
  duration_ms: number;
  response_flags: string;
  error?: string;
}

function hostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** The fields describing who talks to whom; shared by the opened (debug) and closed lines. */
function endpoints(record: ConnectionRecord): Pick<AccessLogLine, 'direction' | 'src' | 'dst' | 'mtls' | 'connection_security_policy'> {
  const { source, destination } = record;
  const src: AccessLogLine['src'] = {};
  if (record.sourceAddress) src.address = record.sourceAddress;
  if (source) {
    src.workload = source.name;
    src.namespace = source.namespace;
  }
  const dst: AccessLogLine['dst'] = { address: hostPort(record.destinationAddress.host, record.destinationAddress.port) };
  if (destination) {
    dst.workload = destination.name;
    dst.namespace = destination.namespace;
  }
  if (record.destinationService) dst.service = record.destinationService.hostname;
  if (record.mtls) {
    const sourcePrincipal = record.sourcePrincipal ?? (record.direction === 'outbound' && source ? workloadIdentity(source).uri : undefined);
    if (sourcePrincipal) src.principal = sourcePrincipal;
    const destinationPrincipal = destinationPrincipalFor(record);
    if (destinationPrincipal) dst.principal = destinationPrincipal;
  }
  return { direction: record.direction, src, dst, mtls: record.mtls, connection_security_policy: securityPolicyFor(record) };
}

/** The line logged when a connection ends. */
export function accessLogLine(record: ConnectionRecord): AccessLogLine {
  const line: AccessLogLine = {
    scope: 'access',
    ...endpoints(record),
    bytes_sent: record.bytesSent,
    bytes_received: record.bytesReceived,
    duration_ms: Math.round(record.durationMs * 1000) / 1000,
    response_flags: responseFlagsFor(record),
  };
  if (record.error) line.error = record.error.message;
  return line;
}

/** `"workload":…,"namespace":…` of a workload, escaped once per Workload object (workloads are replaced, never mutated). */
const workloadJsonCache = new WeakMap<Workload, string>();
/** A workload's own SPIFFE identity as a JSON string (the source principal of its outbound mTLS connections). */
const identityJsonCache = new WeakMap<Workload, string>();

function workloadJson(workload: Workload): string {
  let json = workloadJsonCache.get(workload);
  if (json === undefined) {
    json = `,"workload":${JSON.stringify(workload.name)},"namespace":${JSON.stringify(workload.namespace)}`;
    workloadJsonCache.set(workload, json);
  }
  return json;
}

function identityJson(workload: Workload): string {
  let json = identityJsonCache.get(workload);
  if (json === undefined) {
    json = JSON.stringify(workloadIdentity(workload).uri);
    identityJsonCache.set(workload, json);
  }
  return json;
}

/** A number as JSON writes it (non-finite numbers are null, as in JSON.stringify and pino). */
function numberJson(value: number): string {
  return Number.isFinite(value) ? String(value) : 'null';
}

/**
 * The fields of `accessLogLine(record)` as JSON object members with a leading comma, in the same order and with the
 * same values (a unit test holds the two equal for generated records).
 */
export function accessLogFieldsJson(record: ConnectionRecord, responseFlags: string): string {
  const { source, destination } = record;
  // src: {} when nothing is known, as the object form; the first member has no comma.
  let src = '';
  if (record.sourceAddress) src = `,"address":${JSON.stringify(record.sourceAddress)}`;
  if (source) src += workloadJson(source);
  let dst = `"address":${JSON.stringify(hostPort(record.destinationAddress.host, record.destinationAddress.port))}`;
  if (destination) dst += workloadJson(destination);
  if (record.destinationService) dst += `,"service":${JSON.stringify(record.destinationService.hostname)}`;
  if (record.mtls) {
    const sourcePrincipal = record.sourcePrincipal !== undefined ? JSON.stringify(record.sourcePrincipal) : record.direction === 'outbound' && source ? identityJson(source) : undefined;
    if (sourcePrincipal !== undefined && sourcePrincipal !== '""') src += `,"principal":${sourcePrincipal}`;
    const destinationPrincipal = destinationPrincipalFor(record);
    if (destinationPrincipal) dst += `,"principal":${JSON.stringify(destinationPrincipal)}`;
  }
  // direction and the security policy are fixed words: no escaping needed.
  let fields = `,"scope":"access","direction":"${record.direction}","src":{${src.slice(1)}},"dst":{${dst}},"mtls":${record.mtls ? 'true' : 'false'},` +
    `"connection_security_policy":"${securityPolicyFor(record)}","bytes_sent":${numberJson(record.bytesSent)},"bytes_received":${numberJson(record.bytesReceived)},` +
    `"duration_ms":${numberJson(Math.round(record.durationMs * 1000) / 1000)},"response_flags":${JSON.stringify(responseFlags)}`;
  if (record.error) {
    const message: unknown = record.error.message;
    if (message !== undefined) fields += `,"error":${JSON.stringify(String(message))}`;
  }
  return fields;
}

const ACCESS_LOG_MESSAGE_JSON = JSON.stringify(ACCESS_LOG_MESSAGE);

export class AccessLog {
  readonly #log: AccessLogger;
  /** The logger's own output for lines built as text; undefined for a logger that is no plain pino logger. */
  readonly #raw: RawLineLogger | undefined;

  constructor(log: AccessLogger) {
    this.#log = log;
    this.#raw = rawLineLogger(log);
  }

  /** At debug level only (ztunnel does the same): a line when a connection opens. */
  opened(record: ConnectionRecord): void {
    if (!this.#log.isLevelEnabled('debug')) return;
    this.#log.debug({ scope: 'access', ...endpoints(record) }, ACCESS_LOG_OPENED_MESSAGE);
  }

  /** True when a connection that ends cleanly gets a line (info enabled); failures always do (error). */
  linePerConnection(): boolean {
    return this.#raw ? this.#raw.enabled('info') : this.#log.isLevelEnabled('info');
  }

  closed(record: ConnectionRecord): void {
    if (this.#raw) {
      const flags = responseFlagsFor(record);
      const level = record.error !== undefined || flags !== NO_RESPONSE_FLAGS ? 'error' : 'info';
      if (this.#raw.enabled(level)) this.#raw.write(level, accessLogFieldsJson(record, flags), ACCESS_LOG_MESSAGE_JSON);
      return;
    }
    const line = accessLogLine(record);
    if (line.error !== undefined || line.response_flags !== '-') this.#log.error(line, ACCESS_LOG_MESSAGE);
    else this.#log.info(line, ACCESS_LOG_MESSAGE);
  }
}
