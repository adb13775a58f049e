// Unit tests: the local API server's parts (runtime/api-server/): patches as kubectl sends them, selectors, the
// versioned store's watch semantics, and the manifest-file edits writes become (runtime/workloads/manifest-files.ts).
import test from 'ava';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { ApiError } from '../../runtime/api-server/errors.ts';
import { VersionedObjectStore, type WatchEvent } from '../../runtime/api-server/object-store.ts';
import { applyPatch, jsonPatch, strategicMergePatch } from '../../runtime/api-server/patch.ts';
import { resourceByKind } from '../../runtime/api-server/resources.ts';
import { fieldSelector, labelSelector } from '../../runtime/api-server/selectors.ts';
import { addDocumentFile, findDocument, removeDocument, replaceDocument } from '../../runtime/workloads/manifest-files.ts';
import type { K8sObject } from '../../shared/k8s/objects.ts';

const pods = resourceByKind('Pod')!;

test('strategic merge patch merges containers by name and env by name, honours $patch delete, drops directives', (t) => {
  const pod = { spec: { containers: [{ name: 'a', image: 'x', env: [{ name: 'A', value: '1' }] }, { name: 'b', image: 'y' }] } };
  const patched = strategicMergePatch(pod, {
    spec: {
      '$setElementOrder/containers': [{ name: 'a' }, { name: 'b' }],
      containers: [{ name: 'a', image: 'x2', env: [{ name: 'B', value: '2' }] }, { name: 'b', $patch: 'delete' }],
    },
  });
  t.deepEqual(patched, { spec: { containers: [{ name: 'a', image: 'x2', env: [{ name: 'A', value: '1' }, { name: 'B', value: '2' }] }] } });
});

test('merge patch replaces lists and deletes with null; labels are what kubectl label sends', (t) => {
  const namespace = { metadata: { name: 'shop', labels: { a: '1', b: '2' } } };
  t.deepEqual(applyPatch('application/merge-patch+json', namespace, { metadata: { labels: { a: null, c: '3' } } }), { metadata: { name: 'shop', labels: { b: '2', c: '3' } } });
  t.deepEqual(applyPatch('application/strategic-merge-patch+json; charset=utf-8', namespace, { metadata: { labels: { 'istio.io/dataplane-mode': 'ambient' } } }), {
    metadata: { name: 'shop', labels: { a: '1', b: '2', 'istio.io/dataplane-mode': 'ambient' } },
  });
  const error = t.throws(() => applyPatch('application/apply-patch+yaml', namespace, {}), { instanceOf: ApiError });
  t.is(error.code, 'UnsupportedMediaType');
});

test('JSON patch: add, replace, remove, test; a failed test or a missing member is Invalid and changes nothing', (t) => {
  const object = { metadata: { labels: { a: '1' } }, list: [1, 2] };
  t.deepEqual(
    jsonPatch(object, [
      { op: 'add', path: '/metadata/labels/b~1c', value: '2' },
      { op: 'replace', path: '/list/0', value: 9 },
      { op: 'add', path: '/list/-', value: 3 },
      { op: 'remove', path: '/metadata/labels/a' },
    ]),
    { metadata: { labels: { 'b/c': '2' } }, list: [9, 2, 3] },
  );
  t.is(t.throws(() => jsonPatch(object, [{ op: 'test', path: '/list/0', value: 5 }]), { instanceOf: ApiError }).code, 'Invalid');
  t.is(t.throws(() => jsonPatch(object, [{ op: 'remove', path: '/nope' }]), { instanceOf: ApiError }).code, 'Invalid');
  t.deepEqual(object, { metadata: { labels: { a: '1' } }, list: [1, 2] });
});

test('label selectors (=, !=, exists, !exists, in, notin) and field selectors; an unknown field is a 400', (t) => {
  const object: K8sObject = { kind: 'Pod', metadata: { name: 'p', namespace: 'shop', labels: { app: 'web', tier: 'front' } } };
  for (const selector of ['app=web', 'app==web,tier', 'app in (web, api)', 'tier notin (back)', '!missing', 'tier!=back']) t.true(labelSelector(selector)(object), selector);
  for (const selector of ['app=api', 'missing', 'app notin (web)', '!tier']) t.false(labelSelector(selector)(object), selector);
  t.true(fieldSelector('metadata.name=p,metadata.namespace==shop')(object));
  t.false(fieldSelector('metadata.name!=p')(object));
  t.is(t.throws(() => fieldSelector('spec.whatever=x'), { instanceOf: ApiError }).code, 'BadRequest');
  t.is(t.throws(() => labelSelector('a b c'), { instanceOf: ApiError }).code, 'BadRequest');
});

test('the store versions changes, replays history to a watch from a version, and answers 410 past what it kept', (t) => {
  const store = new VersionedObjectStore();
  const pod = (name: string, phase: string): K8sObject => ({ apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: 'shop' }, status: { phase } });
  store.replaceAll([pod('a', 'Pending'), pod('b', 'Running')]);
  const listed = store.resourceVersion;
  const uid = store.get(pods, 'shop', 'a')!.metadata!.uid;
  store.replaceAll([pod('a', 'Pending'), pod('b', 'Running')]);
  t.is(store.resourceVersion, listed, 'the same snapshot changes nothing');
  store.replaceAll([pod('a', 'Running')]);
  const events: WatchEvent[] = [];
  const stop = store.watch(pods, 'shop', String(listed), (event) => events.push(event));
  t.deepEqual(events.map((event) => `${event.type} ${event.object.metadata!.name}`), ['MODIFIED a', 'DELETED b']);
  t.is(store.get(pods, 'shop', 'a')!.metadata!.uid, uid, 'a change keeps the uid');
  store.replaceAll([pod('a', 'Running'), pod('c', 'Pending')]);
  t.is(events.at(-1)!.type, 'ADDED');
  stop();
  store.replaceAll([pod('c', 'Running')]);
  t.is(events.length, 3, 'a stopped watch hears nothing');
  const all: WatchEvent[] = [];
  store.watch(pods, undefined, undefined, (event) => all.push(event)); // no version: the current objects, as ADDED
  t.deepEqual(all.map((event) => `${event.type} ${event.object.metadata!.name}`), ['ADDED c']);
  for (let round = 0; round < 10_001; round++) store.replaceAll([pod('churn', String(round))]);
  t.is(t.throws(() => store.watch(pods, undefined, String(listed), () => undefined), { instanceOf: ApiError }).code, 'Expired');
});

test('manifest edits: a document replaced keeps the file comment and the other documents; removed; a new object is a file of its own', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ambit-manifest-edit-test-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'ns.yaml');
  await writeFile(file, '# my namespaces\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n---\n# ops is flow style\napiVersion: v1\nkind: Namespace\nmetadata: {name: ops}\n');
  const shop = await findDocument(dir, 'Namespace', undefined, 'shop');
  t.like(shop, { file, index: 0 });
  const undo = await replaceDocument(shop!, { ...shop!.object, metadata: { name: 'shop', labels: { 'istio.io/dataplane-mode': 'ambient' } } });
  const edited = await readFile(file, 'utf8');
  t.true(edited.startsWith('# my namespaces\n'), edited);
  t.regex(edited, /labels:\n\s+istio\.io\/dataplane-mode: ambient\n---\n# ops is flow style\n[^]*metadata: \{ name: ops \}/);
  await undo();
  t.regex(await readFile(file, 'utf8'), /^# my namespaces\napiVersion: v1\nkind: Namespace\nmetadata:\n {2}name: shop\n---\n/);
  const ops = await findDocument(dir, 'Namespace', undefined, 'ops');
  await removeDocument(ops!);
  t.is(await findDocument(dir, 'Namespace', undefined, 'ops'), undefined);
  t.truthy(await findDocument(dir, 'Namespace', undefined, 'shop'));
  await removeDocument((await findDocument(dir, 'Namespace', undefined, 'shop'))!);
  t.deepEqual(await readdir(dir), [], 'a file left with no document goes');
  const removeWeb = await addDocumentFile(dir, { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'web', namespace: 'ops' } }, true);
  t.deepEqual(await readdir(dir), ['ops.pod.web.yaml']);
  t.truthy(await findDocument(dir, 'Pod', 'ops', 'web'));
  t.is(await findDocument(dir, 'Pod', 'shop', 'web'), undefined, 'namespaces are part of the name');
  await removeWeb();
  t.deepEqual(await readdir(dir), []);
});
