/**
 * The pods this node's agent has captured, kept in a file on the node so a restarted agent finds them again
 * (their namespaces and IPs are not in the cluster state the agent reads).
 *
 * Owns: reading and atomically writing that record.
 * Must not know about: rules, listeners.
 */
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { PodInfo } from './inpod/pod-listeners.ts';

export class CapturedPodsFile {
  readonly #file: string;
  #writing: Promise<void> = Promise.resolve();

  constructor(file: string) {
    this.#file = file;
  }

  async read(): Promise<PodInfo[]> {
    try {
      const parsed = JSON.parse(await readFile(this.#file, 'utf8')) as { pods?: PodInfo[] };
      return Array.isArray(parsed.pods) ? parsed.pods : [];
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw new Error(`cannot read the captured-pods record ${this.#file}: ${(error as Error).message}`, { cause: error });
    }
  }

  /** Writes are serialised and atomic (temp file + rename): a crash leaves the old or the new record, whole. */
  write(pods: readonly PodInfo[]): Promise<void> {
    const snapshot = pods.map(({ uid, name, namespace, netns, ips, containerId }) => ({ uid, name, namespace, netns, ips: [...ips], ...(containerId ? { containerId } : {}) }));
    this.#writing = this.#writing.then(async () => {
      await mkdir(path.dirname(this.#file), { recursive: true });
      const temp = `${this.#file}.${process.pid}.tmp`;
      await writeFile(temp, JSON.stringify({ pods: snapshot }, null, 2));
      await rename(temp, this.#file);
    });
    return this.#writing;
  }
}
