/**
 * Keeps a reader of a manifest directory up to date: one read at start, then a re-read after every change that
 * fs.watch reports (debounced) and on a poll as a backstop; concurrent re-reads coalesce into one more. A reader
 * that can apply single files (`readChanged`) gets just the paths fs.watch named, and a whole re-read only from
 * the poll, `refresh()`, or when it declines.
 *
 * Owns: the watch, the poll, the debounce, the queue of changed paths and the coalescing. Used by the agent's local sources and the control
 * plane's YAML-directory source.
 * Must not know about: what is read or what the objects mean (the `read` function does that).
 */
import { watch, type FSWatcher } from 'node:fs';

/** fs.watch misses events on some filesystems and for renames into subdirectories: poll as a backstop. */
export const DIR_POLL_INTERVAL_MS = 1000;
/** The backstop poll while fs.watch runs (every change it sees is applied at once; the poll costs a stat walk). */
export const DIR_WATCHED_POLL_INTERVAL_MS = 5000;
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
  #watcher: FSWatcher | undefined;
  #poll: NodeJS.Timeout | undefined;
  #debounce: NodeJS.Timeout | undefined;
  #reading: Promise<void> | undefined;
  /** What the running (or next) read loop still has to do: a whole re-read, and/or single paths. */
  #queuedFull = false;
  readonly #queuedPaths = new Set<string>();
  /** Paths fs.watch named since the last debounce, and whether an event named none (a whole re-read then). */
  readonly #changedPaths = new Set<string>();
  #changedUnknown = false;
  #stopped = false;

  constructor(options: DirectoryWatcherOptions) {
    this.#options = options;
  }

  /** Reads once, then keeps watching. Resolves after the first complete read. */
  async start(): Promise<void> {
    await this.refresh();
    try {
      this.#watcher = watch(this.#options.dir, { recursive: true }, (_event, filename) => {
        if (filename === null || filename === undefined) this.#changedUnknown = true;
        else this.#changedPaths.add(String(filename));
        this.#schedule();
      });
      this.#watcher.on('error', () => {});
    } catch {
      // Polling alone still converges.
    }
    const pollMs = this.#options.pollIntervalMs ?? (this.#watcher ? DIR_WATCHED_POLL_INTERVAL_MS : DIR_POLL_INTERVAL_MS);
    this.#poll = setInterval(() => {
      this.#changedUnknown = true;
      this.#schedule();
    }, pollMs);
    this.#poll.unref();
  }

  stop(): void {
    this.#stopped = true;
    this.#watcher?.close();
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
        if (full || !(await this.#options.readChanged!(paths))) await this.#options.read();
      }
    })().finally(() => {
      this.#reading = undefined;
    });
    return this.#reading;
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
