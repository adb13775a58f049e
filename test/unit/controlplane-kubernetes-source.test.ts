// The Kubernetes source (client-node informers) against the stand-in API server: initial list, watch events,
// bookmarks, reconnects, and 410 Gone -> relist with no event lost or applied twice.
import test from 'ava';
import { KubernetesSource } from '../../controlplane/sources/kubernetes.ts';
import type { SourceProblem } from '../../controlplane/sources/source.ts';
import { ObjectStore, type StoreChange } from '../../controlplane/store.ts';
import { FakeKubeApiServer } from '../helpers/kube-api-server.ts';
import { eventually, namespaceObject, podObject } from '../helpers/xds-harness.ts';

async function startSource(t: { teardown(fn: () => unknown): void }, api: FakeKubeApiServer) {
  const store = new ObjectStore();
  const changes: StoreChange[] = [];
  store.onChanges((batch) => changes.push(...batch));
  const problems: SourceProblem[] = [];
  const source = new KubernetesSource({ kubeConfig: api.kubeConfig(), store, onProblem: (problem) => problems.push(problem), initialBackoffMs: 50 });
  t.teardown(() => source.stop());
  await source.start();
  return { store, changes, problems, source };
}

function describe(change: StoreChange): string {
  return `${change.type} ${change.kind} ${change.key} rv=${(change.object.metadata as { resourceVersion?: string }).resourceVersion}`;
}

test('the initial list arrives as one batch, then watch events apply as they happen', async (t) => {
  const api = await FakeKubeApiServer.start();
  t.teardown(() => api.close());
  api.apply(namespaceObject('shop'));
  api.apply(podObject({ name: 'a', namespace: 'shop', ip: '10.0.0.1' }));
  const { store, changes } = await startSource(t, api);
  t.deepEqual(store.keys('Pod'), ['shop/a']);
  t.is(store.get('Pod', 'shop/a')?.kind, 'Pod', 'list items get their kind back');
  t.is(changes.length, 2);

  await eventually(() => api.openWatches('Pod') === 1, 'the pod watch');
  api.apply(podObject({ name: 'b', namespace: 'shop', ip: '10.0.0.2' }));
  api.apply(podObject({ name: 'a', namespace: 'shop', ip: '10.0.0.1', labels: { app: 'x' } }));
  api.remove('Pod', 'shop', 'b');
  await eventually(() => changes.length === 5, 'three watch events');
  t.deepEqual(changes.slice(2).map((change) => `${change.type} ${change.key}`), ['upsert shop/b', 'upsert shop/a', 'delete shop/b']);
  t.deepEqual(store.get('Pod', 'shop/a')?.metadata?.labels, { app: 'x' });
  t.true(api.requests.some((request) => request.startsWith('GET /api/v1/pods?') && request.includes('watch=true') && request.includes('allowWatchBookmarks=true')), 'watches ask for bookmarks');
});

test('after a bookmark, a reconnecting watch resumes from the bookmarked version without relisting', async (t) => {
  const api = await FakeKubeApiServer.start();
  t.teardown(() => api.close());
  api.apply(podObject({ name: 'a', namespace: 'shop', ip: '10.0.0.1' }));
  const { changes } = await startSource(t, api);
  await eventually(() => api.openWatches('Pod') === 1 && api.openWatches('Node') === 1, 'the watches');
  // Other kinds move the global resourceVersion on; only a bookmark tells the pod watch about it.
  for (let index = 0; index < 3; index++) api.apply({ apiVersion: 'v1', kind: 'Node', metadata: { name: `node-${index}` } });
  await eventually(() => changes.length === 4, 'the node events');
  const bookmarked = api.resourceVersion;
  t.true(api.bookmark() >= 1);
  await new Promise((resolve) => setTimeout(resolve, 100));
  const podLists = () => api.requests.filter((request) => request === 'GET /api/v1/pods').length;
  const listsBefore = podLists();
  api.dropWatches();
  await eventually(() => api.requests.some((request) => request.startsWith('GET /api/v1/pods?') && request.includes(`resourceVersion=${bookmarked}`)), 'a watch from the bookmark');
  t.is(podLists(), listsBefore, 'no relist was needed');
  t.is(changes.length, 4, 'nothing was applied again');
});

test('410 Gone: the informer relists, and the store sees each missed change exactly once', async (t) => {
  const api = await FakeKubeApiServer.start();
  t.teardown(() => api.close());
  api.apply(namespaceObject('shop'));
  for (const name of ['a', 'b', 'c']) api.apply(podObject({ name, namespace: 'shop', ip: '10.0.0.1' }));
  const { store, changes } = await startSource(t, api);
  await eventually(() => api.openWatches('Pod') === 1, 'the pod watch');
  const seen = changes.length;

  // A partition: the watch breaks, changes happen, history is compacted, then the client comes back.
  api.holdWatches();
  api.apply(podObject({ name: 'a', namespace: 'shop', ip: '10.0.0.1', labels: { moved: 'yes' } }));
  api.remove('Pod', 'shop', 'b');
  api.apply(podObject({ name: 'd', namespace: 'shop', ip: '10.0.0.4' }));
  api.compact();
  api.releaseWatches();

  await eventually(() => store.keys('Pod').sort().join() === 'shop/a,shop/c,shop/d' && store.get('Pod', 'shop/a')?.metadata?.labels?.moved === 'yes', 'the relisted state');
  await eventually(() => api.openWatches('Pod') === 1, 'the new watch');
  const missed = changes.slice(seen).map(describe).sort();
  t.deepEqual(
    missed.map((line) => line.replace(/ rv=\d+/, '')),
    ['delete Pod shop/b', 'upsert Pod shop/a', 'upsert Pod shop/d'],
    'each missed change once; the unchanged pod c is not re-applied',
  );
  t.true(api.requests.filter((request) => request === 'GET /api/v1/pods').length >= 2, 'it relisted');

  // And the watch works after the relist.
  api.apply(podObject({ name: 'e', namespace: 'shop', ip: '10.0.0.5' }));
  await eventually(() => store.get('Pod', 'shop/e') !== undefined, 'a live event after the relist');
  t.is(changes.filter((change) => change.key === 'shop/e').length, 1);
});

test('a watch the API server ends is reopened from the last version: no event lost or doubled', async (t) => {
  const api = await FakeKubeApiServer.start();
  t.teardown(() => api.close());
  const { changes } = await startSource(t, api);
  await eventually(() => api.openWatches('Pod') === 1, 'the pod watch');
  api.apply(podObject({ name: 'a', namespace: 'shop', ip: '10.0.0.1' }));
  await eventually(() => changes.length === 1, 'the first event');
  api.holdWatches();
  api.apply(podObject({ name: 'b', namespace: 'shop', ip: '10.0.0.2' }));
  api.releaseWatches();
  await eventually(() => changes.length === 2, 'the missed event replayed from history');
  await eventually(() => api.openWatches('Pod') === 1, 'the reopened watch');
  api.apply(podObject({ name: 'c', namespace: 'shop', ip: '10.0.0.3' }));
  await eventually(() => changes.length === 3, 'a live event');
  t.deepEqual(changes.map((change) => change.key), ['shop/a', 'shop/b', 'shop/c']);
});

test('an API server outage: the source retries with backoff, reports it, and resumes without losing or doubling events', async (t) => {
  const api = await FakeKubeApiServer.start();
  t.teardown(() => api.close());
  api.apply(podObject({ name: 'a', namespace: 'shop', ip: '10.0.0.1' }));
  const { store, changes, problems } = await startSource(t, api);
  await eventually(() => api.openWatches('Pod') === 1, 'the pod watch');

  api.fail();
  // Changes the source cannot see yet (made directly in the server's state).
  api.apply(podObject({ name: 'b', namespace: 'shop', ip: '10.0.0.2' }));
  api.remove('Pod', 'shop', 'a');
  await eventually(() => problems.some((problem) => problem.kind === 'Pod' && /retrying/.test(problem.message)), 'the outage to be reported');
  api.recover();

  await eventually(() => store.keys('Pod').join() === 'shop/b', 'the state after the outage');
  t.deepEqual(changes.map((change) => `${change.type} ${change.key}`), ['upsert shop/a', 'upsert shop/b', 'delete shop/a']);
});
