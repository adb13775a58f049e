/**
 * The waypoint's request metrics (waypoint/metrics.ts): the series store prints what prom-client's own Counter and
 * Histogram print for the same requests (Prometheus text, byte for byte), and a request found by its facts gets the
 * labels of the workload objects it carries now, not those of an earlier object with the same uid.
 */
import test from 'ava';
import { Counter, Histogram, Registry } from 'prom-client';
import type { SpiffeId } from '../../shared/identity/index.ts';
import type { Service } from '../../shared/mesh/service.ts';
import type { Workload } from '../../shared/mesh/workload.ts';
import { ISTIO_BYTES_BUCKETS, ISTIO_DURATION_BUCKETS_MS, requestLabels, WaypointMetrics, type RequestFacts } from '../../waypoint/metrics.ts';

const service = { namespace: 'shop', name: 'web', hostname: 'web.shop.svc.cluster.local' } as Service;
const peer = { uri: 'spiffe://cluster.local/ns/shop/sa/client', namespace: 'shop' } as SpiffeId;
function workload(uid: string, revision: string): Workload {
  return { uid, name: `web-${revision}`, namespace: 'shop', serviceAccount: 'web', trustDomain: 'cluster.local', workloadName: `web-${revision}`, canonicalName: 'web', canonicalRevision: revision } as Workload;
}
const client = { uid: 'c1', name: 'client', namespace: 'shop', serviceAccount: 'client', trustDomain: 'cluster.local', workloadName: 'client', canonicalName: 'client', canonicalRevision: 'latest' } as Workload;

/** The same requests through prom-client's metrics, as the waypoint counted them before the series store. */
function promClientText(requests: { facts: RequestFacts; durationMs: number; bytes?: { request: number; response: number } }[]): Promise<string> {
  const registry = new Registry();
  const labelNames = Object.keys(requestLabels(requests[0]!.facts));
  const counter = new Counter({ name: 'istio_requests_total', help: 'Requests handled by the waypoint', labelNames, registers: [registry] });
  const duration = new Histogram({ name: 'istio_request_duration_milliseconds', help: 'Request duration at the waypoint', labelNames, buckets: ISTIO_DURATION_BUCKETS_MS, registers: [registry] });
  const requestBytes = new Histogram({ name: 'istio_request_bytes', help: 'Request body sizes at the waypoint', labelNames, buckets: ISTIO_BYTES_BUCKETS, registers: [registry] });
  const responseBytes = new Histogram({ name: 'istio_response_bytes', help: 'Response body sizes at the waypoint', labelNames, buckets: ISTIO_BYTES_BUCKETS, registers: [registry] });
  for (const { facts, durationMs, bytes } of requests) {
    const labels = requestLabels(facts);
    counter.inc(labels);
    duration.observe(labels, durationMs);
    if (bytes) {
      requestBytes.observe(labels, bytes.request);
      responseBytes.observe(labels, bytes.response);
    }
  }
  return registry.metrics();
}

test('the series store prints what prom-client prints for the same requests', async (t) => {
  const v1 = workload('w1', 'v1');
  const v2 = workload('w2', 'v2');
  const base = { source: client, peer, service, protocol: 'http' as const, flags: '-' };
  const requests = [
    { facts: { ...base, endpoint: v1, status: 200 }, durationMs: 0.3, bytes: { request: 1024, response: 1024 } },
    { facts: { ...base, endpoint: v1, status: 200 }, durationMs: 7, bytes: { request: 0, response: 4_000_000 } },
    { facts: { ...base, endpoint: v2, status: 503, flags: 'UF,URX' }, durationMs: 75_000_000, bytes: { request: 10, response: 90 } },
    { facts: { ...base, endpoint: undefined, source: undefined, status: 404, flags: 'NR' }, durationMs: 1, bytes: { request: 0, response: 30 } },
    { facts: { ...base, endpoint: v2, status: 200, protocol: 'grpc' as const }, durationMs: 12 },
  ];
  const metrics = new WaypointMetrics();
  requests.forEach(({ facts, durationMs, bytes }, index) => {
    // Both entry points: by facts (both HTTP paths) and by labels land in the same series.
    if (index % 2 === 0) metrics.requestByFacts(facts, durationMs, bytes);
    else metrics.request(requestLabels(facts), durationMs, bytes);
  });
  metrics.requestByFacts(requests[0]!.facts, requests[0]!.durationMs, requests[0]!.bytes);
  const expected = await promClientText([...requests, requests[0]!]);
  t.is(await metrics.registry.metrics(), expected);
});

test('requests to one endpoint whose facts change from one to the next land in their own series (status, flags, source, peer, Service, protocol)', async (t) => {
  const metrics = new WaypointMetrics();
  const v1 = workload('w1', 'v1');
  const other = { ...client, workloadName: 'other-client', uid: 'other-uid' };
  const base: RequestFacts = { source: client, peer, endpoint: v1, service, protocol: 'http', status: 200, flags: '-' };
  const sequence: RequestFacts[] = [
    base, base, { ...base, status: 503, flags: 'UF' }, { ...base, status: 503 }, base, { ...base, source: other }, { ...base, source: undefined },
    { ...base, peer: { ...peer, uri: 'spiffe://cluster.local/ns/other/sa/other' } }, { ...base, service: { ...service, hostname: 'split.bench.svc.cluster.local' } },
    { ...base, protocol: 'grpc', grpcStatus: '0' }, { ...base, protocol: 'grpc', grpcStatus: '14' }, base,
  ];
  for (const facts of sequence) metrics.requestByFacts(facts, 1);
  t.is(await metrics.registry.metrics(), await promClientText(sequence.map((facts) => ({ facts, durationMs: 1 }))));
});

test('a workload object replaced under the same uid gets its new labels', async (t) => {
  const metrics = new WaypointMetrics();
  const facts = (endpoint: Workload): RequestFacts => ({ source: client, peer, endpoint, service, protocol: 'http', status: 200, flags: '-' });
  metrics.requestByFacts(facts(workload('w1', 'v1')), 1);
  // The mesh state hands out a new object when the control plane updates the workload (a new revision label).
  metrics.requestByFacts(facts(workload('w1', 'v2')), 1);
  const text = await metrics.registry.metrics();
  const counts = [...text.matchAll(/^istio_requests_total\{.*destination_version="(v\d)".*\} (\d+)$/gm)].map((match) => `${match[1]}=${match[2]}`);
  t.deepEqual(counts.sort(), ['v1=1', 'v2=1']);
});

test('gRPC answers found by facts keep their grpc_response_status apart (the HTTP/2 path counts by facts too)', async (t) => {
  const metrics = new WaypointMetrics();
  const facts = (grpcStatus: string): RequestFacts => ({ source: client, peer, endpoint: undefined, service, protocol: 'grpc', status: 200, flags: '-', grpcStatus });
  const endpoint = workload('w1', 'v1');
  for (const status of ['0', '0', '14', '0']) metrics.requestByFacts({ ...facts(status), endpoint }, 1);
  const text = await metrics.registry.metrics();
  const counts = [...text.matchAll(/^istio_requests_total\{.*grpc_response_status="(\d*)".*\} (\d+)$/gm)].map((match) => `${match[1]}=${match[2]}`);
  t.deepEqual(counts.sort(), ['0=3', '14=1']);
});
