// The local cluster's API (runtime/workloads/cluster-api.ts) over real HTTPS, on a user directory: a Pod's labels
// change through it (written into the user's file, then applied), its spec does not (422 as a cluster answers, the
// file untouched, nothing applied); a status write is kept on the object and never reaches the user's files.
import test from 'ava';
import https from 'node:https';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parse } from 'yaml';
import { resourceByKind } from '../../runtime/api-server/resources.ts';
import { ClusterApi } from '../../runtime/workloads/cluster-api.ts';

const POD = `apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec:
  containers:
  - {name: web, image: busybox, env: [{name: A, value: "1"}]}
`;
const POLICY = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny, namespace: shop}
spec:
  targetRefs: [{kind: Service, group: "", name: web}]
  action: DENY
  rules: [{}]
`;

async function startApi(t: { teardown(fn: () => unknown): void }) {
  const root = await mkdtemp(path.join(os.tmpdir(), 'ambit-cluster-api-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  const [userDir, clusterDir, runDir] = ['user', 'cluster', 'run'].map((name) => path.join(root, name)) as [string, string, string];
  for (const made of [userDir, path.join(clusterDir, 'user'), runDir]) await mkdir(made, { recursive: true });
  await writeFile(path.join(userDir, 'web.yaml'), POD);
  await writeFile(path.join(userDir, 'policy.yaml'), POLICY);
  // The cluster state as the supervisor publishes it: the pod, and the user's other objects copied under user/.
  await mkdir(path.join(clusterDir, 'pods'));
  await writeFile(path.join(clusterDir, 'pods', 'shop.web.yaml'), POD);
  await writeFile(path.join(clusterDir, 'user', '0001-AuthorizationPolicy.shop.deny.yaml'), POLICY);
  const applied: number[] = [];
  const api = await ClusterApi.start({ userDir, clusterDir, runDir, logDir: path.join(runDir, 'logs'), pods: () => [], nodes: () => [], apply: () => {
    applied.push(1);
    return Promise.resolve([]);
  } });
  t.teardown(() => api.close());
  const kubeconfig = parse(await readFile(api.kubeconfigFile, 'utf8')) as { users: { user: { token: string } }[]; clusters: { cluster: { 'certificate-authority-data': string } }[] };
  const send = (method: string, url: string, body: unknown, contentType = 'application/merge-patch+json') =>
    new Promise<{ status: number; body: string }>((resolve, reject) => {
      const outgoing = https.request(`${api.url}${url}`, {
        method,
        ca: Buffer.from(kubeconfig.clusters[0]!.cluster['certificate-authority-data'], 'base64'),
        headers: { authorization: `Bearer ${kubeconfig.users[0]!.user.token}`, 'content-type': contentType },
      });
      outgoing.on('response', (response) => {
        let text = '';
        response.setEncoding('utf8').on('data', (chunk: string) => (text += chunk));
        response.on('end', () => resolve({ status: response.statusCode ?? 0, body: text }));
      });
      outgoing.on('error', reject);
      outgoing.end(JSON.stringify(body));
    });
  return { userDir, applied, send, api };
}

test("a Pod's labels change through the API, its spec does not", async (t) => {
  const { userDir, applied, send } = await startApi(t);
  const respec = await send('PATCH', '/api/v1/namespaces/shop/pods/web', [{ op: 'replace', path: '/spec/containers/0/env/0/value', value: '2' }], 'application/json-patch+json');
  t.is(respec.status, 422, respec.body);
  t.regex(respec.body, /Forbidden: pod updates may not change fields other than metadata\.labels and metadata\.annotations.*edit \S+web\.yaml/);
  t.is(await readFile(path.join(userDir, 'web.yaml'), 'utf8'), POD, 'the file is untouched');
  t.deepEqual(applied, [], 'nothing was applied');
  const relabel = await send('PATCH', '/api/v1/namespaces/shop/pods/web', { metadata: { labels: { locked: 'true' } } });
  t.is(relabel.status, 200, relabel.body);
  t.like((parse(await readFile(path.join(userDir, 'web.yaml'), 'utf8')) as { metadata: { labels: Record<string, string> } }).metadata.labels, { app: 'web', locked: 'true' });
  t.is(applied.length, 1);
});

test("a policy's status is kept on the object, not written into the user's file", async (t) => {
  const { userDir, applied, send, api } = await startApi(t);
  const conditions = [{ type: 'Accepted', status: 'True', reason: 'Accepted' }];
  const written = await send('PATCH', '/apis/security.istio.io/v1/namespaces/shop/authorizationpolicies/deny/status', { status: { conditions } });
  t.is(written.status, 200, written.body);
  t.deepEqual((JSON.parse(written.body) as { status: unknown }).status, { conditions });
  t.deepEqual(api.store.get(resourceByKind('AuthorizationPolicy')!, 'shop', 'deny')?.status, { conditions }, 'what clients read');
  t.is(await readFile(path.join(userDir, 'policy.yaml'), 'utf8'), POLICY);
  t.deepEqual(applied, []);
});
