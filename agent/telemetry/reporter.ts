/**
 * The ConnectionReporter the agent's proxy calls: every connection counted in metrics and written to the
 * access log.
 *
 * Owns: fanning the proxy's calls out to metrics, the access log and the rejection log, and keeping a telemetry failure
 * from ever breaking a connection.
 * Must not know about: metric names or log fields (metrics.ts, access-log.ts).
 */
import type { ConnectionRecord, ConnectionReporter, RejectionReason } from '../proxy/report.ts';
import type { AccessLog } from './access-log.ts';
import type { AgentMetrics } from './metrics.ts';
import type { RejectionLog } from './rejection-log.ts';

export interface TelemetryReporterOptions {
  metrics: AgentMetrics;
  accessLog?: AccessLog;
  /** Rejections (failed handshakes, refused requests), logged at a bounded rate. */
  rejectionLog?: RejectionLog;
  /** Told when telemetry itself throws (a bug): the connection goes on regardless. */
  onError?: (error: Error) => void;
}

export function telemetryReporter(options: TelemetryReporterOptions): ConnectionReporter {
  const { metrics, accessLog, rejectionLog } = options;
  const onError = options.onError ?? (() => {});
  return {
    opened(record: ConnectionRecord): void {
      try {
        metrics.connectionOpened(record);
        accessLog?.opened(record);
      } catch (error) {
        onError(error as Error);
      }
    },
    sourceAddressWanted(): boolean {
      return accessLog?.linePerConnection() ?? false;
    },
    closed(record: ConnectionRecord): void {
      try {
        metrics.connectionClosed(record);
        accessLog?.closed(record);
      } catch (error) {
        onError(error as Error);
      }
    },
    rejected(record: ConnectionRecord, reason: RejectionReason): void {
      try {
        metrics.connectionRejected(record, reason);
        rejectionLog?.rejected(record, reason);
      } catch (error) {
        onError(error as Error);
      }
    },
  };
}
