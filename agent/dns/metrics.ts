/**
 * The DNS proxy's Prometheus metrics, with ztunnel's names and labels (`dns/metrics.rs`, registered under Istio's
 * prefix): requests, requests forwarded upstream, forwarding failures and upstream duration, each by query type,
 * protocol and the asking pod's canonical service and revision.
 *
 * Owns: the series and their label values; a series child is looked up once per (pod, protocol, query type) and
 * kept on the client, so a query costs a map lookup and an addition.
 * Must not know about: DNS messages, sockets, the mesh state (the pod's canonical names come in the DnsClient).
 */
import { Counter, Histogram, type Registry } from 'prom-client';
import type { Transport } from './forwarder.ts';

export const DNS_METRIC_NAMES = {
  requests: 'istio_dns_requests_total',
  upstreamRequests: 'istio_dns_upstream_requests_total',
  upstreamFailures: 'istio_dns_upstream_failures_total',
  upstreamDuration: 'istio_dns_upstream_request_duration_seconds',
} as const;

const LABEL_NAMES = ['request_query_type', 'request_protocol', 'source_canonical_service', 'source_canonical_revision'] as const;
/** ztunnel's buckets for the upstream duration (seconds). */
const DURATION_BUCKETS = [0.001, 0.005, 0.01, 0.1, 1, 5];
const UNKNOWN = 'unknown';
/** Query types labelled by name; any other (a client cycling through type numbers) is `other`, bounding the series. */
const LABELLED_TYPES = new Set(['A', 'AAAA', 'CNAME', 'MX', 'TXT', 'SRV', 'PTR', 'NS', 'SOA', 'HTTPS', 'SVCB', 'ANY', 'CAA', 'NAPTR', 'DS', 'DNSKEY']);

/** The asking pod, as the metrics label it. */
export interface DnsSource {
  canonicalService: string;
  canonicalRevision: string;
}

type LabelName = (typeof LABEL_NAMES)[number];

export interface Series {
  requests: Counter.Internal;
  upstreamRequests: Counter.Internal;
  upstreamFailures: Counter.Internal;
  upstreamDuration: Histogram.Internal<LabelName>;
}

/** Per client: series by protocol, then by query type (lower case, as ztunnel writes it). */
export type SeriesCache = Map<string, Series>;

export class DnsMetrics {
  readonly #requests: Counter<LabelName>;
  readonly #upstreamRequests: Counter<LabelName>;
  readonly #upstreamFailures: Counter<LabelName>;
  readonly #upstreamDuration: Histogram<LabelName>;

  constructor(registry: Registry) {
    const registers = [registry];
    const labelNames = [...LABEL_NAMES];
    this.#requests = new Counter({ name: DNS_METRIC_NAMES.requests, help: 'Total number of DNS requests (unstable)', labelNames, registers });
    this.#upstreamRequests = new Counter({ name: DNS_METRIC_NAMES.upstreamRequests, help: 'Total number of DNS requests forwarded to upstream (unstable)', labelNames, registers });
    this.#upstreamFailures = new Counter({ name: DNS_METRIC_NAMES.upstreamFailures, help: 'Total number of DNS requests that failed to forward upstream (unstable)', labelNames, registers });
    this.#upstreamDuration = new Histogram({
      name: DNS_METRIC_NAMES.upstreamDuration, help: 'Total time in seconds Istio takes to get DNS response from upstream (unstable)', labelNames, buckets: DURATION_BUCKETS, registers,
    });
  }

  /** The series for one pod's queries of `type` over `transport`, made once and kept in `cache` (the client's). */
  series(cache: SeriesCache, source: DnsSource | undefined, transport: Transport, type: string): Series {
    const named = LABELLED_TYPES.has(type) ? type : 'OTHER';
    const key = transport === 'udp' ? named : `tcp/${named}`;
    let series = cache.get(key);
    if (series === undefined) {
      const labels = {
        request_query_type: named.toLowerCase(),
        request_protocol: transport,
        source_canonical_service: source?.canonicalService || UNKNOWN,
        source_canonical_revision: source?.canonicalRevision || UNKNOWN,
      };
      series = {
        requests: this.#requests.labels(labels),
        upstreamRequests: this.#upstreamRequests.labels(labels),
        upstreamFailures: this.#upstreamFailures.labels(labels),
        upstreamDuration: this.#upstreamDuration.labels(labels),
      };
      cache.set(key, series);
    }
    return series;
  }
}
