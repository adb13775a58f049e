/**
 * The few Kubernetes object shapes ambit reads (Namespace, Pod, Service), typed loosely enough for real-world YAML.
 *
 * Owns: the TypeScript view of those objects and small type guards.
 * Must not know about: where objects come from (a directory, an API server) or what the mesh does with them.
 */

export interface ObjectMeta {
  name?: string;
  namespace?: string;
  uid?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

export interface K8sObject {
  apiVersion?: string;
  kind?: string;
  metadata?: ObjectMeta;
  [field: string]: unknown;
}

export interface NamespaceObject extends K8sObject {
  kind: 'Namespace';
  metadata: ObjectMeta & { name: string };
}

export interface PodContainer {
  name: string;
  image?: string;
  [field: string]: unknown;
}

export interface PodObject extends K8sObject {
  kind: 'Pod';
  metadata: ObjectMeta & { name: string };
  spec?: {
    nodeName?: string;
    serviceAccountName?: string;
    hostNetwork?: boolean;
    containers?: PodContainer[];
    [field: string]: unknown;
  };
  status?: {
    podIP?: string;
    podIPs?: { ip: string }[];
    phase?: string;
    [field: string]: unknown;
  };
}

export interface ServicePortSpec {
  name?: string;
  port: number;
  targetPort?: number | string;
  protocol?: string;
  appProtocol?: string;
}

export interface ServiceObject extends K8sObject {
  kind: 'Service';
  metadata: ObjectMeta & { name: string };
  spec?: {
    selector?: Record<string, string>;
    clusterIP?: string;
    clusterIPs?: string[];
    ports?: ServicePortSpec[];
    type?: string;
    internalTrafficPolicy?: string;
    trafficDistribution?: string;
    [field: string]: unknown;
  };
}

export function isService(object: K8sObject): object is ServiceObject {
  return object.kind === 'Service' && typeof object.metadata?.name === 'string';
}

export function isNamespace(object: K8sObject): object is NamespaceObject {
  return object.kind === 'Namespace' && typeof object.metadata?.name === 'string';
}

export function isPod(object: K8sObject): object is PodObject {
  return object.kind === 'Pod' && typeof object.metadata?.name === 'string';
}

/** Kubernetes puts objects without metadata.namespace in "default". */
export function podNamespace(pod: PodObject): string {
  return pod.metadata.namespace || 'default';
}
