/**
 * PeerAuthentication: which mTLS mode applies (mesh, namespace, workload, port; most specific wins; UNSET
 * inherits; oldest wins a tie) and the DENY policies that enforce STRICT, which must agree with the mode.
 */
import test from 'ava';
import {
  CONVERTED_PEER_AUTHENTICATION_PREFIX,
  evaluate,
  mtlsModeFor,
  peerAuthenticationToAuthorization,
  STATIC_STRICT_POLICY_NAME,
  validatePolicy,
  type MtlsMode,
  type PeerAuthenticationObject,
} from '../../shared/policy/index.ts';

function peer(namespace: string, name: string, spec: PeerAuthenticationObject['spec'], created = '2026-01-01T00:00:00Z'): PeerAuthenticationObject {
  const object = { apiVersion: 'security.istio.io/v1' as const, kind: 'PeerAuthentication' as const, metadata: { name, namespace, creationTimestamp: created }, spec };
  const result = validatePolicy(object);
  if (!result.ok) throw result.error;
  return object;
}

const mesh = (mode: MtlsMode): PeerAuthenticationObject => peer('istio-system', 'mesh', { mtls: { mode } });
const namespaceWide = (mode: MtlsMode): PeerAuthenticationObject => peer('web', 'ns', { mtls: { mode } });
const forApi = (mode: MtlsMode | undefined, ports: Record<string, MtlsMode> = {}): PeerAuthenticationObject =>
  peer('web', 'api', {
    selector: { matchLabels: { app: 'api' } },
    ...(mode && { mtls: { mode } }),
    ...(Object.keys(ports).length > 0 && { portLevelMtls: Object.fromEntries(Object.entries(ports).map(([port, portMode]) => [port, { mode: portMode }])) }),
  });

const api = { namespace: 'web', labels: { app: 'api', version: 'v1' } };
const ui = { namespace: 'web', labels: { app: 'ui' } };
const elsewhere = { namespace: 'shop', labels: { app: 'api' } };

test('no PeerAuthentication means PERMISSIVE', (t) => {
  t.is(mtlsModeFor(api, 8080, []), 'PERMISSIVE');
});

test('most specific wins: workload over namespace over mesh', (t) => {
  const all = [mesh('STRICT'), namespaceWide('PERMISSIVE'), forApi('DISABLE')];
  t.is(mtlsModeFor(api, 8080, all), 'DISABLE');
  t.is(mtlsModeFor(ui, 8080, all), 'PERMISSIVE');
  t.is(mtlsModeFor(elsewhere, 8080, all), 'STRICT', 'the mesh policy covers other namespaces');
  t.is(mtlsModeFor(elsewhere, 8080, all, 'mesh-root'), 'PERMISSIVE', 'with another root namespace, istio-system is just a namespace');
});

test('UNSET inherits from the next level up', (t) => {
  t.is(mtlsModeFor(api, 8080, [mesh('STRICT'), namespaceWide('UNSET'), forApi('UNSET')]), 'STRICT');
  t.is(mtlsModeFor(api, 8080, [mesh('STRICT'), forApi(undefined)]), 'STRICT');
  t.is(mtlsModeFor(api, 8080, [namespaceWide('STRICT'), forApi(undefined, { '9090': 'UNSET' })]), 'STRICT');
});

test('port-level mTLS overrides the workload policy for that port only', (t) => {
  const all = [mesh('STRICT'), forApi('STRICT', { '9090': 'PERMISSIVE' })];
  t.is(mtlsModeFor(api, 9090, all), 'PERMISSIVE');
  t.is(mtlsModeFor(api, 8080, all), 'STRICT');
  t.is(mtlsModeFor(ui, 9090, all), 'STRICT', 'the port exception belongs to the selected workload');
});

test('when two policies compete at one level, the oldest wins', (t) => {
  const older = peer('web', 'zz-old', { mtls: { mode: 'STRICT' } }, '2025-01-01T00:00:00Z');
  const newer = peer('web', 'aa-new', { mtls: { mode: 'DISABLE' } }, '2026-06-01T00:00:00Z');
  t.is(mtlsModeFor(ui, 80, [newer, older]), 'STRICT');
});

test('STRICT is enforced as Istio\'s static DENY policy for connections without an identity', (t) => {
  const policies = peerAuthenticationToAuthorization(api, [mesh('STRICT')]);
  t.deepEqual(
    policies.map((policy) => `${policy.namespace}/${policy.name}`),
    [`istio-system/${STATIC_STRICT_POLICY_NAME}`],
  );
  const plaintext = { sourceIp: '10.0.0.1', destinationIp: '10.0.0.2', destinationPort: 8080 };
  const mtls = { ...plaintext, sourcePrincipal: 'spiffe://cluster.local/ns/shop/sa/cart' };
  const decision = evaluate(plaintext, policies);
  t.false(decision.allowed);
  t.is(decision.decidingPolicy, `istio-system/${STATIC_STRICT_POLICY_NAME}`);
  t.true(evaluate(mtls, policies).allowed);
  t.deepEqual(peerAuthenticationToAuthorization(api, [mesh('PERMISSIVE')]), []);
  t.deepEqual(peerAuthenticationToAuthorization(api, []), []);
});

test('port-level exceptions become the workload\'s own converted policy', (t) => {
  const policies = peerAuthenticationToAuthorization(api, [mesh('STRICT'), forApi(undefined, { '9090': 'PERMISSIVE' })]);
  t.deepEqual(policies.map((policy) => policy.name), [`${CONVERTED_PEER_AUTHENTICATION_PREFIX}api`]);
  t.is(policies[0]!.action, 'DENY');
  t.is(policies[0]!.scope, 'WORKLOAD_SELECTOR');
  const plaintext = (port: number) => ({ sourceIp: '10.0.0.1', destinationIp: '10.0.0.2', destinationPort: port });
  t.true(evaluate(plaintext(9090), policies).allowed, 'plaintext reaches the PERMISSIVE port');
  t.false(evaluate(plaintext(8080), policies).allowed, 'and not the others');
});

// Every combination of mesh, namespace, workload and port mode: the enforced policies must let plaintext in
// exactly when mtlsModeFor says the port is not STRICT, and always let mTLS in.
test('the converted policies agree with mtlsModeFor on every combination of modes', (t) => {
  const modes: (MtlsMode | undefined)[] = [undefined, 'UNSET', 'DISABLE', 'PERMISSIVE', 'STRICT'];
  let checked = 0;
  for (const meshMode of modes) {
    for (const nsMode of modes) {
      for (const workloadMode of modes) {
        for (const portMode of modes) {
          const all: PeerAuthenticationObject[] = [];
          if (meshMode) all.push(mesh(meshMode));
          if (nsMode) all.push(namespaceWide(nsMode));
          if (workloadMode || portMode) all.push(forApi(workloadMode, portMode ? { '9090': portMode } : {}));
          const enforced = peerAuthenticationToAuthorization(api, all);
          for (const port of [8080, 9090]) {
            const mode = mtlsModeFor(api, port, all);
            const plaintext = evaluate({ sourceIp: '10.0.0.1', destinationIp: '10.0.0.2', destinationPort: port }, enforced).allowed;
            const mtls = evaluate({ sourcePrincipal: 'spiffe://cluster.local/ns/a/sa/b', sourceIp: '10.0.0.1', destinationIp: '10.0.0.2', destinationPort: port }, enforced).allowed;
            const label = `mesh ${meshMode} ns ${nsMode} workload ${workloadMode} port9090 ${portMode}, port ${port}: ${mode}`;
            t.is(plaintext, mode !== 'STRICT', label);
            t.true(mtls, label);
            checked++;
          }
        }
      }
    }
  }
  t.is(checked, 5 ** 4 * 2);
});
