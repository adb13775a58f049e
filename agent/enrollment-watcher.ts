/**
 * Captures running pods when they become enrolled, and releases them when they stop being enrolled: labelling a
 * namespace `istio.io/dataplane-mode=ambient` (or removing the label) takes effect on pods that already run, as in
 * Istio's ambient mode.
 *
 * Owns: the node's known pods (every pod the CNI plugin told the agent about, enrolled or not, with its network
 * namespace, kept in a file so a restarted agent still knows them) and reacting to enrollment changes in the mesh
 * state.
 * Must not know about: how capture is done (it calls the functions it is given).
 */
import type { Logger } from 'pino';
import type { CapturedPodsFile } from './captured-pods-file.ts';
import type { PodInfo } from './inpod/pod-listeners.ts';
import type { MeshState } from './state/mesh-state.ts';
import { isEnrolled } from './state/workload.ts';

export interface EnrollmentWatcherOptions {
  state: MeshState;
  file: CapturedPodsFile;
  isCaptured: (uid: string) => boolean;
  capture: (pod: PodInfo) => Promise<void>;
  release: (pod: PodInfo) => Promise<void>;
  log: Logger;
}

export class EnrollmentWatcher {
  readonly #options: EnrollmentWatcherOptions;
  /** Known pods by `<namespace>/<name>`. */
  readonly #podsByName = new Map<string, PodInfo>();
  /** One capture/release at a time per pod, so a quick label flip cannot interleave the two. */
  readonly #busy = new Map<string, Promise<void>>();
  #stopListening: (() => void) | undefined;

  constructor(options: EnrollmentWatcherOptions) {
    this.#options = options;
  }

  /** Loads the known pods, applies the current enrollment to each, then follows changes. */
  async start(): Promise<void> {
    for (const pod of await this.#options.file.read()) this.#podsByName.set(`${pod.namespace}/${pod.name}`, pod);
    this.#stopListening = this.#options.state.onChange((change) => {
      if (change.type !== 'upsert') return;
      if (change.previous && isEnrolled(change.previous) === isEnrolled(change.workload)) return;
      this.#apply(`${change.workload.namespace}/${change.workload.name}`);
    });
    for (const key of this.#podsByName.keys()) this.#apply(key);
  }

  stop(): void {
    this.#stopListening?.();
  }

  /** A pod the CNI plugin reported (captured or not). */
  async remember(pod: PodInfo): Promise<void> {
    this.#podsByName.set(`${pod.namespace}/${pod.name}`, pod);
    await this.#save();
    // Enrollment may have changed between the plugin's decision and now.
    this.#apply(`${pod.namespace}/${pod.name}`);
  }

  async forget(uid: string): Promise<void> {
    for (const [key, pod] of this.#podsByName) if (pod.uid === uid) this.#podsByName.delete(key);
    await this.#save();
  }

  #apply(key: string): void {
    const pod = this.#podsByName.get(key);
    if (!pod) return;
    const previous = this.#busy.get(key) ?? Promise.resolve();
    const next = previous.then(async () => {
      const current = this.#podsByName.get(key);
      if (!current) return;
      const workload = this.#options.state.workloadByName(current.namespace, current.name);
      const enrolled = workload !== undefined && isEnrolled(workload);
      const captured = this.#options.isCaptured(current.uid);
      if (enrolled && !captured) {
        this.#options.log.info({ pod: key }, 'pod enrolled while running: capturing it');
        await this.#options.capture(current);
      } else if (!enrolled && captured && workload) {
        this.#options.log.info({ pod: key, reason: workload.captureReason }, 'pod no longer enrolled: releasing it');
        await this.#options.release(current);
      }
    });
    const settled = next.catch((error: Error) => this.#options.log.error({ pod: key, err: error.message }, 'changing the capture of a running pod failed'));
    this.#busy.set(key, settled);
    void settled.finally(() => {
      if (this.#busy.get(key) === settled) this.#busy.delete(key);
    });
  }

  #save(): Promise<void> {
    return this.#options.file.write([...this.#podsByName.values()]);
  }
}
