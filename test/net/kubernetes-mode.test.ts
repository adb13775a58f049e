/**
 * The whole mesh in Kubernetes mode on a real 2-node local cluster, wired as deploy/manifests/ambit.yaml runs it:
 * the API server is the source of truth (Namespace and Pod objects, pod status with the IP the CNI chain gave, the
 * policies), the control plane runs `--source kubernetes --kubeconfig` (POD_NAMESPACE=istio-system), keeps its CA
 * root in Secret istio-ca-secret and publishes ConfigMap istio-ca-root-cert, each agent runs with the DaemonSet's
 * environment (its root file is that ConfigMap's root-cert.pem, its token a service account token that TokenReview
 * binds to its node), and ambit-cni reads pods from the API server (`kubeconfig` in its config).
 *
 * The API server is test/helpers/kube-api-server.ts, a STAND-IN built to the real protocol (no Kubernetes runs
 * here). It listens on the fabric's address, inside the fabric namespace, where the control plane and the nodes'
 * CNI plugins reach it; this process serves it and drives it directly (apply, remove), as kubectl would.
 */
import test from 'ava';
import { existsSync, readFileSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { createLocalMesh, type LocalMesh } from '../../runtime/local-mesh.ts';
import type { KubernetesApi } from '../../runtime/kubernetes-mode.ts';
import { runClient, startEchoServer, type ClusterNode, type Pod } from '../../runtime/index.ts';
import type { PodObject } from '../../shared/k8s/objects.ts';
import { FakeKubeApiServer } from '../helpers/kube-api-server.ts';

const ENROLLED = { 'istio.io/dataplane-mode': 'ambient' };
const PORT = 8080;
const WAIT_MS = 15_000;
const AGENT_ACCOUNT = 'system:serviceaccount:istio-system:ambit-agent';
const CLIENT_PRINCIPAL = 'spiffe://cluster.local/ns/shop/sa/client';
const SERVER_PRINCIPAL = 'spiffe://cluster.local/ns/shop/sa/server';

let api: FakeKubeApiServer | undefined;
let mesh: LocalMesh | undefined;
let server: Pod;
let client: Pod;

/** The runtime's view of the stand-in: what `kubectl apply`, the kubelet and its TokenRequest do to an API server. */
function runtimeAccess(fake: FakeKubeApiServer): KubernetesApi {
  return {
    kubeconfig: fake.kubeConfigYaml(),
    objects: {
      writeNamespace: async (namespace) => void fake.apply(namespace),
      writePod: async (pod) => void fake.apply(pod),
      updatePodStatus: async (pod, status) => {
        const current = (fake.get('Pod', pod.metadata.namespace, pod.metadata.name) as PodObject | undefined) ?? pod;
        fake.apply({ ...current, status });
      },
      removePod: async (namespace, name) => fake.remove('Pod', namespace, name),
    },
    requestToken: async (namespace, serviceAccount, node, audiences) => fake.issueServiceAccountToken(namespace, serviceAccount, node, audiences),
    readConfigMap: async (namespace, name) => fake.configMaps.get(`${namespace}/${name}`)?.data as Record<string, string> | undefined,
  };
}

test.before(async () => {
  mesh = await createLocalMesh({
    nodes: 2,
    name: 'k8stest',
    kubernetes: {
      connect: async (fabric) => {
        api = await FakeKubeApiServer.start({ netns: fabric.netnsPath, host: fabric.address });
        return runtimeAccess(api);
      },
    },
  });
  server = await mesh.cluster.createPod({ node: 1, namespace: 'shop', name: 'server', serviceAccount: 'server', labels: { app: 'server' }, namespaceLabels: ENROLLED });
  client = await mesh.cluster.createPod({ node: 0, namespace: 'shop', name: 'client', serviceAccount: 'client' });
  await startEchoServer(server, { port: PORT });
});

test.after.always(async () => {
  await mesh?.destroy();
  await api?.close();
});

function cluster() {
  return mesh!.cluster;
}

function fake(): FakeKubeApiServer {
  if (api === undefined) throw new Error('the API server did not start');
  return api;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- access log lines are free-form JSON read by assertions
async function accessLog(node: ClusterNode): Promise<Array<Record<string, any>>> {
  const text = await readFile(node.agentLogFile, 'utf8');
  return text.split('\n').filter((line) => line.includes('"connection closed"')).map((line) => JSON.parse(line) as Record<string, unknown>);
}

async function waitFor(condition: () => Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + WAIT_MS;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${WAIT_MS} ms waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

const connects = async (from: Pod, to: Pod): Promise<boolean> => (await runClient(from, { host: to.ip, port: PORT, timeoutMs: 3000 })).ok;

/** The agent's own environment, as its process has it. */
function agentEnvironment(node: ClusterNode): Record<string, string> {
  const text = readFileSync(`/proc/${node.agent!.pid}/environ`, 'utf8');
  return Object.fromEntries(text.split('\0').filter(Boolean).map((entry) => [entry.slice(0, entry.indexOf('=')), entry.slice(entry.indexOf('=') + 1)]));
}

test.serial('wired as in a cluster: objects, CA root, agent credentials and the plugin config all come from the API server', async (t) => {
  const k8s = fake();
  // The kubelet's status report reached the API server, and nothing was published to a cluster directory.
  t.like(k8s.get('Pod', 'shop', 'server'), { spec: { nodeName: 'k8stest-node1', serviceAccountName: 'server' }, status: { phase: 'Running', podIP: server.ip } });
  t.false(existsSync(path.join(cluster().clusterDir, 'pods')) && (await readdir(path.join(cluster().clusterDir, 'pods'))).length > 0, 'no Pod files in the cluster directory');

  // The control plane made the root in Secret istio-ca-secret and published it in ConfigMap istio-ca-root-cert.
  const secret = k8s.secrets.get('istio-system/istio-ca-secret');
  t.truthy(secret, 'Secret istio-system/istio-ca-secret exists');
  const rootCertPem = Buffer.from((secret!.data as Record<string, string>)['ca-cert.pem']!, 'base64').toString();
  for (const namespace of ['istio-system', 'shop']) {
    t.is((k8s.configMaps.get(`${namespace}/istio-ca-root-cert`)?.data as Record<string, string> | undefined)?.['root-cert.pem'], rootCertPem, `the root is published in ${namespace}`);
  }

  for (const node of cluster().nodes) {
    const env = agentEnvironment(node);
    t.is(env.AMBIT_NODE_NAME, node.name);
    t.is(env.AMBIT_XDS_ADDRESS, mesh!.controlPlaneAddress);
    t.is(readFileSync(env.AMBIT_ROOT_CERT_FILE!, 'utf8'), rootCertPem, 'the agent trusts the root the ConfigMap holds');
    t.deepEqual(k8s.reviewTokens.get(readFileSync(env.AMBIT_TOKEN_FILE!, 'utf8')), { username: AGENT_ACCOUNT, node: node.name, audiences: ['istio-ca'] }, 'its token is the agent service account bound to its node, for the control plane\'s audience');
    t.is(env.AMBIT_CLUSTER_DIR, undefined, 'the agent is not given a cluster directory');
    t.is(env.AMBIT_LOCAL_CA_DIR, undefined);
  }
  t.true(k8s.requests.some((request) => request.startsWith('POST /apis/authentication.k8s.io/v1/tokenreviews')), 'the control plane reviewed the agents\' tokens');
  t.true(k8s.requests.includes('GET /api/v1/namespaces/shop/pods/server'), 'ambit-cni read the pod from the API server');
});

test.serial('an enrolled client on node 0 reaches an enrolled server on node 1 through HBONE, both identities verified', async (t) => {
  const result = await runClient(client, { host: server.ip, port: PORT, count: 3 });
  t.true(result.ok, result.errors.join('; '));
  const inbound = (await accessLog(cluster().node(1))).filter((entry) => entry.direction === 'inbound' && entry.src.address === client.ip);
  t.true(inbound.length >= 3, 'the server node agent delivered the connections');
  t.true(inbound.every((entry) => entry.mtls === true && entry.src.principal === CLIENT_PRINCIPAL && entry.dst.principal === SERVER_PRINCIPAL), JSON.stringify(inbound[0]));
  const outbound = (await accessLog(cluster().node(0))).filter((entry) => entry.direction === 'outbound' && entry.dst.address === `${server.ip}:${PORT}`);
  t.true(outbound.length >= 3 && outbound.every((entry) => entry.mtls === true && entry.dst.principal === SERVER_PRINCIPAL));
});

test.serial('a Service in the API server: the enrolled client reaches it by cluster IP over HBONE to the server pod, port mapped', async (t) => {
  const vip = '10.240.3.10';
  fake().apply({
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'server', namespace: 'shop' },
    spec: { clusterIP: vip, clusterIPs: [vip], selector: { app: 'server' }, ports: [{ name: 'tcp', port: 80, targetPort: PORT }] },
  });
  // The Service reaches the client's agent through the control plane's informer and xDS: until then the VIP is no
  // pod of the mesh and the connection goes out as plain TCP to an address nothing answers.
  await waitFor(async () => (await runClient(client, { host: vip, port: 80, timeoutMs: 2000 })).ok, 'the VIP answers');
  const result = await runClient(client, { host: vip, port: 80, count: 3 });
  t.true(result.ok, result.errors.join('; '));
  const outbound = (await accessLog(cluster().node(0))).filter((entry) => entry.direction === 'outbound' && entry.dst.service === 'server.shop.svc.cluster.local');
  t.true(outbound.length >= 3, `the client's agent resolved the VIP: ${outbound.length} lines`);
  t.true(outbound.every((entry) => entry.mtls === true && entry.dst.address === `${server.ip}:${PORT}` && entry.dst.principal === SERVER_PRINCIPAL), JSON.stringify(outbound[0]));
  const inbound = (await accessLog(cluster().node(1))).filter((entry) => entry.direction === 'inbound' && entry.src.address === client.ip && entry.src.principal === CLIENT_PRINCIPAL);
  t.true(inbound.length >= 3, 'the server pod\'s agent delivered them over HBONE');
  fake().remove('Service', 'shop', 'server');
});

test.serial('Services from the API server as on the local runtime: by name, across nodes, internalTrafficPolicy Local, an unready endpoint skipped, none left refused at once', async (t) => {
  const webA = await cluster().createPod({ node: 0, namespace: 'shop', name: 'web-a', serviceAccount: 'web', labels: { app: 'web' } });
  const webB = await cluster().createPod({ node: 1, namespace: 'shop', name: 'web-b', serviceAccount: 'web', labels: { app: 'web' } });
  const servers = [await startEchoServer(webA, { port: PORT }), await startEchoServer(webB, { port: PORT })];
  const service = (name: string, vip: string, selector: Record<string, string>, extra: Record<string, unknown> = {}) => ({
    apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: 'shop' },
    spec: { clusterIP: vip, clusterIPs: [vip], selector, ports: [{ name: 'tcp', port: 80, targetPort: PORT }], ...extra },
  });
  t.teardown(async () => {
    for (const name of ['web', 'web-local', 'empty']) fake().remove('Service', 'shop', name);
    for (const child of servers) child.kill();
    await cluster().deletePod(webA);
    await cluster().deletePod(webB);
  });
  fake().apply(service('web', '10.240.3.20', { app: 'web' }));
  fake().apply(service('web-local', '10.240.3.21', { app: 'web' }, { internalTrafficPolicy: 'Local' }));
  fake().apply(service('empty', '10.240.3.22', { app: 'nothing' }));
  const outbound = async (since: number, host: string) => (await accessLog(cluster().node(0))).slice(since).filter((entry) => entry.direction === 'outbound' && entry.dst.service === host);
  await waitFor(async () => (await runClient(client, { host: 'web.shop.svc.cluster.local', port: 80, timeoutMs: 2000 })).ok, 'web answers by name');

  // By name (the agent's DNS answers from the Services the control plane sent), endpoints on both nodes.
  let since = (await accessLog(cluster().node(0))).length;
  const byName = await runClient(client, { host: 'web.shop.svc.cluster.local', port: 80, count: 12 });
  t.true(byName.ok, byName.errors.join('; '));
  const lines = await outbound(since, 'web.shop.svc.cluster.local');
  t.is(lines.length, 12);
  t.true(lines.every((entry) => entry.mtls === true), 'over HBONE');
  t.deepEqual([...new Set(lines.map((entry) => entry.dst.workload))].sort(), ['web-a', 'web-b'], 'both endpoints, one on each node');

  since = (await accessLog(cluster().node(0))).length;
  t.true((await runClient(client, { host: '10.240.3.21', port: 80, count: 8 })).ok);
  t.deepEqual([...new Set((await outbound(since, 'web-local.shop.svc.cluster.local')).map((entry) => entry.dst.workload))], ['web-a'], 'Local: only the client\'s node');

  // web-a goes unready in the API server: web-local has nothing left on this node; web sends everything to web-b.
  const current = fake().get('Pod', 'shop', 'web-a') as PodObject;
  fake().apply({ ...current, status: { ...current.status, conditions: [{ type: 'Ready', status: 'False' }] } } as PodObject);
  await waitFor(async () => !(await runClient(client, { host: '10.240.3.21', port: 80, timeoutMs: 2000 })).ok, 'web-local refuses');
  since = (await accessLog(cluster().node(0))).length;
  const refused = await runClient(client, { host: '10.240.3.21', port: 80, timeoutMs: 15_000 });
  t.false(refused.ok);
  t.true(refused.durationMs < 10_000, `refused at once (${refused.durationMs} ms)`);
  t.is((await outbound(since, 'web-local.shop.svc.cluster.local'))[0]?.error, 'no healthy upstream: service web-local.shop.svc.cluster.local port 80; of 2 endpoints: 1 unhealthy, 1 excluded by the service\'s load balancing (NODE STRICT)');
  since = (await accessLog(cluster().node(0))).length;
  t.true((await runClient(client, { host: '10.240.3.20', port: 80, count: 8 })).ok);
  t.deepEqual([...new Set((await outbound(since, 'web.shop.svc.cluster.local')).map((entry) => entry.dst.workload))], ['web-b'], 'the unready endpoint is skipped');

  since = (await accessLog(cluster().node(0))).length;
  t.false((await runClient(client, { host: '10.240.3.22', port: 80, timeoutMs: 15_000 })).ok);
  t.like((await outbound(since, 'empty.shop.svc.cluster.local'))[0], { response_flags: 'UH', error: 'no healthy upstream: service empty.shop.svc.cluster.local port 80; it has no endpoints' });
});

test.serial('selector-less Services with EndpointSlices in the API server: a pod targetRef goes over HBONE, a bare address in plaintext; STRICT keeps the mesh path', async (t) => {
  // The outside address: a pod in an un-enrolled namespace, listed by IP only (as a user lists a database or a VM).
  const external = await cluster().createPod({ node: 1, namespace: 'ext', name: 'ext', serviceAccount: 'ext' });
  const database = await startEchoServer(external, { port: PORT });
  const toPod = '10.240.3.11';
  const toAddress = '10.240.3.12';
  const service = (name: string, vip: string) => ({
    apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: 'shop' },
    spec: { clusterIP: vip, clusterIPs: [vip], ports: [{ name: 'tcp', port: 80, targetPort: 9999 }] },
  });
  const slice = (name: string, service: string, endpoint: Record<string, unknown>) => ({
    apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', metadata: { name, namespace: 'shop', labels: { 'kubernetes.io/service-name': service } },
    addressType: 'IPv4', endpoints: [endpoint], ports: [{ name: 'tcp', port: PORT, protocol: 'TCP' }],
  });
  t.teardown(async () => {
    for (const name of ['manual-pod', 'manual-address']) fake().remove('Service', 'shop', name);
    for (const name of ['manual-pod-1', 'manual-address-1']) fake().remove('EndpointSlice', 'shop', name);
    database.kill();
    await cluster().deletePod(external);
  });
  fake().apply(service('manual-pod', toPod));
  fake().apply(slice('manual-pod-1', 'manual-pod', { addresses: [server.ip], targetRef: { kind: 'Pod', name: 'server', namespace: 'shop' }, conditions: { ready: true } }));
  fake().apply(service('manual-address', toAddress));
  fake().apply(slice('manual-address-1', 'manual-address', { addresses: [external.ip], conditions: { ready: true } }));
  await waitFor(async () => (await runClient(client, { host: toPod, port: 80, timeoutMs: 2000 })).ok, 'the pod-backed VIP answers');
  await waitFor(async () => (await runClient(client, { host: toAddress, port: 80, timeoutMs: 2000 })).ok, 'the address-backed VIP answers');
  const before = (await accessLog(cluster().node(0))).length;
  t.true((await runClient(client, { host: toPod, port: 80, count: 3 })).ok);
  t.true((await runClient(client, { host: toAddress, port: 80, count: 3 })).ok);
  const outbound = (await accessLog(cluster().node(0))).slice(before).filter((entry) => entry.direction === 'outbound');
  const viaPod = outbound.filter((entry) => entry.dst.service === 'manual-pod.shop.svc.cluster.local');
  const viaAddress = outbound.filter((entry) => entry.dst.service === 'manual-address.shop.svc.cluster.local');
  t.is(viaPod.length, 3);
  t.true(viaPod.every((entry) => entry.mtls === true && entry.dst.address === `${server.ip}:${PORT}` && entry.dst.principal === SERVER_PRINCIPAL), JSON.stringify(viaPod[0]));
  t.is(viaAddress.length, 3);
  t.true(viaAddress.every((entry) => entry.mtls === false && entry.dst.address === `${external.ip}:${PORT}`), JSON.stringify(viaAddress[0]));

  // STRICT in the API server: the pod outside the mesh is refused at the server in plaintext; the mesh path through the VIP is not.
  fake().apply({ apiVersion: 'security.istio.io/v1', kind: 'PeerAuthentication', metadata: { name: 'strict', namespace: 'shop' }, spec: { mtls: { mode: 'STRICT' } } });
  t.teardown(() => fake().remove('PeerAuthentication', 'shop', 'strict'));
  await waitFor(async () => !(await runClient(external, { host: server.ip, port: PORT, timeoutMs: 2000 })).ok, 'STRICT refuses plaintext to the server');
  const meshPath = await runClient(client, { host: toPod, port: 80, count: 3 });
  t.true(meshPath.ok, `the VIP over HBONE is accepted under STRICT: ${meshPath.errors.join('; ')}`);
  // Lifted again before the next test, which sends plaintext to the server: the signal is plaintext getting in.
  fake().remove('PeerAuthentication', 'shop', 'strict');
  await waitFor(async () => (await runClient(external, { host: server.ip, port: PORT, timeoutMs: 2000 })).ok, 'plaintext gets in again');
});

test.serial('a pod in a namespace without the label is not captured: it reaches the server in plaintext', async (t) => {
  const legacy = await cluster().createPod({ node: 0, namespace: 'legacy', name: 'legacy', serviceAccount: 'legacy' });
  t.teardown(() => cluster().deletePod(legacy));
  t.true(await connects(legacy, server));
  const inbound = (await accessLog(cluster().node(1))).filter((entry) => entry.src.address === legacy.ip);
  t.true(inbound.length >= 1, 'the server\'s agent saw the connection');
  t.true(inbound.every((entry) => entry.mtls === false && entry.src.principal === undefined), 'plaintext, no client identity');
  t.deepEqual((await accessLog(cluster().node(0))).filter((entry) => entry.src.address === legacy.ip), [], 'the client node agent never handled it');
});

test.serial('labelling a namespace in the API server captures its running pods', async (t) => {
  const flip = await cluster().createPod({ node: 1, namespace: 'flip', name: 'flip', serviceAccount: 'flip' });
  t.teardown(() => cluster().deletePod(flip));
  await startEchoServer(flip, { port: PORT });
  const throughHbone = async (): Promise<boolean> =>
    (await accessLog(cluster().node(1))).some((entry) => entry.direction === 'inbound' && entry.dst.address === `${flip.ip}:${PORT}` && entry.src.principal === CLIENT_PRINCIPAL);

  // ambit-cni (Kubernetes mode) read the pod and its namespace, found it not enrolled, and told the agent about it
  // (pod-seen), so the agent knows the running pod's network namespace when the label comes.
  t.true(fake().requests.includes('GET /api/v1/namespaces/flip/pods/flip'));
  const knownPods = path.join(cluster().node(1).dir, `known-pods-${cluster().node(1).name}.json`);
  await waitFor(async () => (await readFile(knownPods, 'utf8').catch(() => '')).includes(flip.netnsPath), 'node 1\'s agent knows the pod');
  t.true(await connects(client, flip));
  t.false(await throughHbone(), 'not enrolled yet: no HBONE to the pod');

  // `kubectl label namespace flip istio.io/dataplane-mode=ambient`
  fake().apply({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'flip', labels: ENROLLED } });
  await waitFor(async () => (await connects(client, flip)) && (await throughHbone()), 'the running pod is reached through HBONE with the client identity');
  t.pass();
});

test.serial('an AuthorizationPolicy applied to the API server is enforced, and removing it lets the client in again', async (t) => {
  t.true(await connects(client, server));
  fake().apply({
    apiVersion: 'security.istio.io/v1',
    kind: 'AuthorizationPolicy',
    metadata: { name: 'deny-client', namespace: 'shop' },
    spec: { selector: { matchLabels: { app: 'server' } }, action: 'DENY', rules: [{ from: [{ source: { principals: ['cluster.local/ns/shop/sa/client'] } }] }] },
  });
  t.teardown(() => fake().remove('AuthorizationPolicy', 'shop', 'deny-client'));
  await waitFor(async () => !(await connects(client, server)), 'the client is refused');
  const denials = (await accessLog(cluster().node(1))).filter((entry) => entry.src.principal === CLIENT_PRINCIPAL && entry.response_flags === 'DENY');
  t.true(denials.length > 0, 'the refusal is in the server node\'s access log with DENY');

  fake().remove('AuthorizationPolicy', 'shop', 'deny-client');
  await waitFor(() => connects(client, server), 'the client is allowed again');
  t.pass();
});

/** Asks the CA for certificates from inside node 0, with ambit's own CA client (what an agent would send). */
async function askCa(asks: { token: string; namespace: string; serviceAccount: string }[]): Promise<{ ok: boolean; uri?: string; code?: number; details?: string }[]> {
  const root = path.resolve(import.meta.dirname, '..', '..');
  const script = `
    const { CaClient } = await import(${JSON.stringify(path.join(root, 'shared/ca/ca-client.ts'))});
    const { spiffeId } = await import(${JSON.stringify(path.join(root, 'shared/identity/index.ts'))});
    const { controlPlaneIdentity } = await import(${JSON.stringify(path.join(root, 'shared/xds/client.ts'))});
    const { address, rootPem, asks } = JSON.parse(process.argv[1]);
    const results = [];
    for (const ask of asks) {
      const ca = new CaClient({ address, rootsPem: [rootPem], token: ask.token, serverIdentity: controlPlaneIdentity('cluster.local') });
      try {
        const certificate = await ca.fetch(spiffeId('cluster.local', ask.namespace, ask.serviceAccount));
        results.push({ ok: true, uri: certificate.identity.uri });
      } catch (error) {
        results.push({ ok: false, code: error.code, details: error.details ?? error.message });
      } finally {
        ca.close();
      }
    }
    console.log(JSON.stringify(results));`;
  const rootPem = (fake().configMaps.get('istio-system/istio-ca-root-cert')?.data as Record<string, string>)['root-cert.pem'];
  const result = await cluster().node(0).exec(process.execPath, ['--input-type=module', '-e', script, JSON.stringify({ address: mesh!.controlPlaneAddress, rootPem, asks })]);
  if (result.code !== 0) throw new Error(`the CA client script failed: ${result.stderr}`);
  return JSON.parse(result.stdout) as { ok: boolean; uri?: string; code?: number; details?: string }[];
}

test.serial('the CA signs only identities of pods on the token\'s node, and only for the trusted agent account', async (t) => {
  const node0 = cluster().node(0).name;
  const agentToken = fake().issueServiceAccountToken('istio-system', 'ambit-agent', node0, ['istio-ca']);
  const workloadToken = fake().issueServiceAccountToken('shop', 'client', node0, ['istio-ca']);
  const apiAudienceToken = fake().issueServiceAccountToken('istio-system', 'ambit-agent', node0);
  const [own, neighbours, workload, unknown, apiAudience] = await askCa([
    { token: agentToken, namespace: 'shop', serviceAccount: 'client' },
    { token: agentToken, namespace: 'shop', serviceAccount: 'server' },
    { token: workloadToken, namespace: 'shop', serviceAccount: 'client' },
    { token: 'not-a-token', namespace: 'shop', serviceAccount: 'client' },
    { token: apiAudienceToken, namespace: 'shop', serviceAccount: 'client' },
  ]);
  t.deepEqual(own, { ok: true, uri: CLIENT_PRINCIPAL }, 'shop/client runs on node 0: signed');
  t.like(neighbours, { ok: false, code: 7 }, 'PERMISSION_DENIED');
  t.regex(neighbours!.details!, new RegExp(`node ${node0} may not get ${SERVER_PRINCIPAL}: no pod with that service account runs on ${node0}`));
  t.like(workload, { ok: false, code: 7 }, 'a workload token bound to the node is no agent');
  t.regex(workload!.details!, /system:serviceaccount:shop:client is not a node agent/);
  t.like(unknown, { ok: false, code: 16 }, 'UNAUTHENTICATED');
  t.regex(unknown!.details!, /token review rejected the token/);
  t.like(apiAudience, { ok: false, code: 16 }, 'the agent\'s token for the API server (not istio-ca) is refused');
  t.regex(apiAudience!.details!, /audiences asked: istio-ca/);
});

test.serial('a control plane restart loads the root from Secret istio-ca-secret: agents keep trusting it and a new pod gets a certificate', async (t) => {
  const secretVersion = (): unknown => (fake().secrets.get('istio-system/istio-ca-secret')?.metadata as { resourceVersion?: string } | undefined)?.resourceVersion;
  const versionBefore = secretVersion();
  await mesh!.stopControlPlane();
  t.teardown(() => mesh!.startControlPlane());
  const restartedAt = Date.now();
  await mesh!.startControlPlane();
  t.regex(await readFile(mesh!.controlPlaneLogFile!, 'utf8'), /"created":false,.*"msg":"loaded the mesh root CA"/);
  t.is(secretVersion(), versionBefore, 'the Secret was read, not replaced');
  // The agent reconnects after its current backoff (it grows while the control plane is away; on a loaded machine
  // longer than the CNI ADD waits for a pod): wait for its resync before creating a pod.
  await waitFor(
    async () => (await readFile(cluster().node(0).agentLogFile, 'utf8')).split('\n').some((line) => line.includes('"msg":"xDS"') && line.includes('"state":"connected"') && (JSON.parse(line) as { time: number }).time >= restartedAt),
    'node 0\'s agent resynced with the restarted control plane',
  );

  const later = await cluster().createPod({ node: 0, namespace: 'shop', name: 'after-restart', serviceAccount: 'after' });
  t.teardown(() => cluster().deletePod(later));
  const result = await runClient(later, { host: server.ip, port: PORT });
  t.true(result.ok, result.errors.join('; '));
  const inbound = (await accessLog(cluster().node(1))).filter((entry) => entry.src.address === later.ip);
  t.true(inbound.some((entry) => entry.mtls === true && entry.src.principal === 'spiffe://cluster.local/ns/shop/sa/after'), 'signed by the restarted CA, verified by the server node against the same root');
});
