/**
 * The pods this node's agent has captured, kept in a file on the node so a restarted agent finds them again
 * (their namespaces and IPs are not in the cluster state the agent reads).
 *
 * Owns: reading and atomically writing that record, and the pods whose capture is under way: an enrolled ADD writes the
 * record while the pod's rules go in (not after: that cost the ADD's answer the write's milliseconds), so every write
 * lists those pods too until the capture settles; a write for another pod in the meantime does not drop them.
 * Must not know about: rules, listeners.
 */
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { PodInfo } from './inpod/pod-listeners.ts';

export class CapturedPodsFile {
  readonly #file: string;
  #writing: Promise<void> = Promise.resolve();
  /** The text last handed to a write that has not failed: the same list again is not written again. */
  #lastText: string | undefined;
  /** Pods whose capture is under way, by uid: listed by every write until settled (capturing or captured). */
  readonly #capturing = new Map<string, PodInfo>();

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

  /**
   * Lists `pod` in every write from now on, until settled: its capture is under way. A restart that reads it then
   * captures it again (or drops it when its namespace is gone), so a crash while its rules go in leaves no pod
   * redirected and unrecorded.
   */
  startCapture(pod: PodInfo): void {
    this.#capturing.set(pod.uid, pod);
  }

  /** Ends what startCapture began: the next write lists the pod only as the pods it is given list it. */
  settleCapture(uid: string): void {
    this.#capturing.delete(uid);
  }

  /**
   * Writes are serialised and atomic (temp file + rename): a crash leaves the old or the new record, whole. A list
   * equal to the last one written is not written again (every CNI DEL, the second one and those of pods never
   * captured included, asks for a write), and a failed write neither blocks the next nor is taken as written.
   */
  write(pods: readonly PodInfo[]): Promise<void> {
    // A pod being captured again (a new sandbox) is listed with the namespace its capture is putting rules in now.
    const listed = this.#capturing.size === 0 ? pods : [...pods.filter((pod) => !this.#capturing.has(pod.uid)), ...this.#capturing.values()];
    const snapshot = listed.map(({ uid, name, namespace, netns, ips, containerId }) => ({ uid, name, namespace, netns, ips: [...ips], ...(containerId ? { containerId } : {}) }));
    const text = JSON.stringify({ pods: snapshot }, null, 2);
    if (text === this.#lastText) return this.#writing;
    this.#lastText = text;
    this.#writing = this.#writing.catch(() => undefined).then(async () => {
      try {
        await mkdir(path.dirname(this.#file), { recursive: true });
        const temp = `${this.#file}.${process.pid}.tmp`;
        await writeFile(temp, text);
        await rename(temp, this.#file);
      } catch (error) {
        if (this.#lastText === text) this.#lastText = undefined;
        throw error;
      }
    });
    return this.#writing;
  }
}
