/**
 * The endpoints of an EndpointSlice that are not pods, as `istio.workload.Workload`s, the way istiod turns a
 * selector-less Service's user-managed EndpointSlices into Address resources: one workload per address, uid
 * `<cluster>/discovery.k8s.io/EndpointSlice/<namespace>/<slice>/<ip>`, backing the Service the slice names with its
 * `kubernetes.io/service-name` label (slice port names joined to the Service's port names; TCP only), HEALTHY unless
 * the endpoint says `ready: false`, no tunnel, and network_mode HOST_NETWORK (nothing is known about such an
 * address: it may be shared, so data planes never look it up by IP). Endpoints whose targetRef is a Pod are left
 * to that pod's own workload (address-model.ts lists the Service in its `services`), as istiod does.
 *
 * Owns: the EndpointSlice -> Workloads mapping and its uid format. Must not know about: stores, encoding, pods.
 */
import { isIP } from 'node:net';
import { ipToBytes } from '../../shared/xds/types.ts';
import { namespaceOf, type EndpointSliceObject, type ServiceObject } from './kube-types.ts';
import { NetworkMode, TunnelProtocol, WorkloadStatus, WorkloadType, type PortMessage, type WorkloadMessage } from './workload.ts';

/** Istio's uid for an EndpointSlice endpoint. */
export function endpointSliceWorkloadUid(clusterId: string, namespace: string, slice: string, ip: string): string {
  return `${clusterId}/discovery.k8s.io/EndpointSlice/${namespace}/${slice}/${ip}`;
}

/**
 * The slice's port list for `service`: each slice port (name and port set, TCP) whose name is one of the Service's
 * port names becomes that service port -> the slice's port (the endpoint's target port). Others are left out.
 */
export function slicePortsForService(slice: EndpointSliceObject, service: ServiceObject): PortMessage[] {
  const ports: PortMessage[] = [];
  for (const slicePort of slice.ports ?? []) {
    if (typeof slicePort?.port !== 'number' || typeof slicePort.name !== 'string') continue;
    if ((slicePort.protocol ?? 'TCP') !== 'TCP') continue;
    const servicePort = (service.spec?.ports ?? []).find((port) => (port.name ?? '') === slicePort.name);
    if (servicePort) ports.push({ servicePort: servicePort.port, targetPort: slicePort.port });
  }
  return ports;
}

export interface EndpointSliceInputs {
  /** The Service the slice's `kubernetes.io/service-name` label names, if it exists. */
  service: ServiceObject | undefined;
  /** The Service's xDS resource name, `<namespace>/<hostname>`. */
  serviceResourceName: string;
  trustDomain: string;
  clusterId: string;
}

/** The workloads for `slice`'s non-pod endpoints (none for FQDN slices, or when the Service does not exist). */
export function workloadsFromEndpointSlice(slice: EndpointSliceObject, inputs: EndpointSliceInputs): WorkloadMessage[] {
  if (!inputs.service || inputs.service.spec?.type === 'ExternalName') return [];
  if (slice.addressType === 'FQDN') return [];
  const namespace = namespaceOf(slice);
  const services = { [inputs.serviceResourceName]: { ports: slicePortsForService(slice, inputs.service) } };
  const seen = new Set<string>();
  const workloads: WorkloadMessage[] = [];
  for (const endpoint of slice.endpoints ?? []) {
    if (endpoint?.targetRef?.kind === 'Pod') continue; // the pod's own workload carries it
    // Kubernetes sets one address per endpoint (each family gets its own slice); the first is the endpoint.
    const ip = endpoint?.addresses?.[0];
    // A user's slice can hold anything: an address that is not an IP is no endpoint.
    if (typeof ip !== 'string' || isIP(ip) === 0 || seen.has(ip)) continue;
    seen.add(ip);
    workloads.push({
      uid: endpointSliceWorkloadUid(inputs.clusterId, namespace, slice.metadata.name, ip),
      name: slice.metadata.name,
      namespace,
      addresses: [ipToBytes(ip)],
      network: '',
      tunnelProtocol: TunnelProtocol.NONE,
      trustDomain: inputs.trustDomain,
      serviceAccount: '',
      node: '',
      canonicalName: '',
      canonicalRevision: '',
      workloadType: WorkloadType.DEPLOYMENT,
      workloadName: '',
      services,
      authorizationPolicies: [],
      status: endpoint.conditions?.ready === false ? WorkloadStatus.UNHEALTHY : WorkloadStatus.HEALTHY,
      clusterId: inputs.clusterId,
      networkMode: NetworkMode.HOST_NETWORK,
      extensions: [],
    });
  }
  return workloads;
}
