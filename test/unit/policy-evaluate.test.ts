/**
 * L4 authorization decisions as the destination agent makes them: each AuthorizationPolicy field allowing and
 * denying, Istio's DENY/ALLOW order, HTTP-only rules, dry-run, scopes, explain(), and the index agreeing with a
 * plain reading of the rules on thousands of random connections.
 */
import test from 'ava';
import { policyBenchScenario } from '../../bench/policy.ts';
import {
  AuthorizationIndex,
  assertValidPolicy,
  compileAuthorizationPolicy,
  evaluate,
  explain,
  policiesForWorkload,
  policiesForWorkloadKeys,
  principalParts,
  selectorPolicyKeysForWorkload,
  type Authorization,
  type AuthorizationPolicyObject,
  type AuthorizationPolicySpec,
  type CompileResult,
  type Connection,
  type Match,
  type StringMatch,
} from '../../shared/policy/index.ts';
import { cidrContains, parseCidr, parseIp } from '../../shared/policy/ip.ts';

interface PolicyInput {
  name?: string;
  namespace?: string;
  dryRun?: boolean;
  spec: AuthorizationPolicySpec;
}

function compile(input: PolicyInput, rootNamespace = 'istio-system'): CompileResult {
  const object = {
    apiVersion: 'security.istio.io/v1',
    kind: 'AuthorizationPolicy',
    metadata: { name: input.name ?? 'policy', namespace: input.namespace ?? 'web', ...(input.dryRun && { annotations: { 'istio.io/dry-run': 'true' } }) },
    spec: input.spec,
  };
  const validated = assertValidPolicy(object);
  return compileAuthorizationPolicy(validated.object as AuthorizationPolicyObject, { rootNamespace });
}

function policies(...inputs: PolicyInput[]): Authorization[] {
  return inputs.map((input, index) => compile({ name: `policy-${index}`, ...input }).authorization!);
}

/** An mTLS connection from `<namespace>/<account>` (or plaintext with `plaintext: true`). */
function conn(options: { ns?: string; sa?: string; plaintext?: boolean; sourceIp?: string; destinationIp?: string; port?: number } = {}): Connection {
  return {
    ...(!options.plaintext && { sourcePrincipal: `spiffe://cluster.local/ns/${options.ns ?? 'client'}/sa/${options.sa ?? 'default'}` }),
    sourceIp: options.sourceIp ?? '10.1.0.5',
    destinationIp: options.destinationIp ?? '10.2.0.9',
    destinationPort: options.port ?? 8080,
  };
}

const allowFrom = (source: object): PolicyInput => ({ spec: { rules: [{ from: [{ source }] }] } });
const denyFrom = (source: object): PolicyInput => ({ spec: { action: 'DENY', rules: [{ from: [{ source }] }] } });

/** For each field: a connection the rule matches and one it does not. ALLOW: match allows; DENY: match denies. */
const FIELD_CASES: { field: string; rule: PolicyInput['spec']['rules'] extends (infer R)[] | undefined ? R : never; matching: Connection; other: Connection }[] = [
  { field: 'principals', rule: { from: [{ source: { principals: ['cluster.local/ns/shop/sa/cart'] } }] }, matching: conn({ ns: 'shop', sa: 'cart' }), other: conn({ ns: 'shop', sa: 'ads' }) },
  { field: 'principals (prefix)', rule: { from: [{ source: { principals: ['cluster.local/ns/shop/*'] } }] }, matching: conn({ ns: 'shop', sa: 'ads' }), other: conn({ ns: 'shopping' }) },
  { field: 'principals (suffix)', rule: { from: [{ source: { principals: ['*/sa/cart'] } }] }, matching: conn({ ns: 'any', sa: 'cart' }), other: conn({ ns: 'any', sa: 'carts' }) },
  { field: 'principals (presence)', rule: { from: [{ source: { principals: ['*'] } }] }, matching: conn(), other: conn({ plaintext: true }) },
  { field: 'notPrincipals', rule: { from: [{ source: { notPrincipals: ['cluster.local/ns/shop/sa/cart'] } }] }, matching: conn({ ns: 'shop', sa: 'ads' }), other: conn({ ns: 'shop', sa: 'cart' }) },
  { field: 'namespaces', rule: { from: [{ source: { namespaces: ['shop'] } }] }, matching: conn({ ns: 'shop' }), other: conn({ ns: 'bank' }) },
  { field: 'namespaces (prefix)', rule: { from: [{ source: { namespaces: ['team-*'] } }] }, matching: conn({ ns: 'team-a' }), other: conn({ ns: 'teams' }) },
  { field: 'notNamespaces', rule: { from: [{ source: { notNamespaces: ['bank'] } }] }, matching: conn({ ns: 'shop' }), other: conn({ ns: 'bank' }) },
  { field: 'serviceAccounts', rule: { from: [{ source: { serviceAccounts: ['shop/cart'] } }] }, matching: conn({ ns: 'shop', sa: 'cart' }), other: conn({ ns: 'bank', sa: 'cart' }) },
  { field: 'serviceAccounts (policy namespace)', rule: { from: [{ source: { serviceAccounts: ['cart'] } }] }, matching: conn({ ns: 'web', sa: 'cart' }), other: conn({ ns: 'shop', sa: 'cart' }) },
  { field: 'notServiceAccounts', rule: { from: [{ source: { notServiceAccounts: ['shop/cart'] } }] }, matching: conn({ ns: 'shop', sa: 'ads' }), other: conn({ ns: 'shop', sa: 'cart' }) },
  { field: 'ipBlocks', rule: { from: [{ source: { ipBlocks: ['10.1.0.0/16'] } }] }, matching: conn({ sourceIp: '10.1.200.3' }), other: conn({ sourceIp: '10.3.0.1' }) },
  { field: 'ipBlocks (single address)', rule: { from: [{ source: { ipBlocks: ['10.1.0.5'] } }] }, matching: conn({ sourceIp: '10.1.0.5' }), other: conn({ sourceIp: '10.1.0.6' }) },
  { field: 'ipBlocks (IPv6)', rule: { from: [{ source: { ipBlocks: ['fd00:10::/32'] } }] }, matching: conn({ sourceIp: 'fd00:10::7' }), other: conn({ sourceIp: 'fd00:11::7' }) },
  { field: 'ipBlocks (IPv4-mapped peer)', rule: { from: [{ source: { ipBlocks: ['10.1.0.0/16'] } }] }, matching: conn({ sourceIp: '::ffff:10.1.2.3' }), other: conn({ sourceIp: '::ffff:10.9.2.3' }) },
  { field: 'notIpBlocks', rule: { from: [{ source: { notIpBlocks: ['10.1.0.0/16'] } }] }, matching: conn({ sourceIp: '10.3.0.1' }), other: conn({ sourceIp: '10.1.0.1' }) },
  { field: 'ports', rule: { to: [{ operation: { ports: ['8080', '9090'] } }] }, matching: conn({ port: 9090 }), other: conn({ port: 443 }) },
  { field: 'notPorts', rule: { to: [{ operation: { notPorts: ['9090'] } }] }, matching: conn({ port: 8080 }), other: conn({ port: 9090 }) },
  { field: 'when source.ip', rule: { when: [{ key: 'source.ip', values: ['10.1.0.0/24'] }] }, matching: conn({ sourceIp: '10.1.0.77' }), other: conn({ sourceIp: '10.1.1.77' }) },
  { field: 'when source.ip notValues', rule: { when: [{ key: 'source.ip', notValues: ['10.1.0.0/24'] }] }, matching: conn({ sourceIp: '10.1.1.77' }), other: conn({ sourceIp: '10.1.0.77' }) },
  { field: 'when source.namespace', rule: { when: [{ key: 'source.namespace', values: ['shop'] }] }, matching: conn({ ns: 'shop' }), other: conn({ ns: 'bank' }) },
  { field: 'when source.namespace notValues', rule: { when: [{ key: 'source.namespace', notValues: ['shop'] }] }, matching: conn({ ns: 'bank' }), other: conn({ ns: 'shop' }) },
  { field: 'when source.principal', rule: { when: [{ key: 'source.principal', values: ['cluster.local/ns/shop/sa/cart'] }] }, matching: conn({ ns: 'shop', sa: 'cart' }), other: conn({ ns: 'shop', sa: 'ads' }) },
  { field: 'when source.principal notValues', rule: { when: [{ key: 'source.principal', notValues: ['cluster.local/ns/shop/sa/cart'] }] }, matching: conn({ ns: 'shop', sa: 'ads' }), other: conn({ ns: 'shop', sa: 'cart' }) },
  { field: 'when destination.ip', rule: { when: [{ key: 'destination.ip', values: ['10.2.0.0/24'] }] }, matching: conn({ destinationIp: '10.2.0.9' }), other: conn({ destinationIp: '10.2.1.9' }) },
  { field: 'when destination.ip notValues', rule: { when: [{ key: 'destination.ip', notValues: ['10.2.0.0/24'] }] }, matching: conn({ destinationIp: '10.2.1.9' }), other: conn({ destinationIp: '10.2.0.9' }) },
  { field: 'when destination.port', rule: { when: [{ key: 'destination.port', values: ['8080'] }] }, matching: conn({ port: 8080 }), other: conn({ port: 8081 }) },
  { field: 'when destination.port notValues', rule: { when: [{ key: 'destination.port', notValues: ['8080'] }] }, matching: conn({ port: 8081 }), other: conn({ port: 8080 }) },
];

for (const { field, rule, matching, other } of FIELD_CASES) {
  test(`${field}: an ALLOW rule lets the matching connection in and keeps the other out`, (t) => {
    const set = policies({ spec: { rules: [rule] } });
    const yes = evaluate(matching, set);
    t.true(yes.allowed, yes.reason);
    t.is(yes.decidingPolicy, 'web/policy-0');
    const no = evaluate(other, set);
    t.false(no.allowed, no.reason);
    t.is(no.decidingPolicy, undefined);
  });
  test(`${field}: a DENY rule shuts the matching connection out and lets the other in`, (t) => {
    const set = policies({ spec: { action: 'DENY', rules: [rule] } });
    const no = evaluate(matching, set);
    t.false(no.allowed, no.reason);
    t.is(no.decidingPolicy, 'web/policy-0');
    t.regex(no.reason, /DENY policy web\/policy-0 matches this connection/);
    t.true(evaluate(other, set).allowed);
  });
}

test('plaintext connections never match principals, namespaces or service accounts', (t) => {
  const set = policies(allowFrom({ principals: ['*'] }), allowFrom({ namespaces: ['*'] }), allowFrom({ serviceAccounts: ['web/default'] }));
  t.false(evaluate(conn({ plaintext: true }), set).allowed);
  // ...but a DENY on notPrincipals or notNamespaces catches them (how STRICT mTLS is enforced).
  t.false(evaluate(conn({ plaintext: true }), policies(denyFrom({ notPrincipals: ['*'] }))).allowed);
  t.false(evaluate(conn({ plaintext: true }), policies(denyFrom({ notNamespaces: ['web'] }))).allowed);
  t.true(evaluate(conn(), policies(denyFrom({ notPrincipals: ['*'] }))).allowed);
});

test('fields of one source are AND-ed, sources and values are OR-ed, from/to/when are AND-ed', (t) => {
  const set = policies({
    spec: {
      rules: [
        {
          from: [{ source: { namespaces: ['shop'], ipBlocks: ['10.1.0.0/16'] } }, { source: { principals: ['cluster.local/ns/ops/sa/admin'] } }],
          to: [{ operation: { ports: ['8080'] } }],
          when: [{ key: 'destination.ip', values: ['10.2.0.9'] }],
        },
      ],
    },
  });
  t.true(evaluate(conn({ ns: 'shop', sourceIp: '10.1.9.9' }), set).allowed);
  t.false(evaluate(conn({ ns: 'shop', sourceIp: '10.7.9.9' }), set).allowed, 'namespace matches but the address does not');
  t.true(evaluate(conn({ ns: 'ops', sa: 'admin', sourceIp: '10.7.9.9' }), set).allowed, 'the second source');
  t.false(evaluate(conn({ ns: 'ops', sa: 'admin', port: 9090 }), set).allowed, 'to does not match');
  t.false(evaluate(conn({ ns: 'ops', sa: 'admin', destinationIp: '10.2.0.10' }), set).allowed, 'when does not match');
});

test('Istio order: DENY beats ALLOW; no ALLOW policy allows; ALLOW present but unmatched denies', (t) => {
  const allowShop = allowFrom({ namespaces: ['shop'] });
  const denyCart = { ...denyFrom({ principals: ['cluster.local/ns/shop/sa/cart'] }), name: 'deny-cart' };
  const set = policies(allowShop, denyCart);
  const denied = evaluate(conn({ ns: 'shop', sa: 'cart' }), set);
  t.false(denied.allowed);
  t.is(denied.decidingPolicy, 'web/deny-cart');
  t.true(evaluate(conn({ ns: 'shop', sa: 'ads' }), set).allowed);
  const unmatched = evaluate(conn({ ns: 'bank' }), set);
  t.false(unmatched.allowed);
  t.regex(unmatched.reason, /1 ALLOW policy applies to this workload and none matches this connection/);

  const onlyDeny = evaluate(conn({ ns: 'bank' }), policies(denyCart));
  t.true(onlyDeny.allowed);
  t.regex(onlyDeny.reason, /no ALLOW policy applies to this workload, so it is allowed by default/);
  t.true(evaluate(conn(), []).allowed);
});

test('an ALLOW policy with no rules allows nothing; a rule with no conditions matches everything', (t) => {
  t.false(evaluate(conn(), policies({ spec: {} })).allowed);
  t.true(evaluate(conn({ plaintext: true }), policies({ spec: { rules: [{}] } })).allowed);
  t.true(evaluate(conn(), policies({ spec: { action: 'DENY' } })).allowed, 'a DENY policy with no rules denies nothing');
  t.false(evaluate(conn(), policies({ spec: { action: 'DENY', rules: [{}] } })).allowed);
});

test('an ALLOW rule with HTTP-only fields never matches at L4 and says a waypoint is needed', (t) => {
  const result = compile({ spec: { rules: [{ from: [{ source: { namespaces: ['shop'] } }], to: [{ operation: { methods: ['GET'], paths: ['/api/*'] } }] }, { from: [{ source: { namespaces: ['ops'] } }] }] } });
  t.is(result.warnings.length, 1);
  t.regex(result.warnings[0]!, /spec\.rules\[0\] uses HTTP attributes \(methods, paths\).*never matches at L4.*waypoint/);
  const set = [result.authorization!];
  t.false(evaluate(conn({ ns: 'shop' }), set).allowed, 'the HTTP rule does not allow shop');
  t.true(evaluate(conn({ ns: 'ops' }), set).allowed, 'the L4 rule of the same policy still works');

  const conditions = compile({ spec: { rules: [{ when: [{ key: 'request.headers[x-user]', values: ['alice'] }] }] } });
  t.regex(conditions.warnings[0]!, /request\.headers\[x-user\]/);
  t.false(evaluate(conn(), [conditions.authorization!]).allowed);
});

test('a DENY rule with HTTP-only fields is enforced on its L4 part and warns', (t) => {
  const result = compile({ spec: { action: 'DENY', rules: [{ from: [{ source: { namespaces: ['evil'], requestPrincipals: ['*'] } }], to: [{ operation: { methods: ['POST'] } }] }] } });
  t.regex(result.warnings[0]!, /requestPrincipals.*enforced on its L4 part only.*waypoint/);
  const set = [result.authorization!];
  t.false(evaluate(conn({ ns: 'evil' }), set).allowed, 'every connection from evil is denied, not only POSTs');
  t.true(evaluate(conn({ ns: 'good' }), set).allowed);
  const ports = compile({ spec: { action: 'DENY', rules: [{ to: [{ operation: { ports: ['9090'], paths: ['/admin'] } }] }] } }).authorization!;
  t.false(evaluate(conn({ port: 9090 }), [ports]).allowed);
  t.true(evaluate(conn({ port: 8080 }), [ports]).allowed);
});

test('targetRef policies and AUDIT/CUSTOM actions are not enforced by the node agent', (t) => {
  const waypoint = compile({ spec: { targetRefs: [{ kind: 'Service', group: '', name: 'reviews' }], rules: [{}] } });
  t.is(waypoint.authorization, undefined);
  t.regex(waypoint.warnings[0]!, /targetRef/);
  const custom = compile({ spec: { action: 'CUSTOM', provider: { name: 'ext' }, rules: [{}] } });
  t.is(custom.authorization, undefined);
  t.regex(custom.warnings[0]!, /CUSTOM/);
});

test('dry-run policies are reported, not enforced', (t) => {
  const dryDeny = { ...denyFrom({ namespaces: ['evil'] }), name: 'maybe-deny', dryRun: true };
  const set = policies(dryDeny);
  t.true(set[0]!.dryRun);
  const decision = evaluate(conn({ ns: 'evil' }), set);
  t.true(decision.allowed);
  t.true(decision.dryRun?.wouldDeny);
  t.deepEqual(decision.dryRun?.matchedPolicies, ['web/maybe-deny']);
  t.regex(decision.dryRun!.reason, /would be denied by dry-run DENY policy web\/maybe-deny/);
  t.false(evaluate(conn({ ns: 'good' }), set).dryRun?.wouldDeny);

  const dryAllow = { ...allowFrom({ namespaces: ['good'] }), name: 'maybe-allow', dryRun: true };
  const allowSet = policies(dryAllow);
  const stranger = evaluate(conn({ ns: 'stranger' }), allowSet);
  t.true(stranger.allowed, 'a dry-run ALLOW policy does not make the workload deny by default');
  t.true(stranger.dryRun?.wouldDeny);
  t.false(evaluate(conn({ ns: 'good' }), allowSet).dryRun?.wouldDeny);
  t.is(evaluate(conn(), policies(allowFrom({ namespaces: ['client'] }))).dryRun, undefined, 'no dry-run report without dry-run policies');
});

test('scope: root-namespace policies apply mesh-wide, selector policies only to matching workloads', (t) => {
  const all = [
    compile({ name: 'mesh-deny', namespace: 'istio-system', spec: { action: 'DENY', rules: [{ from: [{ source: { namespaces: ['evil'] } }] }] } }).authorization!,
    compile({ name: 'ns-allow', namespace: 'web', spec: { rules: [{ from: [{ source: { namespaces: ['shop'] } }] }] } }).authorization!,
    compile({ name: 'api-only', namespace: 'web', spec: { selector: { matchLabels: { app: 'api' } }, rules: [{ from: [{ source: { namespaces: ['ops'] } }] }] } }).authorization!,
    compile({ name: 'mesh-selector', namespace: 'istio-system', spec: { selector: { matchLabels: { tier: 'db' } }, action: 'DENY', rules: [{ to: [{ operation: { ports: ['22'] } }] }] } }).authorization!,
  ];
  t.is(all[0]!.scope, 'GLOBAL');
  t.is(all[1]!.scope, 'NAMESPACE');
  t.is(all[2]!.scope, 'WORKLOAD_SELECTOR');
  t.deepEqual(all[2]!.selector, { app: 'api' });

  const names = (labels: Record<string, string>, namespace: string): string[] => policiesForWorkload(labels, namespace, 'istio-system', all).map((policy) => policy.name);
  t.deepEqual(names({ app: 'api' }, 'web'), ['mesh-deny', 'ns-allow', 'api-only']);
  t.deepEqual(names({ app: 'ui' }, 'web'), ['mesh-deny', 'ns-allow']);
  t.deepEqual(names({ app: 'api' }, 'other'), ['mesh-deny'], 'a selector in web does not select workloads elsewhere');
  t.deepEqual(names({ tier: 'db' }, 'other'), ['mesh-deny', 'mesh-selector'], 'a selector in the root namespace selects across namespaces');

  const forApi = policiesForWorkload({ app: 'api' }, 'web', 'istio-system', all);
  const forUi = policiesForWorkload({ app: 'ui' }, 'web', 'istio-system', all);
  const forOther = policiesForWorkload({}, 'other', 'istio-system', all);
  t.true(evaluate(conn({ ns: 'ops' }), forApi).allowed);
  t.false(evaluate(conn({ ns: 'ops' }), forUi).allowed, 'api-only does not apply to the ui workload');
  t.false(evaluate(conn({ ns: 'evil' }), forOther).allowed, 'the mesh-wide DENY applies in every namespace');
  t.true(evaluate(conn({ ns: 'ops' }), forOther).allowed, 'no ALLOW policy applies in the other namespace');

  // The agent's side: Istio sends each workload the keys of its selector policies.
  t.deepEqual(selectorPolicyKeysForWorkload({ app: 'api', tier: 'db' }, 'web', 'istio-system', all), ['istio-system/mesh-selector', 'web/api-only']);
  const byKey = new Map(all.map((policy) => [`${policy.namespace}/${policy.name}`, policy]));
  t.deepEqual(
    policiesForWorkloadKeys('web', ['web/api-only'], byKey).map((policy) => policy.name),
    ['mesh-deny', 'ns-allow', 'api-only'],
  );
});

test('explain() says which policy decided and why the others did not match', (t) => {
  const set = policies({ name: 'allow-shop', ...allowFrom({ namespaces: ['shop'] }) }, { name: 'deny-ssh', spec: { action: 'DENY', rules: [{ to: [{ operation: { ports: ['22'] } }] }] } });
  const explanation = explain(conn({ ns: 'bank', port: 8080 }), set);
  t.false(explanation.decision.allowed);
  const text = explanation.lines.join('\n');
  t.regex(text, /^DENIED: 1 ALLOW policy applies to this workload and none matches/);
  t.regex(text, /ALLOW web\/allow-shop: does not match\n\s+rule 1: does not match: source namespace is "bank", but the rule needs source namespace is one of \[shop\]/);
  t.regex(text, /DENY web\/deny-ssh: does not match\n\s+rule 1: does not match: destination port is 8080, but the rule needs destination port is one of \[22\]/);
  t.deepEqual(
    explanation.policies.map((trace) => [trace.policy, trace.matched]),
    [
      ['web/allow-shop', false],
      ['web/deny-ssh', false],
    ],
  );
  t.regex(explain(conn({ ns: 'shop', port: 22 }), set).lines[0]!, /^DENIED: DENY policy web\/deny-ssh matches this connection/);
  t.regex(explain(conn({ plaintext: true }), set).lines.join('\n'), /source namespace is absent \(no verified peer identity: plaintext connection\)/);
  t.deepEqual(explain(conn(), []).lines, ['ALLOWED: no DENY policy matches and no ALLOW policy applies to this workload, so it is allowed by default', 'no authorization policy applies to this workload']);
});

// A plain reading of ztunnel's rules, with no index: the reference the index must agree with.
function referenceMatches(policy: Authorization, connection: Connection): boolean {
  const principal = connection.sourcePrincipal?.startsWith('spiffe://') ? connection.sourcePrincipal.slice(9) : '';
  const parts = /^[^/]+\/ns\/([^/]+)\/sa\/([^/]+)$/.exec(principal);
  const namespace = parts?.[1] ?? '';
  const account = parts?.[2] ?? '';
  const str = (item: StringMatch, value: string): boolean =>
    'exact' in item ? item.exact === value : 'prefix' in item ? value.startsWith(item.prefix) : 'suffix' in item ? value.endsWith(item.suffix) : value !== '';
  const ip = (list: { address: string; length: number }[], address: string): boolean => {
    const parsed = parseIp(address);
    return parsed !== undefined && list.some((block) => {
      const cidr = parseCidr(`${block.address}/${block.length}`);
      return !('error' in cidr) && cidrContains(cidr, parsed);
    });
  };
  const field = <T>(positive: T[] | undefined, negative: T[] | undefined, test: (item: T) => boolean): boolean =>
    (!positive?.length || positive.some(test)) && (!negative?.length || !negative.some(test));
  const match = (m: Match): boolean =>
    Object.values(m).some((list) => Array.isArray(list) && list.length > 0) &&
    field(m.destinationIps, m.notDestinationIps, (block) => ip([block], connection.destinationIp)) &&
    field(m.sourceIps, m.notSourceIps, (block) => ip([block], connection.sourceIp)) &&
    field(m.destinationPorts, m.notDestinationPorts, (port) => port === connection.destinationPort) &&
    field(m.serviceAccounts, m.notServiceAccounts, (item) => account !== '' && item.namespace === namespace && item.serviceAccount === account) &&
    field(m.principals, m.notPrincipals, (item) => principal !== '' && str(item, principal)) &&
    field(m.namespaces, m.notNamespaces, (item) => str(item, namespace));
  return policy.groups.some((group) => group.rules.every((clause) => clause.matches.length === 0 || clause.matches.some(match)));
}

function referenceAllowed(set: Authorization[], connection: Connection): boolean {
  const enforced = set.filter((policy) => !policy.dryRun);
  if (enforced.some((policy) => policy.action === 'DENY' && referenceMatches(policy, connection))) return false;
  const allows = enforced.filter((policy) => policy.action === 'ALLOW');
  return allows.length === 0 || allows.some((policy) => referenceMatches(policy, connection));
}

test('the index decides exactly as a plain reading of the rules, on 2,000 policies and 3,000 connections', (t) => {
  const { objects, connections } = policyBenchScenario(2_000, 3_000, 11);
  const set = objects.map((object) => compileAuthorizationPolicy(object).authorization!);
  const index = new AuthorizationIndex(set);
  let allowed = 0;
  let mismatches = 0;
  for (const connection of connections) {
    const decision = index.evaluate(connection);
    if (decision.allowed !== referenceAllowed(set, connection)) mismatches++;
    if (decision.allowed) allowed++;
    if (decision.decidingPolicy) {
      const policy = set.find((candidate) => `${candidate.namespace}/${candidate.name}` === decision.decidingPolicy)!;
      if (!referenceMatches(policy, connection)) mismatches++;
    }
  }
  t.is(mismatches, 0);
  t.true(allowed > 100 && allowed < connections.length - 100, `both outcomes exercised (${allowed} allowed)`);
});

test('an identity that is not <td>/ns/<ns>/sa/<sa> is still decided correctly', (t) => {
  const set = policies(allowFrom({ principals: ['example.org/*'] }), denyFrom({ principals: ['*/sa/x'] }));
  const odd = { sourcePrincipal: 'spiffe://example.org/workload/7', sourceIp: '10.0.0.1', destinationIp: '10.0.0.2', destinationPort: 80 };
  t.true(evaluate(odd, set).allowed);
  t.false(evaluate({ ...odd, sourcePrincipal: 'spiffe://example.org/ns/a/sa/x' }, set).allowed);
  t.false(evaluate({ ...odd, sourcePrincipal: 'https://example.org/ns/a/sa/b' }, set).allowed, 'not a SPIFFE URI: no principal matches');
});

test('a principal parsed ahead (once per peer certificate) decides as the URI does, and never stands for another URI', (t) => {
  const set = policies(allowFrom({ principals: ['cluster.local/ns/shop/sa/client'] }), denyFrom({ namespaces: ['banned'] }));
  const index = new AuthorizationIndex(set);
  const client = principalParts('spiffe://cluster.local/ns/shop/sa/client');
  t.deepEqual(
    { ...client },
    { uri: 'spiffe://cluster.local/ns/shop/sa/client', principal: 'cluster.local/ns/shop/sa/client', identityNamespace: 'shop', serviceAccount: 'client', serviceAccountKey: 'shop/client', irregular: false },
  );
  t.true(Object.isFrozen(client), 'shared by every stream of its connection: immutable');
  const base = { sourceIp: '10.0.0.1', destinationIp: '10.0.0.2', destinationPort: 80 };
  t.true(index.evaluate({ ...base, sourcePrincipal: client.uri, sourcePrincipalParts: client }).allowed);
  // Parts parsed from another identity than the connection's principal are not used: the principal decides.
  t.false(index.evaluate({ ...base, sourcePrincipal: 'spiffe://cluster.local/ns/shop/sa/other', sourcePrincipalParts: client }).allowed, 'another identity is not let in on the allowed one\'s parts');
  t.false(index.evaluate({ ...base, sourcePrincipal: 'spiffe://cluster.local/ns/banned/sa/client', sourcePrincipalParts: client }).allowed, 'nor let past a namespace DENY');
  // Decisions interleaved on one index (its reused peer) stay each connection's own.
  for (let round = 0; round < 3; round++) {
    t.true(index.evaluate({ ...base, sourcePrincipal: client.uri, sourcePrincipalParts: client }).allowed);
    t.false(index.evaluate({ ...base, sourcePrincipal: 'spiffe://cluster.local/ns/banned/sa/client', sourcePrincipalParts: principalParts('spiffe://cluster.local/ns/banned/sa/client') }).allowed);
    t.false(index.evaluate({ ...base }).allowed, 'plaintext: no principal');
  }
});

test('without dry-run policies a decision is a shared frozen object; with them each connection gets its own report', (t) => {
  const plain = new AuthorizationIndex(policies(denyFrom({ namespaces: ['banned'] })));
  const base = { sourceIp: '10.0.0.1', destinationIp: '10.0.0.2', destinationPort: 80 };
  const first = plain.evaluate({ ...base, sourcePrincipal: 'spiffe://cluster.local/ns/banned/sa/a' });
  t.false(first.allowed);
  t.true(Object.isFrozen(first));
  t.is(plain.evaluate({ ...base, sourcePrincipal: 'spiffe://cluster.local/ns/banned/sa/b' }), first, 'the same DENY group: the same decision');
  t.true(new AuthorizationIndex([]).evaluate(base).allowed, 'no policy in scope: allowed');
  const dry = new AuthorizationIndex(policies({ dryRun: true, ...denyFrom({ namespaces: ['banned'] }) }));
  const one = dry.evaluate({ ...base, sourcePrincipal: 'spiffe://cluster.local/ns/banned/sa/a' });
  const two = dry.evaluate({ ...base, sourcePrincipal: 'spiffe://cluster.local/ns/open/sa/a' });
  t.true(one.allowed && two.allowed);
  t.not(one, two);
  t.true(one.dryRun?.wouldDeny);
  t.false(two.dryRun?.wouldDeny);
});
