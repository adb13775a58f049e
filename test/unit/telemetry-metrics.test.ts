// Unit tests: agent/telemetry/metrics.ts — Istio's TCP metrics from sequences of connection records, as a
// Prometheus scrape sees them.
import test from 'ava';
import { AgentMetrics, TCP_LABEL_NAMES, tcpLabelsFor } from '../../agent/telemetry/metrics.ts';
import type { ConnectionRecord } from '../../agent/proxy/report.ts';
import type { Workload } from '../../shared/mesh/workload.ts';
import { parsePrometheusText, samplesOf, sumOf, type Sample } from '../helpers/prometheus-text.ts';
import { HboneError } from '../../shared/hbone/errors.ts';

function workload(name: string, namespace: string, extra: Partial<Workload> = {}): Workload {
  return {
    uid: `${namespace}-${name}-uid`,
    name: `${name}-7d9f-abcde`,
    namespace,
    serviceAccount: name,
    trustDomain: 'cluster.local',
    node: 'node-0',
    addresses: ['10.0.0.1'],
    tunnelProtocol: 'HBONE',
    captureReason: 'namespace label',
    canonicalName: name,
    canonicalRevision: 'v1',
    workloadName: name,
    ...extra,
  };
}

const client = workload('client', 'shop');
const server = workload('server', 'shop', { canonicalRevision: 'v2', addresses: ['10.0.1.5'] });

function record(overrides: Partial<ConnectionRecord> = {}): ConnectionRecord {
  return {
    direction: 'inbound',
    source: client,
    sourcePrincipal: 'spiffe://cluster.local/ns/shop/sa/client',
    sourceAddress: '10.0.0.1',
    destination: server,
    destinationAddress: { host: '10.0.1.5', port: 8080 },
    mtls: true,
    bytesSent: 0,
    bytesReceived: 0,
    durationMs: 1,
    ...overrides,
  };
}

async function scrape(metrics: AgentMetrics): Promise<Sample[]> {
  return parsePrometheusText(await metrics.text());
}

test('opened, closed and bytes equal what a sequence of connections moved, in Istio\'s directions', async (t) => {
  const metrics = new AgentMetrics({ processMetrics: false });
  // Three inbound connections from client to server: the client sent 100 bytes each, the server answered 1000.
  const inbound = [record(), record(), record()];
  for (const r of inbound) metrics.connectionOpened(r);
  let samples = await scrape(metrics);
  t.is(sumOf(samples, 'istio_tcp_connections_opened_total', { reporter: 'destination' }), 3, 'counted at open');
  t.is(sumOf(samples, 'istio_tcp_connections_closed_total'), 0, 'none closed yet');
  for (const r of inbound) {
    r.bytesReceived = 100;
    r.bytesSent = 1000;
    metrics.connectionClosed(r);
  }
  // Two outbound connections on the client's agent: bytesSent is what went to the destination (the request).
  for (let i = 0; i < 2; i++) {
    const r = record({ direction: 'outbound', sourcePrincipal: undefined });
    metrics.connectionOpened(r);
    r.bytesSent = 70;
    r.bytesReceived = 7;
    metrics.connectionClosed(r);
  }
  samples = await scrape(metrics);
  const destination = { reporter: 'destination', source_workload: 'client', destination_workload: 'server' };
  t.is(sumOf(samples, 'istio_tcp_connections_opened_total', destination), 3);
  t.is(sumOf(samples, 'istio_tcp_connections_closed_total', destination), 3);
  t.is(sumOf(samples, 'istio_tcp_received_bytes_total', destination), 300, 'received = request direction (client -> server)');
  t.is(sumOf(samples, 'istio_tcp_sent_bytes_total', destination), 3000, 'sent = response direction (server -> client)');
  const source = { reporter: 'source', source_workload: 'client', destination_workload: 'server' };
  t.is(sumOf(samples, 'istio_tcp_connections_opened_total', source), 2);
  t.is(sumOf(samples, 'istio_tcp_connections_closed_total', source), 2);
  t.is(sumOf(samples, 'istio_tcp_received_bytes_total', source), 140);
  t.is(sumOf(samples, 'istio_tcp_sent_bytes_total', source), 14);
  t.is(metrics.openConnections, 0);
});

test('every TCP series carries exactly ztunnel\'s label set, with Istio\'s values for a known mTLS pair', async (t) => {
  const metrics = new AgentMetrics({ processMetrics: false });
  const r = record({ destinationService: { hostname: 'server.shop.svc.cluster.local', name: 'server', namespace: 'shop' } });
  metrics.connectionOpened(r);
  const [sample] = samplesOf(await scrape(metrics), 'istio_tcp_connections_opened_total');
  t.deepEqual(Object.keys(sample!.labels).sort(), [...TCP_LABEL_NAMES].sort());
  t.like(sample!.labels, {
    reporter: 'destination',
    source_workload: 'client',
    source_workload_namespace: 'shop',
    source_principal: 'spiffe://cluster.local/ns/shop/sa/client',
    source_app: 'client',
    source_version: 'v1',
    source_canonical_service: 'client',
    source_canonical_revision: 'v1',
    source_cluster: 'Kubernetes',
    destination_workload: 'server',
    destination_workload_namespace: 'shop',
    destination_principal: 'spiffe://cluster.local/ns/shop/sa/server',
    destination_app: 'server',
    destination_version: 'v2',
    destination_canonical_service: 'server',
    destination_canonical_revision: 'v2',
    destination_cluster: 'Kubernetes',
    destination_service: 'server.shop.svc.cluster.local',
    destination_service_name: 'server',
    destination_service_namespace: 'shop',
    request_protocol: 'tcp',
    response_flags: '-',
    connection_security_policy: 'mutual_tls',
  });
});

test('label rules: unknown workloads are "unknown"; plaintext has unknown principals; security policy by reporter', (t) => {
  const plaintextIn = tcpLabelsFor(record({ source: undefined, sourcePrincipal: undefined, mtls: false }));
  t.is(plaintextIn.source_workload, 'unknown');
  t.is(plaintextIn.source_workload_namespace, 'unknown');
  t.is(plaintextIn.source_cluster, 'unknown');
  t.is(plaintextIn.source_principal, 'unknown');
  t.is(plaintextIn.destination_principal, 'unknown', 'no TLS, no proven identity, even for a known pod');
  t.is(plaintextIn.destination_workload, 'server');
  t.is(plaintextIn.connection_security_policy, 'none');
  t.is(plaintextIn.destination_service, 'unknown');

  const passthroughOut = tcpLabelsFor(record({ direction: 'outbound', destination: undefined, sourcePrincipal: undefined, mtls: false }));
  t.is(passthroughOut.reporter, 'source');
  t.is(passthroughOut.destination_workload, 'unknown');
  t.is(passthroughOut.destination_cluster, 'unknown');
  t.is(passthroughOut.source_principal, 'unknown');
  t.is(passthroughOut.connection_security_policy, 'unknown', 'a client cannot know what the server enforced');

  const hboneOut = tcpLabelsFor(record({ direction: 'outbound', sourcePrincipal: undefined, destinationPrincipal: 'spiffe://cluster.local/ns/shop/sa/presented' }));
  t.is(hboneOut.source_principal, 'spiffe://cluster.local/ns/shop/sa/client', 'the identity the source agent presented');
  t.is(hboneOut.destination_principal, 'spiffe://cluster.local/ns/shop/sa/presented', 'the identity the server\'s certificate proved, not the workload table\'s');
  t.is(hboneOut.connection_security_policy, 'mutual_tls');
  const neverEstablished = tcpLabelsFor(record({ direction: 'outbound', sourcePrincipal: undefined }));
  t.is(neverEstablished.destination_principal, 'unknown', 'no server certificate seen, no destination identity');
  t.is(tcpLabelsFor(record()).destination_principal, 'spiffe://cluster.local/ns/shop/sa/server', 'inbound: the identity this agent presented for its pod');

  const empty = tcpLabelsFor(record({ source: workload('x', 'shop', { canonicalRevision: '', workloadName: '' }) }));
  t.is(empty.source_version, 'unknown', 'an empty value is reported as unknown');
  t.is(empty.source_workload, 'unknown');
});

test('failed connections: closed and failed counters carry the response flag; bytes stay under "-"', async (t) => {
  const metrics = new AgentMetrics({ processMetrics: false });
  const denied = record();
  metrics.connectionOpened(denied);
  denied.error = new HboneError('HBONE_DENIED', 'denied by policy');
  metrics.connectionClosed(denied);
  const refused = record({ direction: 'outbound', mtls: false, destination: undefined, sourcePrincipal: undefined });
  metrics.connectionOpened(refused);
  refused.error = Object.assign(new Error('connect ECONNREFUSED 10.9.9.9:80'), { code: 'ECONNREFUSED' });
  metrics.connectionClosed(refused);
  const explicit = record({ responseFlags: 'DENY', bytesReceived: 5 });
  metrics.connectionClosed(explicit); // never opened: counts as opened and closed
  metrics.connectionClosed(record({ bytesReceived: 1 })); // a clean one
  const samples = await scrape(metrics);
  t.is(sumOf(samples, 'istio_tcp_connections_failed_total', { response_flags: 'UAEX' }), 1);
  t.is(sumOf(samples, 'istio_tcp_connections_failed_total', { response_flags: 'UF' }), 1);
  t.is(sumOf(samples, 'istio_tcp_connections_failed_total', { response_flags: 'DENY' }), 1);
  t.is(sumOf(samples, 'istio_tcp_connections_failed_total'), 3, 'the clean connection is not a failure');
  t.is(sumOf(samples, 'istio_tcp_connections_closed_total', { response_flags: '-' }), 1);
  t.is(sumOf(samples, 'istio_tcp_connections_closed_total'), 4);
  t.is(sumOf(samples, 'istio_tcp_connections_opened_total'), 4, 'opened >= closed, always');
  t.is(sumOf(samples, 'istio_tcp_received_bytes_total', { response_flags: '-' }), 6);
  t.is(samplesOf(samples, 'istio_tcp_connections_opened_total').filter((s) => s.labels.response_flags !== '-').length, 0);
});

test('bytes of a long connection move at every scrape (read from its sockets), and never go back', async (t) => {
  const metrics = new AgentMetrics({ processMetrics: false });
  const live = { sent: 0, received: 0 };
  let reads = 0;
  const r = record({
    liveBytes: () => {
      reads++;
      return { ...live };
    },
  });
  metrics.connectionOpened(r);
  t.is(reads, 0, 'nothing is read between scrapes: no per-chunk work');
  live.received = 4096;
  live.sent = 10;
  let samples = await scrape(metrics);
  t.is(sumOf(samples, 'istio_tcp_received_bytes_total'), 4096);
  t.is(sumOf(samples, 'istio_tcp_sent_bytes_total'), 10);
  live.received = 8192;
  samples = await scrape(metrics);
  t.is(sumOf(samples, 'istio_tcp_received_bytes_total'), 8192);
  // The final count reported at close is lower than what a scrape saw (a different counter): keep the higher.
  r.bytesReceived = 8000;
  r.bytesSent = 12;
  metrics.connectionClosed(r);
  samples = await scrape(metrics);
  t.is(sumOf(samples, 'istio_tcp_received_bytes_total'), 8192, 'a counter never decreases');
  t.is(sumOf(samples, 'istio_tcp_sent_bytes_total'), 12);
  const readsAfterClose = reads;
  await scrape(metrics);
  t.is(reads, readsAfterClose, 'a closed connection is not read again');
});

test('a workload updated by the mesh state keeps counting in the same series', async (t) => {
  const metrics = new AgentMetrics({ processMetrics: false });
  metrics.connectionClosed(record({ bytesReceived: 10 }));
  // The state replaces workload objects on every update (e.g. a new IP); labels are the same.
  const updatedServer = { ...server, addresses: ['10.0.1.99'] };
  metrics.connectionClosed(record({ destination: updatedServer, bytesReceived: 5 }));
  const samples = await scrape(metrics);
  t.is(samplesOf(samples, 'istio_tcp_connections_closed_total').length, 1);
  t.is(sumOf(samples, 'istio_tcp_connections_closed_total'), 2);
  t.is(sumOf(samples, 'istio_tcp_received_bytes_total'), 15);
});

test('process and xDS metrics: the agent\'s own health and a small API the xDS client feeds', async (t) => {
  const metrics = new AgentMetrics({ version: '0.1.0' });
  metrics.xds.connectionTerminated('ConnectionError');
  metrics.xds.connectionTerminated('ConnectionError');
  metrics.xds.connectionTerminated('Reconnect');
  metrics.xds.setConnected(true);
  metrics.xds.setResources('type.googleapis.com/istio.workload.Address', 12);
  const samples = await scrape(metrics);
  t.is(sumOf(samples, 'istio_xds_connection_terminations_total', { reason: 'ConnectionError' }), 2);
  t.is(sumOf(samples, 'istio_xds_connection_terminations_total', { reason: 'Reconnect' }), 1);
  t.is(sumOf(samples, 'ambit_xds_connected'), 1);
  t.is(sumOf(samples, 'ambit_xds_resources', { type_url: 'type.googleapis.com/istio.workload.Address' }), 12);
  t.is(sumOf(samples, 'istio_build', { component: 'ambit-agent', tag: '0.1.0' }), 1);
  t.true(sumOf(samples, 'process_resident_memory_bytes') > 0, 'process metrics');
  t.true(samplesOf(samples, 'nodejs_eventloop_lag_seconds').length > 0);
});

test('connections between the same two workload objects count under their own labels when direction, mTLS, a principal or the service differ', async (t) => {
  // The series cache is keyed by the workload objects first: every other fact that makes a label must still split it.
  const metrics = new AgentMetrics({ processMetrics: false });
  const service = { hostname: 'server.shop.svc.cluster.local', name: 'server', namespace: 'shop' };
  const variants: Array<[Partial<ConnectionRecord>, Record<string, string>]> = [
    [{}, { reporter: 'destination', connection_security_policy: 'mutual_tls', source_principal: 'spiffe://cluster.local/ns/shop/sa/client', destination_service: 'unknown' }],
    [{ direction: 'outbound', sourcePrincipal: undefined, destinationPrincipal: 'spiffe://cluster.local/ns/shop/sa/server' }, { reporter: 'source', destination_principal: 'spiffe://cluster.local/ns/shop/sa/server' }],
    [{ direction: 'outbound', sourcePrincipal: undefined, destinationPrincipal: 'spiffe://cluster.local/ns/shop/sa/other' }, { reporter: 'source', destination_principal: 'spiffe://cluster.local/ns/shop/sa/other' }],
    [{ mtls: false, sourcePrincipal: undefined }, { reporter: 'destination', connection_security_policy: 'none', source_principal: 'unknown' }],
    [{ sourcePrincipal: 'spiffe://cluster.local/ns/shop/sa/impostor' }, { reporter: 'destination', source_principal: 'spiffe://cluster.local/ns/shop/sa/impostor' }],
    [{ destinationService: service }, { reporter: 'destination', destination_service: 'server.shop.svc.cluster.local', source_principal: 'spiffe://cluster.local/ns/shop/sa/client' }],
    // Only the direction differs from the plain inbound variant above; then only mTLS.
    [{ direction: 'outbound', mtls: false, sourcePrincipal: undefined }, { reporter: 'source', connection_security_policy: 'unknown' }],
    [{ sourcePrincipal: undefined }, { reporter: 'destination', connection_security_policy: 'mutual_tls', source_principal: 'unknown' }],
  ];
  for (const [index, [overrides]] of variants.entries()) {
    for (let count = 0; count <= index; count++) metrics.connectionClosed(record(overrides));
  }
  const samples = parsePrometheusText(await metrics.text());
  for (const [index, [, labels]] of variants.entries()) {
    t.is(sumOf(samples, 'istio_tcp_connections_closed_total', labels), index + 1, JSON.stringify(labels));
  }
  t.is(samplesOf(samples, 'istio_tcp_connections_opened_total').length, variants.length, 'one series per variant');
});
