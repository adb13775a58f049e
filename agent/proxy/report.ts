/**
 * What the proxy tells telemetry about each connection when it ends. Metrics and access logs (a later step)
 * implement ConnectionReporter; the proxy only calls it.
 *
 * Owns: the shape of a finished connection's record.
 * Must not know about: metric names, log formats.
 */
import type { HostPort } from '../../shared/hbone/index.ts';
import type { Workload } from '../state/workload.ts';

export interface ConnectionRecord {
  direction: 'outbound' | 'inbound';
  source?: Workload | undefined;
  /** Verified peer identity (inbound HBONE). */
  sourcePrincipal?: string;
  sourceAddress?: string;
  destination?: Workload | undefined;
  destinationAddress: HostPort;
  mtls: boolean;
  bytesSent: number;
  bytesReceived: number;
  durationMs: number;
  error?: Error;
}

export interface ConnectionReporter {
  closed(record: ConnectionRecord): void;
}

/** Writes one line per finished connection through `log` (pino-compatible). */
export function loggingReporter(log: { info: (object: object, message: string) => void }): ConnectionReporter {
  return {
    closed(record) {
      log.info(
        {
          direction: record.direction,
          src: { workload: record.source?.name, namespace: record.source?.namespace, principal: record.sourcePrincipal, address: record.sourceAddress },
          dst: { workload: record.destination?.name, namespace: record.destination?.namespace, address: `${record.destinationAddress.host}:${record.destinationAddress.port}` },
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
