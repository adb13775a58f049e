/**
 * The agent's xDS glue (shared/mesh/xds-source.ts) with its real collaborators: the generic delta xDS client over
 * gRPC and TLS, the agent's MeshState and PolicyStore, against a scripted server that sends resources the real
 * control plane never would and records the ACKs and NACKs that come back on the wire.
 */
import test from 'ava';
import { PolicyStore } from '../../agent/policy/policy-store.ts';
import { MeshState } from '../../shared/mesh/mesh-state.ts';
import { XdsSource } from '../../shared/mesh/xds-source.ts';
import { CertificateAuthority } from '../../shared/identity/index.ts';
import { ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL } from '../../shared/xds/protos.ts';
import type { DeltaDiscoveryRequest } from '../../shared/xds/types.ts';
import { startScriptedXdsServer, type ScriptedResource, type ScriptedXdsServer } from '../helpers/scripted-xds-server.ts';

const TD = 'cluster.local';

function address(name: string, ip: number[], revision: string): ScriptedResource['resource'] {
  return { workload: { uid: `Kubernetes//Pod/shop/${name}`, name, namespace: 'shop', addresses: [Buffer.from(ip)], tunnelProtocol: 'HBONE', serviceAccount: name, node: 'node-1', canonicalRevision: revision } };
}

function allowFrom(name: string, sourceIp: number[]): ScriptedResource['resource'] {
  return { name, namespace: 'shop', scope: 'NAMESPACE', action: 'ALLOW', groups: [{ rules: [{ matches: [{ sourceIps: [{ address: Buffer.from(sourceIp), length: 32 }] }] }] }] };
}

const isAck = (nonce: string) => (request: DeltaDiscoveryRequest) => request.responseNonce === nonce && !request.errorDetail;
const answered = (nonce: string) => (request: DeltaDiscoveryRequest) => request.responseNonce === nonce;

interface Agent {
  server: ScriptedXdsServer;
  source: XdsSource;
  state: MeshState;
  policies: PolicyStore;
  nacks: string[];
}

/** The agent's source connected to a scripted server that sent the first state: web-1 and db-1 (v1), one policy. */
async function connectedAgent(t: { teardown(fn: () => unknown): void }): Promise<Agent> {
  const ca = await CertificateAuthority.createRoot({ trustDomain: TD });
  const server = await startScriptedXdsServer(ca);
  t.teardown(() => server.stop());
  const state = new MeshState();
  const policies = new PolicyStore();
  const nacks: string[] = [];
  const source = new XdsSource({
    address: server.address, rootCertPem: ca.rootCertPem, token: 'node-token', nodeName: 'node-1', trustDomain: TD, state,
    onAuthorization: (added, removed) => policies.applyXds(added, removed),
    onNack: (typeUrl, message) => nacks.push(`${typeUrl} ${message}`),
  });
  t.teardown(() => source.stop());
  const started = source.start();
  await server.request((request) => request.typeUrl === AUTHORIZATION_TYPE_URL, 'the client to subscribe');
  const first = server.send(ADDRESS_TYPE_URL, [
    { name: 'Kubernetes//Pod/shop/web-1', version: 'v1', resource: address('web-1', [10, 0, 1, 1], 'r1') },
    { name: 'Kubernetes//Pod/shop/db-1', version: 'v1', resource: address('db-1', [10, 0, 1, 2], 'r1') },
  ]);
  const firstPolicies = server.send(AUTHORIZATION_TYPE_URL, [{ name: 'shop/allow-a', version: 'v1', resource: allowFrom('allow-a', [10, 0, 0, 1]) }]);
  await started;
  await server.request(isAck(first), 'the ACK of the first addresses');
  await server.request(isAck(firstPolicies), 'the ACK of the first policies');
  return { server, source, state, policies, nacks };
}

test('a bad Address is NACKed by name on the wire, the good ones of the same response apply, and the last good version keeps serving', async (t) => {
  const { server, source, state, nacks } = await connectedAgent(t);
  t.is(state.workloadByIp('10.0.1.2')?.canonicalRevision, 'r1');

  const nonce = server.send(ADDRESS_TYPE_URL, [
    { name: 'Kubernetes//Pod/shop/web-1', version: 'v2', resource: address('web-1', [10, 0, 1, 1], 'r2') },
    // An address of 5 bytes is no IP: the agent cannot route to it.
    { name: 'Kubernetes//Pod/shop/db-1', version: 'v2', resource: address('db-1', [10, 0, 1, 2, 9], 'r2') },
    // Not a protobuf message at all.
    { name: 'Kubernetes//Pod/shop/cache-1', version: 'v1', rawValue: Buffer.from([0xff, 0xff, 0xff, 0xff]) },
  ]);
  const reply = await server.request(answered(nonce), 'the reply to the mixed response');
  t.truthy(reply.errorDetail, `a response with bad resources is NACKed, not ACKed: ${JSON.stringify(reply)}`);
  t.is(reply.errorDetail?.code, 13);
  const message = reply.errorDetail?.message ?? '';
  t.regex(message, /Kubernetes\/\/Pod\/shop\/db-1: an IP address has 4 or 16 bytes, got 5/);
  t.regex(message, /Kubernetes\/\/Pod\/shop\/cache-1: cannot decode/);
  t.notRegex(message, /web-1/, 'the good resource is not named');
  t.is(nacks.length, 1);

  t.is(state.workloadByIp('10.0.1.1')?.canonicalRevision, 'r2', 'the good resource of the same response applied');
  t.is(state.workloadByIp('10.0.1.2')?.canonicalRevision, 'r1', 'the rejected one keeps its last good version');
  t.is(state.workloadByName('shop', 'cache-1'), undefined);
  t.deepEqual(Object.fromEntries(source.client.versions(ADDRESS_TYPE_URL)), { 'Kubernetes//Pod/shop/web-1': 'v2', 'Kubernetes//Pod/shop/db-1': 'v1' }, 'the versions held are those applied');

  // On a new stream the client asks for exactly what it holds: the server would resend the rejected resource.
  const streams = server.streams;
  server.endStream();
  const resumed = await server.request((request) => server.streams > streams && request.typeUrl === ADDRESS_TYPE_URL && request.initialResourceVersions !== undefined && Object.keys(request.initialResourceVersions).length > 0, 'the resumed subscription');
  t.deepEqual(resumed.initialResourceVersions, { 'Kubernetes//Pod/shop/web-1': 'v2', 'Kubernetes//Pod/shop/db-1': 'v1' });

  // The next good version of the rejected resource applies.
  const fixed = server.send(ADDRESS_TYPE_URL, [{ name: 'Kubernetes//Pod/shop/db-1', version: 'v3', resource: address('db-1', [10, 0, 1, 2], 'r3') }]);
  await server.request(isAck(fixed), 'the ACK of the fixed resource');
  t.is(state.workloadByIp('10.0.1.2')?.canonicalRevision, 'r3');
});

test('a bad Authorization is NACKed by name, the good one of the same response reaches the policy store, the old one keeps enforcing', async (t) => {
  const { server, policies, nacks } = await connectedAgent(t);
  const nonce = server.send(AUTHORIZATION_TYPE_URL, [
    { name: 'shop/allow-a', version: 'v2', resource: allowFrom('allow-a', [10, 0, 0, 1, 7]) },
    { name: 'shop/allow-b', version: 'v1', resource: allowFrom('allow-b', [10, 0, 0, 2]) },
  ]);
  const reply = await server.request(answered(nonce), 'the reply to the policies');
  t.truthy(reply.errorDetail, `NACKed: ${JSON.stringify(reply)}`);
  t.regex(reply.errorDetail?.message ?? '', /^shop\/allow-a: /);
  t.notRegex(reply.errorDetail?.message ?? '', /allow-b/);
  t.is(nacks.length, 1);
  const held = policies.dump().map((policy) => `${policy.name} ${JSON.stringify(policy)}`);
  t.is(held.length, 2, held.join('\n'));
  t.true(held.some((line) => line.startsWith('allow-b ')), 'the good policy applied');
  t.true(held.some((line) => line.startsWith('allow-a ') && line.includes('"10.0.0.1"')), 'the rejected one keeps its last good version (10.0.0.1/32)');
});
