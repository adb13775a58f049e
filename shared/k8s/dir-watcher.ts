/**
 * Keeps a reader of a manifest directory up to date: one read at start, then a re-read after every change that
 * fs.watch reports (debounced) and on a poll as a backstop; concurrent re-reads coalesce into one more.
 *
 * Owns: the watch, the poll, the debounce and the coalescing. Used by the agent's local sources and the control
 * plane's YAML-directory source.
 * Must not know about: what is read or what the objects mean (the `read` function does that).
 */
import { watch, type FSWatcher } from 'node:fs';

/** fs.watch misses events on some filesystems and for renames into subdirectories: poll as a backstop. */
export const DIR_POLL_INTERVAL_MS = 1000;
/** Writers replace several files at once; coalesce their events into one re-read. */
export const DIR_DEBOUNCE_MS = 20;

export interface DirectoryWatcherOptions {
  dir: string;
  /** Reads the directory and applies what changed. Cheap when nothing did (readers keep a parse cache). */
  read: () => Promise<void>;
  onError: (error: Error) => void;
  pollIntervalMs?: number;
  debounceMs?: number;
}

export class DirectoryWatcher {
  readonly #options: DirectoryWatcherOptions;
  #watcher: FSWatcher | undefined;
  #poll: NodeJS.Timeout | undefined;
  #debounce: NodeJS.Timeout | undefined;
  #reading: Promise<void> | undefined;
  #again = false;
  #stopped = false;

  constructor(options: DirectoryWatcherOptions) {
    this.#options = options;
  }

  /** Reads once, then keeps watching. Resolves after the first complete read. */
  async start(): Promise<void> {
    await this.refresh();
    try {
      this.#watcher = watch(this.#options.dir, { recursive: true }, () => this.#schedule());
      this.#watcher.on('error', () => {});
    } catch {
      // Polling alone still converges.
    }
    this.#poll = setInterval(() => this.#schedule(), this.#options.pollIntervalMs ?? DIR_POLL_INTERVAL_MS);
    this.#poll.unref();
  }

  stop(): void {
    this.#stopped = true;
    this.#watcher?.close();
    clearInterval(this.#poll);
    clearTimeout(this.#debounce);
  }

  /** Re-reads now; a call while a read runs makes exactly one more read after it. */
  refresh(): Promise<void> {
    if (this.#reading) {
      this.#again = true;
      return this.#reading;
    }
    this.#reading = (async () => {
      do {
        this.#again = false;
        await this.#options.read();
      } while (this.#again && !this.#stopped);
    })().finally(() => {
      this.#reading = undefined;
    });
    return this.#reading;
  }

  #schedule(): void {
    if (this.#stopped) return;
    clearTimeout(this.#debounce);
    this.#debounce = setTimeout(() => void this.refresh().catch((error: Error) => this.#options.onError(error)), this.#options.debounceMs ?? DIR_DEBOUNCE_MS);
  }
}
