// Who may connect to the xDS server: a bad bootstrap token is refused with UNAUTHENTICATED; in Kubernetes mode a
// TokenReview against the (stand-in) API server decides, and yields the caller's identity and node.
import { TokenReviewAuthenticator } from '../../controlplane/xds/token-review.ts';
import { onlyCallers } from '../../controlplane/xds/auth.ts';
import test from 'ava';
import * as grpc from '@grpc/grpc-js';
import { startControlPlane } from '../../controlplane/control-plane.ts';
import { YamlDirSource } from '../../controlplane/sources/yaml-dir.ts';
import type { XdsClientStatus } from '../../shared/xds/client.ts';
import { FakeKubeApiServer } from '../helpers/kube-api-server.ts';
import { eventually, startRecordingClient, startTestControlPlane, tempDir, testCa } from '../helpers/xds-harness.ts';

test('a client with a wrong bootstrap token is refused with UNAUTHENTICATED and gets nothing', async (t) => {
  const plane = await startTestControlPlane(t, { dir: await tempDir(t) });
  const statuses: XdsClientStatus[] = [];
  const agent = startRecordingClient(t, plane, { token: 'not-the-token', onStatus: (status) => statuses.push(status), initialBackoffMs: 1000 });
  await eventually(() => statuses.some((status) => status.state === 'disconnected'), 'the refusal');
  const refusal = statuses.find((status) => status.state === 'disconnected') as Extract<XdsClientStatus, { state: 'disconnected' }>;
  t.is(refusal.code, grpc.status.UNAUTHENTICATED);
  t.regex(refusal.error, /not in the bootstrap token file/);
  t.false(agent.client.isSynced());
  t.is(agent.calls.length, 0);
  t.deepEqual(plane.cp.xds.connections(), []);
});

test('Kubernetes mode: a TokenReview accepts a service account token and names its node; an unknown token is refused', async (t) => {
  const api = await FakeKubeApiServer.start();
  t.teardown(() => api.close());
  api.reviewTokens.set('agent-token', { username: 'system:serviceaccount:istio-system:ztunnel', node: 'node-7' });
  const ca = await testCa();
  const dir = await tempDir(t);
  const cp = await startControlPlane({ ca, listenAddress: '127.0.0.1:0', authenticator: new TokenReviewAuthenticator(api.kubeConfig()), createSource: (store) => new YamlDirSource({ dir, store }) });
  t.teardown(() => cp.close());
  const plane = { address: `127.0.0.1:${cp.port}`, ca, cp: cp };

  const agent = startRecordingClient(t, plane, { token: 'agent-token' });
  await agent.client.synced;
  t.deepEqual(cp.xds.connections().map((connection) => connection.caller), [{ identity: 'system:serviceaccount:istio-system:ztunnel', node: 'node-7' }]);
  t.true(api.requests.includes('POST /apis/authentication.k8s.io/v1/tokenreviews'));

  const statuses: XdsClientStatus[] = [];
  startRecordingClient(t, plane, { token: 'stolen', onStatus: (status) => statuses.push(status), initialBackoffMs: 1000 });
  await eventually(() => statuses.some((status) => status.state === 'disconnected'), 'the refusal');
  const refusal = statuses.find((status) => status.state === 'disconnected') as Extract<XdsClientStatus, { state: 'disconnected' }>;
  t.is(refusal.code, grpc.status.UNAUTHENTICATED);
  t.regex(refusal.error, /token review rejected/);
});

test('the client refuses a control plane that does not present the expected identity', async (t) => {
  const plane = await startTestControlPlane(t, { dir: await tempDir(t) });
  const statuses: XdsClientStatus[] = [];
  const impostor = { ...plane, cp: { serverIdentity: 'spiffe://cluster.local/ns/istio-system/sa/not-istiod' } };
  const agent = startRecordingClient(t, impostor, { onStatus: (status) => statuses.push(status), initialBackoffMs: 1000 });
  await eventually(() => statuses.some((status) => status.state === 'disconnected'), 'the refusal');
  t.false(agent.client.isSynced());
  t.deepEqual(plane.cp.xds.connections(), [], 'no stream was opened');
});

test('TokenReviews are cached: concurrent and repeated calls with one token make one review until the TTL; refusals are asked again', async (t) => {
  const api = await FakeKubeApiServer.start();
  t.teardown(() => api.close());
  api.reviewTokens.set('agent-token', { username: 'system:serviceaccount:istio-system:ambit-agent', node: 'node-1' });
  let now = 1_000_000;
  const authenticator = new TokenReviewAuthenticator(api.kubeConfig(), { cacheTtlMs: 60_000, now: () => now });
  const metadata = (token: string) => {
    const value = new grpc.Metadata();
    value.set('authorization', `Bearer ${token}`);
    return value;
  };
  // An agent restart: its xDS stream and a certificate per service account on the node, all at once.
  const callers = await Promise.all(Array.from({ length: 8 }, () => authenticator.authenticate(metadata('agent-token'))));
  t.true(callers.every((caller) => caller.node === 'node-1'));
  t.is(authenticator.reviews, 1, 'one review for eight concurrent calls');
  now += 59_000;
  await authenticator.authenticate(metadata('agent-token'));
  t.is(authenticator.reviews, 1, 'still trusted inside the TTL');
  now += 2_000;
  api.reviewTokens.delete('agent-token');
  await t.throwsAsync(authenticator.authenticate(metadata('agent-token')), { message: /token review rejected/ }, 'past the TTL the API server is asked again, and a revoked token is refused');
  t.is(authenticator.reviews, 2);
  await t.throwsAsync(authenticator.authenticate(metadata('agent-token')));
  t.is(authenticator.reviews, 3, 'a refusal is not cached');
  t.is(api.requests.filter((request) => request === 'POST /apis/authentication.k8s.io/v1/tokenreviews').length, 3);

  // A JWT that expires before the TTL is trusted only until it expires.
  const jwt = ['e30', Buffer.from(JSON.stringify({ exp: Math.floor(now / 1000) + 10 })).toString('base64url'), 'sig'].join('.');
  api.reviewTokens.set(jwt, { username: 'system:serviceaccount:istio-system:ambit-agent', node: 'node-1' });
  await authenticator.authenticate(metadata(jwt));
  now += 11_000;
  await authenticator.authenticate(metadata(jwt));
  t.is(authenticator.reviews, 5, 'asked again once the token itself expired');
});

test('Kubernetes mode: only the node agents service account may read the mesh over xDS; another valid token gets PERMISSION_DENIED', async (t) => {
  const api = await FakeKubeApiServer.start();
  t.teardown(() => api.close());
  api.reviewTokens.set('agent-token', { username: 'system:serviceaccount:istio-system:ambit-agent', node: 'node-1' });
  api.reviewTokens.set('workload-token', { username: 'system:serviceaccount:shop:web', node: 'node-1' });
  const ca = await testCa();
  const dir = await tempDir(t);
  const authenticator = onlyCallers(new TokenReviewAuthenticator(api.kubeConfig()), ['system:serviceaccount:istio-system:ambit-agent']);
  const cp = await startControlPlane({ ca, listenAddress: '127.0.0.1:0', authenticator, createSource: (store) => new YamlDirSource({ dir, store }) });
  t.teardown(() => cp.close());
  const plane = { address: `127.0.0.1:${cp.port}`, ca, cp };
  const statuses: XdsClientStatus[] = [];
  const nosy = startRecordingClient(t, plane, { token: 'workload-token', onStatus: (status) => statuses.push(status), initialBackoffMs: 1000 });
  await eventually(() => statuses.some((status) => status.state === 'disconnected'), 'the refusal');
  const refusal = statuses.find((status) => status.state === 'disconnected') as Extract<XdsClientStatus, { state: 'disconnected' }>;
  t.is(refusal.code, grpc.status.PERMISSION_DENIED);
  t.regex(refusal.error, /system:serviceaccount:shop:web may not read the mesh configuration/);
  t.is(nosy.calls.length, 0, 'it received nothing');
  const agent = startRecordingClient(t, plane, { token: 'agent-token' });
  await agent.client.synced;
  t.deepEqual(cp.xds.connections().map((connection) => connection.caller.identity), ['system:serviceaccount:istio-system:ambit-agent']);
});
