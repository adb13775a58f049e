// The agent's pod records (agent/captured-pods-file.ts): every CNI DEL asks for a write, so the same list is not
// written twice; a failed write must neither block the next nor count as written.
import test from 'ava';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { CapturedPodsFile } from '../../agent/captured-pods-file.ts';
import type { PodInfo } from '../../agent/inpod/pod-listeners.ts';

const pod = (name: string): PodInfo => ({ uid: `uid-${name}`, name, namespace: 'shop', netns: `/run/netns/${name}`, ips: ['10.0.0.5'] });

async function tempDir(t: import('ava').ExecutionContext): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ambit-records-test-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

test('the same list is not written again; a changed list is', async (t) => {
  const file = path.join(await tempDir(t), 'captured.json');
  const record = new CapturedPodsFile(file);
  await record.write([pod('a')]);
  const first = await stat(file);
  await record.write([pod('a')]);
  t.is((await stat(file)).ino, first.ino, 'not replaced (each write renames a new file into place)');
  await record.write([pod('a'), pod('b')]);
  t.not((await stat(file)).ino, first.ino);
  t.deepEqual((await record.read()).map((p) => p.name), ['a', 'b']);
  await record.write([pod('a')]);
  t.deepEqual((await record.read()).map((p) => p.name), ['a'], 'back to an earlier list: written');
});

test('a failed write is reported, does not count as written and does not block the next', async (t) => {
  const dir = await tempDir(t);
  const blocker = path.join(dir, 'sub');
  await writeFile(blocker, 'a file where the record directory should be');
  const record = new CapturedPodsFile(path.join(blocker, 'captured.json'));
  await t.throwsAsync(record.write([pod('a')]));
  await rm(blocker);
  await record.write([pod('a')]);
  t.deepEqual((await record.read()).map((p) => p.name), ['a']);
});

test('a pod whose capture is under way is listed by every write until settled, with the namespace it is being captured in', async (t) => {
  const file = path.join(await tempDir(t), 'captured.json');
  const record = new CapturedPodsFile(file);
  await record.write([pod('old')]);
  // Two ADDs at once: each writes while its rules go in; the second write must not drop the first pod.
  record.startCapture(pod('a'));
  await record.write([pod('old')]);
  record.startCapture(pod('b'));
  await record.write([pod('old')]);
  t.deepEqual((await record.read()).map((p) => p.name).sort(), ['a', 'b', 'old']);
  // A sandbox made again for a captured pod: listed with the new namespace while its capture runs.
  record.startCapture({ ...pod('old'), netns: '/run/netns/old-again' });
  await record.write([pod('old')]);
  t.deepEqual((await record.read()).filter((p) => p.name === 'old').map((p) => p.netns), ['/run/netns/old-again']);
  // a failed, b captured: the next write lists what it is given.
  record.settleCapture('uid-a');
  record.settleCapture('uid-b');
  record.settleCapture('uid-old');
  await record.write([pod('old'), pod('b')]);
  t.deepEqual((await record.read()).map((p) => p.name), ['old', 'b']);
});
