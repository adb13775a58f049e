/**
 * The shapes of the Kubernetes objects the model reads beyond Pod and Namespace (shared/k8s/objects.ts):
 * EndpointSlice, Gateway (Service is shared with the agent: shared/k8s/objects.ts). Typed loosely enough for real-world YAML and API server output.
 *
 * Owns: the types and tiny accessors. Must not know about: sources or the mesh.
 */
import type { K8sObject, ObjectMeta } from '../../shared/k8s/objects.ts';

/** Service shapes are shared with the agent's cluster-directory source. */
export type { ServiceObject, ServicePortSpec } from '../../shared/k8s/objects.ts';

export interface EndpointSliceObject extends K8sObject {
  kind: 'EndpointSlice';
  metadata: ObjectMeta & { name: string };
  addressType?: string;
  endpoints?: { addresses?: string[]; targetRef?: { kind?: string; name?: string; namespace?: string }; conditions?: { ready?: boolean } }[];
  ports?: { name?: string; port?: number; protocol?: string }[];
}

export interface GatewayObject extends K8sObject {
  kind: 'Gateway';
  metadata: ObjectMeta & { name: string };
  spec?: { gatewayClassName?: string; listeners?: { name?: string; port?: number; protocol?: string }[]; [field: string]: unknown };
  status?: { addresses?: { type?: string; value?: string }[]; [field: string]: unknown };
}

/** The label an EndpointSlice names its Service with. */
export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';

export function namespaceOf(object: K8sObject): string {
  return object.metadata?.namespace || 'default';
}
