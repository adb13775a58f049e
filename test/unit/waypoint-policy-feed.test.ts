/**
 * The control plane's half of L7 policy: the store's AuthorizationPolicies with targetRefs, RequestAuthentications and
 * LocalRateLimitPolicies compiled (selector policies left out, invalid ones reported with their paths, each problem
 * once), encoded as ambit.waypoint.HttpAuthorization / RequestAuthentication / RateLimit into the xDS cache, and
 * decoded back into the waypoint's policy table, which then decides as the policy says.
 */
import test from 'ava';
import { spiffeId } from '../../shared/identity/index.ts';
import { HTTP_AUTHORIZATION_TYPE_URL, RATE_LIMIT_TYPE_URL, REQUEST_AUTHENTICATION_TYPE_URL, TO_OBJECT_OPTIONS, typeForUrl } from '../../shared/xds/protos.ts';
import { WaypointPolicyModel } from '../../controlplane/model/waypoint-policies.ts';
import { ObjectStore } from '../../controlplane/store.ts';
import { ResourceCache } from '../../controlplane/xds/resource-cache.ts';
import { WaypointPolicyFeed } from '../../controlplane/xds/waypoint-policy-feed.ts';
import { prepareStream, requestAttributes } from '../../waypoint/authz/request-attributes.ts';
import { PolicyTable } from '../../waypoint/authz/policy-table.ts';
import { RequestAuthenticator } from '../../waypoint/jwt/request-authenticator.ts';
import type { K8sObject } from '../../shared/k8s/objects.ts';

const OBJECTS = [
  { apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'viewer', namespace: 'shop' }, spec: { targetRefs: [{ kind: 'Service', group: '', name: 'web' }], rules: [{ to: [{ operation: { methods: ['GET'] } }] }] } },
  { apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'l4', namespace: 'shop' }, spec: { selector: { matchLabels: { app: 'web' } }, rules: [{}] } },
  { apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'custom', namespace: 'shop' }, spec: { targetRefs: [{ kind: 'Gateway', group: 'gateway.networking.k8s.io', name: 'wp' }], action: 'CUSTOM', provider: { name: 'opa' }, rules: [{ to: [{ operation: { paths: ['/admin*'] } }] }] } },
  { apiVersion: 'security.istio.io/v1', kind: 'RequestAuthentication', metadata: { name: 'jwt', namespace: 'shop' }, spec: { targetRefs: [{ kind: 'Service', group: '', name: 'web' }], jwtRules: [{ issuer: 'https://issuer', jwksUri: 'http://keys.shop/jwks.json', fromHeaders: [{ name: 'x-jwt' }] }] } },
  { apiVersion: 'security.istio.io/v1', kind: 'RequestAuthentication', metadata: { name: 'broken', namespace: 'shop' }, spec: { targetRefs: [{ kind: 'Service', group: '', name: 'web' }], jwtRules: [{ issuer: 'https://other' }] } },
  { apiVersion: 'policy.ambit.dev/v1alpha1', kind: 'LocalRateLimitPolicy', metadata: { name: 'rl', namespace: 'shop' }, spec: { targetRefs: [{ kind: 'Service', group: '', name: 'web' }], limits: [{ requests: 5, unit: 'Second' }] } },
] as unknown as K8sObject[];

test('compiled, encoded, decoded and applied: the waypoint decides as the policies say; problems reported once', (t) => {
  const store = new ObjectStore();
  store.apply(OBJECTS.map((object) => ({ type: 'upsert' as const, object })));
  const problems: string[] = [];
  const model = new WaypointPolicyModel({ onProblem: (problem) => problems.push(`${problem.kind} ${problem.policy}: ${problem.message}`) });
  const compiled = model.compile(store);
  t.deepEqual([...compiled.authorizations.keys()].sort(), ['shop/custom', 'shop/viewer'], 'the selector policy is the agents\'');
  t.is(compiled.authorizations.get('shop/custom')?.action, 'DENY');
  t.deepEqual([...compiled.requestAuthentications.keys()], ['shop/jwt']);
  t.deepEqual([...compiled.rateLimits.keys()], ['shop/rl']);
  t.is(problems.length, 2, problems.join('\n'));
  t.regex(problems.join('\n'), /AuthorizationPolicy shop\/custom: .*CUSTOM \(provider opa\) is not supported/);
  t.regex(problems.join('\n'), /RequestAuthentication shop\/broken: rejected: .*spec\.jwtRules\[0\]: needs jwksUri or jwks/);
  model.compile(store);
  t.is(problems.length, 2, 'an unchanged policy is not reported again');

  const cache = new ResourceCache();
  new WaypointPolicyFeed(cache).replace(compiled);
  const table = new PolicyTable('shop/wp', new RequestAuthenticator({ fetchText: () => Promise.reject(new Error('offline')) }));
  for (const [typeUrl, apply] of [[HTTP_AUTHORIZATION_TYPE_URL, table.applyAuthorizations], [REQUEST_AUTHENTICATION_TYPE_URL, table.applyRequestAuthentications], [RATE_LIMIT_TYPE_URL, table.applyRateLimits]] as const) {
    const type = typeForUrl(typeUrl)!;
    const entries = [...cache.all(typeUrl).values()];
    t.true(entries.length > 0, typeUrl);
    t.is(apply(entries.map((entry) => ({ name: entry.name, version: entry.version, resource: type.toObject(type.decode(entry.value), TO_OBJECT_OPTIONS) })), []), undefined, `${typeUrl} accepted`);
  }
  const policies = table.forService({ namespace: 'shop', name: 'web' });
  t.false(policies.authenticator.empty);
  t.false(policies.limiter.empty);
  const stream = prepareStream({ peer: spiffeId('cluster.local', 'shop', 'client'), peerAddress: '10.0.0.5', destinationHost: '10.240.0.10', destinationPort: 80 });
  const decide = (method: string, path: string) => policies.index.decide(requestAttributes(method, path, { host: 'web' }, stream, undefined, 0));
  t.like(decide('GET', '/items'), { allowed: true, policy: 'shop/viewer' });
  t.like(decide('DELETE', '/items'), { allowed: false, policy: '' });
  t.like(decide('GET', '/admin/x'), { allowed: false, policy: 'shop/custom' }, 'the CUSTOM policy denies what it matches');
  t.true(table.forService({ namespace: 'shop', name: 'other' }).index.policies.includes('shop/custom'), 'a Gateway target applies to every Service of the waypoint');
  t.false(table.forService({ namespace: 'shop', name: 'other' }).index.policies.includes('shop/viewer'));
  // A malformed resource is NACKed and the last good one kept.
  const rejected = table.applyAuthorizations([{ name: 'shop/viewer', version: '2', resource: { name: 'viewer', namespace: 'shop', action: 'CUSTOM', targets: [{ kind: 'Service', namespace: 'shop', name: 'web' }] } }], []);
  t.regex(rejected?.rejected?.[0]?.reason ?? '', /action CUSTOM is not ALLOW, DENY or AUDIT/);
  t.like(table.forService({ namespace: 'shop', name: 'web' }).index.decide(requestAttributes('GET', '/items', { host: 'web' }, stream, undefined, 0)), { allowed: true, policy: 'shop/viewer' });
});
