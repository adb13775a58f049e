/**
 * Feeds MeshState from a local cluster directory (Pod and Namespace manifests written by the local runtime or a
 * user), until the control plane's delta xDS replaces it behind the same MeshState.
 *
 * Owns: turning Pods + Namespaces into Workloads (enrollment, identity, canonical labels) and re-reading the
 * directory when it changes.
 * Must not know about: sockets, capture, certificates.
 */
import { DirectoryWatcher } from '../../shared/k8s/dir-watcher.ts';
import { captureDecision } from '../../shared/k8s/enrollment.ts';
import { readClusterDir, type ClusterDirParseCache, type ClusterSnapshot } from '../../shared/k8s/cluster-dir.ts';
import { isPod, podNamespace, type PodObject } from '../../shared/k8s/objects.ts';
import type { MeshState } from './mesh-state.ts';
import type { Workload } from './workload.ts';

function firstLabel(labels: Record<string, string> | undefined, names: string[]): string | undefined {
  for (const name of names) if (labels?.[name]) return labels[name];
  return undefined;
}

export function workloadFromPod(pod: PodObject, snapshot: ClusterSnapshot, trustDomain: string): Workload | undefined {
  const ips = pod.status?.podIPs?.map((entry) => entry.ip) ?? (pod.status?.podIP ? [pod.status.podIP] : []);
  // Pods without an IP yet are kept (addresses empty): the CNI ADD that captures a pod arrives before the
  // runtime records the pod's IP, and the agent must already know the pod's identity then.
  if (pod.spec?.hostNetwork) return undefined;
  const namespace = podNamespace(pod);
  const decision = captureDecision(pod, snapshot.findNamespace(namespace));
  const labels = pod.metadata.labels;
  return {
    uid: pod.metadata.uid ?? `${namespace}/${pod.metadata.name}`,
    name: pod.metadata.name,
    namespace,
    serviceAccount: pod.spec?.serviceAccountName || 'default',
    trustDomain,
    node: pod.spec?.nodeName ?? '',
    addresses: ips,
    tunnelProtocol: decision.capture ? 'HBONE' : 'NONE',
    captureReason: decision.reason,
    canonicalName: firstLabel(labels, ['service.istio.io/canonical-name', 'app.kubernetes.io/name', 'app']) ?? pod.metadata.name,
    canonicalRevision: firstLabel(labels, ['service.istio.io/canonical-revision', 'app.kubernetes.io/version', 'version']) ?? 'latest',
    workloadName: firstLabel(labels, ['app.kubernetes.io/name', 'app']) ?? pod.metadata.name,
    labels: { ...labels },
  };
}

export class ClusterDirSource {
  readonly #dir: string;
  readonly #state: MeshState;
  readonly #trustDomain: string;
  readonly #onProblem: (message: string) => void;
  readonly #parseCache: ClusterDirParseCache = new Map();
  readonly #watcher: DirectoryWatcher;
  #lastErrors = '';

  constructor(options: { dir: string; state: MeshState; trustDomain: string; onProblem?: (message: string) => void }) {
    this.#dir = options.dir;
    this.#state = options.state;
    this.#trustDomain = options.trustDomain;
    this.#onProblem = options.onProblem ?? (() => {});
    this.#watcher = new DirectoryWatcher({ dir: this.#dir, read: () => this.#read(), onError: (error) => this.#onProblem(error.message) });
  }

  /** Reads once, then keeps watching. Resolves after the first complete read. */
  start(): Promise<void> {
    return this.#watcher.start();
  }

  stop(): void {
    this.#watcher.stop();
  }

  /** Re-reads the directory now; concurrent calls coalesce. */
  refresh(): Promise<void> {
    return this.#watcher.refresh();
  }

  async #read(): Promise<void> {
    const snapshot = await readClusterDir(this.#dir, this.#parseCache);
    if (!snapshot.changed) return;
    const errors = snapshot.errors.map((e) => `${e.file}${e.line ? `:${e.line}` : ''}: ${e.message}`).join('\n');
    if (errors && errors !== this.#lastErrors) this.#onProblem(`cluster directory has invalid manifests (skipped):\n${errors}`);
    this.#lastErrors = errors;
    const workloads: Workload[] = [];
    for (const object of snapshot.objects) {
      if (!isPod(object)) continue;
      const workload = workloadFromPod(object, snapshot, this.#trustDomain);
      if (workload) workloads.push(workload);
    }
    this.#state.replaceAll(workloads);
  }
}
