/**
 * The synthetic cluster of the "controlplane" suite, written as the YAML directory the control plane's local
 * mode watches, in the local runtime's layout (runtime/cluster-store.ts): one object per file, written atomically
 * (a dot-file renamed over the target), under `namespaces/`, `nodes/`, `services/` and `pods/`.
 *
 * Shape: N namespaces, every other one enrolled (`istio.io/dataplane-mode: ambient`); services spread evenly over
 * the namespaces, each selecting its pods by an `app` label (the model derives endpoints from selectors, so no
 * EndpointSlices are needed); pods spread evenly over the services (2 per service at 2,000/1,000) and
 * round-robin over the nodes, one service account per service. One bootstrap token per node.
 *
 * Owns: the objects, their files, the token file, and the one kind of change the suite times (a pod relabel that
 * flips its enrollment). Must not know about: processes, timing, xDS.
 */
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { stringify } from 'yaml';

export interface ClusterSize {
  pods: number;
  services: number;
  namespaces: number;
  /** One simulated agent per node. */
  nodes: number;
}

export interface ClusterNode {
  name: string;
  token: string;
}

export interface ClusterPod {
  name: string;
  namespace: string;
  node: string;
  serviceAccount: string;
  app: string;
  ip: string;
  /** The pod's own `istio.io/dataplane-mode` label, when it has one (none at first). */
  mode?: 'ambient' | 'none';
}

export interface Cluster {
  dir: string;
  tokenFile: string;
  nodes: ClusterNode[];
  pods: ClusterPod[];
  enrolledNamespaces: Set<string>;
  /** Files written (every object is one file). */
  files: number;
  bytes: number;
}

export const DATAPLANE_MODE_LABEL = 'istio.io/dataplane-mode';
/** The uid the control plane gives a pod's Workload (Istio's format, default cluster ID). */
export function workloadUid(pod: Pick<ClusterPod, 'namespace' | 'name'>): string {
  return `Kubernetes//Pod/${pod.namespace}/${pod.name}`;
}

function pad(value: number, width: number): string {
  return String(value).padStart(width, '0');
}

/** 10.<base>.x.y for index i (i < 65,534): distinct, never .0 in the last octet's first block. */
function ipFor(base: number, index: number): string {
  const n = index + 1;
  return `10.${base}.${(n >> 8) & 255}.${n & 255}`;
}

function writeAtomically(file: string, text: string): number {
  const temporary = path.join(path.dirname(file), `.${path.basename(file)}.tmp`);
  writeFileSync(temporary, text);
  renameSync(temporary, file);
  return Buffer.byteLength(text);
}

function podObject(pod: ClusterPod): object {
  const labels: Record<string, string> = { app: pod.app, version: 'v1' };
  if (pod.mode) labels[DATAPLANE_MODE_LABEL] = pod.mode;
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: pod.name,
      namespace: pod.namespace,
      uid: `uid-${pod.namespace}-${pod.name}`,
      labels,
      ownerReferences: [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: `${pod.app}-5d8f7c`, uid: `rs-${pod.namespace}-${pod.app}`, controller: true }],
    },
    spec: {
      nodeName: pod.node,
      serviceAccountName: pod.serviceAccount,
      containers: [{ name: 'app', image: 'registry.local/app:v1', ports: [{ name: 'http', containerPort: 8080 }] }],
    },
    status: { phase: 'Running', podIP: pod.ip, podIPs: [{ ip: pod.ip }], conditions: [{ type: 'Ready', status: 'True' }] },
  };
}

function podFile(dir: string, pod: ClusterPod): string {
  return path.join(dir, 'pods', `${pod.namespace}.${pod.name}.yaml`);
}

/** Writes the whole cluster under `dir` (created) and the token file beside it. */
export function writeCluster(dir: string, tokenFile: string, size: ClusterSize): Cluster {
  for (const sub of ['namespaces', 'nodes', 'services', 'pods']) mkdirSync(path.join(dir, sub), { recursive: true });
  let files = 0;
  let bytes = 0;
  const write = (file: string, object: object): void => {
    bytes += writeAtomically(file, stringify(object));
    files++;
  };

  const namespaces = Array.from({ length: size.namespaces }, (_, i) => `bench-${pad(i, 2)}`);
  const enrolledNamespaces = new Set(namespaces.filter((_, i) => i % 2 === 0));
  for (const name of namespaces) {
    const labels: Record<string, string> = { 'kubernetes.io/metadata.name': name };
    if (enrolledNamespaces.has(name)) labels[DATAPLANE_MODE_LABEL] = 'ambient';
    write(path.join(dir, 'namespaces', `${name}.yaml`), { apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels } });
  }

  const nodes: ClusterNode[] = Array.from({ length: size.nodes }, (_, i) => ({ name: `node-${pad(i, 2)}`, token: `bench-token-${pad(i, 2)}-${Math.random().toString(36).slice(2, 12)}` }));
  nodes.forEach((node, i) => {
    const labels = { 'kubernetes.io/hostname': node.name, 'topology.kubernetes.io/region': 'bench', 'topology.kubernetes.io/zone': `bench-${String.fromCharCode(97 + (i % 3))}` };
    write(path.join(dir, 'nodes', `${node.name}.yaml`), { apiVersion: 'v1', kind: 'Node', metadata: { name: node.name, labels } });
  });
  writeFileSync(tokenFile, `# <token> <node-name>, one per simulated agent\n${nodes.map((node) => `${node.token} ${node.name}`).join('\n')}\n`, { mode: 0o600 });

  const servicesPerNamespace = Math.ceil(size.services / size.namespaces);
  const podsPerService = Math.ceil(size.pods / size.services);
  const pods: ClusterPod[] = [];
  for (let s = 0; s < size.services; s++) {
    const namespace = namespaces[Math.floor(s / servicesPerNamespace)]!;
    const app = `svc-${pad(s, 4)}`;
    write(path.join(dir, 'services', `${namespace}.${app}.yaml`), {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: app, namespace, labels: { app } },
      spec: { type: 'ClusterIP', clusterIP: ipFor(96, s), selector: { app }, ports: [{ name: 'http', port: 80, targetPort: 'http', protocol: 'TCP' }] },
    });
    for (let r = 0; r < podsPerService && pods.length < size.pods; r++) {
      const index = pods.length;
      const pod: ClusterPod = { name: `${app}-${pad(r, 2)}`, namespace, node: nodes[index % nodes.length]!.name, serviceAccount: app, app, ip: ipFor(1, index) };
      pods.push(pod);
      write(podFile(dir, pod), podObject(pod));
    }
  }
  return { dir, tokenFile, nodes, pods, enrolledNamespaces, files, bytes };
}

export interface PodChange {
  /** The Workload resource that changes. */
  resource: string;
  /** Its tunnel protocol after the change (what the agents wait for). */
  tunnelProtocol: 'HBONE' | 'NONE';
  file: string;
}

/**
 * Relabels the `index`-th pod so its enrollment flips: in an enrolled namespace it opts out
 * (`istio.io/dataplane-mode: none`, HBONE -> NONE); elsewhere it opts in (`ambient`, NONE -> HBONE). Written
 * atomically, as the runtime writes pods. Returns what the agents should see.
 */
export function flipPodEnrollment(cluster: Cluster, index: number): PodChange {
  const pod = cluster.pods[index]!;
  const enrolledBefore = pod.mode ? pod.mode === 'ambient' : cluster.enrolledNamespaces.has(pod.namespace);
  pod.mode = enrolledBefore ? 'none' : 'ambient';
  const file = podFile(cluster.dir, pod);
  writeAtomically(file, stringify(podObject(pod)));
  return { resource: workloadUid(pod), tunnelProtocol: enrolledBefore ? 'NONE' : 'HBONE', file };
}

/** Pod indexes spread over the cluster, alternating enrolled and non-enrolled namespaces, each used once. */
export function changeOrder(cluster: Cluster, count: number): number[] {
  const enrolled: number[] = [];
  const other: number[] = [];
  cluster.pods.forEach((pod, index) => (cluster.enrolledNamespaces.has(pod.namespace) ? enrolled : other).push(index));
  const pick = (list: number[], n: number): number[] => Array.from({ length: Math.min(n, list.length) }, (_, i) => list[Math.floor((i * list.length) / n)]!);
  const a = pick(enrolled, Math.ceil(count / 2));
  const b = pick(other, Math.floor(count / 2));
  const order: number[] = [];
  for (let i = 0; i < count; i++) {
    const next = i % 2 === 0 ? a[i / 2] : b[(i - 1) / 2];
    if (next !== undefined) order.push(next);
  }
  return order;
}
