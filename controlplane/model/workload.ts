/**
 * A Pod (with its namespace) as an `istio.workload.Workload`, with the same rules the agent's cluster-directory
 * source used (agent/state/cluster-dir-source.ts `workloadFromPod`): enrollment decides HBONE, canonical name and
 * revision from the usual labels, identity from the service account.
 *
 * Owns: the Pod -> Workload mapping and Istio's workload uid format. Must not know about: stores, encoding,
 * how services and waypoints are looked up (the caller passes them in).
 */
import { captureDecision, isRedirected } from '../../shared/k8s/enrollment.ts';
import { enrollmentExtension, type ExtensionMessage } from '../../shared/xds/enrollment-extension.ts';
import { podNamespace, type NamespaceObject, type PodObject } from '../../shared/k8s/objects.ts';
import { podReady, podWorkloadName } from '../../shared/k8s/pod-facts.ts';
import { ipToBytes } from '../../shared/xds/types.ts';
import type { GatewayAddressMessage } from './waypoint.ts';

/** Istio's default cluster ID. */
export const DEFAULT_CLUSTER_ID = 'Kubernetes';
export const DEFAULT_CLUSTER_DOMAIN = 'cluster.local';

/** Numeric enum values of istio.workload (encoding takes numbers). */
export const TunnelProtocol = { NONE: 0, HBONE: 1 } as const;
export const WorkloadStatus = { HEALTHY: 0, UNHEALTHY: 1 } as const;
export const WorkloadType = { DEPLOYMENT: 0, CRONJOB: 1, POD: 2, JOB: 3 } as const;
export const NetworkMode = { STANDARD: 0, HOST_NETWORK: 1 } as const;

export interface PortMessage {
  servicePort: number;
  targetPort: number;
  /** istio.workload.AppProtocol (1 HTTP11, 2 HTTP2, 3 GRPC), set on a Service's ports; absent: UNKNOWN. */
  appProtocol?: number;
}

/** protobufjs-encodable istio.workload.Workload (camelCase fields, numeric enums, bytes as Buffers). */
export interface WorkloadMessage {
  uid: string;
  name: string;
  namespace: string;
  addresses: Buffer[];
  network: string;
  tunnelProtocol: number;
  trustDomain: string;
  serviceAccount: string;
  waypoint?: GatewayAddressMessage;
  node: string;
  canonicalName: string;
  canonicalRevision: string;
  workloadType: number;
  workloadName: string;
  services: Record<string, { ports: PortMessage[] }>;
  authorizationPolicies: string[];
  status: number;
  clusterId: string;
  locality?: LocalityMessage;
  networkMode: number;
  extensions: ExtensionMessage[];
}

/** istio.workload.Locality, from the node's well-known topology labels. */
export interface LocalityMessage {
  region: string;
  zone: string;
  subzone: string;
}

/** Kubernetes' topology labels on a Node (and Istio's subzone label). */
export const REGION_LABEL = 'topology.kubernetes.io/region';
export const ZONE_LABEL = 'topology.kubernetes.io/zone';
export const SUBZONE_LABEL = 'topology.istio.io/subzone';

export function localityFromNodeLabels(labels: Record<string, string> | undefined): LocalityMessage | undefined {
  const region = labels?.[REGION_LABEL] ?? '';
  const zone = labels?.[ZONE_LABEL] ?? '';
  const subzone = labels?.[SUBZONE_LABEL] ?? '';
  return region || zone || subzone ? { region, zone, subzone } : undefined;
}

function firstLabel(labels: Record<string, string> | undefined, names: string[]): string | undefined {
  for (const name of names) if (labels?.[name]) return labels[name];
  return undefined;
}

/** Istio's uid for a Kubernetes pod: `<cluster>/<group>/<kind>/<namespace>/<name>` (core group is empty). */
export function podWorkloadUid(clusterId: string, namespace: string, name: string): string {
  return `${clusterId}//Pod/${namespace}/${name}`;
}

export function podIps(pod: PodObject): string[] {
  return pod.status?.podIPs?.map((entry) => entry.ip) ?? (pod.status?.podIP ? [pod.status.podIP] : []);
}

/** Pods that finished (Succeeded/Failed) hold no IP that traffic could reach: Istio drops them, so do we. */
export function isTerminal(pod: PodObject): boolean {
  return pod.status?.phase === 'Succeeded' || pod.status?.phase === 'Failed';
}

/**
 * When a workload's tunnel_protocol is HBONE: `redirected` (istiod's rule, the default) once the node agent has
 * annotated the captured pod; `enrolled` as soon as the enrollment rule says so, for node agents that cannot write
 * the annotation (the local runtime's Kubernetes mode gives its agents no API credentials).
 */
export type HboneWhen = 'redirected' | 'enrolled';

export interface WorkloadInputs {
  hboneWhen?: HboneWhen;
  namespace: NamespaceObject | undefined;
  trustDomain: string;
  clusterId: string;
  waypoint: GatewayAddressMessage | undefined;
  /** `<namespace>/<hostname>` -> ports, for each service this pod backs. */
  services: Record<string, { ports: PortMessage[] }>;
  authorizationPolicies: string[];
  /** From the labels of the Node the pod runs on, when it has any. */
  locality: LocalityMessage | undefined;
}

/**
 * The Workload for `pod`, or undefined for pods that are never workloads (terminal). A host-network pod is sent
 * with network_mode HOST_NETWORK, as istiod does: its addresses are its node's, shared with other pods, so data
 * planes do not look it up by IP.
 */
export function workloadFromPod(pod: PodObject, inputs: WorkloadInputs): WorkloadMessage | undefined {
  if (isTerminal(pod)) return undefined;
  const namespace = podNamespace(pod);
  const decision = captureDecision(pod, inputs.namespace);
  const labels = pod.metadata.labels;
  const addresses: Buffer[] = [];
  for (const ip of podIps(pod)) {
    try {
      addresses.push(ipToBytes(ip));
    } catch {
      // an unparsable IP is left out rather than failing the whole workload
    }
  }
  const workload: WorkloadMessage = {
    uid: podWorkloadUid(inputs.clusterId, namespace, pod.metadata.name),
    name: pod.metadata.name,
    namespace,
    addresses,
    network: '',
    // As istiod: HBONE once the node agent has captured the pod (its redirection annotation), not when a label
    // merely asks for it; whether it should be captured rides in ambit's enrollment extension for ambit's agents.
    tunnelProtocol: decision.capture && (inputs.hboneWhen === 'enrolled' || isRedirected(pod)) ? TunnelProtocol.HBONE : TunnelProtocol.NONE,
    trustDomain: inputs.trustDomain,
    serviceAccount: pod.spec?.serviceAccountName || 'default',
    node: pod.spec?.nodeName ?? '',
    canonicalName: firstLabel(labels, ['service.istio.io/canonical-name', 'app.kubernetes.io/name', 'app']) ?? pod.metadata.name,
    canonicalRevision: firstLabel(labels, ['service.istio.io/canonical-revision', 'app.kubernetes.io/version', 'version']) ?? 'latest',
    // istiod sends every pod as POD, named after its controller (Deployment, CronJob, ...) for telemetry.
    workloadType: WorkloadType.POD,
    workloadName: podWorkloadName(pod),
    services: inputs.services,
    authorizationPolicies: inputs.authorizationPolicies,
    status: podReady(pod) ? WorkloadStatus.HEALTHY : WorkloadStatus.UNHEALTHY,
    clusterId: inputs.clusterId,
    networkMode: pod.spec?.hostNetwork ? NetworkMode.HOST_NETWORK : NetworkMode.STANDARD,
    extensions: [enrollmentExtension(decision.capture)],
  };
  if (inputs.waypoint) workload.waypoint = inputs.waypoint;
  if (inputs.locality) workload.locality = inputs.locality;
  return workload;
}
