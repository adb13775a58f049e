/**
 * VirtualService compilation (control plane) on waypoints without a network: rules in the order written (first
 * match wins), every supported match, weighted destinations with subsets, header operations, fault, retries,
 * timeouts, mirrors, redirect and rewrite, Istio's default retry policy, the refusal of a VirtualService for a
 * Service an HTTPRoute routes, and refusals by path; through the wire into the waypoint's route table and matcher;
 * DestinationRule subsets with their pods.
 */
import test from 'ava';
import { compileHttpRoutes } from '../../controlplane/model/http-routes.ts';
import { compileVirtualServices, type VirtualServiceProblem } from '../../controlplane/model/virtual-services.ts';
import { ObjectStore } from '../../controlplane/store.ts';
import type { K8sObject } from '../../shared/k8s/objects.ts';
import { DESTINATION_POLICY_TYPE_URL, HTTP_ROUTES_TYPE_URL, TO_OBJECT_OPTIONS, typeForUrl } from '../../shared/xds/protos.ts';
import { compileDestinationRules } from '../../controlplane/model/destination-rules.ts';
import { DestinationPolicyTable } from '../../waypoint/destination/policy-table.ts';
import { rewrittenUrl } from '../../waypoint/filters.ts';
import { matchRoute } from '../../waypoint/http-router.ts';
import { RouteTable } from '../../waypoint/route-table.ts';

const WEB = 'shop/web.shop.svc.cluster.local';
const service = (name: string, ports = [{ name: 'http', port: 80 }]): K8sObject => ({ apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: 'shop' }, spec: { clusterIP: '10.96.0.1', ports } }) as K8sObject;
const vs = (name: string, spec: unknown, created = '2026-01-01T00:00:00Z'): K8sObject => ({ apiVersion: 'networking.istio.io/v1', kind: 'VirtualService', metadata: { name, namespace: 'shop', creationTimestamp: created }, spec }) as K8sObject;

function compile(objects: K8sObject[]): { table: RouteTable; problems: VirtualServiceProblem[] } {
  const store = new ObjectStore();
  store.apply([service('web'), service('web-v1'), service('web-v2'), service('multi', [{ name: 'http', port: 80 }, { name: 'grpc', port: 90 }]), ...objects].map((object) => ({ type: 'upsert' as const, object })));
  const problems: VirtualServiceProblem[] = [];
  const httpRoutes = compileHttpRoutes(store, 'cluster.local', () => {});
  const compiled = [...httpRoutes, ...compileVirtualServices(store, 'cluster.local', new Set(httpRoutes.map((route) => route.name)), (problem) => problems.push(problem))];
  const type = typeForUrl(HTTP_ROUTES_TYPE_URL)!;
  const table = new RouteTable();
  const result = table.apply(compiled.map((entry) => ({ name: entry.name, version: '1', resource: type.toObject(type.decode(type.encode(type.fromObject(entry.resource)).finish()), TO_OBJECT_OPTIONS) })), []);
  if (result?.rejected) throw new Error(JSON.stringify(result.rejected));
  return { table, problems };
}

const ROUTES = {
  hosts: ['web'],
  http: [
    { name: 'canary', match: [{ headers: { 'X-Canary': { exact: 'yes' } } }], route: [{ destination: { host: 'web-v2' } }], headers: { request: { set: { 'X-Route': 'canary' }, remove: ['X-Drop'] } } },
    { match: [{ uri: { exact: '/exact' } }, { uri: { prefix: '/api' }, port: 80 }], route: [{ destination: { host: 'web-v1', port: { number: 80 } } }] },
    { route: [{ destination: { host: 'web-v1' }, weight: 80 }, { destination: { host: 'web-v2.shop.svc.cluster.local' }, weight: 20 }] },
  ],
};

test('rules keep the order written: the first match wins; weights, header operations, a catch-all rule', (t) => {
  const { table, problems } = compile([vs('web', ROUTES)]);
  t.deepEqual(problems, []);
  const entries = table.entriesFor(WEB)!;
  t.deepEqual(entries.map((entry) => entry.ruleName), ['canary', '', '', '']);
  const route = (path: string, headers = {}) => matchRoute(entries, 80, path, headers);
  t.deepEqual(route('/api/x', { 'x-canary': 'yes' })!.backends.map((b) => b.service), ['shop/web-v2.shop.svc.cluster.local'], 'the header rule is written first and wins over the longer path');
  t.deepEqual(route('/exact')!.backends.map((b) => b.service), ['shop/web-v1.shop.svc.cluster.local']);
  t.deepEqual(route('/other')!.backends.map((b) => [b.service, b.weight]), [['shop/web-v1.shop.svc.cluster.local', 80], ['shop/web-v2.shop.svc.cluster.local', 20]]);
  t.deepEqual(entries[0]!.requestHeaderModifier, { set: [{ name: 'x-route', value: 'canary' }], add: [], remove: ['x-drop'] });
  t.is(entries[0]!.route, 'VirtualService/shop/web');
});

test('a VirtualService for a Service an HTTPRoute already routes is refused; the HTTPRoute stays', (t) => {
  const httpRoute = { apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name: 'web', namespace: 'shop' }, spec: { parentRefs: [{ group: '', kind: 'Service', name: 'web' }], rules: [{ backendRefs: [{ name: 'web-v2', port: 80 }] }] } } as K8sObject;
  const { table, problems } = compile([vs('web', ROUTES), httpRoute]);
  t.deepEqual(problems.map((problem) => [problem.virtualService, problem.path]), [['shop/web', 'spec.hosts[0]']]);
  t.regex(problems[0]!.message, /already has an HTTPRoute attached; mixing .* is refused/);
  t.is(table.entriesFor(WEB)![0]!.route, 'shop/web');
});

const route = [{ destination: { host: 'web' } }];
const refusals: [string, unknown, string, RegExp][] = [
  ['sourceLabels not built', { hosts: ['web'], http: [{ match: [{ sourceLabels: { app: 'a' } }], route }] }, 'spec.http[0].match[0].sourceLabels', /not supported by ambit waypoints yet/],
  ['authority match not built', { hosts: ['web'], http: [{ match: [{ authority: { exact: 'a' } }], route }] }, 'spec.http[0].match[0].authority', /not supported/],
  ['corsPolicy not built', { hosts: ['web'], http: [{ corsPolicy: { allowOrigins: [] }, route }] }, 'spec.http[0].corsPolicy', /not supported/],
  ['directResponse not built', { hosts: ['web'], http: [{ directResponse: { status: 200 } }] }, 'spec.http[0].directResponse', /not supported/],
  ['tcp routes not built', { hosts: ['web'], tcp: [] }, 'spec.tcp', /not supported/],
  ['typo', { hosts: ['web'], http: [{ rout: [] }] }, 'spec.http[0].rout', /did you mean route\?/],
  ['unknown destination', { hosts: ['web'], http: [{ route: [{ destination: { host: 'nothing' } }] }] }, 'spec.http[0].route[0].destination.host', /no Service shop\/nothing/],
  ['port needed', { hosts: ['web'], http: [{ route: [{ destination: { host: 'multi' } }] }] }, 'spec.http[0].route[0].destination.port', /has 2 ports/],
  ['a gateway', { hosts: ['web'], gateways: ['shop/ingress'], http: [] }, 'spec.gateways[0]', /only "mesh"/],
  ['a bad uri regex', { hosts: ['web'], http: [{ match: [{ uri: { regex: '/a(' } }], route }] }, 'spec.http[0].match[0].uri.regex', /not a valid RE2/],
  ['two uri kinds', { hosts: ['web'], http: [{ match: [{ uri: { exact: '/a', prefix: '/b' } }], route }] }, 'spec.http[0].match[0].uri', /exactly one of exact, prefix, regex/],
  ['a method regex', { hosts: ['web'], http: [{ match: [{ method: { regex: 'G.*' } }], route }] }, 'spec.http[0].match[0].method.regex', /not supported/],
  ['a query prefix', { hosts: ['web'], http: [{ match: [{ queryParams: { v: { prefix: 'a' } } }], route }] }, 'spec.http[0].match[0].queryParams.v.prefix', /not supported/],
  ['a bad withoutHeaders regex', { hosts: ['web'], http: [{ match: [{ withoutHeaders: { 'x-a': { regex: '[' } } }], route }] }, 'spec.http[0].match[0].withoutHeaders.x-a.regex', /not a valid RE2/],
  ['ignoreUriCase not a boolean', { hosts: ['web'], http: [{ match: [{ ignoreUriCase: 'yes' }], route }] }, 'spec.http[0].match[0].ignoreUriCase', /true or false/],
  ['a bad timeout', { hosts: ['web'], http: [{ timeout: 'soon', route }] }, 'spec.http[0].timeout', /must be a duration/],
  ['an unknown retry condition', { hosts: ['web'], http: [{ retries: { attempts: 2, retryOn: '5xx,sometimes' }, route }] }, 'spec.http[0].retries.retryOn', /sometimes is not a retry condition/],
  ['a retry condition not built', { hosts: ['web'], http: [{ retries: { attempts: 2, retryOn: 'retriable-headers' }, route }] }, 'spec.http[0].retries.retryOn', /retriable-headers is not supported/],
  ['retryRemoteLocalities not built', { hosts: ['web'], http: [{ retries: { attempts: 2, retryRemoteLocalities: true }, route }] }, 'spec.http[0].retries.retryRemoteLocalities', /not supported/],
  ['a bad perTryTimeout', { hosts: ['web'], http: [{ retries: { attempts: 2, perTryTimeout: '1' }, route }] }, 'spec.http[0].retries.perTryTimeout', /must be a duration/],
  ['an empty fault', { hosts: ['web'], http: [{ fault: {}, route }] }, 'spec.http[0].fault', /set delay, abort or both/],
  ['a delay without fixedDelay', { hosts: ['web'], http: [{ fault: { delay: { percentage: { value: 5 } } }, route }] }, 'spec.http[0].fault.delay.fixedDelay', /required/],
  ['exponentialDelay not built', { hosts: ['web'], http: [{ fault: { delay: { exponentialDelay: '1s' } }, route }] }, 'spec.http[0].fault.delay.exponentialDelay', /not supported/],
  ['a percentage over 100', { hosts: ['web'], http: [{ fault: { abort: { httpStatus: 503, percentage: { value: 101 } } }, route }] }, 'spec.http[0].fault.abort.percentage.value', /from 0 to 100/],
  ['an abort with two statuses', { hosts: ['web'], http: [{ fault: { abort: { httpStatus: 503, grpcStatus: 'UNAVAILABLE' } }, route }] }, 'spec.http[0].fault.abort', /exactly one of httpStatus, grpcStatus/],
  ['an abort status out of range', { hosts: ['web'], http: [{ fault: { abort: { httpStatus: 99 } }, route }] }, 'spec.http[0].fault.abort.httpStatus', /200 to 599/],
  ['an unknown gRPC status', { hosts: ['web'], http: [{ fault: { abort: { grpcStatus: 'OK' } }, route }] }, 'spec.http[0].fault.abort.grpcStatus', /gRPC status name other than OK/],
  ['http2Error not built', { hosts: ['web'], http: [{ fault: { abort: { http2Error: 'REFUSED_STREAM' } }, route }] }, 'spec.http[0].fault.abort.http2Error', /not supported/],
  ['mirror and mirrors', { hosts: ['web'], http: [{ mirror: { host: 'web-v1' }, mirrors: [], route }] }, 'spec.http[0].mirrors', /not both/],
  ['a mirror to a subset', { hosts: ['web'], http: [{ mirror: { host: 'web-v1', subset: 'v1' }, route }] }, 'spec.http[0].mirror.subset', /not supported/],
  ['a mirror to nothing', { hosts: ['web'], http: [{ mirrors: [{ destination: { host: 'gone' } }], route }] }, 'spec.http[0].mirrors[0].destination.host', /no Service shop\/gone/],
  ['redirect and route', { hosts: ['web'], http: [{ redirect: { uri: '/x' }, route }] }, 'spec.http[0].redirect', /route or redirect, not both/],
  ['a redirect code', { hosts: ['web'], http: [{ redirect: { uri: '/x', redirectCode: 200 } }] }, 'spec.http[0].redirect.redirectCode', /301, 302/],
  ['derivePort not built', { hosts: ['web'], http: [{ redirect: { derivePort: 'FROM_REQUEST_PORT' } }] }, 'spec.http[0].redirect.derivePort', /not supported/],
  ['uriRegexRewrite not built', { hosts: ['web'], http: [{ rewrite: { uriRegexRewrite: { match: 'a', rewrite: 'b' } }, route }] }, 'spec.http[0].rewrite.uriRegexRewrite', /not supported/],
  ['a destination header typo', { hosts: ['web'], http: [{ route: [{ destination: { host: 'web' }, headers: { requests: {} } }] }] }, 'spec.http[0].route[0].headers.requests', /did you mean request\?/],
];

for (const [title, spec, path, message] of refusals) {
  test(`refused with the field's path: ${title}`, (t) => {
    const { table, problems } = compile([vs('bad', spec)]);
    t.deepEqual(problems.map((problem) => problem.path), [path]);
    t.regex(problems[0]!.message, message);
    t.is(table.entriesFor(WEB), undefined);
  });
}

/** The whole rule set a user of Istio's traffic tasks writes, through the wire into the waypoint's route table. */
const FULL = {
  hosts: ['web'],
  http: [
    { name: 'moved', match: [{ uri: { prefix: '/old' } }], redirect: { uri: '/new', authority: 'web-v2', redirectCode: 308 } },
    { name: 'faulty', match: [{ uri: { exact: '/fault' } }], fault: { delay: { fixedDelay: '30ms', percentage: { value: 10 } }, abort: { httpStatus: 503, percentage: { value: 2.5 } } }, route: [{ destination: { host: 'web' } }] },
    { name: 'grpc-abort', match: [{ uri: { exact: '/grpc' } }], fault: { abort: { grpcStatus: 'UNAVAILABLE' } }, route: [{ destination: { host: 'web' } }] },
    {
      name: 'api',
      match: [{ uri: { prefix: '/API', }, ignoreUriCase: true, method: { exact: 'POST' }, headers: { 'x-user': { prefix: 'ad' }, 'x-trace': {} }, withoutHeaders: { 'x-debug': { exact: '1' } }, queryParams: { v: { regex: '[0-9]+' } } }],
      rewrite: { uri: '/v2/api', authority: 'api.internal' },
      timeout: '2s',
      retries: { attempts: 3, perTryTimeout: '500ms', retryOn: 'gateway-error,reset,409,unavailable' },
      headers: { request: { add: { 'x-added': 'a' } }, response: { set: { 'x-served-by': 'api' }, remove: ['server'] } },
      mirror: { host: 'web-v2' },
      mirrorPercentage: { value: 25 },
      route: [{ destination: { host: 'web', subset: 'v1' }, weight: 90, headers: { request: { set: { 'x-subset': 'v1' } } } }, { destination: { host: 'web', subset: 'v2' }, weight: 10 }],
    },
    { name: 'regex', match: [{ uri: { regex: '/items/[0-9]+' } }], retries: { attempts: 0 }, rewrite: { uri: '/item' }, route: [{ destination: { host: 'web-v1' } }] },
    { name: 'rest', mirrors: [{ destination: { host: 'web-v1' }, percentage: { value: 50 } }, { destination: { host: 'web-v2' } }], route: [{ destination: { host: 'web' } }] },
  ],
};

test('every supported field through the wire: matches, fault, retries, timeouts, headers, mirrors, redirect, rewrite, subsets', (t) => {
  const { table, problems } = compile([vs('web', FULL)]);
  t.deepEqual(problems, []);
  const entries = table.entriesFor(WEB)!;
  const byName = (name: string) => entries.find((entry) => entry.ruleName === name)!;
  const ok = { 'x-user': 'admin', 'x-trace': '' };
  const match = (path: string, headers: Record<string, string>, method = 'GET', query = '') => matchRoute(entries, 80, path, headers, method, query)?.ruleName;
  t.is(match('/oldish', {}), 'moved', 'uri prefix is a plain string prefix');
  t.is(match('/api/x', ok, 'POST', 'v=12'), 'api', 'ignoreUriCase, method, header prefix, presence and query regex');
  t.is(match('/api/x', ok, 'GET', 'v=12'), 'rest', 'method must match');
  t.is(match('/api/x', { ...ok, 'x-user': 'bob' }, 'POST', 'v=12'), 'rest', 'header prefix must match');
  t.is(match('/api/x', { 'x-user': 'admin' }, 'POST', 'v=12'), 'rest', 'a presence match needs the header');
  t.is(match('/api/x', { ...ok, 'x-debug': '1' }, 'POST', 'v=12'), 'rest', 'withoutHeaders excludes a matching header');
  t.is(match('/api/x', { ...ok, 'x-debug': '2' }, 'POST', 'v=12'), 'api', 'withoutHeaders lets another value through');
  t.is(match('/api/x', ok, 'POST', 'v=a'), 'rest', 'query regex is whole-value');
  t.is(match('/items/12', {}), 'regex');
  t.is(match('/items/12/x', {}), 'rest', 'a uri regex matches the whole path');

  const moved = byName('moved');
  t.deepEqual(moved.redirect, { scheme: '', hostname: 'web-v2', port: 0, statusCode: 308, path: { type: 'REPLACE_FULL_PATH', value: '/new' } });
  t.deepEqual(byName('faulty').fault, { delay: { fixedDelayMs: 30, percentage: 10 }, abort: { httpStatus: 503, grpcStatus: 0, percentage: 2.5 } });
  t.deepEqual(byName('grpc-abort').fault, { abort: { httpStatus: 0, grpcStatus: 14, percentage: 100 } });
  const api = byName('api');
  t.is(api.requestTimeoutMs, 2000);
  t.is(api.backendRequestTimeoutMs, 500, 'perTryTimeout is each try');
  t.deepEqual({ ...api.retry, codes: [...api.retry!.codes], retryOn: [...api.retry!.retryOn!] }, { codes: [409], attempts: 3, backoffMs: 25, retryOn: ['gateway-error', 'reset', 'unavailable', 'retriable-status-codes'] });
  t.deepEqual(api.urlRewrite, { hostname: 'api.internal', path: { type: 'REPLACE_LITERAL_PREFIX', value: '/v2/api', prefix: '/API' } });
  t.deepEqual(api.requestHeaderModifier, { set: [], add: [{ name: 'x-added', value: 'a' }], remove: [] });
  t.deepEqual(api.responseHeaderModifier, { set: [{ name: 'x-served-by', value: 'api' }], add: [], remove: ['server'] });
  t.deepEqual(api.mirrors, [{ service: 'shop/web-v2.shop.svc.cluster.local', port: 80, fraction: 0.25 }]);
  t.deepEqual(api.backends.map((backend) => [backend.subset, backend.weight, backend.requestHeaderModifier?.set[0]?.value]), [['v1', 90, 'v1'], ['v2', 10, undefined]]);
  const regex = byName('regex');
  t.is(regex.retry!.attempts, 0, 'attempts 0 turns retries off');
  t.deepEqual(regex.urlRewrite, { hostname: '', path: { type: 'REPLACE_FULL_PATH', value: '/item' } }, 'a regex match rewrites the whole path');
  const rest = byName('rest');
  t.deepEqual(rest.mirrors.map((mirror) => mirror.fraction), [0.5, 1]);
  t.deepEqual({ ...rest.retry, codes: [...rest.retry!.codes], retryOn: [...rest.retry!.retryOn!] }, { codes: [503], attempts: 2, backoffMs: 25, retryOn: ['connect-failure', 'refused-stream', 'unavailable', 'cancelled', 'retriable-status-codes'] }, "Istio's default policy when retries is absent");
  t.is(rest.fault, undefined);
});

test('rewrite.uri replaces the plain prefix a uri.prefix matched (Envoy prefix_rewrite), the whole path otherwise', (t) => {
  const { table } = compile([vs('web', { hosts: ['web'], http: [{ match: [{ uri: { prefix: '/v1' } }], rewrite: { uri: '/' }, route }, { rewrite: { uri: '/all' }, route }] })]);
  const [prefixed, rest] = table.entriesFor(WEB)!;
  t.is(rewrittenUrl(prefixed!, '/v1/items', 'a=1'), '//items?a=1', "as Envoy's prefix_rewrite: /v1 -> / leaves the following slash");
  t.is(rewrittenUrl(prefixed!, '/v1x', ''), '/x');
  t.is(rewrittenUrl(rest!, '/x/y', ''), '/allx/y', "a rule without a uri match replaces the leading / (Istio's route prefix /), as Envoy does");
});

test('a DestinationRule subset lists the pods the Service selects with its labels', (t) => {
  const store = new ObjectStore();
  const pod = (name: string, labels: Record<string, string>, namespace = 'shop'): K8sObject => ({ apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace, labels } }) as K8sObject;
  const selecting = { ...service('web'), spec: { clusterIP: '10.96.0.1', selector: { app: 'web' }, ports: [{ name: 'http', port: 80 }] } } as K8sObject;
  const rule = { apiVersion: 'networking.istio.io/v1', kind: 'DestinationRule', metadata: { name: 'web', namespace: 'shop' }, spec: { host: 'web', subsets: [{ name: 'v1', labels: { version: 'v1' } }, { name: 'v2', labels: { version: 'v2' } }] } } as K8sObject;
  store.apply([selecting, rule, pod('web-a', { app: 'web', version: 'v1' }), pod('web-b', { app: 'web', version: 'v2' }), pod('other', { app: 'other', version: 'v1' }), pod('web-c', { app: 'web', version: 'v1' }, 'elsewhere')].map((object) => ({ type: 'upsert' as const, object })));
  const compiled = compileDestinationRules(store, 'cluster.local', () => t.fail());
  t.deepEqual(compiled[0]!.resource.subsets.map((subset) => [subset.name, subset.pods]), [['v1', ['shop/web-a']], ['v2', ['shop/web-b']]]);
  const type = typeForUrl(DESTINATION_POLICY_TYPE_URL)!;
  const policies = new DestinationPolicyTable();
  t.is(policies.apply([{ name: compiled[0]!.name, version: '1', resource: type.toObject(type.decode(type.encode(type.fromObject(compiled[0]!.resource)).finish()), TO_OBJECT_OPTIONS) }], []), undefined);
  t.deepEqual([...policies.policyFor(WEB)!.subsets[0]!.pods], ['shop/web-a'], 'the pods reach the waypoint');
});
