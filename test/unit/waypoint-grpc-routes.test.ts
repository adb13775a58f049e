/**
 * GRPCRoute compilation (control plane) and matching (waypoint) without a network, through the wire as
 * ambit.waypoint.HttpRoutes: service/method matches (Exact, RegularExpression, one of the two), header matches,
 * the GRPCRoute precedence, header modifiers both ways, the merge with HTTPRoute entries, and the reasons for routes
 * not served as written. Also the waypoint's protocol rules: Istio's port protocol selection, the HTTP/2 preface
 * sniff and the HTTP -> gRPC status mapping.
 */
import test from 'ava';
import fc from 'fast-check';
import { PassThrough } from 'node:stream';
import { compileGrpcRoutes, mergeRouteEntries } from '../../controlplane/model/grpc-routes.ts';
import { compileHttpRoutes, type RouteProblem } from '../../controlplane/model/http-routes.ts';
import { appProtocolOf } from '../../controlplane/model/service.ts';
import { ObjectStore } from '../../controlplane/store.ts';
import type { K8sObject } from '../../shared/k8s/objects.ts';
import { HTTP_ROUTES_TYPE_URL, TO_OBJECT_OPTIONS, typeForUrl } from '../../shared/xds/protos.ts';
import { matchRoute } from '../../waypoint/http-router.ts';
import { grpcStatusForHttp, H2_PREFACE, sniffHttpVersion, versionFromFirstBytes } from '../../waypoint/protocols.ts';
import { RouteTable, type RouteEntry } from '../../waypoint/route-table.ts';

const service = (name: string): K8sObject => ({ apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: 'shop' }, spec: { clusterIP: '10.96.0.1', ports: [{ name: 'grpc', port: 80 }] } }) as K8sObject;

function grpcRoute(name: string, spec: object, created = '2026-01-01T00:00:00Z'): K8sObject {
  return { apiVersion: 'gateway.networking.k8s.io/v1', kind: 'GRPCRoute', metadata: { name, namespace: 'shop', creationTimestamp: created }, spec } as K8sObject;
}

function compile(objects: K8sObject[]): { table: RouteTable; problems: RouteProblem[] } {
  const store = new ObjectStore();
  store.apply(objects.map((object) => ({ type: 'upsert' as const, object })));
  const problems: RouteProblem[] = [];
  const merged = mergeRouteEntries(
    compileHttpRoutes(store, 'cluster.local', (problem) => problems.push(problem)),
    compileGrpcRoutes(store, 'cluster.local', (problem) => problems.push(problem)),
  );
  const type = typeForUrl(HTTP_ROUTES_TYPE_URL)!;
  const table = new RouteTable();
  const result = table.apply(
    merged.map((entry) => ({ name: entry.name, version: '1', resource: type.toObject(type.decode(type.encode(type.fromObject(entry.resource as Record<string, unknown>)).finish()), TO_OBJECT_OPTIONS) })),
    [],
  );
  if (result?.rejected) throw new Error(JSON.stringify(result.rejected));
  return { table, problems };
}

const parent = [{ group: '', kind: 'Service', name: 'echo' }];
const to = (name: string, weight?: number): object => ({ name, port: 80, ...(weight === undefined ? {} : { weight }) });
const ECHO = 'shop/echo.shop.svc.cluster.local';
const grpcHeaders = { 'content-type': 'application/grpc' };

function backendOf(table: RouteTable, path: string, headers: Record<string, string> = grpcHeaders): string | undefined {
  const entry = matchRoute(table.entriesFor(ECHO) ?? [], 80, path, headers);
  return entry?.backends[0]?.service.split('/')[1]?.split('.')[0];
}

test('service/method matches: Exact both, service only, method only, RegularExpression; precedence by service then method length', (t) => {
  const { table, problems } = compile([
    service('echo'), service('exact'), service('svc'), service('method'), service('regex'), service('header'), service('rest'),
    grpcRoute('r', {
      parentRefs: parent,
      rules: [
        { backendRefs: [to('rest')] },
        { matches: [{ method: { type: 'RegularExpression', service: 'ambit\\.test\\..*', method: 'Get.*' } }], backendRefs: [to('regex')] },
        { matches: [{ method: { method: 'Stream' } }], backendRefs: [to('method')] },
        { matches: [{ method: { service: 'ambit.test.Echo' } }], backendRefs: [to('svc')] },
        { matches: [{ method: { service: 'ambit.test.Echo', method: 'Unary' } }], backendRefs: [to('exact')] },
        { matches: [{ method: { service: 'ambit.test.Echo', method: 'Unary' }, headers: [{ name: 'X-Tier', type: 'RegularExpression', value: 'gold|silver' }] }], backendRefs: [to('header')] },
      ],
    }),
  ]);
  t.deepEqual(problems, []);
  t.is(backendOf(table, '/ambit.test.Echo/Unary'), 'exact');
  t.is(backendOf(table, '/ambit.test.Echo/Unary', { ...grpcHeaders, 'x-tier': 'gold' }), 'header', 'more header matches win at equal service and method');
  t.is(backendOf(table, '/ambit.test.Echo/Unary', { ...grpcHeaders, 'x-tier': 'golden' }), 'exact', 'a regex matches the whole value');
  t.is(backendOf(table, '/ambit.test.Echo/Other'), 'svc');
  t.is(backendOf(table, '/other.Svc/Stream'), 'method');
  t.is(backendOf(table, '/ambit.test.Store/GetItem'), 'regex');
  t.is(backendOf(table, '/ambit.test.Store/PutItem'), 'rest');
  t.is(backendOf(table, '/ambit.test.EchoX/Unary'), 'rest', 'an Exact service is not a prefix');
  t.is(backendOf(table, '/ambit.testXEcho/Unary'), 'rest', 'the dots of an Exact service are literal');
  t.is(backendOf(table, '/ambit.test.Echo/Unary/extra'), 'rest');
});

test('header modifiers both ways and weights survive the wire; GRPCRoute entries come before HTTPRoute entries', (t) => {
  const { table } = compile([
    service('echo'), service('a'), service('b'), service('web'),
    grpcRoute('r', {
      parentRefs: [{ ...parent[0], port: 80 }],
      rules: [{
        matches: [{ method: { service: 'ambit.test.Echo' } }],
        filters: [
          { type: 'RequestHeaderModifier', requestHeaderModifier: { set: [{ name: 'X-Route', value: 'grpc' }], remove: ['x-drop'] } },
          { type: 'ResponseHeaderModifier', responseHeaderModifier: { add: [{ name: 'X-Served-Via', value: 'waypoint' }] } },
        ],
        backendRefs: [to('a', 90), to('b', 10)],
      }],
    }),
    { apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name: 'h', namespace: 'shop' }, spec: { parentRefs: parent, rules: [{ backendRefs: [to('web')] }] } } as K8sObject,
  ]);
  const entries = table.entriesFor(ECHO)!;
  t.is(entries.length, 2);
  const grpc = entries[0] as RouteEntry;
  t.is(grpc.route, 'shop/r');
  t.is(grpc.port, 80);
  t.deepEqual(grpc.requestHeaderModifier, { set: [{ name: 'x-route', value: 'grpc' }], add: [], remove: ['x-drop'] });
  t.deepEqual(grpc.responseHeaderModifier, { set: [], add: [{ name: 'x-served-via', value: 'waypoint' }], remove: [] });
  t.deepEqual(grpc.backends.map((backend) => backend.weight), [90, 10]);
  t.is(entries[1]!.route, 'shop/h');
  t.is(backendOf(table, '/other.Svc/M'), 'web', 'what no GRPCRoute matches falls to the HTTPRoute');
});

test('GRPCRoutes not served as written are reported with a reason; the rest still compiles', (t) => {
  const { table, problems } = compile([
    service('echo'), service('a'),
    grpcRoute('bad-regex', { parentRefs: parent, rules: [{ matches: [{ method: { type: 'RegularExpression', service: '(unclosed' } }], backendRefs: [to('a')] }] }),
    grpcRoute('empty-method', { parentRefs: parent, rules: [{ matches: [{ method: { type: 'Exact' } }], backendRefs: [to('a')] }] }),
    grpcRoute('slash', { parentRefs: parent, rules: [{ matches: [{ method: { service: 'a/b', method: 'M' } }], backendRefs: [to('a')] }] }),
    grpcRoute('mirror', { parentRefs: parent, rules: [{ filters: [{ type: 'RequestMirror', requestMirror: { backendRef: to('a') } }], backendRefs: [to('a')] }] }),
    grpcRoute('orphan', { parentRefs: [{ group: '', kind: 'Service', name: 'nothing' }], rules: [{ backendRefs: [to('a')] }] }),
    grpcRoute('missing-backend', { parentRefs: parent, rules: [{ matches: [{ method: { service: 'x.Y' } }], backendRefs: [to('gone')] }] }),
  ]);
  const reasons = Object.fromEntries(problems.map((problem) => [problem.route, `${problem.condition}/${problem.reason}`]));
  t.deepEqual(reasons, {
    'shop/bad-regex': 'Accepted/UnsupportedValue',
    'shop/empty-method': 'Accepted/UnsupportedValue',
    'shop/slash': 'Accepted/UnsupportedValue',
    'shop/mirror': 'Accepted/UnsupportedValue',
    'shop/orphan': 'Accepted/NoMatchingParent',
    'shop/missing-backend': 'ResolvedRefs/BackendNotFound',
  });
  t.regex(problems.find((problem) => problem.route === 'shop/bad-regex')!.message, /no RE2 expression/);
  // The route with a missing backend still attaches: its match answers 500 (no backend), it is not dropped.
  t.deepEqual(table.entriesFor(ECHO)?.map((entry) => entry.route), ['shop/missing-backend']);
});

test('a waypoint NACKs a route resource whose RE2 expression does not compile', (t) => {
  const table = new RouteTable();
  const result = table.apply([{ name: ECHO, version: '1', resource: { service: ECHO, entries: [{ match: { path: { type: 'REGULAR_EXPRESSION', value: '/(a' } } }] } }], []);
  t.is(result?.rejected?.length, 1);
  t.regex(result!.rejected![0]!.reason, /invalid RE2 pattern/);
});

test("Istio's port protocol selection: appProtocol first and never overridden by the name, else the name's prefix", (t) => {
  const cases: [object, number | undefined][] = [
    [{ port: 80, name: 'http' }, 1],
    [{ port: 80, name: 'http-web' }, 1],
    [{ port: 80, name: 'HTTP2-x' }, 2],
    [{ port: 80, name: 'grpc' }, 3],
    [{ port: 80, name: 'grpc-echo' }, 3],
    [{ port: 80, name: 'grpc-web' }, 1],
    [{ port: 80, name: 'tcp-echo' }, undefined],
    [{ port: 80, name: 'web' }, undefined],
    [{ port: 80, name: 'httpx' }, undefined],
    [{ port: 80, name: 'http', appProtocol: 'tcp' }, undefined],
    [{ port: 80, name: 'tcp', appProtocol: 'HTTP' }, 1],
    [{ port: 80, appProtocol: 'kubernetes.io/h2c' }, 2],
    [{ port: 80, appProtocol: 'kubernetes.io/ws' }, 1],
    [{ port: 80, appProtocol: 'h2c' }, 2],
    [{ port: 80, appProtocol: 'grpc' }, 3],
    [{ port: 80, name: 'http', protocol: 'UDP' }, undefined],
  ];
  for (const [port, expected] of cases) t.is(appProtocolOf(port as never), expected, JSON.stringify(port));
});

test('the HTTP/2 preface decides, in any number of pieces; anything else is HTTP/1.1 at its first differing byte', async (t) => {
  t.is(versionFromFirstBytes(Buffer.from('GET / HTTP/1.1\r\n')), 'h1');
  t.is(versionFromFirstBytes(Buffer.from('PRI * HTTP/2.0\r\n')), undefined);
  t.is(versionFromFirstBytes(Buffer.concat([H2_PREFACE, Buffer.from([0, 0, 0])])), 'h2');
  t.is(versionFromFirstBytes(Buffer.from('PRI * HTTP/1.1')), 'h1');
  await fc.assert(
    fc.asyncProperty(fc.array(fc.integer({ min: 1, max: 8 }), { minLength: 1, maxLength: 30 }), fc.boolean(), async (cuts, preface) => {
      const bytes = preface ? Buffer.concat([H2_PREFACE, Buffer.from('frames')]) : Buffer.from('POST /x HTTP/1.1\r\nhost: a\r\n\r\n');
      const stream = new PassThrough();
      const sniffed = sniffHttpVersion(stream);
      let offset = 0;
      for (const cut of cuts) {
        if (offset >= bytes.length) break;
        stream.write(bytes.subarray(offset, offset + cut));
        offset += cut;
        await new Promise((resolve) => setImmediate(resolve));
      }
      stream.write(bytes.subarray(offset));
      const version = await sniffed;
      // Everything read is put back for the server that takes the stream.
      const rest: Buffer[] = [];
      stream.end();
      for await (const chunk of stream) rest.push(chunk as Buffer);
      return version === (preface ? 'h2' : 'h1') && Buffer.concat(rest).equals(bytes);
    }),
    { numRuns: 50 },
  );
});

test('HTTP status -> grpc-status as Envoy maps the waypoint\'s own answers', (t) => {
  t.deepEqual([404, 503, 500, 403, 401, 400, 429, 504].map(grpcStatusForHttp), [12, 14, 2, 7, 16, 13, 14, 14]);
});
