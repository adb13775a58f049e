/**
 * AuthorizationPolicy and PeerAuthentication validation: what a user sees when their YAML is wrong, and that a
 * bad policy leaves the good ones in force.
 */
import test from 'ava';
import { compileAuthorizationPolicy, evaluate, parsePolicyYaml, PolicyError, validatePolicy, type Authorization } from '../../shared/policy/index.ts';

function authz(spec: unknown, metadata: Record<string, unknown> = {}): unknown {
  return { apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'p', namespace: 'web', ...metadata }, spec };
}

function problems(object: unknown): string {
  const result = validatePolicy(object);
  if (result.ok) throw new Error('expected the policy to be rejected');
  return result.error.message;
}

test('an unknown field is rejected with its path and the field it probably meant', (t) => {
  const message = problems(authz({ rules: [{ from: [{ source: { principal: ['cluster.local/ns/a/sa/b'] } }] }] }));
  t.regex(message, /spec\.rules\[0\]\.from\[0\]\.source\.principal: unknown field \(did you mean principals\?\)/);
  t.regex(message, /^AuthorizationPolicy web\/p is invalid/);
  t.regex(problems(authz({ rule: [] })), /spec\.rule: unknown field \(did you mean rules\?\)/);
  t.regex(problems(authz({ rules: [{ to: [{ operation: { port: ['80'] } }] }] })), /spec\.rules\[0\]\.to\[0\]\.operation\.port: unknown field \(did you mean ports\?\)/);
  t.regex(problems(authz({ rules: [{ when: [{ key: 'source.ip', value: ['10.0.0.0/8'] }] }] })), /spec\.rules\[0\]\.when\[0\]\.value: unknown field \(did you mean values\?\)/);
  t.regex(problems(authz({ selector: { labels: { app: 'x' } } })), /spec\.selector\.labels: unknown field \(did you mean matchLabels\?\)/);
  t.regex(problems(authz({}, { nmae: 'x' })), /metadata\.nmae: unknown field \(did you mean name\?\)/);
});

test('a bad CIDR in ipBlocks, notIpBlocks or a when condition is rejected with its path', (t) => {
  t.regex(problems(authz({ rules: [{ from: [{ source: { ipBlocks: ['10.0.0.0/8', '10.0.0.0/33'] } }] }] })), /spec\.rules\[0\]\.from\[0\]\.source\.ipBlocks\[1\]: "10\.0\.0\.0\/33" has an invalid prefix length/);
  t.regex(problems(authz({ rules: [{ from: [{ source: { notIpBlocks: ['10.0.0'] } }] }] })), /source\.notIpBlocks\[0\]: "10\.0\.0" is not an IP address or CIDR block/);
  t.regex(problems(authz({ rules: [{ when: [{ key: 'destination.ip', values: ['fe80::/200'] }] }] })), /when\[0\]\.values\[0\]: .*invalid prefix length/);
});

test('a malformed principal is rejected, with Istio\'s wildcards accepted', (t) => {
  const source = (principals: string[]): unknown => authz({ rules: [{ from: [{ source: { principals } }] }] });
  for (const good of ['cluster.local/ns/web/sa/api', '*', 'cluster.local/ns/web/*', 'cluster.local/ns/web/sa/*', '*/ns/web/sa/api', '*/sa/api', 'cluster.local/*']) {
    t.true(validatePolicy(source([good])).ok, good);
  }
  t.regex(problems(source(['spiffe://cluster.local/ns/web/sa/api'])), /principals\[0\]: .*leave out "spiffe:\/\/"/);
  t.regex(problems(source(['cluster.local/ns/*/sa/api'])), /principals\[0\]: .*"\*" may only be the first or the last character/);
  t.regex(problems(source(['web/api'])), /principals\[0\]: "web\/api" is not a principal \(expected <trust-domain>\/ns\/<namespace>\/sa\/<service-account>/);
  t.regex(problems(authz({ rules: [{ from: [{ source: { notPrincipals: ['cluster.local/sa/api/ns/web'] } }] }] })), /notPrincipals\[0\]: .* is not a principal/);
  t.regex(problems(authz({ rules: [{ when: [{ key: 'source.principal', values: ['a/b'] }] }] })), /when\[0\]\.values\[0\]: "a\/b" is not a principal/);
});

test('bad ports, an unknown action, an unknown condition and a bad dry-run value are rejected', (t) => {
  t.regex(problems(authz({ rules: [{ to: [{ operation: { ports: ['99999'] } }] }] })), /operation\.ports\[0\]: "99999" is not a port/);
  t.regex(problems(authz({ rules: [{ to: [{ operation: { notPorts: ['http'] } }] }] })), /operation\.notPorts\[0\]: "http" is not a port/);
  t.regex(problems(authz({ rules: [{ to: [{ operation: { ports: [8080] } }] }] })), /ports\[0\]: must be a string, not number 8080 \(quote it: "8080"\)/);
  t.regex(problems(authz({ action: 'REJECT' })), /spec\.action: must be one of ALLOW, DENY, AUDIT, CUSTOM \(got "REJECT"\)/);
  t.regex(problems(authz({ rules: [{ when: [{ key: 'source.port', values: ['1'] }] }] })), /when\[0\]\.key: unknown attribute "source\.port"/);
  t.regex(problems(authz({}, { annotations: { 'istio.io/dry-run': 'yes' } })), /metadata\.annotations\["istio\.io\/dry-run"\]: must be "true" or "false"/);
  t.regex(problems(authz({ rules: [{ from: [{ source: {} }] }] })), /spec\.rules\[0\]\.from\[0\]\.source: must not be empty/);
  t.regex(problems(authz({ rules: [{ from: [{ source: { serviceAccounts: ['web/api'], namespaces: ['web'] } }] }] })), /cannot be combined with principals or namespaces/);
  t.regex(problems(authz({ rules: [{ from: [{ source: { serviceAccounts: ['web/*'] } }] }] })), /serviceAccounts\[0\]: "web\/\*" is not a service account/);
});

test('v1beta1 objects and every documented field validate', (t) => {
  const object = {
    apiVersion: 'security.istio.io/v1beta1',
    kind: 'AuthorizationPolicy',
    metadata: { name: 'all', namespace: 'web', annotations: { 'istio.io/dry-run': 'false' }, creationTimestamp: '2026-01-01T00:00:00Z' },
    spec: {
      selector: { matchLabels: { app: 'web' } },
      action: 'DENY',
      rules: [
        {
          from: [{ source: { principals: ['*'], notPrincipals: ['a/ns/b/sa/c'], requestPrincipals: ['iss/sub'], namespaces: ['x'], notNamespaces: ['y*'], ipBlocks: ['10.0.0.1'], notIpBlocks: ['2001:db8::/32'], remoteIpBlocks: ['1.2.3.4'] } }],
          to: [{ operation: { hosts: ['a.com'], ports: ['80'], notPorts: ['81'], methods: ['GET'], paths: ['/x*'], notPaths: ['/y'] } }],
          when: [{ key: 'request.headers[x-user]', values: ['a'] }, { key: 'destination.port', notValues: ['9090'] }],
        },
      ],
    },
  };
  const result = validatePolicy(object);
  t.true(result.ok, result.ok ? '' : result.error.message);
});

test('PeerAuthentication: unknown fields, bad modes and port-level mTLS without a selector are rejected', (t) => {
  const peer = (spec: unknown): unknown => ({ apiVersion: 'security.istio.io/v1', kind: 'PeerAuthentication', metadata: { name: 'pa', namespace: 'web' }, spec });
  t.true(validatePolicy(peer({ mtls: { mode: 'STRICT' } })).ok);
  t.regex(problems(peer({ mTLS: { mode: 'STRICT' } })), /spec\.mTLS: unknown field \(did you mean mtls\?\)/);
  t.regex(problems(peer({ mtls: { mode: 'STRICTER' } })), /spec\.mtls\.mode: must be one of UNSET, DISABLE, PERMISSIVE, STRICT/);
  t.regex(problems(peer({ portLevelMtls: { '8080': { mode: 'DISABLE' } } })), /spec\.portLevelMtls: port-level mTLS needs a workload selector/);
  t.regex(problems(peer({ selector: { matchLabels: { app: 'a' } }, portLevelMtls: { '0': { mode: 'DISABLE' } } })), /spec\.portLevelMtls\["0"\]: "0" is not a port/);
  t.regex(problems(peer({ selector: { matchLabels: { app: 'a' } }, portLevelMtls: { '8080': { mod: 'DISABLE' } } })), /spec\.portLevelMtls\["8080"\]\.mod: unknown field \(did you mean mode\?\)/);
});

test('a bad policy in a YAML file is reported alone and the other policies stay in force', (t) => {
  const documents = parsePolicyYaml(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-evil, namespace: web}
spec:
  action: DENY
  rules: [{from: [{source: {namespaces: [evil]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: broken, namespace: web}
spec:
  rules: [{from: [{source: {ipBlocks: ["10.300.0.0/16"]}}]}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: unrelated}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-friends, namespace: web}
spec:
  rules: [{from: [{source: {namespaces: [friends, evil]}}]}]
`);
  t.is(documents.length, 3);
  const [first, broken, last] = documents;
  t.true(first!.result.ok);
  t.false(broken!.result.ok);
  t.is(broken!.line, 9);
  if (!broken!.result.ok) {
    t.true(broken!.result.error instanceof PolicyError);
    t.is(broken!.result.error.code, 'AMBIT_POLICY_INVALID');
    t.deepEqual(broken!.result.error.problems.map((problem) => problem.path), ['spec.rules[0].from[0].source.ipBlocks[0]']);
  }
  t.true(last!.result.ok);
  const policies: Authorization[] = [];
  for (const document of documents) {
    if (document.result.ok && document.result.kind === 'AuthorizationPolicy') policies.push(compileAuthorizationPolicy(document.result.object).authorization!);
  }
  const from = (namespace: string) => ({ sourcePrincipal: `spiffe://cluster.local/ns/${namespace}/sa/default`, sourceIp: '10.0.0.1', destinationIp: '10.0.0.2', destinationPort: 80 });
  t.true(evaluate(from('friends'), policies).allowed);
  t.false(evaluate(from('evil'), policies).allowed, 'the DENY policy before the broken one is enforced');
  t.false(evaluate(from('strangers'), policies).allowed, 'the ALLOW policy after the broken one is enforced');
});

test('YAML that does not parse is reported with its line', (t) => {
  const [document] = parsePolicyYaml('apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: x\n');
  t.false(document!.result.ok);
  if (!document!.result.ok) t.is(document!.result.error.code, 'AMBIT_POLICY_BAD_YAML');
});
