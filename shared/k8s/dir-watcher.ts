/**
 * Keeps a reader of a manifest directory up to date: one read at start, then a re-read after every change that
 * fs.watch reports (debounced) and on a poll as a backstop; concurrent re-reads coalesce into one more. A reader
 * that can apply single files (`readChanged`) gets just the paths fs.watch named, and a whole re-read only from
 * the poll, `refresh()`, or when it declines.
 *
 * Node's `fs.watch(dir, { recursive: true })` is not used: on Linux it watches every file, reacts in tens of
 * milliseconds with 3,000 files, and misses a file replaced by rename a second time (measured, Node 24). One plain
 * (inotify) watch per directory reports every change of the entries in it within a millisecond or two; the set of
 * watched directories follows the tree after every whole read.
 *
 * Owns: the watches, the poll, the debounce, the queue of changed paths and the coalescing. Used by the agent's
 * local sources and the control plane's YAML-directory source.
 * Must not know about: what is read or what the objects mean (the `read` function does that).
 */
import { watch, type FSWatcher } from 'node:fs';
import { readdir } from 'node:fs/promises';
import path from 'node:path';

/** The poll when the directory cannot be watched (fs.watch failed): the only way changes are seen then. */
export const DIR_POLL_INTERVAL_MS = 1000;
/**
 * The backstop poll while the directories are watched: inotify reports every change on a local filesystem, and a
 * whole re-read of 3,000 files takes 60-90 ms (measured), and a change arriving meanwhile waits for it.
 */
export const DIR_WATCHED_POLL_INTERVAL_MS = 30_000;
/** Writers replace several files at once; coalesce their events into one re-read. */
export const DIR_DEBOUNCE_MS = 20;

export interface DirectoryWatcherOptions {
  dir: string;
  /** Reads the directory and applies what changed. Cheap when nothing did (readers keep a parse cache). */
  read: () => Promise<void>;
  /**
   * Applies only these paths (relative to `dir`, as fs.watch names them: files changed, added or removed).
   * Resolves false to ask for a whole re-read instead (a directory changed, an object moved between files, ...).
   */
  readChanged?: (paths: string[]) => Promise<boolean>;
  onError: (error: Error) => void;
  /** Default: DIR_WATCHED_POLL_INTERVAL_MS while fs.watch runs, DIR_POLL_INTERVAL_MS without it. */
  pollIntervalMs?: number;
  debounceMs?: number;
}

export class DirectoryWatcher {
  readonly #options: DirectoryWatcherOptions;
  /** One watch per directory, by path relative to `dir` ('' for `dir` itself). */
  readonly #watchers = new Map<string, FSWatcher>();
  #poll: NodeJS.Timeout | undefined;
  #debounce: NodeJS.Timeout | undefined;
  #reading: Promise<void> | undefined;
  /** What the running (or next) read loop still has to do: a whole re-read, and/or single paths. */
  #queuedFull = false;
  readonly #queuedPaths = new Set<string>();
  /** Paths fs.watch named since the last debounce, and whether an event named none (a whole re-read then). */
  readonly #changedPaths = new Set<string>();
  #changedUnknown = false;
  /** Watching only begins with start(): a reader used through refresh() alone holds no watch. */
  #started = false;
  #stopped = false;

  constructor(options: DirectoryWatcherOptions) {
    this.#options = options;
  }

  /** Reads once, then keeps watching. Resolves after the first complete read. */
  async start(): Promise<void> {
    await this.refresh();
    this.#started = true;
    // A file written between that read and the watches would go unseen until the poll: read once more.
    if (await this.#syncWatches()) await this.refresh();
    const pollMs = this.#options.pollIntervalMs ?? (this.#watchers.has('') ? DIR_WATCHED_POLL_INTERVAL_MS : DIR_POLL_INTERVAL_MS);
    this.#poll = setInterval(() => {
      this.#changedUnknown = true;
      this.#schedule();
    }, pollMs);
    this.#poll.unref();
  }

  stop(): void {
    this.#stopped = true;
    for (const watcher of this.#watchers.values()) watcher.close();
    this.#watchers.clear();
    clearInterval(this.#poll);
    clearTimeout(this.#debounce);
  }

  /** Re-reads everything now; a call while a read runs makes exactly one more whole read after it. */
  refresh(): Promise<void> {
    this.#queuedFull = true;
    return this.#drain();
  }

  /** Runs the queued work, one read at a time, until nothing is queued; work queued meanwhile joins the loop. */
  #drain(): Promise<void> {
    if (this.#reading) return this.#reading;
    this.#reading = (async () => {
      while (!this.#stopped && (this.#queuedFull || this.#queuedPaths.size > 0)) {
        const full = this.#queuedFull || !this.#options.readChanged;
        const paths = [...this.#queuedPaths];
        this.#queuedFull = false;
        this.#queuedPaths.clear();
        if (full || !(await this.#options.readChanged!(paths))) {
          await this.#options.read();
          // A new directory's files written before its watch existed: one more whole read picks them up.
          if (await this.#syncWatches()) this.#queuedFull = true;
        }
      }
    })().finally(() => {
      this.#reading = undefined;
    });
    return this.#reading;
  }

  /**
   * Watches every directory of the tree (but writers' and mounts' hidden ones) and drops watches of gone ones.
   * True when it added a watch.
   */
  async #syncWatches(): Promise<boolean> {
    if (!this.#started || this.#stopped) return false;
    const wanted = new Set<string>(['']);
    try {
      for (const entry of await readdir(this.#options.dir, { withFileTypes: true, recursive: true })) {
        if (!entry.isDirectory()) continue;
        const relative = path.relative(this.#options.dir, path.join(entry.parentPath, entry.name));
        if (!relative.split(path.sep).some((part) => part.startsWith('.'))) wanted.add(relative);
      }
    } catch {
      // The directory is gone or unreadable: the poll reports it through `read`.
    }
    for (const [relative, watcher] of this.#watchers) {
      if (wanted.has(relative)) continue;
      watcher.close();
      this.#watchers.delete(relative);
    }
    let added = false;
    for (const relative of wanted) {
      if (this.#watchers.has(relative) || this.#stopped) continue;
      try {
        const watcher = watch(path.join(this.#options.dir, relative), (_event, filename) => this.#changed(relative, filename));
        watcher.on('error', () => {
          watcher.close();
          if (this.#watchers.get(relative) === watcher) this.#watchers.delete(relative);
          this.#changedUnknown = true;
          this.#schedule();
        });
        this.#watchers.set(relative, watcher);
        added = true;
      } catch {
        // Gone between the listing and the watch: the next whole read settles it.
      }
    }
    return added;
  }

  #unwatchTree(relative: string): void {
    for (const [watched, watcher] of this.#watchers) {
      if (watched !== relative && !watched.startsWith(relative + path.sep)) continue;
      watcher.close();
      this.#watchers.delete(watched);
    }
  }

  #changed(directory: string, filename: string | Buffer | null): void {
    if (filename === null) {
      this.#changedUnknown = true;
    } else {
      const name = String(filename);
      // `..data` and `..<timestamp>`: a ConfigMap volume swapping its contents at once; the visible files are
      // symlinks into it, so everything may have changed. Other dot-names are writers' temporary files.
      if (name.startsWith('..')) this.#changedUnknown = true;
      else if (!name.startsWith('.')) {
        const relative = directory === '' ? name : path.join(directory, name);
        if (this.#watchers.has(relative)) {
          // A watched directory was removed, renamed or replaced: its watch (and those below it) follow the old
          // inode. Drop them; the whole re-read this asks for watches whatever stands at those paths now.
          this.#unwatchTree(relative);
          this.#changedUnknown = true;
        } else {
          this.#changedPaths.add(relative);
        }
      } else return;
    }
    this.#schedule();
  }

  #schedule(): void {
    if (this.#stopped) return;
    clearTimeout(this.#debounce);
    this.#debounce = setTimeout(() => {
      if (this.#changedUnknown || this.#changedPaths.size === 0) this.#queuedFull = true;
      for (const changed of this.#changedPaths) this.#queuedPaths.add(changed);
      this.#changedPaths.clear();
      this.#changedUnknown = false;
      this.#drain().catch((error: Error) => this.#options.onError(error));
    }, this.#options.debounceMs ?? DIR_DEBOUNCE_MS);
  }
}
