/**
 * Captures running pods when they become enrolled, and releases them when they stop being enrolled: labelling a
 * namespace `istio.io/dataplane-mode=ambient` (or removing the label) takes effect on pods that already run, as in
 * Istio's ambient mode.
 *
 * Owns: the node's known pods (every pod the CNI plugin told the agent about, enrolled or not, with its network
 * namespace, sandbox id and the IPs its ADD gave it, kept in a file so a restarted agent still knows them), the
 * mesh state's node addresses for them, and reacting to enrollment changes in the mesh state. A known pod is
 * forgotten on its CNI DEL, on a CNI GC that does not list its sandbox, when the mesh state deletes it (if not
 * captured: a captured pod waits for its DEL or a GC), and at start when its network namespace is gone (deleted while
 * the agent was down).
 * Must not know about: how capture is done (it calls the functions it is given).
 */
import { stat } from 'node:fs/promises';
import type { Logger } from 'pino';
import type { CapturedPodsFile } from './captured-pods-file.ts';
import type { PodInfo } from './inpod/pod-listeners.ts';
import type { MeshState } from '../shared/mesh/mesh-state.ts';
import { isEnrolled, type Workload } from '../shared/mesh/workload.ts';

export interface EnrollmentWatcherOptions {
  state: MeshState;
  file: CapturedPodsFile;
  isCaptured: (uid: string) => boolean;
  capture: (pod: PodInfo) => Promise<void>;
  release: (pod: PodInfo) => Promise<void>;
  log: Logger;
  /** Whether a pod's network namespace still exists (default: its path exists). */
  netnsExists?: (netns: string) => Promise<boolean>;
}

async function pathExists(file: string): Promise<boolean> {
  try {
    await stat(file);
    return true;
  } catch (error) {
    // Only "not there" means gone: a permission or I/O error keeps the pod (forgetting it would be unsafe).
    const code = (error as NodeJS.ErrnoException).code;
    return code !== 'ENOENT' && code !== 'ENOTDIR';
  }
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

  /**
   * Loads the known pods, drops those whose network namespace is gone (deleted while the agent was down), applies
   * the current enrollment to each, then follows changes.
   */
  async start(): Promise<void> {
    const netnsExists = this.#options.netnsExists ?? pathExists;
    const loaded = await this.#options.file.read();
    const gone: string[] = [];
    for (const pod of loaded) {
      const key = `${pod.namespace}/${pod.name}`;
      if (typeof pod.netns !== 'string' || pod.netns === '' || !(await netnsExists(pod.netns))) {
        gone.push(key);
        continue;
      }
      this.#podsByName.set(key, pod);
      this.#noteAddresses(pod);
    }
    if (gone.length > 0) {
      this.#options.log.info({ pods: gone }, 'forgot known pods whose network namespace is gone (deleted while the agent was down)');
      await this.#save();
    }
    this.#stopListening = this.#options.state.onChange((change) => {
      const key = `${change.workload.namespace}/${change.workload.name}`;
      if (change.type === 'remove') {
        void this.#forgetRemoved(key);
        return;
      }
      this.#checkStatusAddresses(change.workload, change.previous);
      if (change.previous && isEnrolled(change.previous) === isEnrolled(change.workload)) return;
      this.#apply(key);
    });
    for (const key of this.#podsByName.keys()) this.#apply(key);
  }

  /** The pods known now (a copy). */
  pods(): PodInfo[] {
    return [...this.#podsByName.values()];
  }

  stop(): void {
    this.#stopListening?.();
  }

  /** A pod the CNI plugin reported (captured or not). */
  async remember(pod: PodInfo): Promise<void> {
    this.#podsByName.set(`${pod.namespace}/${pod.name}`, pod);
    this.#noteAddresses(pod);
    await this.#save();
    // Enrollment may have changed between the plugin's decision and now.
    this.#apply(`${pod.namespace}/${pod.name}`);
  }

  async forget(uid: string): Promise<void> {
    for (const [key, pod] of this.#podsByName) {
      if (pod.uid !== uid) continue;
      this.#podsByName.delete(key);
      this.#options.state.clearNodeAddresses(pod.namespace, pod.name);
    }
    await this.#save();
  }

  /**
   * CNI GC: forgets every known pod whose sandbox is not in `validContainerIds` and returns them (the caller
   * releases those still captured). A pod recorded without its sandbox id (by an older agent) is kept: nothing says
   * it is stale; its namespace check at the next start still applies.
   */
  async forgetAllBut(validContainerIds: ReadonlySet<string>): Promise<PodInfo[]> {
    const stale: PodInfo[] = [];
    for (const [key, pod] of this.#podsByName) {
      if (pod.containerId === undefined || validContainerIds.has(pod.containerId)) continue;
      this.#podsByName.delete(key);
      this.#options.state.clearNodeAddresses(pod.namespace, pod.name);
      stale.push(pod);
    }
    if (stale.length > 0) await this.#save();
    return stale;
  }

  /** The mesh state deleted the pod: a pod not captured is forgotten (a captured one is forgotten on its DEL). */
  async #forgetRemoved(key: string): Promise<void> {
    const pod = this.#podsByName.get(key);
    if (!pod || this.#options.isCaptured(pod.uid)) return;
    // A pod of the same name may be back already (a new uid upserted before the old one is removed).
    if (this.#options.state.workloadByName(pod.namespace, pod.name)) return;
    this.#podsByName.delete(key);
    this.#options.state.clearNodeAddresses(pod.namespace, pod.name);
    this.#options.log.debug({ pod: key }, 'forgot a known pod the mesh state deleted');
    await this.#save().catch((error: Error) => this.#options.log.error({ err: error.message }, 'cannot write the known-pods record'));
  }

  /** The pod's status arrived (or changed) with addresses other than its ADD's: say so once per change. */
  #checkStatusAddresses(workload: Workload, previous: Workload | undefined): void {
    const nodeAddresses = this.#options.state.nodeAddresses(workload.namespace, workload.name);
    if (!nodeAddresses || workload.addresses.length === 0) return;
    if (previous && previous.addresses.join(',') === workload.addresses.join(',')) return;
    if (workload.addresses.length === nodeAddresses.length && workload.addresses.every((address) => nodeAddresses.includes(address))) return;
    this.#options.log.warn(
      { pod: `${workload.namespace}/${workload.name}`, cniIps: nodeAddresses, statusIps: workload.addresses },
      'the pod\'s status addresses differ from those its CNI ADD gave it; the mesh uses the status addresses',
    );
  }

  /** The ADD's IPs are the truth on the node: the mesh state uses them until the source has the pod's status. */
  #noteAddresses(pod: PodInfo): void {
    if (!Array.isArray(pod.ips) || pod.ips.length === 0) return;
    const sourceAddresses = this.#options.state.setNodeAddresses(pod.namespace, pod.name, pod.ips);
    if (sourceAddresses) {
      this.#options.log.warn(
        { pod: `${pod.namespace}/${pod.name}`, cniIps: pod.ips, statusIps: sourceAddresses },
        'the pod\'s status addresses differ from those its CNI ADD gave it; the mesh uses the status addresses',
      );
    }
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
