/**
 * HTTPRoute compilation (control plane) and matching (waypoint) without a network: precedence, PathPrefix by
 * segment, RegularExpression paths (RE2, whole path), header and query parameter matches (exact and RE2), methods,
 * weights, filters/timeouts/retry as compiled, the reasons for routes not served as written, and the xDS round trip
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
    route('regex', { parentRefs: parent, rules: [{ matches: [{ path: { type: 'RegularExpression', value: '/a(' } }], backendRefs: [to('a')] }] }),
    route('lookahead', { parentRefs: parent, rules: [{ matches: [{ headers: [{ type: 'RegularExpression', name: 'x', value: '(?=a)' }] }], backendRefs: [to('a')] }] }),
    route('orphan', { parentRefs: [{ group: '', kind: 'Service', name: 'missing' }], rules: [{ backendRefs: [to('a')] }] }),
    route('gone', { parentRefs: parent, rules: [{ matches: [{ path: { type: 'Exact', value: '/gone' } }], backendRefs: [to('missing')] }] }),
    route('mirror', { parentRefs: parent, rules: [{ filters: [{ type: 'RequestMirror' }], backendRefs: [to('a')] }] }),
  ]);
  const reasons = problems.map((problem) => `${problem.route} ${problem.condition} ${problem.reason}`).sort();
  t.deepEqual(reasons, ['shop/gone ResolvedRefs BackendNotFound', 'shop/lookahead Accepted UnsupportedValue', 'shop/mirror Accepted UnsupportedValue', 'shop/orphan Accepted NoMatchingParent', 'shop/regex Accepted UnsupportedValue']);
  t.regex(problems.find((problem) => problem.route === 'shop/regex')!.message, /not a valid RE2 regular expression/);
  // The route with a missing backend is served with no backend (the waypoint answers 500), the rejected ones not at all.
  const entries = table.entriesFor(WEB)!;
  t.is(entries.length, 1);
  t.deepEqual(entries[0]!.backends, []);
});

const rule = (path: object | undefined, extra: object, backend: string): object => ({ matches: [{ ...(path ? { path } : {}), ...extra }], backendRefs: [to(backend)] });

test('precedence: Exact > PathPrefix > RegularExpression, then method, then header count, then query parameter count', (t) => {
  const { table, problems } = compile([
    service('web'), service('exact'), service('prefix'), service('regex'), service('method'), service('headers'), service('query'),
    route('r', {
      parentRefs: parent,
      rules: [
        rule({ type: 'RegularExpression', value: '/items/[0-9]+' }, {}, 'regex'),
        rule({ type: 'PathPrefix', value: '/items' }, { queryParams: [{ name: 'v', value: '2' }] }, 'query'),
        rule({ type: 'PathPrefix', value: '/items' }, { headers: [{ name: 'x-a', value: '1' }] }, 'headers'),
        rule({ type: 'PathPrefix', value: '/items' }, { method: 'POST' }, 'method'),
        rule({ type: 'PathPrefix', value: '/' }, {}, 'prefix'),
        rule({ type: 'Exact', value: '/items/7' }, {}, 'exact'),
      ],
    }),
  ]);
  t.deepEqual(problems, []);
  const entries = table.entriesFor(WEB)!;
  const to_ = (path: string, method = 'GET', headers: Record<string, string> = {}, query = ''): string | undefined => matchRoute(entries, 80, path, headers, method, query)?.backends[0]?.service.split('/')[1]?.split('.')[0];
  t.is(to_('/items/7', 'POST', { 'x-a': '1' }, 'v=2'), 'exact', 'Exact beats everything');
  t.is(to_('/items/8', 'POST', { 'x-a': '1' }, 'v=2'), 'method', 'a method match beats more headers');
  t.is(to_('/items/8', 'GET', { 'x-a': '1' }, 'v=2'), 'headers', 'a header match beats a query match');
  t.is(to_('/items/8', 'GET', {}, 'v=2'), 'query');
  t.is(to_('/items/8'), 'prefix', 'any PathPrefix (even /) beats a RegularExpression (Istio)');
  t.is(to_('/other', 'DELETE'), 'prefix');
});

test('RegularExpression path, header and query matches use RE2 on the whole value; a header that differs never matches', (t) => {
  const { table, problems } = compile([
    service('web'), service('a'), service('b'), service('c'),
    route('r', {
      parentRefs: parent,
      rules: [
        rule({ type: 'RegularExpression', value: '/v[12]/.*' }, {}, 'a'),
        rule({ type: 'Exact', value: '/admin' }, { headers: [{ type: 'RegularExpression', name: 'X-User', value: 'admin|root' }, { name: 'X-Team', value: 'ops' }] }, 'b'),
        rule({ type: 'Exact', value: '/q' }, { queryParams: [{ type: 'RegularExpression', name: 'id', value: '[0-9]{3}' }, { name: 'Mode', value: 'full' }] }, 'c'),
      ],
    }),
  ]);
  t.deepEqual(problems, []);
  const entries = table.entriesFor(WEB)!;
  const hit = (path: string, headers: Record<string, string> = {}, query = ''): boolean => matchRoute(entries, 80, path, headers, 'GET', query) !== undefined;
  t.true(hit('/v1/items'));
  t.false(hit('/x/v1/items'), 'the regex covers the whole path, not a part');
  t.false(hit('/v3/items'));
  t.true(hit('/admin', { 'x-user': 'root', 'x-team': 'ops' }));
  t.false(hit('/admin', { 'x-user': 'rootkit', 'x-team': 'ops' }), 'a regex header match is anchored');
  t.false(hit('/admin', { 'x-user': 'admin', 'x-team': 'Ops' }), 'exact header values are case-sensitive');
  t.false(hit('/admin', { 'x-user': 'admin' }), 'a missing header does not match');
  t.true(hit('/q', {}, 'id=123&Mode=full'));
  t.false(hit('/q', {}, 'id=1234&Mode=full'));
  t.false(hit('/q', {}, 'id=123&mode=full'), 'query parameter names are case-sensitive');
  t.true(hit('/q', {}, 'id=123&id=9&Mode=full'), 'the first value of a repeated parameter counts');
});

test('filters, timeouts and retry compile into the entry; invalid ones are reported', (t) => {
  const { table, problems } = compile([
    service('web'), service('a'), service('b'), service('m'),
    route('r', {
      parentRefs: parent,
      rules: [
        {
          name: 'full',
          matches: [{ path: { type: 'PathPrefix', value: '/api' } }],
          filters: [
            { type: 'ResponseHeaderModifier', responseHeaderModifier: { set: [{ name: 'X-Served', value: 'yes' }] } },
            { type: 'URLRewrite', urlRewrite: { hostname: 'backend.local', path: { type: 'ReplacePrefixMatch', replacePrefixMatch: '/v2' } } },
            { type: 'RequestMirror', requestMirror: { backendRef: { name: 'm', port: 80 }, percent: 50 } },
          ],
          timeouts: { request: '2s', backendRequest: '500ms' },
          retry: { codes: [503], attempts: 3, backoff: '10ms' },
          backendRefs: [{ name: 'a', port: 80, filters: [{ type: 'RequestHeaderModifier', requestHeaderModifier: { add: [{ name: 'x-backend', value: 'a' }] } }] }],
        },
        { matches: [{ path: { type: 'Exact', value: '/old' } }], filters: [{ type: 'RequestRedirect', requestRedirect: { scheme: 'https', statusCode: 301 } }] },
      ],
    }),
    route('bad-duration', { parentRefs: parent, rules: [{ timeouts: { request: '2 seconds' }, backendRefs: [to('b')] }] }),
    route('backend-longer', { parentRefs: parent, rules: [{ timeouts: { request: '1s', backendRequest: '2s' }, backendRefs: [to('b')] }] }),
    route('prefix-on-exact', { parentRefs: parent, rules: [{ matches: [{ path: { type: 'Exact', value: '/e' } }], filters: [{ type: 'URLRewrite', urlRewrite: { path: { type: 'ReplacePrefixMatch', replacePrefixMatch: '/x' } } }], backendRefs: [to('b')] }] }),
    route('both', { parentRefs: parent, rules: [{ filters: [{ type: 'URLRewrite', urlRewrite: { hostname: 'x' } }, { type: 'RequestRedirect', requestRedirect: { hostname: 'y' } }] }] }),
    route('code', { parentRefs: parent, rules: [{ retry: { codes: [200] }, backendRefs: [to('b')] }] }),
    route('unknown', { parentRefs: parent, rules: [{ sessionPersistence: { sessionName: 'x' }, backendRefs: [to('b')] }] }),
  ]);
  t.deepEqual(problems.map((problem) => `${problem.route} ${problem.reason}`).sort(), [
    'shop/backend-longer UnsupportedValue', 'shop/bad-duration UnsupportedValue', 'shop/both UnsupportedValue', 'shop/code UnsupportedValue', 'shop/prefix-on-exact UnsupportedValue', 'shop/unknown UnsupportedValue',
  ]);
  t.regex(problems.find((problem) => problem.route === 'shop/unknown')!.message, /field sessionPersistence is not supported/);
  const entries = table.entriesFor(WEB)!;
  const api = matchRoute(entries, 80, '/api/x', {})!;
  t.is(api.ruleName, 'full');
  t.deepEqual(api.responseHeaderModifier, { set: [{ name: 'x-served', value: 'yes' }], add: [], remove: [] });
  t.deepEqual(api.urlRewrite, { hostname: 'backend.local', path: { type: 'REPLACE_PREFIX_MATCH', value: '/v2' } });
  t.deepEqual(api.mirrors, [{ service: 'shop/m.shop.svc.cluster.local', port: 80, fraction: 0.5 }]);
  t.is(api.requestTimeoutMs, 2000);
  t.is(api.backendRequestTimeoutMs, 500);
  t.deepEqual({ ...api.retry, codes: [...api.retry!.codes] }, { codes: [503], attempts: 3, backoffMs: 10 });
  t.deepEqual(api.backends[0]!.requestHeaderModifier, { set: [], add: [{ name: 'x-backend', value: 'a' }], remove: [] });
  const old = matchRoute(entries, 80, '/old', {})!;
  t.deepEqual(old.redirect, { scheme: 'https', hostname: '', port: 0, statusCode: 301 });
  t.deepEqual(old.backends, []);
});

test('the waypoint NACKs an entry whose regular expression RE2 cannot compile, keeping the last good routes', (t) => {
  const table = new RouteTable();
  const good = { service: WEB, entries: [{ route: 'shop/r', match: { path: { type: 'REGULAR_EXPRESSION', value: '/a[0-9]+' } }, backends: [{ service: 'shop/a.shop.svc.cluster.local', port: 80, weight: 1 }] }] };
  t.is(table.apply([{ name: WEB, version: '1', resource: good }], []), undefined);
  const bad = { service: WEB, entries: [{ route: 'shop/r', match: { path: { type: 'PATH_PREFIX', value: '/' }, headers: [{ name: 'x', regex: '(?<=a)b' }] } }] };
  const result = table.apply([{ name: WEB, version: '2', resource: bad }], []);
  t.regex(result?.rejected?.[0]?.reason ?? '', /invalid RE2 pattern/);
  t.truthy(matchRoute(table.entriesFor(WEB)!, 80, '/a12', {}), 'the last good entries still route');
  t.is(matchRoute(table.entriesFor(WEB)!, 80, '/a12x', {}), undefined);
});
