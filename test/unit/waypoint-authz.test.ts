/**
 * L7 AuthorizationPolicy at the waypoint: compiling policies with targetRefs (targets checked, CUSTOM refused as
 * DENY, selector policies left to the agents), every from/to/when field allowing and denying a request, Envoy's
 * DENY -> ALLOW order, AUDIT and dry-run reports, the path/principal index agreeing with a plain scan, path
 * normalisation and X-Forwarded-For.
 */
import test from 'ava';
import { compileWaypointAuthorization } from '../../shared/policy/l7-compile.ts';
import { L7PolicyIndex, type HttpRequestAttributes, type RequestAuth } from '../../shared/policy/l7-evaluate.ts';
import type { L7Authorization, L7Rule } from '../../shared/policy/l7-model.ts';
import { targetsApply } from '../../shared/policy/l7-model.ts';
import type { AuthorizationPolicySpec } from '../../shared/policy/crd-schema.ts';
import { assertValidPolicy } from '../../shared/policy/validate.ts';
import { normalizePath, prepareStream, remoteAddress, requestAttributes } from '../../waypoint/authz/request-attributes.ts';
import { spiffeId } from '../../shared/identity/index.ts';

function policy(action: L7Authorization['action'], rules: Partial<L7Rule>[], extra: Partial<L7Authorization> = {}): L7Authorization {
  return { name: extra.name ?? `p-${action.toLowerCase()}`, namespace: 'shop', action, dryRun: false, targets: [{ kind: 'Service', namespace: 'shop', name: 'web' }], rules: rules.map((rule) => ({ from: rule.from ?? [], to: rule.to ?? [], when: rule.when ?? [] })), ...extra };
}

interface RequestInput {
  method?: string;
  path?: string;
  host?: string;
  port?: number;
  headers?: Record<string, string>;
  principal?: string;
  peerAddress?: string;
  destination?: string;
  auth?: RequestAuth;
  trustedProxies?: number;
}

function request(input: RequestInput = {}): HttpRequestAttributes {
  const [, namespace = 'shop', , account = 'client'] = (input.principal ?? 'cluster.local/ns/shop/sa/client').split('/').slice(1);
  const peer = spiffeId('cluster.local', namespace, account);
  const stream = prepareStream({ peer, peerAddress: input.peerAddress ?? '10.0.0.5', destinationHost: input.destination ?? '10.240.0.10', destinationPort: input.port ?? 80 });
  const headers = { host: input.host ?? 'web.shop.svc.cluster.local', ...input.headers };
  return requestAttributes(input.method ?? 'GET', input.path ?? '/', headers, stream, input.auth, input.trustedProxies ?? 0);
}

const allowed = (policies: L7Authorization[], input: RequestInput = {}): boolean => new L7PolicyIndex(policies).decide(request(input)).allowed;

const JWT: RequestAuth = { principal: 'https://issuer.example/alice', audiences: ['web', 'api'], presenter: 'cli', claims: { iss: 'https://issuer.example', sub: 'alice', groups: ['admin', 'dev'], org: { team: 'blue' }, level: 3 } };

test('no policy: allowed; an ALLOW policy with no rules denies everything', (t) => {
  t.true(allowed([]));
  const decision = new L7PolicyIndex([policy('ALLOW', [])]).decide(request());
  t.false(decision.allowed);
  t.is(decision.reason, 'denied: ALLOW policies apply and none matched');
  t.true(allowed([policy('ALLOW', [{}])]), 'rules: [{}] allows everything');
  t.true(allowed([policy('DENY', [])]), 'a DENY policy with no rules matches nothing');
});

test('methods, paths (exact, prefix, suffix, presence) and their negations', (t) => {
  const get = [policy('ALLOW', [{ to: [{ methods: ['GET'], paths: ['/info*', '/exact', '*.css'] }] }])];
  t.true(allowed(get, { path: '/info/a' }));
  t.true(allowed(get, { path: '/exact' }));
  t.true(allowed(get, { path: '/static/site.css' }));
  t.false(allowed(get, { path: '/exact/more' }));
  t.false(allowed(get, { method: 'DELETE', path: '/info' }));
  t.false(allowed(get, { method: 'get', path: '/info' }), 'methods are case-sensitive, as Envoy matches :method');
  const notDelete = [policy('DENY', [{ to: [{ notMethods: ['GET', 'HEAD'] }] }])];
  t.false(allowed(notDelete, { method: 'DELETE' }));
  t.true(allowed(notDelete, { method: 'HEAD' }));
  const notAdmin = [policy('ALLOW', [{ to: [{ notPaths: ['/admin*'] }] }])];
  t.false(allowed(notAdmin, { path: '/admin/users' }));
  t.true(allowed(notAdmin, { path: '/home' }));
});

test('hosts: case-insensitive, with or without the port, wildcards; notHosts', (t) => {
  const hosts = [policy('ALLOW', [{ to: [{ hosts: ['Web.Shop.svc.cluster.local', '*.example.com'] }] }])];
  t.true(allowed(hosts, { host: 'web.shop.svc.cluster.local' }));
  t.true(allowed(hosts, { host: 'WEB.shop.svc.cluster.local:80' }));
  t.true(allowed(hosts, { host: 'api.example.com' }));
  t.false(allowed(hosts, { host: 'other.shop.svc.cluster.local' }));
  t.false(allowed([policy('ALLOW', [{ to: [{ notHosts: ['*.example.com'] }] }])], { host: 'a.example.com:8080' }));
});

test('ports and notPorts against the destination (Service) port', (t) => {
  t.true(allowed([policy('ALLOW', [{ to: [{ ports: ['80'] }] }])], { port: 80 }));
  t.false(allowed([policy('ALLOW', [{ to: [{ ports: ['80'] }] }])], { port: 8080 }));
  t.false(allowed([policy('DENY', [{ to: [{ notPorts: ['80'] }] }])], { port: 8080 }));
});

test('principals, namespaces, serviceAccounts and their negations', (t) => {
  const byPrincipal = [policy('ALLOW', [{ from: [{ principals: ['cluster.local/ns/shop/sa/client'] }] }])];
  t.true(allowed(byPrincipal));
  t.false(allowed(byPrincipal, { principal: 'cluster.local/ns/shop/sa/other' }));
  t.true(allowed([policy('ALLOW', [{ from: [{ principals: ['*/ns/shop/sa/*'] }] }])]) === false, 'a middle wildcard is not a wildcard (Istio matches prefix or suffix only)');
  t.true(allowed([policy('ALLOW', [{ from: [{ principals: ['cluster.local/ns/shop/*'] }] }])]));
  t.false(allowed([policy('ALLOW', [{ from: [{ namespaces: ['prod'] }] }])]));
  t.true(allowed([policy('ALLOW', [{ from: [{ namespaces: ['shop'] }] }])]));
  t.false(allowed([policy('DENY', [{ from: [{ notNamespaces: ['prod'] }] }])]));
  t.true(allowed([policy('ALLOW', [{ from: [{ serviceAccounts: ['shop/client'] }] }])]));
  t.false(allowed([policy('ALLOW', [{ from: [{ serviceAccounts: ['shop/web'] }] }])]));
  t.false(allowed([policy('ALLOW', [{ from: [{ notServiceAccounts: ['shop/client'] }] }])]));
  t.false(allowed([policy('ALLOW', [{ from: [{ notPrincipals: ['cluster.local/ns/shop/sa/client'] }] }])]));
});

test('ipBlocks against the peer, remoteIpBlocks against X-Forwarded-For with numTrustedProxies', (t) => {
  t.true(allowed([policy('ALLOW', [{ from: [{ ipBlocks: ['10.0.0.0/24'] }] }])], { peerAddress: '10.0.0.5' }));
  t.false(allowed([policy('ALLOW', [{ from: [{ ipBlocks: ['10.0.1.0/24'] }] }])], { peerAddress: '10.0.0.5' }));
  t.true(allowed([policy('ALLOW', [{ from: [{ ipBlocks: ['10.0.0.5'] }] }])], { peerAddress: '::ffff:10.0.0.5' }), 'IPv4-mapped peers match IPv4 blocks');
  t.false(allowed([policy('DENY', [{ from: [{ notIpBlocks: ['10.0.0.0/8'] }] }])], { peerAddress: '192.168.1.1' }));
  const remote = [policy('ALLOW', [{ from: [{ remoteIpBlocks: ['203.0.113.0/24'] }] }])];
  const forwarded = { 'x-forwarded-for': '203.0.113.7, 10.9.9.9' };
  t.false(allowed(remote, { headers: forwarded }), 'with no trusted proxy, X-Forwarded-For is the client talking: the peer counts');
  t.false(allowed(remote, { headers: { 'x-forwarded-for': '203.0.113.7' } }), 'a client cannot claim an address by sending X-Forwarded-For');
  t.false(allowed(remote, { headers: forwarded, trustedProxies: 1 }), 'one trusted proxy: the last entry');
  t.true(allowed(remote, { headers: forwarded, trustedProxies: 2 }));
  t.is(remoteAddress('10.0.0.5', '1.1.1.1', 3), '10.0.0.5', 'fewer entries than trusted proxies: the peer');
  t.false(allowed([policy('ALLOW', [{ from: [{ notRemoteIpBlocks: ['10.0.0.0/8'] }] }])]));
});

test('requestPrincipals and notRequestPrincipals (the documented "require a JWT" policy)', (t) => {
  const requireJwt = [policy('DENY', [{ from: [{ notRequestPrincipals: ['*'] }] }])];
  t.false(allowed(requireJwt), 'no JWT: denied');
  t.true(allowed(requireJwt, { auth: JWT }));
  t.true(allowed([policy('ALLOW', [{ from: [{ requestPrincipals: ['https://issuer.example/*'] }] }])], { auth: JWT }));
  t.false(allowed([policy('ALLOW', [{ from: [{ requestPrincipals: ['https://issuer.example/bob'] }] }])], { auth: JWT }));
});

test('when: request.headers, request.auth.* and nested claims', (t) => {
  const header = [policy('ALLOW', [{ when: [{ key: 'request.headers[X-Token]', values: ['admin*'] }] }])];
  t.true(allowed(header, { headers: { 'x-token': 'admin-1' } }), 'header names are case-insensitive');
  t.false(allowed(header, { headers: { 'x-token': 'guest' } }));
  t.false(allowed(header), 'an absent header does not match values');
  t.true(allowed([policy('DENY', [{ when: [{ key: 'request.headers[x-token]', notValues: ['ok'] }] }])], { headers: { 'x-token': 'ok' } }));
  t.false(allowed([policy('DENY', [{ when: [{ key: 'request.headers[x-token]', notValues: ['ok'] }] }])]), 'an absent header matches notValues');
  t.true(allowed([policy('ALLOW', [{ when: [{ key: 'request.auth.claims[groups]', values: ['admin'] }] }])], { auth: JWT }), 'a list claim matches when one element does');
  t.false(allowed([policy('ALLOW', [{ when: [{ key: 'request.auth.claims[groups]', values: ['ops'] }] }])], { auth: JWT }));
  t.true(allowed([policy('ALLOW', [{ when: [{ key: 'request.auth.claims[org][team]', values: ['blue'] }] }])], { auth: JWT }));
  t.true(allowed([policy('ALLOW', [{ when: [{ key: 'request.auth.claims[level]', values: ['3'] }] }])], { auth: JWT }));
  t.false(allowed([policy('ALLOW', [{ when: [{ key: 'request.auth.claims[groups]', values: ['admin'] }] }])]), 'no JWT: no claims');
  t.true(allowed([policy('ALLOW', [{ when: [{ key: 'request.auth.principal', values: ['https://issuer.example/alice'] }] }])], { auth: JWT }));
  t.true(allowed([policy('ALLOW', [{ when: [{ key: 'request.auth.audiences', values: ['api'] }] }])], { auth: JWT }));
  t.false(allowed([policy('ALLOW', [{ when: [{ key: 'request.auth.audiences', values: ['other'] }] }])], { auth: JWT }));
  t.true(allowed([policy('ALLOW', [{ when: [{ key: 'request.auth.presenter', values: ['cli'] }] }])], { auth: JWT }));
});

test('when: source.*, destination.*, remote.ip and connection.sni', (t) => {
  t.true(allowed([policy('ALLOW', [{ when: [{ key: 'source.ip', values: ['10.0.0.0/16'] }] }])]));
  t.true(allowed([policy('ALLOW', [{ when: [{ key: 'remote.ip', values: ['10.0.0.5'] }] }])]));
  t.true(allowed([policy('ALLOW', [{ when: [{ key: 'source.namespace', values: ['shop'] }] }])]));
  t.true(allowed([policy('ALLOW', [{ when: [{ key: 'source.principal', values: ['cluster.local/ns/shop/sa/client'] }] }])]));
  t.false(allowed([policy('ALLOW', [{ when: [{ key: 'source.principal', notValues: ['cluster.local/ns/shop/sa/client'] }] }])]));
  t.true(allowed([policy('ALLOW', [{ when: [{ key: 'destination.ip', values: ['10.240.0.0/16'] }] }])]));
  t.false(allowed([policy('ALLOW', [{ when: [{ key: 'destination.port', values: ['8080'] }] }])]));
  t.false(allowed([policy('ALLOW', [{ when: [{ key: 'connection.sni', values: ['*'] }] }])]), 'no SNI inside HBONE');
  t.false(allowed([policy('ALLOW', [{ when: [{ key: 'experimental.envoy.filters.x', values: ['a'] }] }])]), 'unsupported key: an ALLOW rule never matches');
  t.false(allowed([policy('DENY', [{ when: [{ key: 'experimental.envoy.filters.x', values: ['a'] }] }])]), 'unsupported key: a DENY rule always matches');
});

test('a rule needs from, to and every when; alternatives within from or to are OR-ed', (t) => {
  const rule = [policy('ALLOW', [{ from: [{ namespaces: ['prod'] }, { namespaces: ['shop'] }], to: [{ methods: ['GET'] }], when: [{ key: 'request.headers[x-a]', values: ['1'] }, { key: 'request.headers[x-b]', values: ['2'] }] }])];
  t.true(allowed(rule, { headers: { 'x-a': '1', 'x-b': '2' } }));
  t.false(allowed(rule, { headers: { 'x-a': '1' } }));
  t.false(allowed(rule, { method: 'POST', headers: { 'x-a': '1', 'x-b': '2' } }));
});

test("Envoy's order: DENY beats ALLOW; the deciding policy and rule are reported; AUDIT never decides", (t) => {
  const policies = [
    policy('ALLOW', [{ to: [{ methods: ['POST'] }] }, { to: [{ methods: ['GET', 'DELETE'] }] }], { name: 'allow-read' }),
    policy('DENY', [{ to: [{ methods: ['DELETE'] }] }], { name: 'no-delete' }),
    policy('AUDIT', [{ to: [{ paths: ['/audit*'] }] }], { name: 'audit' }),
  ];
  const index = new L7PolicyIndex(policies);
  const get = index.decide(request({ method: 'GET' }));
  t.deepEqual([get.allowed, get.policy, get.rule], [true, 'shop/allow-read', 1]);
  const remove = index.decide(request({ method: 'DELETE' }));
  t.deepEqual([remove.allowed, remove.policy, remove.rule], [false, 'shop/no-delete', 0]);
  t.is(remove.reason, 'denied by DENY policy shop/no-delete rule 0');
  const audited = index.decide(request({ method: 'PUT', path: '/audit/x' }));
  t.deepEqual([audited.allowed, audited.policy, audited.audit], [false, '', 'shop/audit']);
  t.true(allowed([policy('AUDIT', [{}])]), 'an AUDIT policy alone allows (it is no ALLOW policy)');
});

test('dry-run policies are reported, never enforced', (t) => {
  const dryDeny = policy('DENY', [{ to: [{ methods: ['DELETE'] }] }], { name: 'dry-deny', dryRun: true });
  const decision = new L7PolicyIndex([dryDeny]).decide(request({ method: 'DELETE' }));
  t.true(decision.allowed);
  t.deepEqual(decision.dryRun, { allowedIfEnforced: false, policy: 'shop/dry-deny', rule: 0 });
  t.is(new L7PolicyIndex([dryDeny]).decide(request({ method: 'GET' })).dryRun, undefined);
  const dryAllow = policy('ALLOW', [{ to: [{ methods: ['GET'] }] }], { name: 'dry-allow', dryRun: true });
  const wouldDeny = new L7PolicyIndex([dryAllow]).decide(request({ method: 'POST' }));
  t.true(wouldDeny.allowed);
  t.deepEqual(wouldDeny.dryRun, { allowedIfEnforced: false, policy: '', rule: -1 });
  t.deepEqual(new L7PolicyIndex([dryAllow]).decide(request({ method: 'GET' })).dryRun, { allowedIfEnforced: true, policy: 'shop/dry-allow', rule: 0 });
});

test('the path and principal index agrees with a plain scan over random requests', (t) => {
  const policies: L7Authorization[] = [];
  for (let i = 0; i < 200; i++) {
    const kind = i % 4;
    const rule: Partial<L7Rule> =
      kind === 0 ? { to: [{ paths: [`/p${i}`], methods: i % 8 === 0 ? ['POST'] : ['GET'] }] }
      : kind === 1 ? { from: [{ principals: [`cluster.local/ns/shop/sa/a${i}`] }] }
      : kind === 2 ? { to: [{ paths: [`/q${i}*`] }], from: [{ principals: [`cluster.local/ns/shop/sa/a${i}`] }] }
      : { when: [{ key: 'request.headers[x-k]', values: [`v${i}`] }] };
    policies.push(policy(i % 5 === 0 ? 'DENY' : 'ALLOW', [rule], { name: `p${String(i).padStart(3, '0')}` }));
  }
  const index = new L7PolicyIndex(policies);
  const singles = policies.map((one) => new L7PolicyIndex([one]));
  let checked = 0;
  for (let n = 0; n < 2000; n++) {
    const i = Math.floor(Math.random() * 210);
    const input: RequestInput = { method: n % 3 === 0 ? 'POST' : 'GET', path: n % 2 ? `/p${i}` : `/q${i}/x`, principal: `cluster.local/ns/shop/sa/a${(i + (n % 3)) % 210}`, headers: { 'x-k': `v${i}` } };
    const attributes = request(input);
    // Plain reading: any DENY matches -> deny; else any ALLOW matches -> allow; else deny (ALLOW policies exist).
    const matches = singles.map((single, k) => ({ policy: policies[k]!, matched: single.decide(attributes).policy !== '' }));
    const denied = matches.some((entry) => entry.policy.action === 'DENY' && entry.matched);
    const expected = !denied && matches.some((entry) => entry.policy.action === 'ALLOW' && entry.matched);
    t.is(index.decide(attributes).allowed, expected, JSON.stringify(input));
    checked++;
  }
  t.is(checked, 2000);
});

test('path normalisation: dot segments and encoded unreserved characters', (t) => {
  t.is(normalizePath('/a/./b/../admin'), '/a/admin');
  t.is(normalizePath('/%61dmin'), '/admin');
  t.is(normalizePath('/a%2Fb'), '/a%2Fb', 'an encoded slash stays (Envoy keeps it by default)');
  t.is(normalizePath('/../../etc'), '/etc');
  t.is(normalizePath('/plain'), '/plain');
});

function compileObject(spec: AuthorizationPolicySpec, namespace = 'shop', annotations?: Record<string, string>) {
  return compileWaypointAuthorization(assertValidPolicy({ apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'p', namespace, ...(annotations ? { annotations } : {}) }, spec }).object as never);
}

test('compile: targets Gateway, Service, GatewayClass from the root namespace; others refused with a reason', (t) => {
  const result = compileObject({ targetRefs: [{ kind: 'Gateway', group: 'gateway.networking.k8s.io', name: 'wp' }, { kind: 'Service', group: '', name: 'web' }, { kind: 'Deployment', group: 'apps', name: 'x' }, { kind: 'Service', name: 'web', namespace: 'other' }], rules: [{}] });
  t.deepEqual(result.authorization?.targets, [{ kind: 'Gateway', namespace: 'shop', name: 'wp' }, { kind: 'Service', namespace: 'shop', name: 'web' }]);
  t.is(result.warnings.length, 2);
  t.regex(result.warnings[0]!, /spec\.targetRefs\[2\].*not apps\/Deployment/);
  t.regex(result.warnings[1]!, /spec\.targetRefs\[3\].*own namespace shop/);
  const gatewayClass = compileObject({ targetRefs: [{ kind: 'GatewayClass', group: 'gateway.networking.k8s.io', name: 'istio-waypoint' }] }, 'istio-system');
  t.deepEqual(gatewayClass.authorization?.targets, [{ kind: 'GatewayClass', namespace: 'istio-system', name: 'istio-waypoint' }]);
  const outsideRoot = compileObject({ targetRefs: [{ kind: 'GatewayClass', group: 'gateway.networking.k8s.io', name: 'istio-waypoint' }] });
  t.is(outsideRoot.authorization, undefined);
  t.regex(outsideRoot.warnings.join('\n'), /root namespace istio-system/);
  t.is(compileObject({ selector: { matchLabels: { app: 'web' } }, rules: [{}] }).authorization, undefined, 'selector policies are the agents\'');
  t.true(targetsApply([{ kind: 'Gateway', namespace: 'shop', name: 'wp' }], 'shop/wp', 'shop/any'));
  t.false(targetsApply([{ kind: 'Service', namespace: 'shop', name: 'web' }], 'shop/wp', 'shop/other'));
});

test('compile: CUSTOM is refused with a warning and enforced as DENY (fail closed); dry-run and serviceAccounts kept', (t) => {
  const custom = compileObject({ targetRefs: [{ kind: 'Service', name: 'web' }], action: 'CUSTOM', provider: { name: 'ext-authz' }, rules: [{ to: [{ operation: { paths: ['/admin*'] } }] }] });
  t.is(custom.authorization?.action, 'DENY');
  t.regex(custom.warnings[0]!, /CUSTOM \(provider ext-authz\) is not supported/);
  t.false(allowed([custom.authorization!], { path: '/admin/x' }));
  t.true(allowed([custom.authorization!], { path: '/home' }));
  const dry = compileObject({ targetRefs: [{ kind: 'Service', name: 'web' }], action: 'DENY', rules: [{ from: [{ source: { serviceAccounts: ['client'] } }] }] }, 'shop', { 'istio.io/dry-run': 'true' });
  t.true(dry.authorization?.dryRun);
  t.deepEqual(dry.authorization?.rules[0]?.from[0]?.serviceAccounts, ['shop/client']);
});
