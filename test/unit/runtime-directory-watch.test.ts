// The supervisor's watch of the user's directory (runtime/workloads/directory-watch.ts) sees an edit of a file that
// an earlier write replaced by a rename (kubectl's writes, editors' saves): Node's recursive watch alone lost it.
import test from 'ava';
import { mkdir, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { watchDirectory } from '../../runtime/workloads/directory-watch.ts';

async function changeSeen(changes: { count: number }, before: number, timeoutMs = 10_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (changes.count === before && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
  return changes.count > before;
}

test('a file replaced by a rename and then edited in place is seen both times, in a subdirectory too', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ambit-dir-watch-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await mkdir(path.join(dir, 'sub'));
  for (const file of ['web.yaml', 'sub/db.yaml']) await writeFile(path.join(dir, file), 'kind: Pod\n');
  const changes = { count: 0 };
  const watcher = await watchDirectory(dir, () => changes.count++);
  t.teardown(() => watcher.close());
  for (const file of ['web.yaml', 'sub/db.yaml']) {
    let before = changes.count;
    await writeFile(path.join(dir, `${file}.tmp`), 'kind: Pod\nmetadata: {labels: {a: b}}\n');
    await rename(path.join(dir, `${file}.tmp`), path.join(dir, file));
    t.true(await changeSeen(changes, before), `${file} replaced by a rename`);
    await new Promise((resolve) => setTimeout(resolve, 500)); // past the debounce: the next edit is a change of its own
    before = changes.count;
    await writeFile(path.join(dir, file), 'kind: Pod\nmetadata: {labels: {a: c}}\n');
    t.true(await changeSeen(changes, before), `${file} edited after the rename`);
  }
});
