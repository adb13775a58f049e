/**
 * The agent's view of one Service, shaped after Istio's `istio.workload.Service` (and ztunnel's `state/service.rs`):
 * hostname, VIPs, ports, load balancing. Endpoints are not part of a Service: each Workload lists the services it
 * backs (with its own target ports), and MeshState joins the two.
 *
 * Owns: the Service and ServiceEndpoint types, the `<namespace>/<hostname>` key, and VIP keys.
 * Must not know about: where services come from (a directory, xDS) or how the proxy picks an endpoint.
 */
import type { Workload } from './workload.ts';

/** A service port and the port it maps to on an endpoint (0: named, resolved per endpoint). */
export interface ServicePort {
  servicePort: number;
  targetPort: number;
  /** Istio's Port.app_protocol (HTTP11, HTTP2, GRPC, TCP, TLS), when the control plane sets it. */
  appProtocol?: string;
}

/** istio.workload.LoadBalancing.Scope: what "close" means, in order of preference. */
export type LoadBalancingScope = 'REGION' | 'ZONE' | 'SUBZONE' | 'NODE' | 'CLUSTER' | 'NETWORK';
/** STRICT: only endpoints matching every scope; FAILOVER: prefer the closest, fall back; UNSPECIFIED: any endpoint. */
export type LoadBalancingMode = 'UNSPECIFIED_MODE' | 'STRICT' | 'FAILOVER' | 'PASSTHROUGH';
export type HealthPolicy = 'ONLY_HEALTHY' | 'ALLOW_ALL';

export interface LoadBalancing {
  routingPreference: LoadBalancingScope[];
  mode: LoadBalancingMode;
  healthPolicy: HealthPolicy;
}

export type IpFamilies = 'AUTOMATIC' | 'IPV4_ONLY' | 'IPV6_ONLY' | 'DUAL';

export interface ServiceVip {
  /** The network the VIP is reachable on ('' for the default network). */
  network: string;
  /** The VIP as text (v4 or v6). */
  address: string;
}

/** Istio's GatewayAddress with an IP: where a waypoint takes HBONE. */
export interface ServiceWaypoint {
  address: string;
  hboneMtlsPort: number;
}

export interface Service {
  name: string;
  namespace: string;
  /** `<name>.<namespace>.svc.<cluster domain>` for a Kubernetes Service. */
  hostname: string;
  /** Cluster IPs; empty for a headless Service (clients get the pods' IPs from DNS). */
  vips: ServiceVip[];
  ports: ServicePort[];
  /** Identities the endpoints may present (besides their own), from the control plane. */
  subjectAltNames: string[];
  /** Absent: any healthy endpoint, anywhere. */
  loadBalancing?: LoadBalancing;
  ipFamilies: IpFamilies;
  /**
   * The waypoint connections to a VIP of this service go through (istio.io/use-waypoint), when it has one: HBONE to
   * `address:hboneMtlsPort` with the VIP:port as `:authority`.
   */
  waypoint?: ServiceWaypoint;
  /** Takes priority in hostname lookups when the client's namespace has no service of that name (Kubernetes Services). */
  canonical?: boolean;
}

/** A workload that backs a service, with its own service port -> target port map (named ports resolved). */
export interface ServiceEndpoint {
  workload: Workload;
  ports: readonly ServicePort[];
}

/** The key of a service, as xDS names it and as a Workload's `services` map lists it: `<namespace>/<hostname>`. */
export function serviceKey(service: Pick<Service, 'namespace' | 'hostname'>): string {
  return `${service.namespace}/${service.hostname}`;
}

/** The lookup key of a VIP: the plain IP on the default network, `<network>/<ip>` on another one. */
export function vipKey(network: string, address: string): string {
  return network ? `${network}/${address}` : address;
}

/** Headless: no VIP, so connections go to pod IPs (found through DNS) and never through the VIP path. */
export function isHeadless(service: Service): boolean {
  return service.vips.length === 0;
}

/**
 * The port to dial on `endpoint` for a connection to `servicePort` of `service`, as ztunnel resolves it: the
 * endpoint's own mapping first (named target ports are resolved per workload), else the service's numeric target
 * port; undefined when neither gives a port (a named port this endpoint does not declare, or a port the service
 * does not have).
 */
export function targetPortOf(service: Service, endpoint: ServiceEndpoint, servicePort: number): number | undefined {
  const endpointPorts = endpoint.ports;
  for (let index = 0; index < endpointPorts.length; index++) {
    const port = endpointPorts[index]!;
    if (port.servicePort === servicePort && port.targetPort > 0) return port.targetPort;
  }
  const servicePorts = service.ports;
  for (let index = 0; index < servicePorts.length; index++) {
    const port = servicePorts[index]!;
    if (port.servicePort === servicePort) return port.targetPort > 0 ? port.targetPort : undefined;
  }
  return undefined;
}
