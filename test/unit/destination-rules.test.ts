/**
 * DestinationRule compilation (control plane) without a network: host forms, Istio's defaults, every refusal with
 * the field's path, the oldest rule winning, and the xDS round trip through ambit.waypoint.DestinationPolicy into
 * the waypoint's policy table.
 */
import test from 'ava';
import { compileDestinationRules, type DestinationRuleProblem } from '../../controlplane/model/destination-rules.ts';
import { ObjectStore } from '../../controlplane/store.ts';
import { checkObject } from '../../controlplane/sources/manifest-schema.ts';
import type { K8sObject } from '../../shared/k8s/objects.ts';
import { DESTINATION_POLICY_TYPE_URL, TO_OBJECT_OPTIONS, typeForUrl } from '../../shared/xds/protos.ts';
import { DestinationPolicyTable } from '../../waypoint/destination/policy-table.ts';

const WEB = 'shop/web.shop.svc.cluster.local';
const service = (name: string, namespace = 'shop'): K8sObject => ({ apiVersion: 'v1', kind: 'Service', metadata: { name, namespace }, spec: { clusterIP: '10.96.0.1', ports: [{ name: 'http', port: 80 }] } }) as K8sObject;
const rule = (name: string, spec: unknown, created = '2026-01-01T00:00:00Z', namespace = 'shop'): K8sObject =>
  ({ apiVersion: 'networking.istio.io/v1', kind: 'DestinationRule', metadata: { name, namespace, creationTimestamp: created }, spec }) as K8sObject;

function compile(objects: K8sObject[]): { table: DestinationPolicyTable; problems: DestinationRuleProblem[] } {
  const store = new ObjectStore();
  store.apply([service('web'), service('db', 'data'), ...objects].map((object) => ({ type: 'upsert' as const, object })));
  const problems: DestinationRuleProblem[] = [];
  const compiled = compileDestinationRules(store, 'cluster.local', (problem) => problems.push(problem));
  const type = typeForUrl(DESTINATION_POLICY_TYPE_URL)!;
  const table = new DestinationPolicyTable();
  const result = table.apply(compiled.map((entry) => ({ name: entry.name, version: '1', resource: type.toObject(type.decode(type.encode(type.fromObject(entry.resource)).finish()), TO_OBJECT_OPTIONS) })), []);
  if (result?.rejected) throw new Error(JSON.stringify(result.rejected));
  return { table, problems };
}

test('host by short name, name.namespace and FQDN; Istio defaults: LEAST_REQUEST, outlier 5 / 10s / 30s / 10%', (t) => {
  const { table, problems } = compile([
    rule('short', { host: 'web', trafficPolicy: { outlierDetection: {} } }),
    rule('other-ns', { host: 'db.data', trafficPolicy: { loadBalancer: { simple: 'ROUND_ROBIN' } } }),
  ]);
  t.deepEqual(problems, []);
  const web = table.policyFor(WEB)!;
  t.deepEqual(web.loadBalancer, { simple: 'LEAST_REQUEST' });
  t.deepEqual(web.outlierDetection, { consecutive5xxErrors: 5, consecutiveGatewayErrors: 0, intervalMs: 10_000, baseEjectionTimeMs: 30_000, maxEjectionPercent: 10 });
  t.is(web.rule, 'shop/short');
  t.deepEqual(table.policyFor('data/db.data.svc.cluster.local')!.loadBalancer, { simple: 'ROUND_ROBIN' });
  const fqdn = compile([rule('fqdn', { host: 'web.shop.svc.cluster.local', exportTo: ['.'] })]);
  t.truthy(fqdn.table.policyFor(WEB), 'exportTo is accepted and ignored');
});

test('consistent hash by header, cookie, source IP, query parameter; connection pool limits and durations', (t) => {
  const hashOf = (consistentHash: object) => compile([rule('r', { host: 'web', trafficPolicy: { loadBalancer: { consistentHash } } })]).table.policyFor(WEB)!.loadBalancer;
  t.deepEqual(hashOf({ httpHeaderName: 'X-User' }), { simple: 'CONSISTENT_HASH', hashOn: 'HTTP_HEADER', hashKey: 'x-user', minimumRingSize: 1024 });
  t.deepEqual(hashOf({ httpCookie: { name: 'session' }, ringHash: { minimumRingSize: 256 } }), { simple: 'CONSISTENT_HASH', hashOn: 'HTTP_COOKIE', hashKey: 'session', minimumRingSize: 256 });
  t.deepEqual(hashOf({ useSourceIp: true }), { simple: 'CONSISTENT_HASH', hashOn: 'SOURCE_IP', hashKey: '', minimumRingSize: 1024 });
  t.deepEqual(hashOf({ httpQueryParameterName: 'user' }), { simple: 'CONSISTENT_HASH', hashOn: 'QUERY_PARAMETER', hashKey: 'user', minimumRingSize: 1024 });
  const { table } = compile([
    rule('r', {
      host: 'web',
      trafficPolicy: {
        connectionPool: { tcp: { maxConnections: 1, connectTimeout: '1m30s' }, http: { http1MaxPendingRequests: 2, http2MaxRequests: 3, maxRequestsPerConnection: 4, maxRetries: 5, idleTimeout: '1.5s' } },
        outlierDetection: { consecutive5xxErrors: 0, consecutiveGatewayErrors: 2, interval: '100ms', baseEjectionTime: '2s', maxEjectionPercent: 100 },
      },
      subsets: [{ name: 'v1', labels: { version: 'v1' } }],
    }),
  ]);
  const policy = table.policyFor(WEB)!;
  t.deepEqual(policy.connectionPool, { maxConnections: 1, connectTimeoutMs: 90_000, http1MaxPendingRequests: 2, http2MaxRequests: 3, maxRequestsPerConnection: 4, maxRetries: 5, idleTimeoutMs: 1500 });
  t.deepEqual(policy.outlierDetection, { consecutive5xxErrors: 0, consecutiveGatewayErrors: 2, intervalMs: 100, baseEjectionTimeMs: 2000, maxEjectionPercent: 100 });
  t.deepEqual(policy.subsets, [{ name: 'v1', labels: { version: 'v1' }, pods: new Set() }]);
});

const refusals: [string, unknown, string, RegExp][] = [
  ['unknown field, with a suggestion', { host: 'web', trafficPolicy: { loadBalancr: {} } }, 'spec.trafficPolicy.loadBalancr', /unknown field \(did you mean loadBalancer\?\)/],
  ['bad enum', { host: 'web', trafficPolicy: { loadBalancer: { simple: 'FASTEST' } } }, 'spec.trafficPolicy.loadBalancer.simple', /must be one of UNSPECIFIED, LEAST_CONN/],
  ['two hash keys', { host: 'web', trafficPolicy: { loadBalancer: { consistentHash: { httpHeaderName: 'a', useSourceIp: true } } } }, 'spec.trafficPolicy.loadBalancer.consistentHash', /exactly one of .* \(got httpHeaderName, useSourceIp\)/],
  ['negative limit', { host: 'web', trafficPolicy: { connectionPool: { tcp: { maxConnections: -1 } } } }, 'spec.trafficPolicy.connectionPool.tcp.maxConnections', /integer from 0/],
  ['bad duration', { host: 'web', trafficPolicy: { outlierDetection: { interval: '10 seconds' } } }, 'spec.trafficPolicy.outlierDetection.interval', /a duration such as "30s"/],
  ['percent above 100', { host: 'web', trafficPolicy: { outlierDetection: { maxEjectionPercent: 101 } } }, 'spec.trafficPolicy.outlierDetection.maxEjectionPercent', /0 to 100/],
  ['tls not implemented', { host: 'web', trafficPolicy: { tls: { mode: 'ISTIO_MUTUAL' } } }, 'spec.trafficPolicy.tls', /not supported by ambit waypoints yet/],
  ['no host', { trafficPolicy: {} }, 'spec.host', /required/],
  ['host without a Service', { host: 'nothing' }, 'spec.host', /no Service shop\/nothing/],
  ['wildcard host', { host: '*.shop.svc.cluster.local' }, 'spec.host', /wildcard/],
  ['duplicate subset', { host: 'web', subsets: [{ name: 'v1' }, { name: 'v1' }] }, 'spec.subsets[1].name', /duplicate/],
  ['bad label value', { host: 'web', subsets: [{ name: 'v1', labels: { version: 'v 1' } }] }, 'spec.subsets[0].labels.version', /label value/],
];

for (const [title, spec, path, message] of refusals) {
  test(`refused with the field's path: ${title}`, (t) => {
    const { table, problems } = compile([rule('bad', spec)]);
    t.is(problems.length, 1, JSON.stringify(problems));
    t.is(problems[0]!.rule, 'shop/bad');
    t.is(problems[0]!.path, path);
    t.regex(problems[0]!.message, message);
    t.is(table.policyFor(WEB), undefined, 'a refused rule is not served at all');
  });
}

test('two rules for one host: the oldest is served, the newer reported', (t) => {
  const { table, problems } = compile([rule('newer', { host: 'web', trafficPolicy: { loadBalancer: { simple: 'RANDOM' } } }, '2026-02-01T00:00:00Z'), rule('older', { host: 'web.shop' }, '2026-01-01T00:00:00Z')]);
  t.is(table.policyFor(WEB)!.rule, 'shop/older');
  t.deepEqual(problems.map((problem) => [problem.rule, problem.path]), [['shop/newer', 'spec.host']]);
  t.regex(problems[0]!.message, /shop\/older \(older\) already applies/);
});

test('the waypoint NACKs a malformed resource and keeps the last good one', (t) => {
  const table = new DestinationPolicyTable();
  table.apply([{ name: WEB, version: '1', resource: { service: WEB, rule: 'shop/r', loadBalancer: { simple: 'RANDOM' } } }], []);
  const result = table.apply([{ name: WEB, version: '2', resource: { service: WEB, loadBalancer: { simple: 'CONSISTENT_HASH', hashOn: 'HTTP_HEADER', hashKey: '' } } }], []);
  t.regex(result?.rejected?.[0]?.reason ?? '', /without a name/);
  t.deepEqual(table.policyFor(WEB)!.loadBalancer, { simple: 'RANDOM' });
  table.apply([], [WEB]);
  t.is(table.policyFor(WEB), undefined);
});

test('the manifest check reports a misspelt top-level spec field of a DestinationRule by its path', (t) => {
  const problems = checkObject({ apiVersion: 'networking.istio.io/v1', kind: 'DestinationRule', metadata: { name: 'r' }, spec: { hots: 'web', trafficPolicy: {} } });
  t.deepEqual(problems.map((problem) => problem.path), [['spec', 'hots']]);
});
