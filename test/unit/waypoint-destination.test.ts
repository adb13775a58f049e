/**
 * The waypoint's DestinationRule parts without a network: load balancers (consistent hash keeps a key on one
 * endpoint and moves few keys when one goes; round robin; least request), the connection pool's limits and
 * overflow, outlier detection (ejection, return, growing ejection time, maxEjectionPercent), and the chooser that
 * leaves ejected endpoints out.
 */
import test from 'ava';
import { ConnectionPool, ConnectionPoolOverflowError } from '../../waypoint/destination/connection-pool.ts';
import { DestinationTraffic, endpointKey, type DestinationRequest } from '../../waypoint/destination/destination-traffic.ts';
import { EndpointBalancer } from '../../waypoint/destination/load-balancer.ts';
import { OutlierDetector } from '../../waypoint/destination/outlier-detection.ts';
import { DestinationPolicyTable, type ConnectionPoolLimits } from '../../waypoint/destination/policy-table.ts';
import { Registry } from 'prom-client';
import type { Service, ServiceEndpoint } from '../../shared/mesh/service.ts';
import { NoHealthyUpstreamError } from '../../shared/mesh/load-balance.ts';
import type { Workload } from '../../shared/mesh/workload.ts';

const keys = Array.from({ length: 5 }, (_, i) => `shop/web-${i}`);
const none = (): number => 0;
const ringHash = (minimumRingSize = 1024) => new EndpointBalancer({ simple: 'CONSISTENT_HASH', hashOn: 'HTTP_HEADER', hashKey: 'x-user', minimumRingSize });

test('consistent hash: 1,000 requests with one key land on one endpoint; keys spread over all', (t) => {
  const balancer = ringHash();
  const chosen = new Set<number>();
  for (let i = 0; i < 1000; i++) chosen.add(balancer.choose(keys, none, 'alice'));
  t.is(chosen.size, 1);
  const counts = new Array<number>(keys.length).fill(0);
  for (let i = 0; i < 5000; i++) counts[balancer.choose(keys, none, `user-${i}`)]!++;
  t.true(counts.every((count) => count > 600 && count < 1400), `spread: ${counts.join(' ')}`);
});

test('consistent hash: removing an endpoint moves only the keys that were on it', (t) => {
  const balancer = ringHash();
  const before = new Map<string, string>();
  for (let i = 0; i < 2000; i++) before.set(`user-${i}`, keys[balancer.choose(keys, none, `user-${i}`)]!);
  const fewer = keys.filter((key) => key !== 'shop/web-2');
  let moved = 0;
  for (const [user, key] of before) {
    const now = fewer[balancer.choose(fewer, none, user)]!;
    if (key !== 'shop/web-2' && now !== key) moved++;
    if (key === 'shop/web-2') t.not(now, 'shop/web-2');
  }
  t.is(moved, 0, 'keys on the remaining endpoints stay where they were');
});

test('consistent hash without a key (header absent) falls back to a random endpoint', (t) => {
  let call = 0;
  const balancer = new EndpointBalancer({ simple: 'CONSISTENT_HASH', hashOn: 'HTTP_HEADER', hashKey: 'x-user', minimumRingSize: 64 }, () => [0.1, 0.9][call++ % 2]!);
  t.deepEqual([balancer.choose(keys, none, undefined), balancer.choose(keys, none, undefined)], [0, 4]);
});

test('round robin visits every endpoint in turn', (t) => {
  const balancer = new EndpointBalancer({ simple: 'ROUND_ROBIN' });
  const order = Array.from({ length: 10 }, () => balancer.choose(keys, none, undefined));
  t.deepEqual(order, [1, 2, 3, 4, 0, 1, 2, 3, 4, 0]);
});

test('least request: of two random candidates the one with fewer requests in flight', (t) => {
  const inFlight = [5, 0, 5, 5, 5];
  let draws = [0.0, 0.0];
  const balancer = new EndpointBalancer({ simple: 'LEAST_REQUEST' }, () => draws.shift() ?? 0);
  // First draw index 0, second draw index 0 of the other four = index 1.
  t.is(balancer.choose(keys, (i) => inFlight[i]!, undefined), 1);
  draws = [0.99, 0.0];
  t.is(balancer.choose(keys, (i) => [0, 9, 9, 9, 1][i]!, undefined), 0, 'index 4 vs index 0: 0 has fewer');
  // Over many draws the busiest endpoint is chosen least.
  const counts = new Array<number>(5).fill(0);
  const least = new EndpointBalancer({ simple: 'LEAST_REQUEST' });
  for (let i = 0; i < 2000; i++) counts[least.choose(keys, (j) => j, undefined)]!++;
  t.true(counts[0]! > counts[4]! && counts[4] === 0, counts.join(' '));
});

const limits = (over: Partial<ConnectionPoolLimits>): ConnectionPoolLimits => ({ maxConnections: 0, connectTimeoutMs: 0, http1MaxPendingRequests: 0, http2MaxRequests: 0, maxRequestsPerConnection: 0, maxRetries: 0, idleTimeoutMs: 0, ...over });

test('connection pool: maxConnections in flight, http1MaxPendingRequests waiting, the next one overflows', async (t) => {
  const pool = new ConnectionPool('shop/web', limits({ maxConnections: 2, http1MaxPendingRequests: 1 }));
  t.is(pool.acquire(), undefined);
  t.is(pool.acquire(), undefined);
  let waited = false;
  const waiting = pool.acquire()!.then(() => (waited = true));
  t.true(waiting instanceof Promise);
  const error = t.throws(() => pool.acquire(), { instanceOf: ConnectionPoolOverflowError });
  t.is(error?.code, 'WAYPOINT_UPSTREAM_OVERFLOW');
  t.regex(error?.message ?? '', /2 requests in flight \(limit 2\) and 1 waiting \(limit 1\)/);
  t.is(pool.overflows, 1);
  pool.release();
  await waiting;
  t.true(waited, 'the waiting request got the freed slot');
  t.is(pool.active, 2);
  pool.release();
  pool.release();
  t.is(pool.active, 0);
  t.is(pool.acquire(), undefined, 'free again');
});

test('connection pool: http2MaxRequests limits too (the smaller limit wins); no limits: never overflows', (t) => {
  const pool = new ConnectionPool('shop/web', limits({ maxConnections: 10, http2MaxRequests: 1, http1MaxPendingRequests: 1 }));
  pool.acquire();
  void pool.acquire();
  t.throws(() => pool.acquire());
  const open = new ConnectionPool('shop/web', limits({}));
  for (let i = 0; i < 10_000; i++) t.is(open.acquire(), undefined);
});

test('outlier detection: consecutive 5xx eject, a success in between resets, the endpoint returns after the ejection time', (t) => {
  let now = 0;
  const ejected: string[] = [];
  const detector = new OutlierDetector({ consecutive5xxErrors: 3, consecutiveGatewayErrors: 0, intervalMs: 1000, baseEjectionTimeMs: 30_000, maxEjectionPercent: 100 }, { now: () => now, onEject: (e) => ejected.push(e) });
  detector.report('a', 500, 2);
  detector.report('a', 500, 2);
  detector.report('a', 200, 2);
  detector.report('a', 500, 2);
  detector.report('a', 500, 2);
  t.false(detector.isEjected('a'), 'the 200 reset the count');
  detector.report('a', 'connect-failure', 2);
  t.true(detector.isEjected('a'));
  t.deepEqual(ejected, ['a']);
  now = 29_999;
  t.true(detector.isEjected('a'));
  now = 30_000;
  t.false(detector.isEjected('a'), 'back after baseEjectionTime');
  // Second ejection lasts twice as long.
  for (let i = 0; i < 3; i++) detector.report('a', 502, 2);
  t.true(detector.isEjected('a'));
  t.is(detector.view()[0]!.ejections, 2);
  now = 30_000 + 59_000;
  t.true(detector.isEjected('a'));
  now = 30_000 + 60_000;
  t.false(detector.isEjected('a'));
  t.is(detector.ejectionsTotal, 2);
});

test('outlier detection: the ejection multiplier drops by one for every interval the endpoint stays in', (t) => {
  let now = 0;
  const detector = new OutlierDetector({ consecutive5xxErrors: 1, consecutiveGatewayErrors: 0, intervalMs: 10_000, baseEjectionTimeMs: 30_000, maxEjectionPercent: 100 }, { now: () => now });
  detector.report('a', 500, 2);
  now = 30_000;
  t.false(detector.isEjected('a'));
  detector.report('a', 500, 2); // second ejection at once: 60 s
  t.is(detector.view()[0]!.ejectedForMs, 60_000);
  now = 90_000;
  t.false(detector.isEjected('a'));
  now = 90_000 + 10_000; // one healthy interval: multiplier 2 -> 1, the next ejection is 2 x 30 s, not 3 x 30 s
  detector.report('a', 500, 2);
  t.is(detector.view()[0]!.ejectedForMs, 60_000);
  now = 160_000;
  t.false(detector.isEjected('a'));
  now = 160_000 + 25_000; // two whole intervals: 2 -> 0, the next ejection is the base time again
  detector.report('a', 500, 2);
  t.is(detector.view()[0]!.ejectedForMs, 30_000);
});

test('outlier detection: gateway errors count on their own; a 500 breaks their run', (t) => {
  const detector = new OutlierDetector({ consecutive5xxErrors: 0, consecutiveGatewayErrors: 2, intervalMs: 0, baseEjectionTimeMs: 1000, maxEjectionPercent: 100 }, { now: () => 0 });
  detector.report('a', 503, 1);
  detector.report('a', 500, 1);
  detector.report('a', 504, 1);
  t.false(detector.isEjected('a'));
  detector.report('a', 502, 1);
  t.true(detector.isEjected('a'));
});

test('outlier detection: maxEjectionPercent keeps endpoints in (the share already ejected is compared)', (t) => {
  const detector = new OutlierDetector({ consecutive5xxErrors: 1, consecutiveGatewayErrors: 0, intervalMs: 0, baseEjectionTimeMs: 1000, maxEjectionPercent: 50 }, { now: () => 0 });
  detector.report('a', 500, 4);
  detector.report('b', 500, 4);
  detector.report('c', 500, 4);
  t.deepEqual(['a', 'b', 'c'].map((e) => detector.isEjected(e)), [true, true, false]);
  t.is(detector.ejectedCount, 2);
});

function workload(name: string): Workload {
  return {
    uid: `Kubernetes//Pod/shop/${name}`, name, namespace: 'shop', serviceAccount: 'web', trustDomain: 'cluster.local', node: 'n1', addresses: [`10.0.0.${name.length}${name.at(-1)!.charCodeAt(0) % 10}`],
    tunnelProtocol: 'HBONE', captureReason: '', canonicalName: name, canonicalRevision: 'v1', workloadName: name,
  } as Workload;
}

test('the chooser leaves ejected endpoints out; all ejected: no healthy upstream; the metrics count ejections', async (t) => {
  const policies = new DestinationPolicyTable();
  policies.apply([{ name: 'shop/web', version: '1', resource: { service: 'shop/web', rule: 'shop/web-dr', loadBalancer: { simple: 'ROUND_ROBIN' }, outlierDetection: { consecutive_5xxErrors: 1, baseEjectionTimeMs: 60_000, maxEjectionPercent: 100 } } }], []);
  const registry = new Registry();
  const traffic = new DestinationTraffic(policies, registry);
  const service = { hostname: 'web.shop.svc.cluster.local', ports: [{ servicePort: 80, targetPort: 8080 }] } as unknown as Service;
  const endpoints: ServiceEndpoint[] = [workload('a'), workload('b')].map((w) => ({ workload: w, ports: [] }) as unknown as ServiceEndpoint);
  const web = traffic.forService('shop/web')!;
  const pick = () => web.chooser(undefined)(workload('client'), service, endpoints, 80, '10.96.0.1');
  const first = pick();
  web.started(first.endpoint.workload);
  web.finished(first.endpoint.workload, 503);
  const names = new Set(Array.from({ length: 10 }, () => pick().endpoint.workload.name));
  t.deepEqual([...names], [first.endpoint.workload.name === 'a' ? 'b' : 'a'], 'only the other endpoint is chosen');
  const other = pick();
  web.finished(other.endpoint.workload, 500);
  t.throws(pick, { message: /no healthy upstream: service web.shop.svc.cluster.local; 2 endpoints ejected by outlier detection/ });
  const metrics = await registry.metrics();
  t.regex(metrics, /envoy_cluster_outlier_detection_ejections_active\{cluster_name="shop\/web"\} 2/);
  t.regex(metrics, /envoy_cluster_outlier_detection_ejections_enforced_total\{cluster_name="shop\/web"\} 2/);
  t.is(endpointKey(first.endpoint.workload), `Kubernetes//Pod/shop/${first.endpoint.workload.name}`);
  t.is(traffic.forService('shop/other'), undefined);
});

test("a subset's request chooses among its pods only (none left: no healthy upstream); a new pod list keeps ejections", (t) => {
  const policies = new DestinationPolicyTable();
  const resource = (pods: string[]) => ({ service: 'shop/web', rule: 'shop/web-dr', loadBalancer: { simple: 'ROUND_ROBIN' }, outlierDetection: { consecutive_5xxErrors: 1, baseEjectionTimeMs: 60_000, maxEjectionPercent: 100 }, subsets: [{ name: 'v2', labels: { version: 'v2' }, pods }] });
  policies.apply([{ name: 'shop/web', version: '1', resource: resource(['shop/b', 'shop/c']) }], []);
  const traffic = new DestinationTraffic(policies, new Registry());
  const service = { hostname: 'web.shop.svc.cluster.local', ports: [{ servicePort: 80, targetPort: 8080 }] } as unknown as Service;
  const endpoints: ServiceEndpoint[] = [workload('a'), workload('b'), workload('c')].map((w) => ({ workload: w, ports: [] }) as unknown as ServiceEndpoint);
  const web = traffic.forService('shop/web')!;
  t.is(web.subsetPods('v9'), undefined, 'a subset the rule does not define');
  const request = () => web.begin({ headers: {}, url: '/', sourceIp: '10.0.0.1' }, web.subsetPods('v2')) as DestinationRequest;
  const chosen = new Set(Array.from({ length: 20 }, () => {
    const admitted = request();
    const name = admitted.choose(workload('client'), service, endpoints, 80, '10.96.0.1').endpoint.workload.name;
    admitted.done(200);
    return name;
  }));
  t.deepEqual([...chosen].sort(), ['b', 'c'], 'never a, which is not in the subset');
  const failing = request();
  const ejected = failing.choose(workload('client'), service, endpoints, 80, '10.96.0.1').endpoint.workload.name;
  failing.done(503);
  policies.apply([{ name: 'shop/web', version: '2', resource: resource(['shop/b', 'shop/c', 'shop/d']) }], []);
  t.is(traffic.forService('shop/web'), web, 'only the pods changed: the same traffic state');
  t.deepEqual([...web.subsetPods('v2')!], ['shop/b', 'shop/c', 'shop/d']);
  t.is(web.outliers!.ejectedCount, 1, 'the ejection survived the new pod list');
  const next = request();
  t.not(next.choose(workload('client'), service, endpoints, 80, '10.96.0.1').endpoint.workload.name, ejected);
  next.done(200);
  policies.apply([{ name: 'shop/web', version: '3', resource: resource(['shop/x']) }], []);
  t.is(traffic.forService('shop/web'), web, 'the waypoint asks for the state per request, which takes the new pods');
  const empty = request();
  t.throws(() => empty.choose(workload('client'), service, endpoints, 80, '10.96.0.1'), { instanceOf: NoHealthyUpstreamError });
  empty.done(undefined);
  policies.apply([{ name: 'shop/web', version: '4', resource: { ...resource(['shop/b']), loadBalancer: { simple: 'RANDOM' } } }], []);
  t.not(traffic.forService('shop/web'), web, 'a changed traffic policy starts afresh');
});
