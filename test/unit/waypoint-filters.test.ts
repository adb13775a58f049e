/**
 * The waypoint's per-request pieces without a network: path rewriting (the Gateway API's ReplacePrefixMatch
 * table), redirect Locations, header modifiers, retry decisions and back-off, W3C trace context and request ids,
 * and the least-request choice between two draws.
 */
import test from 'ava';
import type { PickedEndpoint } from '../../shared/mesh/load-balance.ts';
import { WaypointError } from '../../waypoint/errors.ts';
import { endToEndHeaders, modifyHeaders, modifyPath, redirectLocation, rewrittenUrl } from '../../waypoint/filters.ts';
import { LeastRequestBalancer } from '../../waypoint/least-request.ts';
import type { Service } from '../../shared/mesh/service.ts';
import type { Upstreams } from '../../waypoint/upstream.ts';
import { backoffMs, shouldRetry } from '../../waypoint/retry.ts';
import type { RouteEntry } from '../../waypoint/route-table.ts';
import { randomRequestId, requestIdOf, traceContextOf, traceparentOf } from '../../waypoint/tracing.ts';

function entry(fields: Partial<RouteEntry>): RouteEntry {
  return { route: 'shop/r', ruleName: '', port: 0, pathType: 'PATH_PREFIX', path: '/', method: '', headers: [], queryParams: [], backends: [], totalWeight: 0, mirrors: [], requestTimeoutMs: 0, backendRequestTimeoutMs: 0, ...fields };
}

test("ReplacePrefixMatch follows the Gateway API's table", (t) => {
  const cases: [string, string, string, string][] = [
    ['/foo', '/foo/bar', '/xyz', '/xyz/bar'],
    ['/foo', '/foo/bar', '/xyz/', '/xyz/bar'],
    ['/foo/', '/foo/bar', '/xyz', '/xyz/bar'],
    ['/foo/', '/foo/bar', '/xyz/', '/xyz/bar'],
    ['/foo', '/foo', '/xyz', '/xyz'],
    ['/foo/', '/foo', '/xyz', '/xyz'],
    ['/foo', '/foo/', '/xyz', '/xyz/'],
    ['/foo', '/foo/bar', '/', '/bar'],
    ['/foo', '/foo', '/', '/'],
    ['/', '/foo/bar', '/xyz', '/xyz/foo/bar'],
  ];
  for (const [prefix, path, replacement, expected] of cases) {
    t.is(modifyPath({ type: 'REPLACE_PREFIX_MATCH', value: replacement }, entry({ path: prefix }), path), expected, `${prefix} ${path} ${replacement}`);
  }
  t.is(modifyPath({ type: 'REPLACE_FULL_PATH', value: '/new' }, entry({ path: '/foo' }), '/foo/bar'), '/new');
  t.is(rewrittenUrl(entry({ path: '/api', urlRewrite: { hostname: '', path: { type: 'REPLACE_PREFIX_MATCH', value: '/v2' } } }), '/api/items', 'a=1'), '/v2/items?a=1', 'the query is kept');
});

test('redirect Location: configured parts, else the request own; default ports left out', (t) => {
  const request = { host: 'web.shop:8080', path: '/old/page', query: 'q=1', servicePort: 8080 };
  const redirect = (fields: Partial<NonNullable<RouteEntry['redirect']>>, path = '/old'): string =>
    redirectLocation(entry({ path, redirect: { scheme: '', hostname: '', port: 0, statusCode: 302, ...fields } }), request);
  t.is(redirect({}), 'http://web.shop:8080/old/page?q=1', 'no scheme: the service port stays');
  t.is(redirect({ scheme: 'https' }), 'https://web.shop/old/page?q=1', 'a scheme: its well-known port, left out');
  t.is(redirect({ scheme: 'https', port: 8443 }), 'https://web.shop:8443/old/page?q=1');
  t.is(redirect({ hostname: 'other.example', port: 80 }), 'http://other.example/old/page?q=1');
  t.is(redirect({ path: { type: 'REPLACE_PREFIX_MATCH', value: '/new' } }), 'http://web.shop:8080/new/page?q=1');
  t.is(redirect({ path: { type: 'REPLACE_FULL_PATH', value: '/' } }), 'http://web.shop:8080/?q=1');
});

test('header modifiers: set, add, remove; hop-by-hop and pseudo-headers never forwarded', (t) => {
  const headers = endToEndHeaders({ connection: 'keep-alive', 'x-a': '1', 'x-b': '2', 'x-c': '3', ':authority': 'web', 'transfer-encoding': 'chunked' });
  modifyHeaders(headers, { set: [{ name: 'x-a', value: 'one' }], add: [{ name: 'x-b', value: 'two' }, { name: 'x-new', value: 'n' }], remove: ['x-c'] });
  t.deepEqual(headers, { 'x-a': 'one', 'x-b': '2,two', 'x-new': 'n' });
});

const policy = { codes: new Set([503]), attempts: 2, backoffMs: 20 };

test('retry: only listed codes, connection failures, and only a replayable body, up to the attempts', (t) => {
  t.true(shouldRetry(policy, true, 0, { status: 503 }));
  t.false(shouldRetry(policy, true, 0, { status: 500 }), 'a code not listed');
  t.false(shouldRetry(policy, false, 0, { status: 503 }), 'a body that streamed past the buffer');
  t.false(shouldRetry(policy, true, 2, { status: 503 }), 'attempts used up');
  t.false(shouldRetry(undefined, true, 0, { status: 503 }), 'no policy');
  t.true(shouldRetry(policy, true, 1, { error: new WaypointError('WAYPOINT_UPSTREAM_CONNECT_FAILED', 'x') }));
  t.false(shouldRetry(policy, true, 0, { error: new WaypointError('WAYPOINT_NO_HEALTHY_UPSTREAM', 'x') }), 'no endpoint: trying again finds none either');
  t.false(shouldRetry(policy, true, 0, { error: new WaypointError('WAYPOINT_BACKEND_TIMEOUT', 'x') }), 'a try timeout counts as 504, not listed');
  t.true(shouldRetry({ ...policy, codes: new Set([504]) }, true, 0, { error: new WaypointError('WAYPOINT_BACKEND_TIMEOUT', 'x') }));
  t.deepEqual([1, 2, 3, 4, 5].map((retry) => backoffMs(policy, retry)), [20, 40, 80, 160, 200], 'exponential from the minimum, capped at 10x');
});

test('trace context: continued with a new span, or a new trace; tracestate only with a valid traceparent; request id kept or made', (t) => {
  const incoming = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
  const continued = traceContextOf({ traceparent: incoming, tracestate: 'congo=t61rcWkgMzE' });
  t.is(continued.traceId, '4bf92f3577b34da6a3ce929d0e0e4736');
  t.is(continued.parentSpanId, '00f067aa0ba902b7');
  t.regex(continued.spanId, /^[0-9a-f]{16}$/);
  t.not(continued.spanId, '00f067aa0ba902b7');
  t.is(traceparentOf(continued), `00-4bf92f3577b34da6a3ce929d0e0e4736-${continued.spanId}-01`);
  t.is(continued.tracestate, 'congo=t61rcWkgMzE');
  for (const invalid of [undefined, 'garbage', '00-00000000000000000000000000000000-00f067aa0ba902b7-01', 'ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra']) {
    const fresh = traceContextOf({ ...(invalid ? { traceparent: invalid } : {}), tracestate: 'a=b' });
    t.regex(traceparentOf(fresh), /^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/, String(invalid));
    t.not(fresh.traceId, '4bf92f3577b34da6a3ce929d0e0e4736');
    t.is(fresh.tracestate, undefined, 'tracestate dropped with an invalid traceparent');
  }
  t.is(requestIdOf({ 'x-request-id': 'abc' }), 'abc');
  t.regex(requestIdOf({}), /^[0-9a-f-]{36}$/);
});

test('a made request id is a version 4 UUID, a new one each time (across refills of the random pool)', (t) => {
  const seen = new Set<string>();
  for (let index = 0; index < 1000; index++) {
    const id = randomRequestId();
    t.regex(id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    seen.add(id);
  }
  t.is(seen.size, 1000);
});

/**
 * Checked by tsc, never run: the pick every request to an endpoint shares (one object per endpoint) cannot be written
 * through what the pickers hand out; each write below must stay a type error (an unused @ts-expect-error fails tsc).
 */
function sharedPicksAreReadOnly(upstreams: Upstreams, service: Service): void {
  const picked = upstreams.pickLeastRequest(service, 80, '10.0.0.1');
  // @ts-expect-error the shared pick is read-only
  picked.address = '10.0.0.9';
  // @ts-expect-error the shared pick is read-only
  picked.targetPort = 1;
  // @ts-expect-error the shared pick is read-only
  picked.hostPort = '10.0.0.9:1';
  const target = upstreams.pick(service, 80, '10.0.0.1');
  // @ts-expect-error the HTTP/2 path's view holds the same shared pick
  target.picked.address = '10.0.0.9';
}

test('the least-request pick shared by an endpoint\'s requests is read-only to its callers (a compile-time check)', (t) => {
  t.is(typeof sharedPicksAreReadOnly, 'function');
});

test('least request: of two draws, the endpoint with fewer requests in flight', (t) => {
  const picked = (address: string): PickedEndpoint => ({ address, targetPort: 80, endpoint: {} as PickedEndpoint['endpoint'] });
  const balancer = new LeastRequestBalancer();
  const a = picked('10.0.0.1');
  const b = picked('10.0.0.2');
  t.is(balancer.choose(a, b), a, 'a tie: the first draw');
  balancer.started('10.0.0.1');
  t.is(balancer.choose(a, b), b);
  balancer.started('10.0.0.2');
  balancer.started('10.0.0.2');
  t.is(balancer.choose(a, b), a);
  balancer.finished('10.0.0.2');
  balancer.finished('10.0.0.2');
  balancer.finished('10.0.0.1');
  t.is(balancer.inFlight('10.0.0.1'), 0);
  t.is(balancer.inFlight('10.0.0.2'), 0);
});

test('upstream connections: requests to one endpoint reuse its kept-alive connection; the agent goes when its last connection closed', async (t) => {
  const { default: http } = await import('node:http');
  const { MeshState } = await import('../../shared/mesh/mesh-state.ts');
  const { Upstreams } = await import('../../waypoint/upstream.ts');
  const { UpstreamConnections } = await import('../../waypoint/upstream-connections.ts');
  // A real HTTP server on loopback, an endpoint outside the mesh (plain TCP): no HBONE pool is needed.
  const server = http.createServer((request, response) => response.end(String(request.socket.remotePort)));
  // Hint `keep-alive: timeout=2`: Node's agent keeps the connection idle for 2 s less its 1 s margin.
  server.keepAliveTimeout = 2_500;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => server.close());
  const port = (server.address() as { port: number }).port;
  const workload = { uid: 'u', name: 'web-a', namespace: 'shop', serviceAccount: 'web', trustDomain: 'cluster.local', node: 'n', addresses: ['127.0.0.1'], tunnelProtocol: 'NONE', captureReason: '', canonicalName: 'web', canonicalRevision: 'v1', workloadName: 'web' } as const;
  const service = { name: 'web', namespace: 'shop', hostname: 'web.shop.svc.cluster.local', vips: [], ports: [], subjectAltNames: [], ipFamilies: 'IPV4_ONLY' } as unknown as Parameters<InstanceType<typeof UpstreamConnections>['agentFor']>[0];
  const upstreams = new Upstreams({ state: new MeshState(), pool: undefined as never, identity: undefined as never, self: () => workload as never });
  const connections = new UpstreamConnections(upstreams);
  const picked = { address: '127.0.0.1', targetPort: port, endpoint: { workload: workload as never, ports: [] } };
  const get = (): Promise<string> =>
    new Promise((resolve, reject) => {
      http.get({ host: '127.0.0.1', port, path: '/', agent: connections.agentFor(service, picked) }, (response) => {
        let text = '';
        response.on('data', (chunk: Buffer) => (text += chunk.toString()));
        response.on('end', () => resolve(text));
      }).on('error', reject);
    });
  const ports = [await get(), await get(), await get()];
  t.is(new Set(ports).size, 1, `client ports seen by the server: ${ports.join(', ')}`);
  t.deepEqual(Object.values(connections.view()), [{ open: 0, idle: 1 }]);
  // The idle connection closes (the agent's timeout from the server's hint): the endpoint's agent is dropped.
  const deadline = Date.now() + 5_000;
  while (Object.keys(connections.view()).length > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
  t.deepEqual(connections.view(), {});
  connections.close();
});
