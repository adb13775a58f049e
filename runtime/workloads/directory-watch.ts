/**
 * Notices every change to the user's manifest directory, however it was made. Node's recursive `fs.watch` on Linux
 * watches each file it found, so a file replaced by a rename (kubectl's writes here, editors that save through a
 * temporary file, `mv`) is no longer watched afterwards and a later edit of it goes unseen. So the directory is also
 * watched without recursion (inotify on the directory reports a file replaced in it), and a slow check compares what
 * every file is (path, inode, size, modification time) with the previous check, for anything both missed.
 *
 * Owns: when the directory counts as changed (debounced: editors write a file in several steps).
 * Must not know about: what the files hold or what a change means (the caller re-reads the directory).
 */
import { watch, type FSWatcher } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';

/** Editors write a file in several steps: report once the directory has been quiet this long. */
export const CHANGE_DEBOUNCE_MS = 300;
/** The slow check for changes no watch reported: a few stat calls per file, every this often. */
export const CHANGE_CHECK_INTERVAL_MS = 2_000;

/** What every file under `dir` is now, as one string: equal strings, no change. */
async function directorySignature(dir: string): Promise<string> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  const files = entries.filter((entry) => entry.isFile() && !entry.name.startsWith('.')).map((entry) => path.join(entry.parentPath, entry.name));
  const parts = await Promise.all(
    files.map(async (file) => {
      const info = await stat(file).catch(() => undefined);
      return info === undefined ? '' : `${file}:${info.ino}:${info.size}:${info.mtimeMs}`;
    }),
  );
  return parts.sort().join('\n');
}

export interface DirectoryWatch {
  close(): void;
}

/** Calls `onChange` (debounced) after any change under `dir`, from now on. */
export async function watchDirectory(dir: string, onChange: () => void): Promise<DirectoryWatch> {
  let debounce: NodeJS.Timeout | undefined;
  let signature = await directorySignature(dir);
  const changed = (): void => {
    if (debounce !== undefined) clearTimeout(debounce);
    debounce = setTimeout(() => {
      debounce = undefined;
      void directorySignature(dir).then((now) => {
        signature = now;
        onChange();
      });
    }, CHANGE_DEBOUNCE_MS);
  };
  const watchers: FSWatcher[] = [watch(dir, { recursive: true }, changed), watch(dir, changed)];
  for (const watcher of watchers) watcher.on('error', () => undefined);
  let checking = false;
  const timer = setInterval(() => {
    if (checking || debounce !== undefined) return;
    checking = true;
    void directorySignature(dir)
      .then((now) => {
        if (now !== signature) changed();
      })
      .finally(() => {
        checking = false;
      });
  }, CHANGE_CHECK_INTERVAL_MS);
  timer.unref();
  return {
    close: () => {
      clearInterval(timer);
      if (debounce !== undefined) clearTimeout(debounce);
      for (const watcher of watchers) watcher.close();
    },
  };
}
