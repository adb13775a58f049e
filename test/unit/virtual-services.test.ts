/**
 * VirtualService compilation (control plane) on waypoints without a network: rules in the order written (first
 * match wins), uri/header/port matches, weighted destinations, request header operations, the refusal of a
 * VirtualService for a Service an HTTPRoute routes, and refusals by path; through the wire into the waypoint's
 * route table and its matcher.
 */
import test from 'ava';
import { compileHttpRoutes } from '../../controlplane/model/http-routes.ts';
import { compileVirtualServices, type VirtualServiceProblem } from '../../controlplane/model/virtual-services.ts';
import { ObjectStore } from '../../controlplane/store.ts';
import type { K8sObject } from '../../shared/k8s/objects.ts';
import { HTTP_ROUTES_TYPE_URL, TO_OBJECT_OPTIONS, typeForUrl } from '../../shared/xds/protos.ts';
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

const refusals: [string, unknown, string, RegExp][] = [
  ['timeout not built yet', { hosts: ['web'], http: [{ timeout: '1s', route: [{ destination: { host: 'web' } }] }] }, 'spec.http[0].timeout', /not supported by ambit waypoints yet/],
  ['fault not built yet', { hosts: ['web'], http: [{ fault: { abort: { httpStatus: 500 } }, route: [{ destination: { host: 'web' } }] }] }, 'spec.http[0].fault', /not supported/],
  ['subset not built yet', { hosts: ['web'], http: [{ route: [{ destination: { host: 'web', subset: 'v1' } }] }] }, 'spec.http[0].route[0].destination.subset', /not supported/],
  ['regex uri', { hosts: ['web'], http: [{ match: [{ uri: { regex: '/a.*' } }], route: [{ destination: { host: 'web' } }] }] }, 'spec.http[0].match[0].uri.regex', /not supported/],
  ['typo', { hosts: ['web'], http: [{ rout: [] }] }, 'spec.http[0].rout', /did you mean route\?/],
  ['unknown destination', { hosts: ['web'], http: [{ route: [{ destination: { host: 'nothing' } }] }] }, 'spec.http[0].route[0].destination.host', /no Service shop\/nothing/],
  ['port needed', { hosts: ['web'], http: [{ route: [{ destination: { host: 'multi' } }] }] }, 'spec.http[0].route[0].destination.port', /has 2 ports/],
  ['a gateway', { hosts: ['web'], gateways: ['shop/ingress'], http: [] }, 'spec.gateways[0]', /only "mesh"/],
];

for (const [title, spec, path, message] of refusals) {
  test(`refused with the field's path: ${title}`, (t) => {
    const { table, problems } = compile([vs('bad', spec)]);
    t.deepEqual(problems.map((problem) => problem.path), [path]);
    t.regex(problems[0]!.message, message);
    t.is(table.entriesFor(WEB), undefined);
  });
}
