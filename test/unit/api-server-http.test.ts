// The local API server (runtime/api-server/server.ts) over real HTTPS: the control plane's Kubernetes source (the
// official client's informers) lists and watches it, and clients that send garbage get a Status with the right code,
// never reach the cluster's writes, and leave the server serving.
import test from 'ava';
import https from 'node:https';
import { KubeConfig } from '@kubernetes/client-node';
import { KubernetesSource } from '../../controlplane/sources/kubernetes.ts';
import { kubernetesStatusPatch } from '../../controlplane/status/kubernetes-status-patch.ts';
import { ObjectStore, type StoreChange } from '../../controlplane/store.ts';
import { makeServingCredentials, type ServingCredentials } from '../../runtime/api-server/credentials.ts';
import { VersionedObjectStore } from '../../runtime/api-server/object-store.ts';
import { LocalApiServer, type ClusterWrites } from '../../runtime/api-server/server.ts';
import type { K8sObject } from '../../shared/k8s/objects.ts';
import { eventually } from '../helpers/xds-harness.ts';

const namespace = (name: string, labels: Record<string, string> = {}): K8sObject => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels } });
const pod = (name: string, ip: string): K8sObject => ({ apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: 'shop' }, spec: { nodeName: 'n0', containers: [{ name: 'app' }] }, status: { podIP: ip, phase: 'Running' } });

const policy = (name: string): K8sObject => ({ apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name, namespace: 'shop' }, spec: { action: 'DENY', rules: [{}] } });

/** Writes that record every call: a rejected request must never get this far. */
function recordingWrites(calls: string[]): ClusterWrites {
  const record = async (what: string, object: K8sObject): Promise<K8sObject> => {
    calls.push(what);
    return object;
  };
  return {
    create: (resource, object) => record(`create ${resource.plural}`, object),
    update: (resource, _namespace, _name, object) => record(`update ${resource.plural}`, object),
    patch: (resource, _namespace, name, change) => record(`patch ${resource.plural}`, change({ kind: resource.kind, metadata: { name } })),
    setStatus: (resource, _namespace, name, status) => record(`status ${resource.plural} ${JSON.stringify(status)}`, { kind: resource.kind, metadata: { name }, status } as K8sObject),
    remove: (resource, _namespace, name) => record(`delete ${resource.plural}`, { metadata: { name } }),
    containerLogFile: () => Promise.resolve('/dev/null'),
    podExists: () => false,
  };
}

async function startServer(t: { teardown(fn: () => unknown): void }) {
  const store = new VersionedObjectStore();
  const calls: string[] = [];
  const credentials = await makeServingCredentials(['127.0.0.1']);
  const server = await LocalApiServer.start({ store, writes: recordingWrites(calls), credentials });
  t.teardown(() => server.close());
  return { store, calls, credentials, server };
}

function request(server: LocalApiServer, credentials: ServingCredentials, method: string, path: string, options: { token?: string; body?: string; contentType?: string } = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const outgoing = https.request(`${server.url}${path}`, {
      method,
      ca: credentials.certPem,
      headers: {
        ...(options.token !== '' ? { authorization: `Bearer ${options.token ?? credentials.token}` } : {}),
        ...(options.contentType ? { 'content-type': options.contentType } : {}),
      },
    });
    outgoing.on('response', (response) => {
      let body = '';
      response.setEncoding('utf8').on('data', (chunk: string) => (body += chunk));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body }));
    });
    outgoing.on('error', reject);
    outgoing.end(options.body);
  });
}

test('the control plane Kubernetes source lists and watches the local API server with the official client', async (t) => {
  const { store, credentials, server } = await startServer(t);
  store.replaceAll([namespace('shop'), pod('a', '10.0.0.1')]);
  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromOptions({
    clusters: [{ name: 'local', server: server.url, caData: Buffer.from(credentials.certPem).toString('base64'), skipTLSVerify: false }],
    users: [{ name: 'local', token: credentials.token }],
    contexts: [{ name: 'local', cluster: 'local', user: 'local' }],
    currentContext: 'local',
  });
  const objects = new ObjectStore();
  const changes: StoreChange[] = [];
  objects.onChanges((batch) => changes.push(...batch));
  const source = new KubernetesSource({ kubeConfig, store: objects, onProblem: () => undefined, initialBackoffMs: 50 });
  t.teardown(() => source.stop());
  await source.start();
  t.deepEqual(objects.keys('Pod'), ['shop/a']);
  store.replaceAll([namespace('shop', { 'istio.io/dataplane-mode': 'ambient' }), pod('a', '10.0.0.1'), pod('b', '10.0.0.2')]);
  await eventually(() => objects.keys('Pod').length === 2 && objects.get('Namespace', 'shop')?.metadata?.labels?.['istio.io/dataplane-mode'] === 'ambient', 'the watch events');
  store.replaceAll([namespace('shop'), pod('b', '10.0.0.2')]);
  await eventually(() => objects.keys('Pod').join() === 'shop/b', 'the deletion');
  t.true(changes.some((change) => change.type === 'delete' && change.key === 'shop/a'));
});

test('rude clients get a Status with the right code, never reach the writes, and the server keeps serving', async (t) => {
  const { store, calls, credentials, server } = await startServer(t);
  store.replaceAll([namespace('shop'), pod('a', '10.0.0.1'), { apiVersion: 'v1', kind: 'Node', metadata: { name: 'n0' } }, policy('deny')]);
  const send = (method: string, path: string, options = {}) => request(server, credentials, method, path, options);
  const cases: [string, Promise<{ status: number; body: string }>, number, RegExp][] = [
    ['no token', send('GET', '/api/v1/pods', { token: '' }), 401, /Unauthorized/],
    ['a wrong token', send('GET', '/api/v1/pods', { token: 'x'.repeat(64) }), 401, /Unauthorized/],
    ['a token one byte short', send('GET', '/api/v1/pods', { token: credentials.token.slice(1) }), 401, /Unauthorized/],
    ['a wrong token on a write', send('POST', '/api/v1/namespaces/shop/pods', { token: 'nope', body: JSON.stringify(pod('b', '')) }), 401, /Unauthorized/],
    ['a body that is not JSON', send('POST', '/api/v1/namespaces/shop/pods', { body: '{"kind": "Pod", ' }), 400, /not JSON/],
    ['an object without a name', send('POST', '/api/v1/namespaces/shop/pods', { body: '{"kind":"Pod","metadata":{}}' }), 422, /metadata\.name/],
    ['another namespace in the body', send('POST', '/api/v1/namespaces/shop/pods', { body: JSON.stringify({ ...pod('b', ''), metadata: { name: 'b', namespace: 'other' } }) }), 400, /does not match/],
    ['another kind in the body', send('POST', '/api/v1/namespaces/shop/pods', { body: JSON.stringify(namespace('x')) }), 400, /kind Namespace does not match/],
    ['an existing name', send('POST', '/api/v1/namespaces/shop/pods', { body: JSON.stringify(pod('a', '')) }), 409, /already exists/],
    ['an unknown resource', send('GET', '/api/v1/widgets'), 404, /could not find/],
    ['a namespaced name without a namespace', send('GET', '/api/v1/pods/a'), 404, /name a namespace/],
    ['bad percent-encoding', send('GET', '/api/v1/namespaces/%E0%A4%A/pods'), 400, /percent-encoding/],
    ['a JSON patch that is not a list', send('PATCH', '/api/v1/namespaces/shop/pods/a', { body: '{"op":"add"}', contentType: 'application/json-patch+json' }), 400, /list of operations/],
    ['a JSON patch op without a path', send('PATCH', '/api/v1/namespaces/shop/pods/a', { body: '[{"op":"add"}]', contentType: 'application/json-patch+json' }), 400, /op and path/],
    ['server-side apply', send('PATCH', '/api/v1/namespaces/shop/pods/a', { body: '{}', contentType: 'application/apply-patch+yaml' }), 415, /server-side apply/],
    ['a patch renaming the object', send('PATCH', '/api/v1/namespaces/shop/pods/a', { body: '{"metadata":{"name":"b"}}', contentType: 'application/merge-patch+json' }), 422, /metadata\.name/],
    ['a patch of a missing object', send('PATCH', '/api/v1/namespaces/shop/pods/zz', { body: '{}', contentType: 'application/merge-patch+json' }), 404, /not found/],
    ['a write to the runtime-owned nodes', send('DELETE', '/api/v1/nodes/n0'), 405, /local runtime's own/],
    ['a bad label selector', send('GET', '/api/v1/pods?labelSelector=a%20b%20c'), 400, /unable to parse/],
    ['an unsupported field selector', send('GET', '/api/v1/pods?fieldSelector=spec.foo%3Dx'), 400, /not supported/],
    ['a status write to a pod (the runtime owns pod status)', send('PATCH', '/api/v1/namespaces/shop/pods/a/status', { body: '{"status":{}}', contentType: 'application/merge-patch+json' }), 404, /subresource status/],
    ['a status write to a missing policy', send('PATCH', '/apis/security.istio.io/v1/namespaces/shop/authorizationpolicies/zz/status', { body: '{"status":{}}', contentType: 'application/merge-patch+json' }), 404, /not found/],
    ['a status that is not an object', send('PATCH', '/apis/security.istio.io/v1/namespaces/shop/authorizationpolicies/deny/status', { body: '{"status":[1]}', contentType: 'application/merge-patch+json' }), 422, /status must be an object/],
    ['a watch from before the history', send('GET', '/api/v1/pods?watch=true&resourceVersion=abc'), 200, /"type":"ERROR".*"code":410/],
  ];
  for (const [what, response, status, body] of cases) {
    const answer = await response;
    t.is(answer.status, status, `${what}: ${answer.body}`);
    t.regex(answer.body, body, what);
    if (answer.status !== 200) t.like(JSON.parse(answer.body), { kind: 'Status', code: status }, what);
  }
  t.deepEqual(calls, [], 'nothing rejected reached the cluster');
  const pods = JSON.parse((await send('GET', '/api/v1/namespaces/shop/pods')).body) as { items: K8sObject[] };
  t.deepEqual(pods.items.map((item) => item.metadata?.name), ['a'], 'the server still serves');
  t.is((await send('PATCH', '/api/v1/namespaces/shop/pods/a', { body: '{"metadata":{"labels":{"x":"y"}}}', contentType: 'application/strategic-merge-patch+json' })).status, 200);
  t.deepEqual(calls, ['patch pods']);
});

test("the control plane's status writer writes a policy's status through the status subresource, and only its status", async (t) => {
  const { store, calls, credentials, server } = await startServer(t);
  store.replaceAll([namespace('shop'), policy('deny')]);
  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromOptions({
    clusters: [{ name: 'local', server: server.url, caData: Buffer.from(credentials.certPem).toString('base64'), skipTLSVerify: false }],
    users: [{ name: 'local', token: credentials.token }],
    contexts: [{ name: 'local', cluster: 'local', user: 'local' }],
    currentContext: 'local',
  });
  const patchStatus = kubernetesStatusPatch(kubeConfig);
  const conditions = [{ type: 'Accepted', status: 'True', reason: 'Accepted' }];
  await patchStatus({ kind: 'AuthorizationPolicy', namespace: 'shop', name: 'deny' }, { conditions });
  t.deepEqual(calls, [`status authorizationpolicies ${JSON.stringify({ conditions })}`]);
  // A status write names only the status: a spec in the body does not reach the cluster.
  const answer = await request(server, credentials, 'PATCH', '/apis/security.istio.io/v1/namespaces/shop/authorizationpolicies/deny/status', {
    body: JSON.stringify({ spec: { action: 'ALLOW' }, status: { conditions: [] } }),
    contentType: 'application/merge-patch+json',
  });
  t.is(answer.status, 200, answer.body);
  t.is(calls[1], `status authorizationpolicies ${JSON.stringify({ conditions: [] })}`);
  const discovery = JSON.parse((await request(server, credentials, 'GET', '/apis/security.istio.io/v1')).body) as { resources: { name: string }[] };
  t.true(discovery.resources.some((resource) => resource.name === 'authorizationpolicies/status'));
});
