/**
 * Istio's request metrics as the waypoint reports them (reporter="waypoint"), served on 15020 in Prometheus text:
 * `istio_requests_total`, `istio_request_duration_milliseconds`, `istio_request_bytes`, `istio_response_bytes`
 * with Istio's standard labels.
 *
 * Owns: the metric names, labels and buckets (Istio's), and the registry. Must not know about: HTTP proxying.
 */
import { Registry } from 'prom-client';
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

/** Non-cumulative bucket counts of one histogram series (made cumulative when scraped). */
class Buckets {
  readonly counts: Float64Array;
  sum = 0;
  count = 0;

  constructor(bounds: readonly number[]) {
    this.counts = new Float64Array(bounds.length);
  }

  observe(bounds: readonly number[], value: number): void {
    for (let index = 0; index < bounds.length; index++) {
      if (value <= bounds[index]!) {
        this.counts[index]!++;
        break;
      }
    }
    this.sum += value;
    this.count++;
  }
}

/** One label set's figures across the four request metrics. */
interface Series {
  labels: RequestLabels;
  requests: number;
  duration: Buckets;
  requestBytes: Buckets;
  responseBytes: Buckets;
}

/** What a request's labels are made of; the same objects (mesh state's) and values give the same series. */
export interface RequestFacts {
  source: Workload | undefined;
  peer: SpiffeId;
  endpoint: Workload | undefined;
  service: Service;
  protocol: 'http' | 'grpc';
  status: number;
  flags: string;
  /** The gRPC status of a gRPC answer ('' or absent otherwise). */
  grpcStatus?: string;
}

/** A series found by facts: valid while the mesh state hands out the same objects. */
interface CachedSeries {
  source: Workload | undefined;
  endpoint: Workload | undefined;
  service: Service;
  series: Series;
}

/** The last series an endpoint's requests were counted in, with the rest of its facts (compared as they are). */
interface LastSeries extends CachedSeries {
  peerUri: string;
  protocol: string;
  status: number;
  flags: string;
  grpcStatus: string | undefined;
}

/** Fact keys remembered at most (a cache: cleared when full, the series stay). */
const MAX_CACHED_FACTS = 10_000;

/** A value as prom-client's registry prints it: `labels` first, then `sharedLabels` (as its Histogram hands buckets over). */
type PrometheusValue = { labels: Record<string, string | number>; sharedLabels?: RequestLabels; value: number; metricName?: string };

/** A metric the prom-client registry can scrape: its values come from the series store. */
function scrapedMetric(name: string, help: string, type: 'counter' | 'histogram', values: () => PrometheusValue[]) {
  return { name, help, type, aggregator: 'sum' as const, get: async () => ({ name, help, type, aggregator: 'sum' as const, values: values() }) };
}

/**
 * The four request metrics, kept per label set by the waypoint itself rather than by prom-client's Counter and
 * Histogram: those hash all 24 labels on every inc/observe (four times per request, 2 % of the waypoint's CPU at
 * 1,000 requests/s). A request finds its series by a short key of its facts (workload and Service uids, identity,
 * status, flags); the labels are made once per series. Scraped through the same registry, in prom-client's format.
 */
export class WaypointMetrics {
  readonly registry = new Registry();
  readonly #series = new Map<string, Series>();
  readonly #byFacts = new Map<string, CachedSeries>();
  /**
   * Per endpoint object, the series of its last request: a request with the same facts as the one before it on that
   * endpoint (the usual case) is counted without building and hashing the facts' key string.
   */
  readonly #lastByEndpoint = new WeakMap<Workload, LastSeries>();

  constructor() {
    const all = () => this.#series.values();
    this.registry.registerMetric(scrapedMetric('istio_requests_total', 'Requests handled by the waypoint', 'counter', () => [...all()].map((series) => ({ labels: series.labels, value: series.requests }))) as never);
    const histogram = (name: string, help: string, pick: (series: Series) => Buckets, bounds: readonly number[]) =>
      scrapedMetric(name, help, 'histogram', () => {
        const values: PrometheusValue[] = [];
        for (const series of all()) {
          const buckets = pick(series);
          if (buckets.count === 0) continue;
          let cumulative = 0;
          for (let index = 0; index < bounds.length; index++) {
            cumulative += buckets.counts[index]!;
            values.push({ labels: { le: bounds[index]! }, sharedLabels: series.labels, value: cumulative, metricName: `${name}_bucket` });
          }
          values.push({ labels: { le: '+Inf' }, sharedLabels: series.labels, value: buckets.count, metricName: `${name}_bucket` });
          values.push({ labels: {}, sharedLabels: series.labels, value: buckets.sum, metricName: `${name}_sum` });
          values.push({ labels: {}, sharedLabels: series.labels, value: buckets.count, metricName: `${name}_count` });
        }
        return values;
      });
    this.registry.registerMetric(histogram('istio_request_duration_milliseconds', 'Request duration at the waypoint', (series) => series.duration, ISTIO_DURATION_BUCKETS_MS) as never);
    this.registry.registerMetric(histogram('istio_request_bytes', 'Request body sizes at the waypoint', (series) => series.requestBytes, ISTIO_BYTES_BUCKETS) as never);
    this.registry.registerMetric(histogram('istio_response_bytes', 'Response body sizes at the waypoint', (series) => series.responseBytes, ISTIO_BYTES_BUCKETS) as never);
  }

  /** One finished request, by its labels; `bytes` (request and response body sizes) when the caller counted them. */
  request(labels: RequestLabels, durationMs: number, bytes?: { request: number; response: number }): void {
    this.#count(this.#seriesOf(labels), durationMs, bytes);
  }

  /** request() by the facts the labels are made of: the labels are built only for a series not seen before. */
  requestByFacts(facts: RequestFacts, durationMs: number, bytes?: { request: number; response: number }): void {
    const series = this.#seriesByFacts(facts);
    this.#count(series, durationMs, bytes);
  }

  /**
   * requestByFacts() with both body sizes, and no object for them; `facts` is read during the call only (a caller may
   * fill in one object per request: the HTTP/1.1 path does).
   */
  requestCounted(facts: RequestFacts, durationMs: number, requestBytes: number, responseBytes: number): void {
    const series = this.#seriesByFacts(facts);
    series.requests++;
    series.duration.observe(ISTIO_DURATION_BUCKETS_MS, durationMs);
    series.requestBytes.observe(ISTIO_BYTES_BUCKETS, requestBytes);
    series.responseBytes.observe(ISTIO_BYTES_BUCKETS, responseBytes);
  }

  #seriesByFacts(facts: RequestFacts): Series {
    const endpoint = facts.endpoint;
    const last = endpoint === undefined ? undefined : this.#lastByEndpoint.get(endpoint);
    if (
      last !== undefined && last.status === facts.status && last.flags === facts.flags && last.source === facts.source && last.service === facts.service &&
      last.peerUri === facts.peer.uri && last.protocol === facts.protocol && last.grpcStatus === facts.grpcStatus
    ) {
      return last.series;
    }
    const key = `${facts.source?.uid ?? ''}|${facts.peer.uri}|${facts.endpoint?.uid ?? ''}|${facts.service.namespace}/${facts.service.hostname}|${facts.protocol}|${facts.status}|${facts.flags}|${facts.grpcStatus ?? ''}`;
    let cached = this.#byFacts.get(key);
    if (cached === undefined || cached.source !== facts.source || cached.endpoint !== facts.endpoint || cached.service !== facts.service) {
      if (this.#byFacts.size >= MAX_CACHED_FACTS) this.#byFacts.clear();
      cached = { source: facts.source, endpoint: facts.endpoint, service: facts.service, series: this.#seriesOf(requestLabels(facts)) };
      this.#byFacts.set(key, cached);
    }
    if (endpoint !== undefined) {
      this.#lastByEndpoint.set(endpoint, { ...cached, peerUri: facts.peer.uri, protocol: facts.protocol, status: facts.status, flags: facts.flags, grpcStatus: facts.grpcStatus });
    }
    return cached.series;
  }

  #seriesOf(labels: RequestLabels): Series {
    let key = '';
    for (const name of LABELS) key += `${labels[name]}\u0001`;
    let series = this.#series.get(key);
    if (series === undefined) {
      series = { labels: { ...labels }, requests: 0, duration: new Buckets(ISTIO_DURATION_BUCKETS_MS), requestBytes: new Buckets(ISTIO_BYTES_BUCKETS), responseBytes: new Buckets(ISTIO_BYTES_BUCKETS) };
      this.#series.set(key, series);
    }
    return series;
  }

  #count(series: Series, durationMs: number, bytes: { request: number; response: number } | undefined): void {
    series.requests++;
    series.duration.observe(ISTIO_DURATION_BUCKETS_MS, durationMs);
    if (bytes) {
      series.requestBytes.observe(ISTIO_BYTES_BUCKETS, bytes.request);
      series.responseBytes.observe(ISTIO_BYTES_BUCKETS, bytes.response);
    }
  }
}
