/**
 * The Kubernetes paths of the root store and publisher, against an in-memory CoreV1Api that fails as the real
 * client does (ApiException with the HTTP code), and the two-replica race also over HTTP against the shared test
 * API server (test/helpers/kube-api-server.ts), whose held writes make the race certain.
 */
import test from 'ava';
import { ApiException, CoreV1Api, type V1ConfigMap, type V1Secret } from '@kubernetes/client-node';
import { publishRootConfigMap, publishRootToAllNamespaces } from '../../controlplane/ca/root-publisher.ts';
import { openKubernetesRoot } from '../../controlplane/ca/root-store.ts';
import { spiffeId, verifyCertificateChain } from '../../shared/identity/index.ts';
import { FakeKubeApiServer } from '../helpers/kube-api-server.ts';

const TD = 'cluster.local';

function notFound(what: string): ApiException<unknown> {
  return new ApiException(404, `${what} not found`, { kind: 'Status', code: 404, reason: 'NotFound' }, {});
}

function fakeCore(namespaces: string[]) {
  const secrets = new Map<string, V1Secret>();
  const configMaps = new Map<string, V1ConfigMap>();
  const writes: string[] = [];
  let resourceVersion = 0;
  const core = {
    async readNamespacedSecret({ name, namespace }: { name: string; namespace: string }) {
      const secret = secrets.get(`${namespace}/${name}`);
      if (!secret) throw notFound(`secret ${namespace}/${name}`);
      return structuredClone(secret);
    },
    async createNamespacedSecret({ namespace, body }: { namespace: string; body: V1Secret }) {
      const key = `${namespace}/${body.metadata!.name}`;
      if (secrets.has(key)) throw new ApiException(409, 'AlreadyExists', { code: 409 }, {});
      writes.push(`create secret ${key}`);
      secrets.set(key, { ...structuredClone(body), metadata: { ...body.metadata, resourceVersion: String(++resourceVersion) } });
      return body;
    },
    async readNamespacedConfigMap({ name, namespace }: { name: string; namespace: string }) {
      const configMap = configMaps.get(`${namespace}/${name}`);
      if (!configMap) throw notFound(`configmap ${namespace}/${name}`);
      return structuredClone(configMap);
    },
    async createNamespacedConfigMap({ namespace, body }: { namespace: string; body: V1ConfigMap }) {
      const key = `${namespace}/${body.metadata!.name}`;
      if (configMaps.has(key)) throw new ApiException(409, 'AlreadyExists', { code: 409 }, {});
      writes.push(`create configmap ${key}`);
      configMaps.set(key, { ...structuredClone(body), metadata: { ...body.metadata, resourceVersion: String(++resourceVersion) } });
      return body;
    },
    async replaceNamespacedConfigMap({ name, namespace, body }: { name: string; namespace: string; body: V1ConfigMap }) {
      const key = `${namespace}/${name}`;
      if (configMaps.get(key)?.metadata?.resourceVersion !== body.metadata?.resourceVersion) throw new ApiException(409, 'Conflict', { code: 409 }, {});
      writes.push(`replace configmap ${key}`);
      configMaps.set(key, { ...structuredClone(body), metadata: { ...body.metadata, resourceVersion: String(++resourceVersion) } });
      return body;
    },
    async listNamespace() {
      return { items: namespaces.map((name) => ({ metadata: { name } })) };
    },
  };
  return { core: core as unknown as CoreV1Api, secrets, configMaps, writes };
}

test('the root is created in Secret istio-ca-secret on first start and loaded from it afterwards', async (t) => {
  const api = fakeCore(['istio-system']);
  const first = await openKubernetesRoot({ core: api.core, namespace: 'istio-system', trustDomain: TD });
  t.true(first.created);
  const secret = api.secrets.get('istio-system/istio-ca-secret')!;
  t.is(Buffer.from(secret.data!['ca-cert.pem']!, 'base64').toString(), first.ca.rootCertPem);
  t.truthy(secret.data!['ca-key.pem']);

  const second = await openKubernetesRoot({ core: api.core, namespace: 'istio-system', trustDomain: TD });
  t.false(second.created);
  t.is(second.ca.rootCertPem, first.ca.rootCertPem);
  const issued = await first.ca.issueWorkloadCertificate(spiffeId(TD, 'a', 'b'));
  t.is(verifyCertificateChain({ leafPem: issued.certPem, rootsPem: [second.ca.rootCertPem], trustDomain: TD }).uri, 'spiffe://cluster.local/ns/a/sa/b');
  t.deepEqual(api.writes, ['create secret istio-system/istio-ca-secret'], 'the second start wrote nothing');
});

test('two replicas starting together end with one root', async (t) => {
  const api = fakeCore(['istio-system']);
  const [a, b] = await Promise.all([
    openKubernetesRoot({ core: api.core, namespace: 'istio-system', trustDomain: TD }),
    openKubernetesRoot({ core: api.core, namespace: 'istio-system', trustDomain: TD }),
  ]);
  t.is(a.ca.rootCertPem, b.ca.rootCertPem);
  t.is([a.created, b.created].filter(Boolean).length, 1);
});

test('two replicas racing on the real API path (HTTP, 409 on the second create) end with the one root stored', async (t) => {
  const api = await FakeKubeApiServer.start();
  t.teardown(() => api.close());
  // Each replica its own client, as two pods would have.
  const replica = () => openKubernetesRoot({ core: api.kubeConfig().makeApiClient(CoreV1Api), namespace: 'istio-system', trustDomain: TD });
  const createsSeen = () => api.requests.filter((request) => request === 'POST /api/v1/namespaces/istio-system/secrets').length;
  // Both read "not found" and both try to create before either create lands: the race, made certain.
  api.holdWrites();
  const racing = Promise.all([replica(), replica()]);
  for (const deadline = Date.now() + 10_000; createsSeen() < 2; await new Promise((resolve) => setTimeout(resolve, 10))) {
    if (Date.now() > deadline) t.fail(`both replicas should try to create the Secret; requests: ${api.requests.join(', ')}`);
  }
  api.releaseWrites();
  const [a, b] = await racing;
  t.is([a.created, b.created].filter(Boolean).length, 1, 'one replica created the root, the other lost the create');
  t.is(a.ca.rootCertPem, b.ca.rootCertPem, 'the loser adopted the stored root instead of serving its own');
  const stored = api.secrets.get('istio-system/istio-ca-secret') as { data: Record<string, string> };
  t.is(Buffer.from(stored.data['ca-cert.pem']!, 'base64').toString(), a.ca.rootCertPem);
  const issued = await b.ca.issueWorkloadCertificate(spiffeId(TD, 'a', 'b'));
  t.is(verifyCertificateChain({ leafPem: issued.certPem, rootsPem: [a.ca.rootCertPem], trustDomain: TD }).uri, 'spiffe://cluster.local/ns/a/sa/b', 'the loser signs with the stored key');
});

test('the root is published as ConfigMap istio-ca-root-cert in every namespace, and rewritten only when it changes', async (t) => {
  const api = fakeCore(['default', 'shop', 'istio-system']);
  const { ca } = await openKubernetesRoot({ core: api.core, namespace: 'istio-system', trustDomain: TD });
  t.deepEqual(await publishRootToAllNamespaces(api.core, ca.rootCertPem), ['default', 'shop', 'istio-system']);
  for (const namespace of ['default', 'shop', 'istio-system']) {
    t.is(api.configMaps.get(`${namespace}/istio-ca-root-cert`)?.data?.['root-cert.pem'], ca.rootCertPem);
  }
  t.deepEqual(await publishRootToAllNamespaces(api.core, ca.rootCertPem), [], 'nothing to do the second time');
  t.true(await publishRootConfigMap(api.core, 'shop', 'another root\n'));
  t.is(api.configMaps.get('shop/istio-ca-root-cert')?.data?.['root-cert.pem'], 'another root\n');
  t.true(api.writes.includes('replace configmap shop/istio-ca-root-cert'));
});
