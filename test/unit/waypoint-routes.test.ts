/**
 * HTTPRoute compilation (control plane) and matching (waypoint) without a network: precedence, PathPrefix by
 * segment, header matches, weights, the reasons for routes not served as written, and the xDS round trip
 * through ambit.waypoint.HttpRoutes into the waypoint's route table.
 */
import test from 'ava';
import { compileHttpRoutes, type RouteProblem } from '../../controlplane/model/http-routes.ts';
import { ObjectStore } from '../../controlplane/store.ts';
import type { K8sObject } from '../../shared/k8s/objects.ts';
import { HTTP_ROUTES_TYPE_URL, TO_OBJECT_OPTIONS, typeForUrl } from '../../shared/xds/protos.ts';
import { matchRoute, pickBackend } from '../../waypoint/http-router.ts';
import { RouteTable } from '../../waypoint/route-table.ts';

const service = (name: string): K8sObject => ({ apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: 'shop' }, spec: { clusterIP: '10.96.0.1', ports: [{ name: 'http', port: 80 }] } }) as K8sObject;

function route(name: string, spec: object, created = '2026-01-01T00:00:00Z'): K8sObject {
  return { apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name, namespace: 'shop', creationTimestamp: created }, spec } as K8sObject;
}

function compile(objects: K8sObject[]): { table: RouteTable; problems: RouteProblem[] } {
  const store = new ObjectStore();
  store.apply(objects.map((object) => ({ type: 'upsert' as const, object })));
  const problems: RouteProblem[] = [];
  const compiled = compileHttpRoutes(store, 'cluster.local', (problem) => problems.push(problem));
  // Through the wire, as the waypoint receives them.
  const type = typeForUrl(HTTP_ROUTES_TYPE_URL)!;
  const table = new RouteTable();
  const result = table.apply(
    compiled.map((entry) => ({ name: entry.name, version: '1', resource: type.toObject(type.decode(type.encode(type.fromObject(entry.resource)).finish()), TO_OBJECT_OPTIONS) })),
    [],
  );
  if (result?.rejected) throw new Error(JSON.stringify(result.rejected));
  return { table, problems };
}

const parent = [{ group: '', kind: 'Service', name: 'web' }];
const to = (name: string, weight?: number): object => ({ name, port: 80, ...(weight === undefined ? {} : { weight }) });
const WEB = 'shop/web.shop.svc.cluster.local';

test('precedence: Exact, then the longest prefix, then more headers, then the older route; not the order written', (t) => {
  const { table, problems } = compile([
    service('web'), service('a'), service('b'), service('c'), service('d'), service('e'),
    route('young', { parentRefs: parent, rules: [{ matches: [{ path: { type: 'PathPrefix', value: '/x' } }], backendRefs: [to('e')] }] }, '2026-02-01T00:00:00Z'),
    route('old', {
      parentRefs: parent,
      rules: [
        { matches: [{ path: { type: 'PathPrefix', value: '/' } }], backendRefs: [to('a')] },
        { matches: [{ path: { type: 'PathPrefix', value: '/x' } }], backendRefs: [to('b')] },
        { matches: [{ path: { type: 'PathPrefix', value: '/x' }, headers: [{ name: 'X-Env', value: 'canary' }] }], backendRefs: [to('c')] },
        { matches: [{ path: { type: 'Exact', value: '/x/y' } }], backendRefs: [to('d')] },
      ],
    }),
  ]);
  t.deepEqual(problems, []);
  const entries = table.entriesFor(WEB)!;
  const backendFor = (path: string, headers: Record<string, string> = {}): string | undefined => matchRoute(entries, 80, path, headers)?.backends[0]?.service;
  t.is(backendFor('/x/y'), 'shop/d.shop.svc.cluster.local');
  t.is(backendFor('/x/z', { 'x-env': 'canary' }), 'shop/c.shop.svc.cluster.local');
  t.is(backendFor('/x/z'), 'shop/b.shop.svc.cluster.local', 'the older route wins a tie');
  t.is(backendFor('/xy'), 'shop/a.shop.svc.cluster.local', 'PathPrefix /x does not match /xy');
  t.is(backendFor('/x'), 'shop/b.shop.svc.cluster.local');
});

test('parentRefs port limits the entry to that port; no match is undefined (404)', (t) => {
  const { table } = compile([service('web'), service('a'), route('r', { parentRefs: [{ ...parent[0], port: 8080 }], rules: [{ matches: [{ path: { type: 'Exact', value: '/a' } }], backendRefs: [to('a')] }] })]);
  const entries = table.entriesFor(WEB)!;
  t.truthy(matchRoute(entries, 8080, '/a', {}));
  t.is(matchRoute(entries, 80, '/a', {}), undefined);
  t.is(matchRoute(entries, 8080, '/b', {}), undefined);
});

test('weights: picked in proportion, zero weight never, none usable -> undefined', (t) => {
  const { table } = compile([service('web'), service('a'), service('b'), route('r', { parentRefs: parent, rules: [{ backendRefs: [to('a', 3), to('b', 1)] }, { matches: [{ path: { type: 'Exact', value: '/zero' } }], backendRefs: [to('a', 0)] }] })]);
  const entries = table.entriesFor(WEB)!;
  const split = matchRoute(entries, 80, '/', {})!;
  t.is(pickBackend(split, () => 0.74)?.service, 'shop/a.shop.svc.cluster.local');
  t.is(pickBackend(split, () => 0.76)?.service, 'shop/b.shop.svc.cluster.local');
  t.is(pickBackend(matchRoute(entries, 80, '/zero', {})!), undefined);
});

test('routes not served as written are reported with the Gateway API reason', (t) => {
  const { problems, table } = compile([
    service('web'), service('a'),
    route('regex', { parentRefs: parent, rules: [{ matches: [{ path: { type: 'RegularExpression', value: '/a.*' } }], backendRefs: [to('a')] }] }),
    route('orphan', { parentRefs: [{ group: '', kind: 'Service', name: 'missing' }], rules: [{ backendRefs: [to('a')] }] }),
    route('gone', { parentRefs: parent, rules: [{ matches: [{ path: { type: 'Exact', value: '/gone' } }], backendRefs: [to('missing')] }] }),
    route('mirror', { parentRefs: parent, rules: [{ filters: [{ type: 'RequestMirror' }], backendRefs: [to('a')] }] }),
  ]);
  const reasons = problems.map((problem) => `${problem.route} ${problem.condition} ${problem.reason}`).sort();
  t.deepEqual(reasons, ['shop/gone ResolvedRefs BackendNotFound', 'shop/mirror Accepted UnsupportedValue', 'shop/orphan Accepted NoMatchingParent', 'shop/regex Accepted UnsupportedValue']);
  // The route with a missing backend is served with no backend (the waypoint answers 500), the rejected ones not at all.
  const entries = table.entriesFor(WEB)!;
  t.is(entries.length, 1);
  t.deepEqual(entries[0]!.backends, []);
});
