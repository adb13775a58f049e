/**
 * Istio's request metrics as the waypoint reports them (reporter="waypoint"), served on 15020 in Prometheus text:
 * `istio_requests_total`, `istio_request_duration_milliseconds`, `istio_request_bytes`, `istio_response_bytes`
 * with Istio's standard labels.
 *
 * Owns: the metric names, labels and buckets (Istio's), and the registry. Must not know about: HTTP proxying.
 */
import { Counter, Histogram, Registry } from 'prom-client';
import type { SpiffeId } from '../shared/identity/index.ts';
import type { Service } from '../shared/mesh/service.ts';
import { workloadIdentity, type Workload } from '../shared/mesh/workload.ts';

/**
 * Istio's buckets for istio_request_duration_milliseconds: Envoy's default histogram buckets, which Istio's proxies
 * use for every istio_* histogram (the byte-size ones too).
 */
export const ISTIO_DURATION_BUCKETS_MS = [0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000];
export const ISTIO_BYTES_BUCKETS = ISTIO_DURATION_BUCKETS_MS;

const LABELS = [
  'reporter', 'source_workload', 'source_workload_namespace', 'source_principal', 'source_app', 'source_version', 'source_canonical_service', 'source_canonical_revision', 'source_cluster',
  'destination_workload', 'destination_workload_namespace', 'destination_principal', 'destination_app', 'destination_version', 'destination_service', 'destination_service_name',
  'destination_service_namespace', 'destination_canonical_service', 'destination_canonical_revision', 'destination_cluster', 'request_protocol', 'response_code', 'grpc_response_status',
  'response_flags', 'connection_security_policy',
] as const;

export type RequestLabels = Record<(typeof LABELS)[number], string>;

/** Istio's labels of one request the waypoint handled (both HTTP paths use this). */
export function requestLabels(request: {
  source: Workload | undefined;
  peer: SpiffeId;
  endpoint: Workload | undefined;
  service: Service;
  protocol: 'http' | 'grpc';
  status: number;
  flags: string;
  /** The gRPC status of a gRPC answer ('' otherwise, as Istio's label is). */
  grpcStatus?: string;
}): RequestLabels {
  const { source, endpoint, service } = request;
  return {
    reporter: 'waypoint',
    source_workload: source?.workloadName ?? 'unknown',
    source_workload_namespace: source?.namespace ?? request.peer.namespace,
    source_principal: request.peer.uri,
    source_app: source?.canonicalName ?? 'unknown',
    source_version: source?.canonicalRevision ?? 'unknown',
    source_canonical_service: source?.canonicalName ?? 'unknown',
    source_canonical_revision: source?.canonicalRevision ?? 'latest',
    source_cluster: 'Kubernetes',
    destination_workload: endpoint?.workloadName ?? 'unknown',
    destination_workload_namespace: endpoint?.namespace ?? 'unknown',
    destination_principal: endpoint ? workloadIdentity(endpoint).uri : 'unknown',
    destination_app: endpoint?.canonicalName ?? 'unknown',
    destination_version: endpoint?.canonicalRevision ?? 'unknown',
    destination_service: service.hostname,
    destination_service_name: service.name,
    destination_service_namespace: service.namespace,
    destination_canonical_service: endpoint?.canonicalName ?? 'unknown',
    destination_canonical_revision: endpoint?.canonicalRevision ?? 'latest',
    destination_cluster: 'Kubernetes',
    request_protocol: request.protocol,
    response_code: String(request.status),
    grpc_response_status: request.grpcStatus ?? '',
    response_flags: request.flags,
    connection_security_policy: 'mutual_tls',
  };
}

export class WaypointMetrics {
  readonly registry = new Registry();
  readonly #requests: Counter<(typeof LABELS)[number]>;
  readonly #duration: Histogram<(typeof LABELS)[number]>;
  readonly #requestBytes: Histogram<(typeof LABELS)[number]>;
  readonly #responseBytes: Histogram<(typeof LABELS)[number]>;

  constructor() {
    this.#requests = new Counter({ name: 'istio_requests_total', help: 'Requests handled by the waypoint', labelNames: LABELS, registers: [this.registry] });
    this.#duration = new Histogram({ name: 'istio_request_duration_milliseconds', help: 'Request duration at the waypoint', labelNames: LABELS, buckets: ISTIO_DURATION_BUCKETS_MS, registers: [this.registry] });
    this.#requestBytes = new Histogram({ name: 'istio_request_bytes', help: 'Request body sizes at the waypoint', labelNames: LABELS, buckets: ISTIO_BYTES_BUCKETS, registers: [this.registry] });
    this.#responseBytes = new Histogram({ name: 'istio_response_bytes', help: 'Response body sizes at the waypoint', labelNames: LABELS, buckets: ISTIO_BYTES_BUCKETS, registers: [this.registry] });
  }

  /** One finished request; `bytes` (request and response body sizes) when the caller counted them. */
  request(labels: RequestLabels, durationMs: number, bytes?: { request: number; response: number }): void {
    this.#requests.inc(labels);
    this.#duration.observe(labels, durationMs);
    if (bytes) {
      this.#requestBytes.observe(labels, bytes.request);
      this.#responseBytes.observe(labels, bytes.response);
    }
  }
}
