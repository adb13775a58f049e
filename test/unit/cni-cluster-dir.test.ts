// Unit tests: the cluster-directory reader (shared/k8s/cluster-dir.ts) on temp dirs.
import test from 'ava';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { ClusterDirError, readClusterDir } from '../../shared/k8s/cluster-dir.ts';

async function tempDir(t: import('ava').ExecutionContext): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ambit-clusterdir-test-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

test('reads several documents per file and subdirectories; finds pods and namespaces', async (t) => {
  const dir = await tempDir(t);
  await mkdir(path.join(dir, 'pods', 'deep'), { recursive: true });
  await writeFile(
    path.join(dir, 'all.yaml'),
    'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels: {istio.io/dataplane-mode: ambient}\n---\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: web-0, namespace: shop}\nspec: {nodeName: n0}\n',
  );
  await writeFile(path.join(dir, 'pods', 'deep', 'x.yml'), 'kind: Pod\nmetadata: {name: lonely}\n');
  await writeFile(path.join(dir, 'notes.txt'), 'not: [yaml');
  await writeFile(path.join(dir, '.pod.yaml.123.tmp'), 'kind: Pod\nmetadata: {name: half-written');
  const snapshot = await readClusterDir(dir);
  t.deepEqual(snapshot.errors, []);
  t.is(snapshot.objects.length, 3);
  t.is(snapshot.findNamespace('shop')?.metadata.labels?.['istio.io/dataplane-mode'], 'ambient');
  t.is(snapshot.findPod('shop', 'web-0')?.spec?.nodeName, 'n0');
  t.truthy(snapshot.findPod('default', 'lonely'), 'a pod without metadata.namespace is in "default"');
  t.is(snapshot.findPod('shop', 'missing'), undefined);
});

test('a bad document is reported with file and line; the good documents around it are kept', async (t) => {
  const dir = await tempDir(t);
  const file = path.join(dir, 'mixed.yaml');
  await writeFile(file, 'kind: Namespace\nmetadata: {name: a}\n---\nkind: Pod\nmetadata: {name: broken\n---\nkind: Namespace\nmetadata: {name: b}\n');
  await writeFile(path.join(dir, 'scalar.yaml'), 'just a string\n');
  const snapshot = await readClusterDir(dir);
  t.truthy(snapshot.findNamespace('a'));
  t.truthy(snapshot.findNamespace('b'));
  t.is(snapshot.findPod('default', 'broken'), undefined);
  const problem = snapshot.errors.find((error) => error.file === file);
  t.truthy(problem, JSON.stringify(snapshot.errors));
  t.true((problem?.line ?? 0) >= 5 && (problem?.line ?? 0) <= 6, `line ${problem?.line}`);
  const scalar = snapshot.errors.find((error) => error.file.endsWith('scalar.yaml'));
  t.is(scalar?.line, 1);
  t.regex(scalar?.message ?? '', /not a Kubernetes object/);
});

test('a missing directory is a typed error', async (t) => {
  const error = await t.throwsAsync(readClusterDir('/nonexistent/ambit-cluster'), { instanceOf: ClusterDirError });
  t.is(error?.code, 'CLUSTER_DIR_UNREADABLE');
});
