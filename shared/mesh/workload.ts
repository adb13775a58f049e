/**
 * The agent's view of one workload, shaped after Istio's `istio.workload.Workload` so the xDS source (a later
 * step) maps onto it field for field.
 *
 * Owns: the Workload type and the identity it runs as.
 * Must not know about: where workloads come from (a directory, xDS) or what the proxy does with them.
 */
import { spiffeId, type SpiffeId } from '../identity/index.ts';
import type { ServicePort } from './service.ts';

export type TunnelProtocol = 'NONE' | 'HBONE';
/** UNHEALTHY (not Ready, or being deleted): never chosen as a service endpoint. */
export type WorkloadStatus = 'HEALTHY' | 'UNHEALTHY';

export interface Locality {
  region: string;
  zone: string;
  subzone: string;
}

export interface Workload {
  uid: string;
  name: string;
  namespace: string;
  serviceAccount: string;
  trustDomain: string;
  /** Node the workload runs on. */
  node: string;
  /** Pod IPs (v4 and/or v6), as text. */
  addresses: string[];
  /** HBONE when the pod's traffic is captured by the mesh (its agent terminates port 15008): how peers reach it. */
  tunnelProtocol: TunnelProtocol;
  /**
   * Whether the pod should be captured (the enrollment rule), when the source says so apart from tunnelProtocol:
   * ambit's control plane does (HBONE there follows the capture, as istiod's); absent, tunnelProtocol decides.
   */
  enrolled?: boolean;
  /** Why it is (or is not) in the mesh, in words (from the enrollment rule). */
  captureReason: string;
  /** `service.istio.io/canonical-name` or `app.kubernetes.io/name` or `app` or the workload name. */
  canonicalName: string;
  /** `service.istio.io/canonical-revision` or `app.kubernetes.io/version` or `version` or "latest". */
  canonicalRevision: string;
  /** The owning controller's name when known (Deployment), else the pod name. */
  workloadName: string;
  /** Path of the pod's network namespace on its node, when known (local runtime and CNI). */
  netns?: string;
  /** Services the workload backs, keyed `<namespace>/<hostname>`, with this workload's target ports. */
  services?: Record<string, ServicePort[]>;
  /** Absent means HEALTHY. */
  status?: WorkloadStatus;
  /** From its node's topology labels, when known (load balancing by locality). */
  locality?: Locality;
  /** The network the workload's addresses are on ('' or absent: the default network). */
  network?: string;
  /** HOST_NETWORK: its addresses are its node's, shared with other pods, so it is never looked up by IP. */
  networkMode?: 'HOST_NETWORK';
  /** Names (`<namespace>/<name>`) of the workload-selector policies that apply to it, resolved by the control plane. */
  authorizationPolicies?: string[];
  /** The pod's labels, when the source knows them (local mode): AuthorizationPolicy/PeerAuthentication selectors match them. */
  labels?: Record<string, string>;
}

/** Whether this agent should capture the pod: the source's enrollment when it sent one, else its tunnel protocol. */
export function isEnrolled(workload: Workload): boolean {
  return workload.enrolled ?? workload.tunnelProtocol === 'HBONE';
}

/** Workloads are replaced, never mutated, so each one's identity is built (and validated) once, not per connection. */
const identityByWorkload = new WeakMap<Workload, SpiffeId>();

export function workloadIdentity(workload: Workload): SpiffeId {
  let identity = identityByWorkload.get(workload);
  if (!identity) {
    identity = spiffeId(workload.trustDomain, workload.namespace, workload.serviceAccount);
    identityByWorkload.set(workload, identity);
  }
  return identity;
}

/**
 * The workload's address in the same family as `like` (an IPv4 or IPv6 address), as ztunnel picks the tunnel
 * endpoint for a dual-stack destination: an IPv6 connection travels in an IPv6 tunnel, so the far side can dial
 * the application from the client's own IPv6 address. Undefined when the workload has none of that family.
 */
export function addressOfFamily(workload: Workload, like: string): string | undefined {
  // Called for every outbound connection: a plain loop, no closure per call.
  const v6 = like.includes(':');
  for (const address of workload.addresses) if (address.includes(':') === v6) return address;
  return undefined;
}
