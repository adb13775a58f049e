// The YAML-directory source: bad documents are reported with file and line and skipped while the rest apply;
// unknown kinds and unknown fields are reported, never silently ignored; changes become per-object events.
import test from 'ava';
import { mkdir, rename, rm, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseManifestFile, YamlDirSource } from '../../controlplane/sources/yaml-dir.ts';
import type { SourceProblem } from '../../controlplane/sources/source.ts';
import { ObjectStore, type StoreChange } from '../../controlplane/store.ts';
import { eventually, namespaceYaml, podYaml, tempDir, writeManifest } from '../helpers/xds-harness.ts';

async function startSource(t: { teardown(fn: () => unknown): void }, dir: string, pollIntervalMs = 100) {
  const store = new ObjectStore();
  const changes: StoreChange[] = [];
  store.onChanges((batch) => changes.push(...batch));
  const problems: SourceProblem[] = [];
  const source = new YamlDirSource({ dir, store, onProblem: (problem) => problems.push(problem), pollIntervalMs });
  t.teardown(() => source.stop());
  await source.start();
  return { store, changes, problems, source };
}

/** No poll within a test's time: only what fs.watch reports is applied. */
const NO_POLL_MS = 600_000;

test('a document with bad YAML is reported with its file and line; the other documents in the file apply', async (t) => {
  const dir = await tempDir(t);
  const text = [namespaceYaml('shop'), '---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: broken\n  labels: [unclosed\n', '---\n' + podYaml({ name: 'good', namespace: 'shop', ip: '10.0.0.1' })].join('');
  await writeManifest(dir, 'mixed.yaml', text);
  const { store, problems } = await startSource(t, dir);
  t.deepEqual(store.keys('Pod'), ['shop/good']);
  t.deepEqual(store.keys('Namespace'), ['shop']);
  t.is(problems.length, 1);
  t.is(problems[0]!.file, path.join(dir, 'mixed.yaml'));
  // The broken document spans lines 5-10; the parser notices the unclosed list where the next document starts.
  t.true(problems[0]!.line! >= 6 && problems[0]!.line! <= 11, `line ${problems[0]!.line} points at the broken document`);
  t.regex(problems[0]!.message, /invalid YAML/);
});

test('an unknown kind is reported and skipped', async (t) => {
  const dir = await tempDir(t);
  await writeManifest(dir, 'a.yaml', `${namespaceYaml('shop')}---\napiVersion: example.com/v1\nkind: Frobnicator\nmetadata:\n  name: f\n`);
  const { store, problems } = await startSource(t, dir);
  t.deepEqual(store.keys('Namespace'), ['shop']);
  t.is(problems.length, 1);
  t.is(problems[0]!.line, 7, 'the line of its kind');
  t.regex(problems[0]!.message, /unknown kind example\.com\/v1\/Frobnicator/);
});

test('an unknown field in a known kind is reported at its line and the object is rejected', async (t) => {
  const dir = await tempDir(t);
  const pod = podYaml({ name: 'typo', namespace: 'shop', ip: '10.0.0.1' }).replace('  serviceAccountName: default', '  serviceAccountNmae: web');
  await writeManifest(dir, 'pod.yaml', pod);
  const { store, problems } = await startSource(t, dir);
  t.deepEqual(store.keys('Pod'), []);
  t.is(problems.length, 1);
  t.is(problems[0]!.line, 8, 'the line of the misspelt key');
  t.regex(problems[0]!.message, /unknown field "spec\.serviceAccountNmae" in Pod/);
  t.is(problems[0]!.name, 'typo');

  const { problems: fieldProblems } = parseManifestFile('x.yaml', 'apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: p\nspec:\n  actoin: DENY\n');
  t.regex(fieldProblems[0]!.message, /unknown field "spec\.actoin" in AuthorizationPolicy/);
  t.is(fieldProblems[0]!.line, 6);
});

test('edits become per-object events: only the changed object, deletions when a file goes', async (t) => {
  const dir = await tempDir(t);
  await writeManifest(dir, 'ns.yaml', namespaceYaml('shop'));
  await writeManifest(dir, 'pods.yaml', podYaml({ name: 'a', namespace: 'shop', ip: '10.0.0.1' }) + '---\n' + podYaml({ name: 'b', namespace: 'shop', ip: '10.0.0.2' }));
  const { changes, problems } = await startSource(t, dir);
  t.is(changes.length, 3);
  await writeManifest(dir, 'pods.yaml', podYaml({ name: 'a', namespace: 'shop', ip: '10.0.0.1', labels: { app: 'x' } }));
  await eventually(() => changes.length === 5, 'the edit');
  t.deepEqual(changes.slice(3).map((change) => `${change.type} ${change.key}`).sort(), ['delete shop/b', 'upsert shop/a']);
  t.deepEqual(problems, []);
});

test('a directory mounted from a ConfigMap (symlinks into a hidden timestamped directory) is read once', async (t) => {
  const dir = await tempDir(t);
  await mkdir(path.join(dir, '..2026_01_01'));
  await writeFile(path.join(dir, '..2026_01_01', 'mesh.yaml'), namespaceYaml('shop'));
  await symlink('..2026_01_01', path.join(dir, '..data'));
  await symlink(path.join('..data', 'mesh.yaml'), path.join(dir, 'mesh.yaml'));
  const { store, problems } = await startSource(t, dir);
  t.deepEqual(store.keys('Namespace'), ['shop']);
  t.deepEqual(problems, [], 'no duplicate-definition report');
});

test('a file fs.watch names is applied alone: no walk of the directory for an edit, an addition or a removal', async (t) => {
  const dir = await tempDir(t);
  await writeManifest(dir, 'ns.yaml', namespaceYaml('shop'));
  for (const name of ['a', 'b', 'c']) await writeManifest(dir, `${name}.yaml`, podYaml({ name, namespace: 'shop', ip: '10.0.0.1' }));
  const { store, changes, problems, source } = await startSource(t, dir, NO_POLL_MS);
  // Start reads whole twice: once, then once more after the watches are set (for files written in between).
  const wholeAtStart = source.reads.whole;
  const before = changes.length;
  await writeManifest(dir, 'b.yaml', podYaml({ name: 'b', namespace: 'shop', ip: '10.0.0.1', labels: { version: 'v2' } }));
  await eventually(() => changes.length === before + 1, 'the edit');
  t.deepEqual(changes.slice(before).map((change) => `${change.type} ${change.key}`), ['upsert shop/b']);
  // The same file replaced again and again (Node's recursive fs.watch reports only the first of these).
  for (const version of ['v3', 'v4', 'v5']) {
    await writeManifest(dir, 'b.yaml', podYaml({ name: 'b', namespace: 'shop', ip: '10.0.0.1', labels: { version } }));
    await eventually(() => store.get('Pod', 'shop/b')?.metadata?.labels?.version === version, `b.yaml at ${version}`);
  }
  await writeManifest(dir, 'd.yaml', podYaml({ name: 'd', namespace: 'shop', ip: '10.0.0.4' }));
  await eventually(() => store.keys('Pod').includes('shop/d'), 'the new file');
  await rm(path.join(dir, 'a.yaml'));
  await eventually(() => !store.keys('Pod').includes('shop/a'), 'the removal');
  t.deepEqual(store.keys('Pod'), ['shop/b', 'shop/c', 'shop/d']);
  t.is(source.reads.whole, wholeAtStart, 'the directory was read whole only at start');
  t.true(source.reads.singleFiles >= 3);
  t.deepEqual(problems, []);
});

test('an object moving to another file, a bad document and a new subdirectory still come out as a whole read would have it', async (t) => {
  const dir = await tempDir(t);
  await writeManifest(dir, 'ns.yaml', namespaceYaml('shop'));
  await writeManifest(dir, 'a.yaml', podYaml({ name: 'moving', namespace: 'shop', ip: '10.0.0.1' }));
  const { store, problems, source } = await startSource(t, dir, NO_POLL_MS);
  // z.yaml also defines shop/moving: the later file wins, and the whole read says so.
  await writeManifest(dir, 'z.yaml', podYaml({ name: 'moving', namespace: 'shop', ip: '10.0.0.9' }));
  await eventually(() => problems.some((problem) => /also defined at/.test(problem.message)), 'the duplicate reported');
  t.is((store.get('Pod', 'shop/moving')?.status as { podIP?: string } | undefined)?.podIP, '10.0.0.9');
  // A bad document applied alone is reported with its file and line, and the file's good objects stay.
  await writeManifest(dir, 'bad.yaml', 'apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n  labels: [unclosed\n');
  await eventually(() => problems.some((problem) => problem.file === path.join(dir, 'bad.yaml')), 'the bad file reported');
  // A new subdirectory: fs.watch names the directory, so the source reads the whole tree.
  const wholeBefore = source.reads.whole;
  await mkdir(path.join(dir, 'team'));
  await writeFile(path.join(dir, 'team', '.p.yaml.tmp'), podYaml({ name: 'p', namespace: 'shop', ip: '10.0.0.7' }));
  await rename(path.join(dir, 'team', '.p.yaml.tmp'), path.join(dir, 'team', 'p.yaml'));
  await eventually(() => store.keys('Pod').includes('shop/p'), 'the pod in the new subdirectory');
  t.true(source.reads.whole > wholeBefore);
});

test('a ConfigMap volume swapping its data directory is read again at once', async (t) => {
  const dir = await tempDir(t);
  await mkdir(path.join(dir, '..2026_01_01'));
  await writeFile(path.join(dir, '..2026_01_01', 'mesh.yaml'), namespaceYaml('shop'));
  await symlink('..2026_01_01', path.join(dir, '..data'));
  await symlink(path.join('..data', 'mesh.yaml'), path.join(dir, 'mesh.yaml'));
  const { store } = await startSource(t, dir, NO_POLL_MS);
  t.deepEqual(store.keys('Namespace'), ['shop']);
  // What the kubelet does: a new timestamped directory, then `..data` replaced by rename.
  await mkdir(path.join(dir, '..2026_01_02'));
  await writeFile(path.join(dir, '..2026_01_02', 'mesh.yaml'), namespaceYaml('web'));
  await symlink('..2026_01_02', path.join(dir, '..data_tmp'));
  await rename(path.join(dir, '..data_tmp'), path.join(dir, '..data'));
  await eventually(() => store.keys('Namespace').join() === 'web', 'the swapped contents');
  t.pass();
});

test('a directory removed and made again is watched again: files written into it afterwards are applied', async (t) => {
  const dir = await tempDir(t);
  await mkdir(path.join(dir, 'team'));
  await writeFile(path.join(dir, 'team', 'a.yaml'), podYaml({ name: 'a', namespace: 'shop', ip: '10.0.0.1' }));
  const { store } = await startSource(t, dir, NO_POLL_MS);
  t.deepEqual(store.keys('Pod'), ['shop/a']);
  // What a test harness or an operator does between runs: rm -rf the folder, mkdir it again.
  // Back to back, so both land in one debounce: the folder's path never looks gone to a re-read.
  await rm(path.join(dir, 'team'), { recursive: true });
  await mkdir(path.join(dir, 'team'));
  await new Promise((resolve) => setTimeout(resolve, 100));
  await writeFile(path.join(dir, 'team', '.b.yaml.tmp'), podYaml({ name: 'b', namespace: 'shop', ip: '10.0.0.2' }));
  await rename(path.join(dir, 'team', '.b.yaml.tmp'), path.join(dir, 'team', 'b.yaml'));
  await eventually(() => store.keys('Pod').includes('shop/b'), 'a file in the new directory');
  t.deepEqual(store.keys('Pod'), ['shop/b']);
});
