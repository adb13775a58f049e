/**
 * The agent's Prometheus metrics, with Istio's names and labels so Istio's Grafana dashboards and Kiali work
 * unchanged: the TCP connection metrics ztunnel reports, the agent's own process metrics, and xDS metrics.
 *
 * Owns: the registry, Istio's label rules (what each label holds, "unknown" when not known), and counting
 * without slowing the data path: a connection costs a few map lookups at open (no key string built) and a few additions at close;
 * bytes of open connections are read from their sockets when Prometheus scrapes, never per chunk.
 * Must not know about: sockets, HBONE, how records are produced, HTTP (metrics-server.ts serves the text).
 *
 * Byte directions follow Istio's definitions, for both reporters: `istio_tcp_received_bytes_total` counts
 * bytes of the request direction (client -> server), `istio_tcp_sent_bytes_total` the response direction
 * (server -> client).
 */
import { AggregatorRegistry, Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { ConnectionRecord, RejectionReason } from '../proxy/report.ts';
import { workloadIdentity } from '../../shared/mesh/workload.ts';

/** ztunnel's label set for every TCP metric, in its order (locality labels are omitted: no locality yet). */
export const TCP_LABEL_NAMES = [
  'reporter',
  'source_workload',
  'source_canonical_service',
  'source_canonical_revision',
  'source_workload_namespace',
  'source_principal',
  'source_app',
  'source_version',
  'source_cluster',
  'destination_service',
  'destination_service_namespace',
  'destination_service_name',
  'destination_workload',
  'destination_canonical_service',
  'destination_canonical_revision',
  'destination_workload_namespace',
  'destination_principal',
  'destination_app',
  'destination_version',
  'destination_cluster',
  'request_protocol',
  'response_flags',
  'connection_security_policy',
] as const;

export type TcpLabelName = (typeof TCP_LABEL_NAMES)[number];
export type TcpLabels = Record<TcpLabelName, string>;

/** Istio's value for any label whose fact is not known. */
export const UNKNOWN = 'unknown';
/** Envoy's response_flags value for "nothing went wrong". */
export const NO_RESPONSE_FLAGS = '-';
/** Istio's default CLUSTER_ID: what `source_cluster`/`destination_cluster` hold in a single-cluster mesh. */
export const DEFAULT_CLUSTER_ID = 'Kubernetes';

export const METRIC_NAMES = {
  opened: 'istio_tcp_connections_opened_total',
  closed: 'istio_tcp_connections_closed_total',
  failed: 'istio_tcp_connections_failed_total',
  rejected: 'ambit_connections_rejected_total',
  sent: 'istio_tcp_sent_bytes_total',
  received: 'istio_tcp_received_bytes_total',
  xdsTerminations: 'istio_xds_connection_terminations_total',
  xdsConnected: 'ambit_xds_connected',
  xdsResources: 'ambit_xds_resources',
  build: 'istio_build',
} as const;

function orUnknown(value: string | undefined): string {
  return value === undefined || value === '' ? UNKNOWN : value;
}

/**
 * Errors that carry no flag of their own (plain socket errors) mapped to Envoy's flags: the connection to the
 * destination could not be made (UF) or timed out (UT); anything else ended the connection early (UC).
 */
function flagForErrno(error: Error): string {
  switch ((error as NodeJS.ErrnoException).code) {
    case 'ECONNREFUSED':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'EADDRNOTAVAIL':
      return 'UF';
    case 'ETIMEDOUT':
      return 'UT';
    case 'ECONNRESET':
      return 'UR';
    default:
      return 'UC';
  }
}

/** The response_flags a finished connection reports: the proxy's own flag, the error's, or "-". */
export function responseFlagsFor(record: ConnectionRecord): string {
  if (record.responseFlags) return record.responseFlags;
  if (!record.error) return NO_RESPONSE_FLAGS;
  const own = (record.error as { responseFlags?: unknown }).responseFlags;
  return typeof own === 'string' && own !== '' ? own : flagForErrno(record.error);
}

/**
 * Istio's connection_security_policy: mutual_tls when the connection was mTLS (ztunnel reports it from both
 * sides); for plaintext, "none" from the destination (it knows nothing protected it) and "unknown" from the
 * source (a client cannot know what the server enforced), as Istio's sidecars report it.
 */
export function securityPolicyFor(record: ConnectionRecord): string {
  if (record.mtls) return 'mutual_tls';
  return record.direction === 'inbound' ? 'none' : UNKNOWN;
}

/**
 * The destination's identity for telemetry: outbound, the one the server's certificate proved (none before the
 * tunnel is established); inbound, the destination pod's own, which this agent presented for it.
 */
export function destinationPrincipalFor(record: ConnectionRecord): string | undefined {
  if (!record.mtls) return undefined;
  if (record.direction === 'outbound') return record.destinationPrincipal;
  return record.destinationPrincipal ?? (record.destination ? workloadIdentity(record.destination).uri : undefined);
}

/**
 * The label values for a connection (response_flags "-": the open-time set that bytes are counted under).
 * Principals come only from mutual TLS (the verified peer, or the identity this agent presents and expects);
 * a plaintext connection has "unknown" principals whatever the workloads are.
 */
export function tcpLabelsFor(record: ConnectionRecord, clusterId: string = DEFAULT_CLUSTER_ID): TcpLabels {
  const source = record.source;
  const destination = record.destination;
  let sourcePrincipal: string | undefined;
  let destinationPrincipal: string | undefined;
  if (record.mtls) {
    sourcePrincipal = record.sourcePrincipal ?? (record.direction === 'outbound' && source ? workloadIdentity(source).uri : undefined);
    destinationPrincipal = destinationPrincipalFor(record);
  }
  return {
    reporter: record.direction === 'outbound' ? 'source' : 'destination',
    source_workload: orUnknown(source?.workloadName),
    source_canonical_service: orUnknown(source?.canonicalName),
    source_canonical_revision: orUnknown(source?.canonicalRevision),
    source_workload_namespace: orUnknown(source?.namespace),
    source_principal: orUnknown(sourcePrincipal),
    source_app: orUnknown(source?.canonicalName),
    source_version: orUnknown(source?.canonicalRevision),
    source_cluster: source ? clusterId : UNKNOWN,
    destination_service: orUnknown(record.destinationService?.hostname),
    destination_service_namespace: orUnknown(record.destinationService?.namespace),
    destination_service_name: orUnknown(record.destinationService?.name),
    destination_workload: orUnknown(destination?.workloadName),
    destination_canonical_service: orUnknown(destination?.canonicalName),
    destination_canonical_revision: orUnknown(destination?.canonicalRevision),
    destination_workload_namespace: orUnknown(destination?.namespace),
    destination_principal: orUnknown(destinationPrincipal),
    destination_app: orUnknown(destination?.canonicalName),
    destination_version: orUnknown(destination?.canonicalRevision),
    destination_cluster: destination ? clusterId : UNKNOWN,
    request_protocol: 'tcp',
    response_flags: NO_RESPONSE_FLAGS,
    connection_security_policy: securityPolicyFor(record),
  };
}

/** Bytes in Istio's directions: request = client -> server, response = server -> client. */
function requestResponse(direction: ConnectionRecord['direction'], sent: number, received: number): [request: number, response: number] {
  return direction === 'outbound' ? [sent, received] : [received, sent];
}

interface LiveConnection {
  /** Highest request/response byte counts seen so far (scrapes and close), so counters never go back. */
  request: number;
  response: number;
}

/** One time series of the TCP metrics: one label set (response_flags "-") and its counts. */
interface TcpSeries {
  readonly labels: Readonly<TcpLabels>;
  opened: number;
  /** Closed and failed connections by response_flags. */
  readonly closedByFlags: Map<string, number>;
  readonly failedByFlags: Map<string, number>;
  /** Bytes of connections that have ended. */
  requestBytesDone: number;
  responseBytesDone: number;
  /** Open connections and what was seen of their bytes. */
  readonly live: Map<ConnectionRecord, LiveConnection>;
}

/**
 * The series of one source and destination workload pair, by the connection's other facts: [direction and mTLS]
 * (outbound plain, outbound mTLS, inbound plain, inbound mTLS) -> source principal -> destination principal -> service
 * hostname ('' when absent). Nested maps keyed by the strings as they come, not one key string built per connection:
 * V8 keeps a string's hash in the string, but a string built per connection is hashed anew each time (3 µs per lookup
 * for the old five-part key at load 30, 0.1-0.25 µs for these four lookups).
 */
type SeriesByFacts = Array<Map<string, Map<string, Map<string, TcpSeries>>> | undefined>;

/** Stands for "no workload" in the label-set cache, which is keyed by workload objects. */
const NO_WORKLOAD: object = Object.freeze({});

/** What the xDS client may report; the only metrics handle it gets. */
export interface XdsMetrics {
  /** The ADS stream ended: reason as ztunnel reports it (ConnectionError, Error, Reconnect, Complete). */
  connectionTerminated(reason: string): void;
  setConnected(connected: boolean): void;
  /** How many resources of a type the agent holds from xDS. */
  setResources(typeUrl: string, count: number): void;
}

export interface AgentMetricsOptions {
  /** source_cluster / destination_cluster value for known workloads. */
  clusterId?: string;
  /** The agent's version, for `istio_build`. */
  version?: string;
  /** Node.js process metrics (CPU, memory, event loop lag, GC): on by default. */
  processMetrics?: boolean;
  /** `istio_build` (on by default; a proxy worker's registry leaves it to the main thread's). */
  buildInfo?: boolean;
}

/** Resolution of the nodejs_eventloop_lag_* histogram (prom-client's default of 10 ms keeps an idle agent busy). */
const EVENT_LOOP_MONITORING_PRECISION_MS = 1000;

export class AgentMetrics {
  readonly registry = new Registry();
  readonly xds: XdsMetrics;
  readonly #clusterId: string;
  /** source workload -> destination workload -> direction and mTLS -> principals -> service -> series. */
  readonly #seriesCache = new WeakMap<object, WeakMap<object, SeriesByFacts>>();
  /** Every series ever made, by its label values: a counter's series must outlive workload updates. */
  readonly #seriesByKey = new Map<string, TcpSeries>();
  /** Which series an open connection counts under. */
  readonly #openSeries = new Map<ConnectionRecord, TcpSeries>();
  /** Rejections by "direction|reason". */
  readonly #rejections = new Map<string, number>();
  #peers: (() => Promise<object[][]>) | undefined;

  constructor(options: AgentMetricsOptions = {}) {
    this.#clusterId = options.clusterId ?? DEFAULT_CLUSTER_ID;
    // prom-client samples event-loop lag with a 10 ms libuv timer by default: 100 wake-ups a second on an idle
    // agent (about 12 ms of CPU per second, measured). A 1 s resolution keeps the lag histogram for free.
    if (options.processMetrics ?? true) collectDefaultMetrics({ register: this.registry, eventLoopMonitoringPrecision: EVENT_LOOP_MONITORING_PRECISION_MS });
    this.#registerTcpMetrics();
    this.xds = this.#registerXdsMetrics();
    if (options.buildInfo ?? true) {
      const build = new Gauge({ name: METRIC_NAMES.build, help: 'Istio component build info', labelNames: ['component', 'tag'], registers: [this.registry] });
      build.set({ component: 'ambit-agent', tag: options.version ?? 'unknown' }, 1);
    }
  }

  /** Counts a new connection; its bytes count from now on (read from the record's liveBytes at scrapes). */
  connectionOpened(record: ConnectionRecord): void {
    if (this.#openSeries.has(record)) return;
    const series = this.#seriesFor(record);
    series.opened++;
    series.live.set(record, { request: 0, response: 0 });
    this.#openSeries.set(record, series);
  }

  /** Counts the end of a connection with its final bytes (a record never opened counts as opened too). */
  connectionClosed(record: ConnectionRecord): void {
    let series = this.#openSeries.get(record);
    let seen: LiveConnection | undefined;
    if (series) {
      this.#openSeries.delete(record);
      seen = series.live.get(record);
      series.live.delete(record);
    } else {
      series = this.#seriesFor(record);
      series.opened++;
    }
    const [request, response] = requestResponse(record.direction, record.bytesSent, record.bytesReceived);
    series.requestBytesDone += Math.max(request, seen?.request ?? 0);
    series.responseBytesDone += Math.max(response, seen?.response ?? 0);
    const flags = responseFlagsFor(record);
    series.closedByFlags.set(flags, (series.closedByFlags.get(flags) ?? 0) + 1);
    if (flags !== NO_RESPONSE_FLAGS || record.error) series.failedByFlags.set(flags, (series.failedByFlags.get(flags) ?? 0) + 1);
  }

  /**
   * Counts a connection turned away before it reached the application: opened and closed at once with its
   * response flags (as ztunnel records a policy denial), and under `reason` in ambit_connections_rejected_total,
   * which also counts the rejections Istio's metrics have no label for (a failed handshake has no principal).
   */
  connectionRejected(record: ConnectionRecord, reason: RejectionReason): void {
    this.connectionClosed(record);
    const key = `${record.direction}|${reason}`;
    this.#rejections.set(key, (this.#rejections.get(key) ?? 0) + 1);
  }

  /** Connections counted as open now (for the admin view and tests). */
  get openConnections(): number {
    return this.#openSeries.size;
  }

  /**
   * Adds the series of other registries (the proxy workers') to what `text()` serves: counters and histograms
   * are summed per label set, as Prometheus would see one process.
   */
  aggregateWith(peers: () => Promise<object[][]>): void {
    this.#peers = peers;
  }

  /** This registry's series as plain objects, for a main thread to aggregate. */
  json(): Promise<object[]> {
    return this.registry.getMetricsAsJSON();
  }

  /** The Prometheus text exposition of every metric (this registry's and its peers'). */
  async text(): Promise<string> {
    if (!this.#peers) return this.registry.metrics();
    const [own, peers] = await Promise.all([this.registry.getMetricsAsJSON(), this.#peers()]);
    return AggregatorRegistry.aggregate([own, ...peers]).metrics();
  }

  #seriesFor(record: ConnectionRecord): TcpSeries {
    const sourceKey = record.source ?? NO_WORKLOAD;
    const destinationKey = record.destination ?? NO_WORKLOAD;
    let byDestination = this.#seriesCache.get(sourceKey);
    if (!byDestination) {
      byDestination = new WeakMap();
      this.#seriesCache.set(sourceKey, byDestination);
    }
    let byFacts = byDestination.get(destinationKey);
    if (!byFacts) {
      byFacts = [undefined, undefined, undefined, undefined];
      byDestination.set(destinationKey, byFacts);
    }
    const slot = (record.direction === 'outbound' ? 0 : 2) + (record.mtls ? 1 : 0);
    let bySourcePrincipal = byFacts[slot];
    if (!bySourcePrincipal) {
      bySourcePrincipal = new Map();
      byFacts[slot] = bySourcePrincipal;
    }
    const sourcePrincipal = record.sourcePrincipal ?? '';
    let byDestinationPrincipal = bySourcePrincipal.get(sourcePrincipal);
    if (!byDestinationPrincipal) {
      byDestinationPrincipal = new Map();
      bySourcePrincipal.set(sourcePrincipal, byDestinationPrincipal);
    }
    const destinationPrincipal = record.destinationPrincipal ?? '';
    let byService = byDestinationPrincipal.get(destinationPrincipal);
    if (!byService) {
      byService = new Map();
      byDestinationPrincipal.set(destinationPrincipal, byService);
    }
    const service = record.destinationService?.hostname ?? '';
    let series = byService.get(service);
    if (!series) {
      const labels = Object.freeze(tcpLabelsFor(record, this.#clusterId));
      const key = TCP_LABEL_NAMES.map((name) => labels[name]).join('\u0000');
      series = this.#seriesByKey.get(key);
      if (!series) {
        series = { labels, opened: 0, closedByFlags: new Map(), failedByFlags: new Map(), requestBytesDone: 0, responseBytesDone: 0, live: new Map() };
        this.#seriesByKey.set(key, series);
      }
      byService.set(service, series);
    }
    return series;
  }

  /** Reads the open connections' sockets (through liveBytes) into what has been seen of them. */
  #observeLive(series: TcpSeries): void {
    for (const [record, seen] of series.live) {
      if (!record.liveBytes) continue;
      const now = record.liveBytes();
      const [request, response] = requestResponse(record.direction, now.sent, now.received);
      if (request > seen.request) seen.request = request;
      if (response > seen.response) seen.response = response;
    }
  }

  #registerTcpMetrics(): void {
    const seriesByKey = this.#seriesByKey;
    const observeLive = (series: TcpSeries): void => this.#observeLive(series);
    const labelNames = [...TCP_LABEL_NAMES];
    const registers = [this.registry];
    // Each counter publishes the series' plain numbers when scraped: the data path never touches prom-client.
    new Counter({
      name: METRIC_NAMES.opened,
      help: 'The total number of TCP connections opened',
      labelNames,
      registers,
      collect() {
        this.reset();
        for (const series of seriesByKey.values()) this.inc(series.labels, series.opened);
      },
    });
    new Counter({
      name: METRIC_NAMES.closed,
      help: 'The total number of TCP connections closed',
      labelNames,
      registers,
      collect() {
        this.reset();
        for (const series of seriesByKey.values()) {
          for (const [flags, count] of series.closedByFlags) this.inc(flags === NO_RESPONSE_FLAGS ? series.labels : { ...series.labels, response_flags: flags }, count);
        }
      },
    });
    new Counter({
      name: METRIC_NAMES.failed,
      help: 'The total number of TCP connections that ended with an error, by response_flags',
      labelNames,
      registers,
      collect() {
        this.reset();
        for (const series of seriesByKey.values()) {
          for (const [flags, count] of series.failedByFlags) this.inc({ ...series.labels, response_flags: flags }, count);
        }
      },
    });
    const rejections = this.#rejections;
    new Counter({
      name: METRIC_NAMES.rejected,
      help: 'Connections and tunnel requests turned away before reaching an application, by direction and reason (tls, peer_identity, bad_method, bad_authority, misdirected, proxy_port, stream_flood)',
      labelNames: ['direction', 'reason'],
      registers,
      collect() {
        this.reset();
        for (const [key, count] of rejections) {
          const [direction, reason] = key.split('|');
          this.inc({ direction: direction!, reason: reason! }, count);
        }
      },
    });
    // Bytes are totalled at scrape time: finished connections plus what the live ones have moved so far.
    const bytesCounter = (name: string, help: string, direction: 'request' | 'response'): void => {
      new Counter({
        name,
        help,
        labelNames,
        registers,
        collect() {
          this.reset();
          for (const series of seriesByKey.values()) {
            observeLive(series);
            let total = direction === 'request' ? series.requestBytesDone : series.responseBytesDone;
            for (const seen of series.live.values()) total += seen[direction];
            this.inc(series.labels, total);
          }
        },
      });
    };
    bytesCounter(METRIC_NAMES.received, 'The size of total bytes received during request in case of a TCP connection', 'request');
    bytesCounter(METRIC_NAMES.sent, 'The size of total bytes sent during response in case of a TCP connection', 'response');
  }

  #registerXdsMetrics(): XdsMetrics {
    const registers = [this.registry];
    const terminations = new Counter({
      name: METRIC_NAMES.xdsTerminations,
      help: 'The total number of completed connections to xds server (unstable)',
      labelNames: ['reason'],
      registers,
    });
    const connected = new Gauge({ name: METRIC_NAMES.xdsConnected, help: '1 while the agent has an open xDS stream to the control plane', registers });
    connected.set(0);
    const resources = new Gauge({ name: METRIC_NAMES.xdsResources, help: 'Resources the agent holds from xDS, by type URL', labelNames: ['type_url'], registers });
    return {
      connectionTerminated: (reason) => terminations.inc({ reason }),
      setConnected: (value) => connected.set(value ? 1 : 0),
      setResources: (typeUrl, count) => resources.set({ type_url: typeUrl }, count),
    };
  }
}
