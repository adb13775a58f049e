/**
 * The ConnectionReporter the agent's proxy calls: every connection counted in metrics and written to the
 * access log.
 *
 * Owns: fanning the proxy's two calls out to metrics and the access log, and keeping a telemetry failure
 * from ever breaking a connection.
 * Must not know about: metric names or log fields (metrics.ts, access-log.ts).
 */
import type { ConnectionRecord, ConnectionReporter } from '../proxy/report.ts';
import type { AccessLog } from './access-log.ts';
import type { AgentMetrics } from './metrics.ts';

export interface TelemetryReporterOptions {
  metrics: AgentMetrics;
  accessLog?: AccessLog;
  /** Told when telemetry itself throws (a bug): the connection goes on regardless. */
  onError?: (error: Error) => void;
}

export function telemetryReporter(options: TelemetryReporterOptions): ConnectionReporter {
  const { metrics, accessLog } = options;
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
    closed(record: ConnectionRecord): void {
      try {
        metrics.connectionClosed(record);
        accessLog?.closed(record);
      } catch (error) {
        onError(error as Error);
      }
    },
  };
}
