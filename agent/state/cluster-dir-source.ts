/**
 * Feeds MeshState from a local cluster directory (Pod, Namespace and Service manifests written by the local
 * runtime or a user) when the agent runs without a control plane; with one, delta xDS feeds the same MeshState.
 *
 * Owns: turning Pods + Namespaces into Workloads (enrollment, identity, canonical labels), selector Services into
 * Services and each pod's service memberships (target ports resolved per pod, as the control plane does), and
 * re-reading the directory when it changes.
 * Must not know about: sockets, capture, certificates.
 */
import { DirectoryWatcher } from '../../shared/k8s/dir-watcher.ts';
import { captureDecision } from '../../shared/k8s/enrollment.ts';
import { readClusterDir, type ClusterDirParseCache, type ClusterSnapshot } from '../../shared/k8s/cluster-dir.ts';
import { podReady, podWorkloadName } from '../../shared/k8s/pod-facts.ts';
import { serviceIpFamilies, serviceLoadBalancing } from '../../shared/k8s/service-spec.ts';
import { isPod, isService, podNamespace, type PodObject, type ServiceObject } from '../../shared/k8s/objects.ts';
import type { MeshState } from '../../shared/mesh/mesh-state.ts';
import { serviceKey, type Service, type ServicePort } from '../../shared/mesh/service.ts';
import type { Workload } from '../../shared/mesh/workload.ts';
import { podTargetPort } from '../../shared/k8s/pod-facts.ts';

/** Kubernetes' default cluster domain: Service hostnames are `<name>.<namespace>.svc.<domain>`. */
export const DEFAULT_CLUSTER_DOMAIN = 'cluster.local';

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
    // No control plane: this agent both decides and captures, so the pod is HBONE as soon as it is enrolled.
    tunnelProtocol: decision.capture ? 'HBONE' : 'NONE',
    enrolled: decision.capture,
    captureReason: decision.reason,
    canonicalName: firstLabel(labels, ['service.istio.io/canonical-name', 'app.kubernetes.io/name', 'app']) ?? pod.metadata.name,
    canonicalRevision: firstLabel(labels, ['service.istio.io/canonical-revision', 'app.kubernetes.io/version', 'version']) ?? 'latest',
    workloadName: podWorkloadName(pod),
    labels: { ...labels },
    status: podReady(pod) ? 'HEALTHY' : 'UNHEALTHY',
  };
}

/** The Service as the mesh sees it; its VIPs are `clusterIPs` (or `clusterIP`), none for a headless one. */
export function serviceFromKube(service: ServiceObject, clusterDomain: string): Service {
  const namespace = service.metadata.namespace || 'default';
  const ips = service.spec?.clusterIPs ?? (service.spec?.clusterIP ? [service.spec.clusterIP] : []);
  const result: Service = {
    name: service.metadata.name,
    namespace,
    hostname: `${service.metadata.name}.${namespace}.svc.${clusterDomain}`,
    vips: ips.filter((ip) => ip && ip !== 'None').map((address) => ({ network: '', address })),
    ports: (service.spec?.ports ?? []).map((port) => {
      const target = port.targetPort === undefined || port.targetPort === '' ? port.port : Number(port.targetPort);
      const entry: ServicePort = { servicePort: port.port, targetPort: Number.isInteger(target) ? target : 0 };
      return entry;
    }),
    subjectAltNames: [],
    ipFamilies: serviceIpFamilies(service),
    canonical: true,
  };
  const loadBalancing = serviceLoadBalancing(service);
  if (loadBalancing) result.loadBalancing = { ...loadBalancing, healthPolicy: 'ONLY_HEALTHY' };
  return result;
}


/** The services (by key) whose selector matches `pod`, each with the ports the pod serves them on. */
export function servicesOfPod(pod: PodObject, services: readonly ServiceObject[], clusterDomain: string): Record<string, ServicePort[]> {
  const result: Record<string, ServicePort[]> = {};
  const namespace = podNamespace(pod);
  const labels = pod.metadata.labels ?? {};
  for (const service of services) {
    const selector = service.spec?.selector;
    if ((service.metadata.namespace || 'default') !== namespace || !selector || Object.keys(selector).length === 0) continue;
    if (!Object.entries(selector).every(([key, value]) => labels[key] === value)) continue;
    const ports: ServicePort[] = [];
    for (const port of service.spec?.ports ?? []) {
      // A named target port the pod does not declare is left out: the pod cannot serve that service port.
      const target = podTargetPort(port.targetPort, port.port, pod);
      if (target !== undefined) ports.push({ servicePort: port.port, targetPort: target });
    }
    result[serviceKey({ namespace, hostname: `${service.metadata.name}.${namespace}.svc.${clusterDomain}` })] = ports;
  }
  return result;
}

export class ClusterDirSource {
  readonly #dir: string;
  readonly #state: MeshState;
  readonly #trustDomain: string;
  readonly #clusterDomain: string;
  readonly #onProblem: (message: string) => void;
  readonly #parseCache: ClusterDirParseCache = new Map();
  readonly #watcher: DirectoryWatcher;
  #lastErrors = '';

  constructor(options: { dir: string; state: MeshState; trustDomain: string; clusterDomain?: string; onProblem?: (message: string) => void }) {
    this.#dir = options.dir;
    this.#state = options.state;
    this.#trustDomain = options.trustDomain;
    this.#clusterDomain = options.clusterDomain ?? DEFAULT_CLUSTER_DOMAIN;
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
    const serviceObjects = new Map<string, ServiceObject>();
    // Later documents win, as a later `kubectl apply` would.
    for (const object of snapshot.objects) if (isService(object)) serviceObjects.set(`${object.metadata.namespace || 'default'}/${object.metadata.name}`, object);
    // An ExternalName Service is a DNS alias the cluster DNS answers, not a mesh Service (as istiod leaves it out).
    const kubeServices = [...serviceObjects.values()].filter((service) => service.spec?.type !== 'ExternalName');
    const workloads: Workload[] = [];
    for (const object of snapshot.objects) {
      if (!isPod(object)) continue;
      const workload = workloadFromPod(object, snapshot, this.#trustDomain);
      if (!workload) continue;
      const services = servicesOfPod(object, kubeServices, this.#clusterDomain);
      if (Object.keys(services).length > 0) workload.services = services;
      workloads.push(workload);
    }
    this.#state.replaceAll(workloads, kubeServices.map((service) => serviceFromKube(service, this.#clusterDomain)));
  }
}
