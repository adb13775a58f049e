/**
 * L7 policy in Kubernetes mode, end to end: the mesh of test/net/kubernetes-mode.test.ts (stand-in API server,
 * control plane `--source kubernetes`, agents with service account tokens) plus a real waypoint process in a pod on
 * node 1, its Gateway in the API server. AuthorizationPolicy, RequestAuthentication and LocalRateLimitPolicy
 * applied to the API server (as kubectl would) take effect at the waypoint (403, 401, 429), and the control plane
 * writes each one's Accepted condition back through the status subresource; an invalid one gets Invalid with the
 * field path and changes nothing.
 *
 * How the waypoint is run here: as runtime/waypoint.ts runs one in local mode (a pod labelled out of capture, the
 * fabric route back to it, the Gateway with the pod's IP in status.addresses), except that its xDS and CA
 * credential is a token of the node agent's service account bound to its node (the stand-in issues it, as the
 * kubelet's TokenRequest would), because the control plane only admits node agent accounts on xDS: the same
 * stand-in for the waypoint's own credential as local mode's node bootstrap token. Rendering waypoints in a
 * cluster (deployment controller, their own accounts) is not this test's subject.
 */
import test from 'ava';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey } from 'jose';
import { createLocalMesh, type LocalMesh } from '../../runtime/local-mesh.ts';
import type { KubernetesApi } from '../../runtime/kubernetes-mode.ts';
import { ipIn } from '../../runtime/netns.ts';
import { WAYPOINT_MAIN, waypointGateway } from '../../runtime/waypoint.ts';
import { startEchoServer, type ClusterNode, type Pod } from '../../runtime/index.ts';
import type { K8sObject, PodObject } from '../../shared/k8s/objects.ts';
import { WAYPOINT_READY_MESSAGE } from '../../waypoint/config.ts';
import { FakeKubeApiServer } from '../helpers/kube-api-server.ts';
import { until } from './helpers/cluster-edits.ts';

const ENROLLED = { 'istio.io/dataplane-mode': 'ambient' };
const PORT = 8080;
const VIP = '10.240.3.40';
const ISSUER = 'https://issuer.shop.example';
const HTTP_CALLS = path.join(import.meta.dirname, 'helpers', 'http-calls.ts');
const WEB = { group: '', kind: 'Service', name: 'web' };

let api: FakeKubeApiServer | undefined;
let mesh: LocalMesh | undefined;
let client: Pod;
let waypoint: ChildProcess | undefined;
let signingKey: CryptoKey;
let jwks: string;

function fake(): FakeKubeApiServer {
  if (api === undefined) throw new Error('the API server did not start');
  return api;
}

function runtimeAccess(server: FakeKubeApiServer): KubernetesApi {
  return {
    kubeconfig: server.kubeConfigYaml(),
    objects: {
      writeNamespace: async (namespace) => void server.apply(namespace),
      writePod: async (pod) => void server.apply(pod),
      updatePodStatus: async (pod, status) => {
        const current = (server.get('Pod', pod.metadata.namespace, pod.metadata.name) as PodObject | undefined) ?? pod;
        server.apply({ ...current, status });
      },
      removePod: async (namespace, name) => server.remove('Pod', namespace, name),
    },
    requestToken: async (namespace, serviceAccount, node, audiences) => server.issueServiceAccountToken(namespace, serviceAccount, node, audiences),
    readConfigMap: async (namespace, name) => server.configMaps.get(`${namespace}/${name}`)?.data as Record<string, string> | undefined,
  };
}

function agentEnvironment(node: ClusterNode): Record<string, string> {
  const text = readFileSync(`/proc/${node.agent!.pid}/environ`, 'utf8');
  return Object.fromEntries(text.split('\0').filter(Boolean).map((entry) => [entry.slice(0, entry.indexOf('=')), entry.slice(entry.indexOf('=') + 1)]));
}

interface CallResult {
  status: number;
  body: unknown;
  rateLimit?: string;
}

async function calls(requests: { method?: string; path: string; headers?: Record<string, string> }[]): Promise<CallResult[]> {
  const result = await client.exec(process.execPath, [HTTP_CALLS, JSON.stringify({ host: VIP, port: 80, requests })], { timeoutMs: 60_000 });
  if (result.code !== 0) throw new Error(`http-calls failed: ${result.stderr}`);
  return JSON.parse(result.stdout) as CallResult[];
}

const status = async (request: { method?: string; path: string; headers?: Record<string, string> }): Promise<number> => (await calls([request]))[0]!.status;

function accepted(kind: string, name: string): { status: string; reason: string; message: string; observedGeneration?: number } | undefined {
  const conditions = (fake().get(kind, 'shop', name)?.status as { conditions?: { type: string; status: string; reason: string; message: string }[] } | undefined)?.conditions;
  return conditions?.find((condition) => condition.type === 'Accepted');
}

function policy(kind: string, apiVersion: string, name: string, spec: Record<string, unknown>): K8sObject {
  return { apiVersion, kind, metadata: { name, namespace: 'shop', generation: 1 } as K8sObject['metadata'], spec };
}

test.before(async () => {
  const keys = await generateKeyPair('ES256', { extractable: true });
  signingKey = keys.privateKey;
  jwks = JSON.stringify({ keys: [{ ...(await exportJWK(keys.publicKey)), kid: 'shop-1', alg: 'ES256', use: 'sig' }] });
  mesh = await createLocalMesh({
    nodes: 2,
    name: 'k8sl7',
    kubernetes: {
      connect: async (fabric) => {
        api = await FakeKubeApiServer.start({ netns: fabric.netnsPath, host: fabric.address });
        return runtimeAccess(api);
      },
    },
  });
  const cluster = mesh.cluster;
  const web = await cluster.createPod({ node: 1, namespace: 'shop', name: 'web', serviceAccount: 'web', labels: { app: 'web' }, namespaceLabels: ENROLLED });
  client = await cluster.createPod({ node: 0, namespace: 'shop', name: 'client', serviceAccount: 'client' });
  await startEchoServer(web, { port: PORT, http: true, name: 'web' });

  // The waypoint: pod, route back from the fabric, Gateway in the API server, process.
  const node = cluster.node(1);
  const pod = await cluster.createPod({ node: 1, namespace: 'shop', name: 'wp-waypoint', serviceAccount: 'wp', labels: { 'istio.io/dataplane-mode': 'none', 'gateway.networking.k8s.io/gateway-name': 'wp' } });
  await ipIn(cluster.fabricNetns, ['route', 'replace', `${pod.ip}/32`, 'via', node.underlayIp]);
  fake().apply(waypointGateway('shop', 'wp', pod.ip) as K8sObject);
  const tokenFile = path.join(cluster.tmpDir, 'waypoint-token');
  await writeFile(tokenFile, fake().issueServiceAccountToken('istio-system', 'ambit-agent', node.name, ['istio-ca']), { mode: 0o600 });
  const logFile = path.join(cluster.tmpDir, 'waypoint-shop-wp.log');
  const log = openSync(logFile, 'a');
  try {
    waypoint = pod.spawn(process.execPath, [WAYPOINT_MAIN], {
      stdio: ['ignore', log, log],
      env: {
        ...process.env,
        AMBIT_WAYPOINT_NAMESPACE: 'shop',
        AMBIT_WAYPOINT_NAME: 'wp',
        AMBIT_POD_NAME: pod.name,
        AMBIT_NODE_NAME: node.name,
        AMBIT_XDS_ADDRESS: mesh.controlPlaneAddress!,
        AMBIT_ROOT_CERT_FILE: agentEnvironment(node).AMBIT_ROOT_CERT_FILE!,
        AMBIT_TOKEN_FILE: tokenFile,
      },
    });
  } finally {
    closeSync(log);
  }
  await until('the waypoint is ready', async () => {
    if (waypoint!.exitCode !== null) throw new Error(`the waypoint exited: ${await readFile(logFile, 'utf8')}`);
    return (await readFile(logFile, 'utf8').catch(() => '')).includes(WAYPOINT_READY_MESSAGE);
  });
  fake().apply({
    apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: 'shop', labels: { 'istio.io/use-waypoint': 'wp' } },
    spec: { clusterIP: VIP, clusterIPs: [VIP], selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: PORT }] },
  });
  await until('the web Service answers through the waypoint', async () => (await status({ path: '/' }).catch(() => 0)) === 200, 60_000);
});

test.after.always(async () => {
  waypoint?.kill();
  await mesh?.destroy();
  await api?.close();
});

test.serial('an AuthorizationPolicy applied to the API server: GET allowed, DELETE 403 at the waypoint; Accepted written back', async (t) => {
  fake().apply(policy('AuthorizationPolicy', 'security.istio.io/v1', 'web-viewer', {
    targetRefs: [WEB],
    action: 'ALLOW',
    rules: [{ from: [{ source: { principals: ['cluster.local/ns/shop/sa/client'] } }], to: [{ operation: { methods: ['GET'] } }] }],
  }));
  t.teardown(() => fake().remove('AuthorizationPolicy', 'shop', 'web-viewer'));
  await until('DELETE refused', async () => (await status({ method: 'DELETE', path: '/items/1' })) === 403);
  const results = await calls([{ path: '/items/1' }, { method: 'DELETE', path: '/items/1' }]);
  t.deepEqual(results.map((result) => result.status), [200, 403]);
  t.is(results[1]!.body, 'RBAC: access denied');
  await until('the Accepted condition', () => accepted('AuthorizationPolicy', 'web-viewer') !== undefined);
  t.like(accepted('AuthorizationPolicy', 'web-viewer'), { status: 'True', reason: 'Accepted', observedGeneration: 1 });
  fake().remove('AuthorizationPolicy', 'shop', 'web-viewer');
  await until('DELETE allowed again once the policy is deleted', async () => (await status({ method: 'DELETE', path: '/items/1' })) === 200);
});

test.serial('a RequestAuthentication applied to the API server: a bad token 401, a good one passes; Accepted written back', async (t) => {
  fake().apply(policy('RequestAuthentication', 'security.istio.io/v1', 'jwt', { targetRefs: [WEB], jwtRules: [{ issuer: ISSUER, jwks, audiences: ['web'] }] }));
  t.teardown(() => fake().remove('RequestAuthentication', 'shop', 'jwt'));
  const token = await new SignJWT({}).setProtectedHeader({ alg: 'ES256', kid: 'shop-1' }).setIssuer(ISSUER).setSubject('alice').setAudience('web').setIssuedAt().setExpirationTime('1h').sign(signingKey);
  await until('a bad token refused', async () => (await status({ path: '/', headers: { authorization: 'Bearer not.a.token' } })) === 401);
  t.is(await status({ path: '/', headers: { authorization: `Bearer ${token}` } }), 200);
  await until('the Accepted condition', () => accepted('RequestAuthentication', 'jwt') !== undefined);
  t.like(accepted('RequestAuthentication', 'jwt'), { status: 'True', reason: 'Accepted' });
});

test.serial('a LocalRateLimitPolicy applied to the API server: over the limit 429; an invalid one is Invalid with the field path and changes nothing', async (t) => {
  fake().apply(policy('LocalRateLimitPolicy', 'policy.ambit.dev/v1alpha1', 'tight', { targetRefs: [WEB], limits: [{ name: 'tight', requests: 2, unit: 'Hour', match: { paths: ['/limited*'] } }] }));
  t.teardown(() => fake().remove('LocalRateLimitPolicy', 'shop', 'tight'));
  await until('the limit in force', async () => (await status({ path: '/limited' })) === 429);
  t.is(await status({ path: '/free' }), 200, 'unmatched paths not limited');
  await until('the Accepted condition', () => accepted('LocalRateLimitPolicy', 'tight') !== undefined);
  t.like(accepted('LocalRateLimitPolicy', 'tight'), { status: 'True', reason: 'Accepted' });

  fake().apply(policy('LocalRateLimitPolicy', 'policy.ambit.dev/v1alpha1', 'broken', { targetRefs: [WEB], limits: [{ requests: 1, unit: 'Fortnight' }] }));
  t.teardown(() => fake().remove('LocalRateLimitPolicy', 'shop', 'broken'));
  await until('the Invalid condition', () => accepted('LocalRateLimitPolicy', 'broken') !== undefined);
  const invalid = accepted('LocalRateLimitPolicy', 'broken')!;
  t.like(invalid, { status: 'False', reason: 'Invalid' });
  t.regex(invalid.message, /spec\.limits\[0\]\.unit/);
  t.is(await status({ path: '/free' }), 200, 'the invalid limit is not enforced');
});
