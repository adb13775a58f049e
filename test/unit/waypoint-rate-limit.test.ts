/**
 * ambit's LocalRateLimitPolicy (policy.ambit.dev/v1alpha1): schema validation with field paths, compiling targets,
 * and the waypoint's token buckets (burst, refill rate, keys by principal / client IP / header / route, match,
 * buckets kept across a policy update) on a controlled clock; the gate's 429 answer with x-ratelimit-* headers.
 */
import test from 'ava';
import { Registry } from 'prom-client';
import { spiffeId } from '../../shared/identity/index.ts';
import { compileRateLimitPolicy, validateRateLimitPolicy, type L7RateLimitPolicy, type RateLimitSpec } from '../../shared/policy/rate-limit.ts';
import { AuthzMetrics } from '../../waypoint/authz/metrics.ts';
import { PolicyTable } from '../../waypoint/authz/policy-table.ts';
import { RateLimiter, type RateLimitRequest } from '../../waypoint/authz/rate-limiter.ts';
import { decisionOf, RequestGate } from '../../waypoint/authz/request-gate.ts';
import { RequestAuthenticator } from '../../waypoint/jwt/request-authenticator.ts';

function policy(limits: RateLimitSpec[], targetRefs: object[] = [{ kind: 'Service', group: '', name: 'web' }]): L7RateLimitPolicy {
  const object = validateRateLimitPolicy({ apiVersion: 'policy.ambit.dev/v1alpha1', kind: 'LocalRateLimitPolicy', metadata: { name: 'rl', namespace: 'shop' }, spec: { targetRefs, limits } });
  return compileRateLimitPolicy(object).policy!;
}

const request = (overrides: Partial<RateLimitRequest> = {}): RateLimitRequest => ({ method: 'GET', path: '/orders', sourcePrincipal: 'cluster.local/ns/shop/sa/client', clientAddress: '10.0.0.5', headers: {}, ...overrides });

test('validation: unknown fields, units, keys and names are refused with their paths', (t) => {
  const error = t.throws(() =>
    validateRateLimitPolicy({
      apiVersion: 'policy.ambit.dev/v1alpha1', kind: 'LocalRateLimitPolicy', metadata: { name: 'bad', namespace: 'shop' },
      spec: { targetRefs: [{ kind: 'Service', name: 'web' }], limits: [{ requests: 0, unit: 'Day' }, { requests: 5, unit: 'Second', key: { type: 'Header' } }, { requests: 5, unit: 'Second', burts: 3 }] },
    }),
  );
  t.regex(error!.message, /spec\.limits\[0\]\.requests/);
  t.regex(error!.message, /spec\.limits\[0\]\.unit/);
  t.regex(error!.message, /spec\.limits\[2\].*burts.*burst/);
  const header = t.throws(() => validateRateLimitPolicy({ apiVersion: 'policy.ambit.dev/v1alpha1', kind: 'LocalRateLimitPolicy', metadata: { name: 'h' }, spec: { targetRefs: [{ kind: 'Service', name: 'web' }], limits: [{ requests: 5, unit: 'Second', key: { type: 'Header' } }] } }));
  t.regex(header!.message, /spec\.limits\[0\]\.key\.header: a Header key needs the header name/);
  const compiled = policy([{ requests: 10, unit: 'Minute', key: { type: 'Header', header: 'X-User' } }]);
  t.like(compiled.limits[0], { name: 'limit-0', requests: 10, periodMs: 60_000, burst: 10, keyType: 'Header', header: 'x-user' });
});

test('a bucket: burst first, then the refill rate; keys are separate', (t) => {
  let now = 0;
  const limiter = new RateLimiter(() => now).forService([policy([{ requests: 10, unit: 'Second', burst: 3, key: { type: 'SourcePrincipal' } }])]);
  const taken = (count: number, overrides: Partial<RateLimitRequest> = {}): number => {
    let allowed = 0;
    for (let i = 0; i < count; i++) if (limiter.take(request(overrides)) === undefined) allowed++;
    return allowed;
  };
  t.is(taken(10), 3, 'the burst');
  const hit = limiter.take(request());
  t.like(hit, { limit: 'shop/rl/limit-0', requests: 10, periodSeconds: 1, resetSeconds: 1 });
  t.is(taken(5, { sourcePrincipal: 'cluster.local/ns/shop/sa/other' }), 3, 'another principal has its own bucket');
  now += 1000;
  t.is(taken(100), 3, 'a second later the bucket is full again, at most burst');
  let allowed = 0;
  for (let ms = 0; ms < 10_000; ms += 10) {
    now += 10;
    allowed += taken(1);
  }
  t.true(allowed >= 99 && allowed <= 101, `10 s at 100 attempts/s under a 10/s limit: ${allowed} allowed`);
});

test('Route, ClientIP and Header keys; match selects the requests a limit counts', (t) => {
  const now = 0;
  const limiter = new RateLimiter(() => now).forService([
    policy([
      { name: 'writes', requests: 1, unit: 'Minute', key: { type: 'Route' }, match: { methods: ['POST'], paths: ['/orders*'] } },
      { name: 'per-ip', requests: 2, unit: 'Minute', key: { type: 'ClientIP' }, match: { paths: ['/ip'] } },
      { name: 'per-user', requests: 1, unit: 'Minute', key: { type: 'Header', header: 'x-user' }, match: { paths: ['/user'] } },
    ]),
  ]);
  t.is(limiter.take(request({ method: 'POST', sourcePrincipal: 'a' })), undefined);
  t.is(limiter.take(request({ method: 'POST', sourcePrincipal: 'b' }))?.limit, 'shop/rl/writes', 'one bucket for the route, whoever sends');
  t.is(limiter.take(request({ method: 'GET' })), undefined, 'GET is not counted by the POST limit');
  t.is(limiter.take(request({ path: '/ip' })), undefined);
  t.is(limiter.take(request({ path: '/ip' })), undefined);
  t.is(limiter.take(request({ path: '/ip' }))?.limit, 'shop/rl/per-ip');
  t.is(limiter.take(request({ path: '/ip', clientAddress: '10.0.0.6' })), undefined);
  t.is(limiter.take(request({ path: '/user', headers: { 'x-user': 'u1' } })), undefined);
  t.is(limiter.take(request({ path: '/user', headers: { 'x-user': 'u1' } }))?.limit, 'shop/rl/per-user');
  t.is(limiter.take(request({ path: '/user', headers: { 'x-user': 'u2' } })), undefined);
  t.is(limiter.take(request({ path: '/user' })), undefined, 'no header: not counted');
});

test('the gate answers 429 local_rate_limited with x-ratelimit-* and retry-after; buckets survive a policy update', async (t) => {
  const table = new PolicyTable('shop/wp', new RequestAuthenticator({ fetchText: () => Promise.reject(new Error('none')) }));
  const resource = policy([{ name: 'slow', requests: 1, unit: 'Minute', key: { type: 'SourcePrincipal' } }]);
  table.applyRateLimits([{ name: 'shop/rl', version: '1', resource }], []);
  const gate = new RequestGate({ table, metrics: new AuthzMetrics(new Registry()) });
  const hbone = { peerIdentity: spiffeId('cluster.local', 'shop', 'client'), target: { host: '10.240.0.10', port: 80 }, headers: {}, remoteAddress: '10.0.0.5' };
  const service = { namespace: 'shop', name: 'web' };
  const answer = () => {
    const response = { status: 0, headers: {} as Record<string, string | number>, body: '', writeHead(status: number, headers: Record<string, string | number>) { this.status = status; this.headers = headers; return this; }, end(body?: string) { this.body = body ?? ''; } };
    const incoming = { method: 'GET', url: '/a', headers: {}, resume: () => {} };
    return { response, incoming };
  };
  const first = answer();
  t.is(await gate.check(first.incoming, first.response, hbone, service), undefined);
  const second = answer();
  t.like(await gate.check(second.incoming, second.response, hbone, service), { status: 429, responseFlags: 'RL' });
  t.is(second.response.body, 'local_rate_limited');
  t.like(second.response.headers, { 'x-ratelimit-limit': '1, 1;w=60', 'x-ratelimit-remaining': '0', 'retry-after': '60' });
  t.is(decisionOf(second.incoming)?.rateLimited, 'shop/rl/slow');
  table.applyRateLimits([{ name: 'shop/rl', version: '2', resource }], []);
  const third = answer();
  t.is((await gate.check(third.incoming, third.response, hbone, service))?.status, 429, 'the same limit after an update keeps its bucket');
});
