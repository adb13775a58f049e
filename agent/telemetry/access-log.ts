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
 */
import type { ConnectionRecord } from '../proxy/report.ts';
import { workloadIdentity } from '../../shared/mesh/workload.ts';
import { destinationPrincipalFor, responseFlagsFor, securityPolicyFor } from './metrics.ts';

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

export class AccessLog {
  readonly #log: AccessLogger;

  constructor(log: AccessLogger) {
    this.#log = log;
  }

  /** At debug level only (ztunnel does the same): a line when a connection opens. */
  opened(record: ConnectionRecord): void {
    if (!this.#log.isLevelEnabled('debug')) return;
    this.#log.debug({ scope: 'access', ...endpoints(record) }, ACCESS_LOG_OPENED_MESSAGE);
  }

  closed(record: ConnectionRecord): void {
    const line = accessLogLine(record);
    if (line.error !== undefined || line.response_flags !== '-') this.#log.error(line, ACCESS_LOG_MESSAGE);
    else this.#log.info(line, ACCESS_LOG_MESSAGE);
  }
}
