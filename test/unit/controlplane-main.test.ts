// The control plane's entry: configuration, and a whole control plane started as main starts it, in local mode
// (YAML directory, bootstrap token file, root in a directory) and in Kubernetes mode (the stand-in API server:
// informers, TokenReview, root in a Secret).
import test from 'ava';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { status, type ServiceError } from '@grpc/grpc-js';
import { CaClient } from '../../shared/ca/ca-client.ts';
import { workloadFromXds } from '../../shared/mesh/xds-source.ts';
import { CertificateAuthority, spiffeId } from '../../shared/identity/index.ts';
import { controlPlaneIdentity } from '../../shared/xds/client.ts';
import { parseConfig, runControlPlane } from '../../controlplane/main.ts';
import { FakeKubeApiServer } from '../helpers/kube-api-server.ts';
import type { XdsClientStatus } from '../../shared/xds/client.ts';
import { eventually as waitFor, namespaceObject, podObject, podYaml, startRecordingClient, tempDir, workloadNamed, writeManifest } from '../helpers/xds-harness.ts';

test('configuration: a source is required; dir: and kubernetes are understood; flags win over the environment', (t) => {
  t.throws(() => parseConfig([], {}), { message: /no source/ });
  t.throws(() => parseConfig(['--source', 'etcd'], {}), { message: /dir:<path> or kubernetes/ });
  const local = parseConfig(['--ca-dir', '/ca'], { AMBIT_CLUSTER_DIR: '/cluster', AMBIT_XDS_LISTEN: '127.0.0.1:1' });
  t.deepEqual(local.source, { type: 'dir', dir: '/cluster' });
  t.is(local.listenAddress, '127.0.0.1:1');
  t.is(local.tokenFile, '/ca/node-tokens');
  t.is(parseConfig(['--source', 'dir:/x'], {}).listenAddress, '0.0.0.0:15012');
  t.deepEqual(parseConfig(['--source', 'kubernetes', '--kubeconfig', '/k'], { AMBIT_SOURCE: 'dir:/y' }).source, { type: 'kubernetes', kubeconfig: '/k' });
});

test('local mode: a node token connects, the directory is served, and a restart keeps the same root', async (t) => {
  const base = await tempDir(t);
  const clusterDir = path.join(base, 'cluster');
  const caDir = path.join(base, 'ca');
  await mkdir(clusterDir);
  await mkdir(caDir);
  await writeFile(path.join(caDir, 'node-tokens'), '# token node\nnode-1-token node-1\n');
  await writeManifest(clusterDir, 'pod.yaml', podYaml({ name: 'web-1', namespace: 'default', ip: '10.0.0.1' }));
  const config = parseConfig(['--source', `dir:${clusterDir}`, '--ca-dir', caDir, '--listen', '127.0.0.1:0', '--log-level', 'silent'], {});

  const first = await runControlPlane(config);
  const rootPem = await readFile(path.join(caDir, 'root-cert.pem'), 'utf8');
  const ca = await CertificateAuthority.load({ trustDomain: 'cluster.local', certPem: rootPem, keyPem: await readFile(path.join(caDir, 'ca-key.pem'), 'utf8') });
  const plane = { address: `127.0.0.1:${first.port}`, ca, cp: first };
  const agent = startRecordingClient(t, plane, { token: 'node-1-token' });
  await agent.client.synced;
  t.truthy(workloadNamed(agent, 'default', 'web-1'));
  t.deepEqual(first.xds.connections().map((connection) => connection.caller.node), ['node-1']);
  await first.close();

  const second = await runControlPlane(config);
  t.teardown(() => second.close());
  t.is(await readFile(path.join(caDir, 'root-cert.pem'), 'utf8'), rootPem, 'the root persists across restarts');
});

test('Kubernetes mode: informers feed the model, agents authenticate by TokenReview, the root lives in a Secret', async (t) => {
  const api = await FakeKubeApiServer.start();
  t.teardown(() => api.close());
  api.reviewTokens.set('sa-token', { username: 'system:serviceaccount:istio-system:ambit-agent', node: 'node-1', audiences: ['istio-ca'] });
  // The same account's token for the API server's own audience (what every pod has mounted): not for the control plane.
  api.reviewTokens.set('api-audience-token', { username: 'system:serviceaccount:istio-system:ambit-agent', node: 'node-1' });
  api.apply(namespaceObject('shop', { 'istio.io/dataplane-mode': 'ambient' }));
  api.apply(podObject({ name: 'web-1', namespace: 'shop', ip: '10.0.0.1' }));
  const base = await tempDir(t);
  const kubeconfig = path.join(base, 'kubeconfig');
  await writeFile(kubeconfig, api.kubeConfigYaml());

  const cp = await runControlPlane(parseConfig(['--source', 'kubernetes', '--kubeconfig', kubeconfig, '--listen', '127.0.0.1:0', '--log-level', 'silent'], {}));
  t.teardown(() => cp.close());
  const secret = api.secrets.get('istio-system/istio-ca-secret') as { data: Record<string, string> } | undefined;
  t.truthy(secret, 'the root was stored in the istio-ca-secret Secret');
  const ca = await CertificateAuthority.load({
    trustDomain: 'cluster.local',
    certPem: Buffer.from(secret!.data['ca-cert.pem']!, 'base64').toString(),
    keyPem: Buffer.from(secret!.data['ca-key.pem']!, 'base64').toString(),
  });
  const agent = startRecordingClient(t, { address: `127.0.0.1:${cp.port}`, ca, cp }, { token: 'sa-token' });
  await agent.client.synced;
  t.is(workloadFromXds(workloadNamed(agent, 'shop', 'web-1')!).enrolled, true);
  const statuses: XdsClientStatus[] = [];
  startRecordingClient(t, { address: `127.0.0.1:${cp.port}`, ca, cp }, { token: 'api-audience-token', onStatus: (status) => statuses.push(status), initialBackoffMs: 1000 });
  await waitFor(() => statuses.some((status) => status.state === 'disconnected'), 'the refusal of a token for the API server\'s audience');
  t.regex((statuses.find((status) => status.state === 'disconnected') as { error: string }).error, /audiences asked: istio-ca/);

  api.apply(podObject({ name: 'web-2', namespace: 'shop', ip: '10.0.0.2' }));
  await agent.until(() => workloadNamed(agent, 'shop', 'web-2') !== undefined, 'a watched pod');

  // The root is published as ConfigMap istio-ca-root-cert in every namespace, including ones created later.
  const rootPublished = (namespace: string): boolean =>
    (api.configMaps.get(`${namespace}/istio-ca-root-cert`) as { data?: Record<string, string> } | undefined)?.data?.['root-cert.pem'] === ca.rootCertPem;
  const eventually = async (condition: () => boolean, what: string): Promise<void> => {
    for (const deadline = Date.now() + 10_000; Date.now() < deadline; await new Promise((resolve) => setTimeout(resolve, 50))) if (condition()) return;
    t.fail(`timed out waiting for ${what}`);
  };
  await eventually(() => rootPublished('shop'), 'the root ConfigMap in an existing namespace');
  api.apply(namespaceObject('billing', {}));
  await eventually(() => rootPublished('billing'), 'the root ConfigMap in a namespace created later');

  // Kept as published, as istiod does: deleted or edited, it is written again (the agents' DaemonSet mounts it).
  api.remove('ConfigMap', 'shop', 'istio-ca-root-cert');
  t.false(rootPublished('shop'));
  await eventually(() => rootPublished('shop'), 'the deleted root ConfigMap written again');
  api.apply({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'istio-ca-root-cert', namespace: 'billing' }, data: { 'root-cert.pem': 'not the root' } });
  t.false(rootPublished('billing'));
  await eventually(() => rootPublished('billing'), 'the edited root ConfigMap written again');
  // Another ConfigMap is none of its business.
  api.apply({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'app-settings', namespace: 'shop' }, data: { mode: 'x' } });
  // A later change the guard does act on: once it is repaired, the guard has seen everything before it.
  api.remove('ConfigMap', 'shop', 'istio-ca-root-cert');
  await eventually(() => rootPublished('shop'), 'the root ConfigMap deleted after the other one written again');
  t.is((api.configMaps.get('shop/app-settings') as { data: Record<string, string> }).data.mode, 'x');
  t.false(api.requests.some((request) => request.includes('app-settings')), 'no request ever touched the other ConfigMap');
  t.true(api.requests.some((request) => request.startsWith('GET /api/v1/configmaps?') && request.includes('fieldSelector=metadata.name%3Distio-ca-root-cert')), 'the watch selects by name');
});

test('Kubernetes mode: while the API server is down the CA answers UNAVAILABLE to a token it has not reviewed, keeps serving one it reviewed within the cache TTL, and signs again once it is back', async (t) => {
  const api = await FakeKubeApiServer.start();
  t.teardown(() => api.close());
  const token = api.issueServiceAccountToken('istio-system', 'ambit-agent', 'node-1', ['istio-ca']);
  api.apply(namespaceObject('shop', { 'istio.io/dataplane-mode': 'ambient' }));
  api.apply(podObject({ name: 'web-1', namespace: 'shop', ip: '10.0.0.1', serviceAccount: 'web' }));
  const kubeconfig = path.join(await tempDir(t), 'kubeconfig');
  await writeFile(kubeconfig, api.kubeConfigYaml());
  const cp = await runControlPlane(parseConfig(['--source', 'kubernetes', '--kubeconfig', kubeconfig, '--listen', '127.0.0.1:0', '--log-level', 'silent'], {}));
  t.teardown(() => cp.close());
  const rootPem = Buffer.from((api.secrets.get('istio-system/istio-ca-secret') as { data: Record<string, string> }).data['ca-cert.pem']!, 'base64').toString();
  const agent = new CaClient({ address: `127.0.0.1:${cp.port}`, rootsPem: [rootPem], token, serverIdentity: controlPlaneIdentity('cluster.local') });
  t.teardown(() => agent.close());
  const web = spiffeId('cluster.local', 'shop', 'web');
  t.is((await agent.fetch(web)).identity.uri, web.uri);

  // A second agent on the same node (say, restarted with a fresh token) that the CA has not seen yet.
  const fresh = new CaClient({ address: `127.0.0.1:${cp.port}`, rootsPem: [rootPem], token: api.issueServiceAccountToken('istio-system', 'ambit-agent', 'node-1', ['istio-ca']), serverIdentity: controlPlaneIdentity('cluster.local') });
  t.teardown(() => fresh.close());

  api.fail(503);
  const during = await t.throwsAsync<ServiceError>(fresh.fetch(web));
  t.is(during?.code, status.UNAVAILABLE, `an outage is no CA bug: ${during?.details}`);
  t.regex(during?.details ?? '', /cannot authenticate the caller: the TokenReview failed .*503/);
  t.is((await agent.fetch(web)).identity.uri, web.uri, 'a token reviewed a moment ago is still trusted: renewals go on through a short outage');

  api.recover();
  t.is((await fresh.fetch(web)).identity.uri, web.uri, 'signed again once the API server answers');
});

test('local mode: xDS and the CA read one bootstrap token file, reloaded on change: a token added or removed counts for both at once', async (t) => {
  const base = await tempDir(t);
  const clusterDir = path.join(base, 'cluster');
  const caDir = path.join(base, 'ca');
  await mkdir(clusterDir);
  await mkdir(caDir);
  const tokenFile = path.join(caDir, 'node-tokens');
  await writeFile(tokenFile, 'node-1-token node-1\n');
  await writeManifest(clusterDir, 'ns.yaml', 'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n');
  await writeManifest(clusterDir, 'pod.yaml', podYaml({ name: 'web-2', namespace: 'shop', ip: '10.0.0.2', node: 'node-2', serviceAccount: 'web' }));
  const cp = await runControlPlane(parseConfig(['--source', `dir:${clusterDir}`, '--ca-dir', caDir, '--listen', '127.0.0.1:0', '--log-level', 'silent'], {}));
  t.teardown(() => cp.close());
  const rootPem = await readFile(path.join(caDir, 'root-cert.pem'), 'utf8');
  const web = spiffeId('cluster.local', 'shop', 'web');
  const caClient = (token: string) => {
    const client = new CaClient({ address: `127.0.0.1:${cp.port}`, rootsPem: [rootPem], token, serverIdentity: controlPlaneIdentity('cluster.local') });
    t.teardown(() => client.close());
    return client;
  };
  const before = await t.throwsAsync<ServiceError>(caClient('node-2-token').fetch(web));
  t.is(before?.code, status.UNAUTHENTICATED, 'node 2 has no token yet');

  // Node 2 joins, and node 1's token is revoked, by rewriting the file: no restart.
  await writeFile(tokenFile, 'node-2-token node-2\n');
  t.is((await caClient('node-2-token').fetch(web)).identity.uri, web.uri, 'the CA takes the new token');
  const ca = await CertificateAuthority.load({ trustDomain: 'cluster.local', certPem: rootPem, keyPem: await readFile(path.join(caDir, 'ca-key.pem'), 'utf8') });
  const agent = startRecordingClient(t, { address: `127.0.0.1:${cp.port}`, ca, cp }, { token: 'node-2-token' });
  await agent.client.synced;
  t.deepEqual(cp.xds.connections().map((connection) => connection.caller.node), ['node-2'], 'and so does xDS');
  const revoked = await t.throwsAsync<ServiceError>(caClient('node-1-token').fetch(spiffeId('cluster.local', 'shop', 'other')));
  t.is(revoked?.code, status.UNAUTHENTICATED, 'the removed token is refused by the CA too');
});
