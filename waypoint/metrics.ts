/**
 * Istio's request metrics as the waypoint reports them (reporter="waypoint"), served on 15020 in Prometheus text.
 *
 * Owns: the metric names, labels and buckets (Istio's), and the registry. Must not know about: HTTP proxying.
 */
import { Counter, Histogram, Registry } from 'prom-client';

/** Istio's default buckets for istio_request_duration_milliseconds. */
export const ISTIO_DURATION_BUCKETS_MS = [0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000];

const LABELS = [
  'reporter', 'source_workload', 'source_workload_namespace', 'source_principal', 'destination_workload', 'destination_workload_namespace', 'destination_principal',
  'destination_service', 'destination_service_name', 'destination_service_namespace', 'request_protocol', 'response_code', 'response_flags', 'connection_security_policy',
] as const;

export type RequestLabels = Record<(typeof LABELS)[number], string>;

export class WaypointMetrics {
  readonly registry = new Registry();
  readonly #requests: Counter<(typeof LABELS)[number]>;
  readonly #duration: Histogram<(typeof LABELS)[number]>;

  constructor() {
    this.#requests = new Counter({ name: 'istio_requests_total', help: 'Requests handled by the waypoint', labelNames: LABELS, registers: [this.registry] });
    this.#duration = new Histogram({ name: 'istio_request_duration_milliseconds', help: 'Request duration at the waypoint', labelNames: LABELS, buckets: ISTIO_DURATION_BUCKETS_MS, registers: [this.registry] });
  }

  request(labels: RequestLabels, durationMs: number): void {
    this.#requests.inc(labels);
    this.#duration.observe(labels, durationMs);
  }
}
