/**
 * The waypoint's HTTP/2 path at par with its HTTP/1.1 path, on a real 2-node local mesh (control plane, real agents,
 * a real waypoint in its pod; @grpc/grpc-js and node:http2 clients and servers in pods): L7 policy on h2c (403), on
 * gRPC (7 PERMISSION_DENIED, as Envoy's RBAC filter answers gRPC) and on a WebSocket upgrade (403 before the
 * upgrade); HTTPRoute filters on h2c (header modifiers of the rule and the backendRef both ways, URLRewrite,
 * RequestRedirect); timeouts.request on gRPC (4 DEADLINE_EXCEEDED, counted 504 UT) and h2c (504 UT);
 * timeouts.backendRequest cutting each try; retries on h2c 503s and Istio's default retry on gRPC UNAVAILABLE (not on
 * NOT_FOUND); a DestinationRule's consistent hash and connection pool (503 UO) on h2c; the access-log line, metrics
 * with request_protocol and grpc_response_status; request id and trace context passed on.
 */
import test from 'ava';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { clientRun, createProtocolMesh, GRPC_PORT, H2_PORT, HTTP1_PORT, logText, serviceReady, until, waypointDump, waypointRequests, writeObject, writeService, type ProtocolMesh } from './helpers/protocol-mesh.ts';

const GRPC_VIP = '10.240.5.10';
const GRPC_V1_VIP = '10.240.5.11';
const H2_VIP = '10.240.5.12';
const H2_V1_VIP = '10.240.5.13';
const H2_V2_VIP = '10.240.5.16';

let setup: ProtocolMesh;

const prefix = (value: string): object => ({ path: { type: 'PathPrefix', value } });

const H2_ROUTE = {
  apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name: 'h2f', namespace: 'shop' },
  spec: {
    parentRefs: [{ group: '', kind: 'Service', name: 'h2f', port: 80 }],
    rules: [
      {
        matches: [prefix('/mod')],
        filters: [
          { type: 'RequestHeaderModifier', requestHeaderModifier: { set: [{ name: 'x-route', value: 'h2c' }], remove: ['x-drop'] } },
          { type: 'ResponseHeaderModifier', responseHeaderModifier: { add: [{ name: 'x-via', value: 'waypoint' }], remove: ['x-served-by'] } },
        ],
        backendRefs: [{ name: 'h2f-v1', port: 80, filters: [{ type: 'RequestHeaderModifier', requestHeaderModifier: { add: [{ name: 'x-backend', value: 'v1' }] } }] }],
      },
      {
        matches: [prefix('/rewrite')],
        filters: [{ type: 'URLRewrite', urlRewrite: { hostname: 'rewritten.shop', path: { type: 'ReplacePrefixMatch', replacePrefixMatch: '/v2' } } }],
        backendRefs: [{ name: 'h2f-v1', port: 80 }],
      },
      { matches: [{ path: { type: 'Exact', value: '/old' } }], filters: [{ type: 'RequestRedirect', requestRedirect: { hostname: 'moved.shop', path: { type: 'ReplaceFullPath', replaceFullPath: '/new' }, statusCode: 301 } }] },
      { matches: [prefix('/slow')], backendRefs: [{ name: 'h2f-v1', port: 80 }], timeouts: { request: '1s' } },
      { matches: [prefix('/try')], backendRefs: [{ name: 'h2f-v1', port: 80 }], timeouts: { request: '20s', backendRequest: '1s' }, retry: { codes: [504], attempts: 1, backoff: '10ms' } },
      { matches: [prefix('/flaky')], backendRefs: [{ name: 'h2f-v1', port: 80 }], retry: { codes: [503], attempts: 2, backoff: '10ms' } },
      { matches: [prefix('/denied')], backendRefs: [{ name: 'h2f-v1', port: 80 }] },
      { matches: [prefix('/mirror')], filters: [{ type: 'RequestMirror', requestMirror: { backendRef: { name: 'h2f-v2', port: 80 } } }], backendRefs: [{ name: 'h2f-v1', port: 80 }] },
      { matches: [{ path: { type: 'Exact', value: '/written' } }], backendRefs: [{ name: 'h2f-v2', port: 80 }] },
      { matches: [prefix('/')], backendRefs: [{ name: 'h2f', port: 80 }] },
    ],
  },
};

const GRPC_HTTP_ROUTE = {
  apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name: 'grpcf', namespace: 'shop' },
  spec: {
    parentRefs: [{ group: '', kind: 'Service', name: 'grpcf', port: 80 }],
    rules: [
      { matches: [prefix('/ambit.test.Echo/Slow')], backendRefs: [{ name: 'grpcf-v1', port: 80 }], timeouts: { request: '1s' } },
      { matches: [prefix('/ambit.test.Echo/Flaky')], backendRefs: [{ name: 'grpcf-v1', port: 80 }] },
      { matches: [prefix('/')], backendRefs: [{ name: 'grpcf', port: 80 }] },
    ],
  },
};

test.before(async () => {
  setup = await createProtocolMesh('wf');
  await writeService(setup, 'grpcf', GRPC_VIP, [{ name: 'grpc', port: 80, targetPort: GRPC_PORT }]);
  await writeService(setup, 'grpcf-v1', GRPC_V1_VIP, [{ name: 'grpc', port: 80, targetPort: GRPC_PORT }], { app: 'web', version: 'v1' }, false);
  await writeService(setup, 'h2f', H2_VIP, [{ name: 'h2', appProtocol: 'kubernetes.io/h2c', port: 80, targetPort: H2_PORT }, { name: 'http-web', port: 81, targetPort: HTTP1_PORT }]);
  await writeService(setup, 'h2f-v1', H2_V1_VIP, [{ name: 'h2', appProtocol: 'kubernetes.io/h2c', port: 80, targetPort: H2_PORT }], { app: 'web', version: 'v1' }, false);
  await writeService(setup, 'h2f-v2', H2_V2_VIP, [{ name: 'h2', appProtocol: 'kubernetes.io/h2c', port: 80, targetPort: H2_PORT }], { app: 'web', version: 'v2' }, false);
  await writeObject(setup, 'routes', 'h2f', H2_ROUTE);
  await writeObject(setup, 'routes', 'grpcf', GRPC_HTTP_ROUTE);
  // Port 81 (HTTP/1.1, WebSocket) has a route of its own: the one above is bound to port 80 only.
  await writeObject(setup, 'routes', 'h2f-ws', {
    apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name: 'h2f-ws', namespace: 'shop' },
    spec: { parentRefs: [{ group: '', kind: 'Service', name: 'h2f', port: 81 }], rules: [{ matches: [prefix('/')], backendRefs: [{ name: 'h2f', port: 81 }] }] },
  });
  await until('the waypoint and the client agent know the services', async () => (await serviceReady(setup, 'grpcf', 2)) && (await serviceReady(setup, 'h2f', 2)), 60_000);
  await until('the waypoint knows h2f-v2 and its endpoint', async () => ((await waypointDump(setup))?.services as { name: string; endpoints: unknown[] }[] | undefined)?.find((service) => service.name === 'h2f-v2')?.endpoints.length === 1);
  await until('the waypoint has both routes', async () => {
    const routes = (await waypointDump(setup))?.routes ?? {};
    return routes['shop/h2f.shop.svc.cluster.local']?.length === H2_ROUTE.spec.rules.length + 1 && routes['shop/grpcf.shop.svc.cluster.local']?.length === GRPC_HTTP_ROUTE.spec.rules.length;
  });
});

test.after.always(async () => {
  await setup?.mesh.destroy();
});

const h2 = (requests: { path: string; headers?: Record<string, string>; method?: string; body?: string }[]) => clientRun(setup, { scenario: 'h2-get', host: H2_VIP, port: 80, requests });
const grpc = (spec: Record<string, unknown>) => clientRun(setup, { scenario: 'grpc-unary', host: GRPC_VIP, port: 80, ...spec });

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- log lines are free-form JSON read by assertions
async function requestLines(): Promise<Array<Record<string, any>>> {
  return (await logText(setup.waypoint.logFile))
    .split('\n')
    .filter((line) => line.includes('"msg":"request"'))
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- log lines are free-form JSON read by assertions
async function lineOf(requestId: string): Promise<Record<string, any>> {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- as above
  let line: Record<string, any> | undefined;
  await until(`the access-log line of ${requestId}`, async () => (line = (await requestLines()).find((candidate) => candidate.request_id === requestId)) !== undefined, 15_000);
  return line!;
}

test.serial('h2c filters: header modifiers of the rule and the backendRef both ways; the request id and trace context go on; access log and metrics', async (t) => {
  const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
  const [result] = await h2([{ path: '/mod/a', headers: { 'x-drop': 'secret', 'x-route': 'client', 'x-request-id': 'h2-mod-1', traceparent: `00-${traceId}-00f067aa0ba902b7-01`, tracestate: 'vendor=1' } }]);
  t.is(result.status, 200, JSON.stringify(result));
  t.is(result.body.name, 'web-a', 'the rule sent it to h2f-v1');
  const seen = result.body.headers;
  t.is(seen['x-route'], 'h2c', 'RequestHeaderModifier set');
  t.is(seen['x-drop'], undefined, 'RequestHeaderModifier remove');
  t.is(seen['x-backend'], 'v1', "the backendRef's RequestHeaderModifier");
  t.is(seen['x-request-id'], 'h2-mod-1', 'request id kept');
  t.regex(seen.traceparent, new RegExp(`^00-${traceId}-[0-9a-f]{16}-01$`));
  t.notRegex(seen.traceparent, /00f067aa0ba902b7/, 'a new span for the upstream hop');
  t.is(seen.tracestate, 'vendor=1');
  t.is(result.headers['x-via'], 'waypoint', 'ResponseHeaderModifier add');
  t.is(result.headers['x-served-by'], undefined, 'ResponseHeaderModifier remove');
  const line = await lineOf('h2-mod-1');
  t.like(line, { method: 'GET', path: '/mod/a', protocol: 'HTTP/2', response_code: 200, response_flags: '-', attempts: 1, route_name: 'shop/h2f', trace_id: traceId });
  t.is(line.upstream_cluster, 'shop/h2f-v1.shop.svc.cluster.local');
  t.is(line.dst.workload, 'web-a');
  t.true((await waypointRequests(setup, { request_protocol: 'http', response_code: '200', destination_service_name: 'h2f-v1', grpc_response_status: '' })) >= 1);
  // Without a request id or trace context, the waypoint makes them.
  const [made] = await h2([{ path: '/mod/b' }]);
  t.regex(made.body.headers['x-request-id'], /^[0-9a-f-]{36}$/);
  t.regex(made.body.headers.traceparent, /^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/);
});

test.serial('h2c URLRewrite (path prefix and :authority) and RequestRedirect (301, answered by the waypoint)', async (t) => {
  const [rewritten, redirected] = await h2([{ path: '/rewrite/items?x=1' }, { path: '/old?q=2' }]);
  t.is(rewritten.status, 200);
  t.is(rewritten.body.path, '/v2/items?x=1');
  t.is(rewritten.body.headers[':authority'], 'rewritten.shop');
  t.is(redirected.status, 301);
  t.is(redirected.headers.location, 'http://moved.shop/new?q=2');
  t.is(redirected.headers['x-served-by'], undefined, 'no backend saw it');
});

test.serial('timeouts.request on h2c: 504 UT; timeouts.backendRequest cuts each try and the 504 is retried', async (t) => {
  const [slow] = await h2([{ path: '/slow?ms=5000', headers: { 'x-request-id': 'h2-slow-1' } }]);
  t.is(slow.status, 504, JSON.stringify(slow));
  t.regex(String(slow.body), /timeouts\.request 1000 ms/);
  t.like(await lineOf('h2-slow-1'), { response_code: 504, response_flags: 'UT', response_code_details: 'request_timeout' });
  const [tries] = await h2([{ path: '/try/slow?ms=5000', headers: { 'x-request-id': 'h2-try-1' } }]);
  t.is(tries.status, 504);
  t.regex(String(tries.body), /timeouts\.backendRequest 1000 ms/);
  const line = await lineOf('h2-try-1');
  t.like(line, { response_code: 504, attempts: 2, response_code_details: 'upstream_per_try_timeout' });
  t.is(line.response_flags, 'UT,URX', 'the per-try timeout, retried once, then out of retries');
});

test.serial('retry on h2c: 503s retried until one succeeds (the same request, the same id); out of attempts -> 503 URX', async (t) => {
  const id = `f${Date.now()}`;
  const [ok, out] = await h2([
    { path: `/flaky?id=${id}-ok&failures=2&status=503`, method: 'POST', body: 'x'.repeat(1000), headers: { 'x-request-id': 'h2-retry-ok' } },
    { path: `/flaky?id=${id}-out&failures=5&status=503`, headers: { 'x-request-id': 'h2-retry-out' } },
  ]);
  t.is(ok.status, 200, JSON.stringify(ok));
  t.is(ok.body.calls, 3, 'the third try answered');
  t.is(ok.body.size, 1000, 'the try that answered carried the whole body');
  t.is(ok.body.headers['x-request-id'], 'h2-retry-ok');
  t.is((await lineOf('h2-retry-ok')).attempts, 3);
  t.is(out.status, 503);
  t.like(await lineOf('h2-retry-out'), { attempts: 3, response_flags: 'URX', response_code: 503 });
});

test.serial("gRPC: a route timeout is 4 DEADLINE_EXCEEDED (504 UT in metrics and log); Istio's default retry turns UNAVAILABLE into success, not NOT_FOUND", async (t) => {
  const [slow] = await grpc({ path: '/ambit.test.Echo/Slow', request: { ms: 5000 }, metadata: { 'x-request-id': 'grpc-slow-1' } });
  t.is(slow.code, 4, JSON.stringify(slow));
  t.regex(slow.details, /timeouts\.request 1000 ms/);
  t.like(await lineOf('grpc-slow-1'), { response_code: 504, response_flags: 'UT', grpc_status: '4', protocol: 'HTTP/2' });
  t.true((await waypointRequests(setup, { request_protocol: 'grpc', response_code: '504', response_flags: 'UT', grpc_response_status: '4' })) >= 1);
  const id = `g${Date.now()}`;
  const [flaky] = await grpc({ path: '/ambit.test.Echo/Flaky', request: { id: `${id}-u`, failures: 2, code: 14 }, metadata: { 'x-request-id': 'grpc-flaky-1' } });
  t.is(flaky.code, 0, JSON.stringify(flaky));
  t.is(flaky.body.calls, 3, 'two UNAVAILABLE answers retried (Istio default: 2 retries)');
  t.like(await lineOf('grpc-flaky-1'), { attempts: 3, grpc_status: '0', response_code: 200 });
  const [notFound] = await grpc({ path: '/ambit.test.Echo/Flaky', request: { id: `${id}-n`, failures: 1, code: 5 }, metadata: { 'x-request-id': 'grpc-flaky-2' } });
  t.is(notFound.code, 5, 'NOT_FOUND is passed on, not retried');
  t.like(await lineOf('grpc-flaky-2'), { attempts: 1, grpc_status: '5' });
  t.true((await waypointRequests(setup, { request_protocol: 'grpc', response_code: '200', grpc_response_status: '5' })) >= 1);
});

const DR_KEY = 'shop/h2f.shop.svc.cluster.local';

test.serial("RequestMirror on h2c: the mirror's endpoint gets a copy once the body ended (web-b answers it, the answer is dropped); the client gets the primary's answer", async (t) => {
  const [primary] = await h2([{ path: '/mirror/big?size=5000&id=mirror-h2', method: 'POST', body: 'mirrored body' }]);
  t.is(primary.status, 200);
  t.is(primary.headers['x-served-by'], 'web-a', 'the primary backend (h2f-v1) answered the client');
  t.is(primary.body.length, 5000);
  // Only the mirror's copy reaches web-b (h2f-v2): the route sends the request itself to h2f-v1 (web-a).
  await until("web-b wrote its answer to the mirror's copy", async () => (await h2([{ path: '/written?id=mirror-h2' }]))[0].body.written === 5000);
});

test.serial('DestinationRule on h2c: consistent hash keeps a key on one endpoint; the connection pool answers overflow 503 UO', async (t) => {
  await writeObject(setup, 'destinationrules', 'h2f', {
    apiVersion: 'networking.istio.io/v1', kind: 'DestinationRule', metadata: { name: 'h2f', namespace: 'shop' },
    spec: { host: 'h2f', trafficPolicy: { loadBalancer: { consistentHash: { httpHeaderName: 'x-user' } }, connectionPool: { tcp: { maxConnections: 1 }, http: { http1MaxPendingRequests: 1 } } } },
  });
  try {
    await until('the waypoint has the DestinationRule', async () => (await waypointDump(setup))?.destinationRules?.policies?.[DR_KEY] !== undefined);
    const alice = await h2(Array.from({ length: 30 }, () => ({ path: '/hash', headers: { 'x-user': 'alice' } })));
    t.true(alice.every((result: { status: number }) => result.status === 200));
    t.is(new Set(alice.map((result: { body: { name: string } }) => result.body.name)).size, 1, 'one endpoint for one key');
    const users = await h2(Array.from({ length: 30 }, (_, i) => ({ path: '/hash', headers: { 'x-user': `user-${i}` } })));
    t.is(new Set(users.map((result: { body: { name: string } }) => result.body.name)).size, 2, 'keys spread over both endpoints');
    const flood = await clientRun(setup, { scenario: 'h2-flood', host: H2_VIP, port: 80, count: 6, path: '/dr/slow?ms=3000' });
    t.log(JSON.stringify(flood));
    t.is(flood.statuses['200'], 2, 'the one in flight and the one waiting were served');
    t.is(flood.statuses['503'], 4, 'the rest overflowed');
    t.true((await waypointRequests(setup, { request_protocol: 'http', response_code: '503', response_flags: 'UO', destination_service_name: 'h2f' })) >= 4);
    await until('every slot back', async () => {
      const traffic = (await waypointDump(setup))?.destinationRules?.traffic?.[DR_KEY];
      return traffic?.active === 0 && traffic.pending === 0;
    });
  } finally {
    await rm(path.join(setup.mesh.cluster.clusterDir, 'destinationrules', 'h2f.yaml'), { force: true });
  }
  await until('the DestinationRule is gone', async () => (await waypointDump(setup))?.destinationRules?.policies?.[DR_KEY] === undefined);
});

test.serial('DestinationRule outlierDetection on h2c: the endpoint answering 503 is ejected; the client, helped by the default retry, only sees the other', async (t) => {
  await writeObject(setup, 'destinationrules', 'h2f', {
    apiVersion: 'networking.istio.io/v1', kind: 'DestinationRule', metadata: { name: 'h2f', namespace: 'shop' },
    spec: { host: 'h2f', trafficPolicy: { loadBalancer: { simple: 'ROUND_ROBIN' }, outlierDetection: { consecutive5xxErrors: 2, interval: '1s', baseEjectionTime: '30s', maxEjectionPercent: 100 } } },
  });
  try {
    await until('the waypoint has the outlierDetection', async () => (await waypointDump(setup))?.destinationRules?.policies?.[DR_KEY]?.outlierDetection !== undefined);
    const answers = await h2(Array.from({ length: 30 }, () => ({ path: '/failon?name=web-b' })));
    t.true(answers.every((answer: { status: number; body: { name: string } }) => answer.status === 200 && answer.body.name === 'web-a'), JSON.stringify(answers.filter((answer: { status: number; body: { name: string } }) => answer.status !== 200 || answer.body.name !== 'web-a')));
    const ejected = (await waypointDump(setup))?.destinationRules?.traffic?.[DR_KEY]?.ejected as { endpoint: string; ejections: number }[];
    t.deepEqual(ejected.map((ejection) => ejection.ejections), [1], JSON.stringify(ejected));
    t.true(ejected[0]!.endpoint.endsWith('web-b'));
  } finally {
    await rm(path.join(setup.mesh.cluster.clusterDir, 'destinationrules', 'h2f.yaml'), { force: true });
  }
  await until('the DestinationRule is gone', async () => (await waypointDump(setup))?.destinationRules?.policies?.[DR_KEY] === undefined);
});

test.serial('L7 policy on HTTP/2, gRPC and an Upgrade: h2c 403 RBAC, gRPC 7 PERMISSION_DENIED, WebSocket 403 before the upgrade; allowed requests pass', async (t) => {
  const policy = (name: string, service: string, paths: string[]) => ({
    apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name, namespace: 'shop' },
    spec: { targetRefs: [{ kind: 'Service', group: '', name: service }], action: 'DENY', rules: [{ to: [{ operation: { paths } }] }] },
  });
  await writeObject(setup, 'policies', 'deny-h2f', policy('deny-h2f', 'h2f', ['/denied*']));
  await writeObject(setup, 'policies', 'deny-grpcf', policy('deny-grpcf', 'grpcf', ['/ambit.test.Other/*']));
  try {
    await until('the h2c policy is in force', async () => (await h2([{ path: '/denied/x' }]))[0].status === 403);
    const id = `d${Date.now()}`;
    const [denied, allowed] = await h2([{ path: `/denied/flaky?id=${id}&failures=0`, headers: { 'x-request-id': 'h2-denied-1' } }, { path: '/fine' }]);
    t.is(denied.status, 403);
    t.is(denied.body, 'RBAC: access denied');
    t.is(allowed.status, 200);
    // Asked straight (h2f-v1 is not bound to the waypoint): the backend the denied request would have gone to never saw it.
    const [direct] = await clientRun(setup, { scenario: 'h2-get', host: H2_V1_VIP, port: 80, requests: [{ path: `/flaky?id=${id}&failures=0` }] });
    t.is(direct.body.calls, 1, 'the denied request never reached the backend');
    t.like((await lineOf('h2-denied-1')).authz, { decision: 'deny', policy: 'shop/deny-h2f' });
    await until('the gRPC policy is in force', async () => (await grpc({ path: '/ambit.test.Other/Unary' }))[0].code === 7);
    const [grpcDenied] = await grpc({ path: '/ambit.test.Other/Unary' });
    t.is(grpcDenied.code, 7, 'PERMISSION_DENIED');
    t.is(grpcDenied.details, 'RBAC: access denied');
    const [grpcAllowed] = await grpc({});
    t.is(grpcAllowed.code, 0);
    t.true((await waypointRequests(setup, { request_protocol: 'grpc', response_code: '403', grpc_response_status: '7' })) >= 1);
    const upgradesBefore = await waypointRequests(setup, { response_code: '101', destination_service_name: 'h2f' });
    const ws = await clientRun(setup, { scenario: 'ws', host: H2_VIP, port: 81, messages: ['one'], path: '/denied-chat' });
    t.regex(String(ws.error), /403/, JSON.stringify(ws));
    t.deepEqual(ws.received, []);
    const okWs = await clientRun(setup, { scenario: 'ws', host: H2_VIP, port: 81, messages: ['one'] });
    t.is(okWs.error, undefined, 'another path still upgrades');
    t.is((await waypointRequests(setup, { response_code: '101', destination_service_name: 'h2f' })) - upgradesBefore, 1, 'only the allowed upgrade reached a backend');
  } finally {
    await rm(path.join(setup.mesh.cluster.clusterDir, 'policies', 'deny-h2f.yaml'), { force: true });
    await rm(path.join(setup.mesh.cluster.clusterDir, 'policies', 'deny-grpcf.yaml'), { force: true });
  }
});

const H2_VS_VIP = '10.240.5.14';
const GRPC_VS_VIP = '10.240.5.15';

test.serial('VirtualService fault injection on h2c and gRPC: an abort answered by the waypoint (h2c 418, gRPC 14 trailers-only), never sent upstream; a delay still goes upstream; FI and DI in the access log', async (t) => {
  await writeService(setup, 'h2vs', H2_VS_VIP, [{ name: 'h2', appProtocol: 'kubernetes.io/h2c', port: 80, targetPort: H2_PORT }]);
  await writeService(setup, 'grpcvs', GRPC_VS_VIP, [{ name: 'grpc', port: 80, targetPort: GRPC_PORT }]);
  await writeObject(setup, 'virtualservices', 'h2vs', {
    apiVersion: 'networking.istio.io/v1', kind: 'VirtualService', metadata: { name: 'h2vs', namespace: 'shop' },
    spec: {
      hosts: ['h2vs'],
      http: [
        { match: [{ uri: { prefix: '/abort' } }], fault: { abort: { httpStatus: 418, percentage: { value: 100 } } }, route: [{ destination: { host: 'h2vs' } }] },
        { match: [{ uri: { prefix: '/delay' } }], fault: { delay: { fixedDelay: '300ms', percentage: { value: 100 } } }, route: [{ destination: { host: 'h2vs' } }] },
      ],
    },
  });
  await writeObject(setup, 'virtualservices', 'grpcvs', {
    apiVersion: 'networking.istio.io/v1', kind: 'VirtualService', metadata: { name: 'grpcvs', namespace: 'shop' },
    spec: { hosts: ['grpcvs'], http: [{ fault: { abort: { grpcStatus: 'UNAVAILABLE', percentage: { value: 100 } } }, route: [{ destination: { host: 'grpcvs' } }] }] },
  });
  await until('the waypoint knows the services and has their VirtualService routes', async () => {
    if (!(await serviceReady(setup, 'h2vs', 2)) || !(await serviceReady(setup, 'grpcvs', 2))) return false;
    const routes = (await waypointDump(setup))?.routes ?? {};
    return routes['shop/h2vs.shop.svc.cluster.local']?.length === 2 && routes['shop/grpcvs.shop.svc.cluster.local']?.length === 1;
  }, 60_000);
  const h2vs = (requests: { path: string; headers?: Record<string, string> }[]) => clientRun(setup, { scenario: 'h2-get', host: H2_VS_VIP, port: 80, requests });
  const [aborted, delayed] = await h2vs([
    { path: '/abort/x', headers: { 'x-request-id': 'vs-h2-abort' } },
    { path: '/delay/x', headers: { 'x-request-id': 'vs-h2-delay' } },
  ]);
  t.is(aborted.status, 418, JSON.stringify(aborted));
  t.is(String(aborted.body).trim(), 'fault filter abort');
  t.is(aborted.headers['x-served-by'], undefined, 'no backend answered the aborted request');
  t.like(await lineOf('vs-h2-abort'), { response_code: 418, response_flags: 'FI', response_code_details: 'fault_filter_abort', attempts: 0 });
  t.is(delayed.status, 200, JSON.stringify(delayed));
  t.is(delayed.body.headers['x-request-id'], 'vs-h2-delay', 'the delayed request reached the backend');
  const delayLine = await lineOf('vs-h2-delay');
  t.is(delayLine.response_flags, 'DI');
  t.true(delayLine.duration >= 300, `held for the delay (${delayLine.duration} ms)`);
  const [grpcAborted] = await clientRun(setup, { scenario: 'grpc-unary', host: GRPC_VS_VIP, port: 80, path: '/ambit.test.Echo/Flaky', request: { id: `vs${Date.now()}`, failures: 0, code: 0 }, metadata: { 'x-request-id': 'vs-grpc-abort' } });
  t.is(grpcAborted.code, 14, JSON.stringify(grpcAborted));
  t.is(grpcAborted.details, 'fault filter abort');
  t.like(await lineOf('vs-grpc-abort'), { response_code: 200, response_flags: 'FI', grpc_status: '14', attempts: 0 });
});
