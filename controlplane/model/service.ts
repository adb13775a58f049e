/**
 * A Kubernetes Service as an `istio.workload.Service`: hostname, VIPs, ports, waypoint, load balancing (from
 * internalTrafficPolicy and trafficDistribution, shared/k8s/service-spec.ts) and IP families. Endpoints are not in
 * the Service message: each Workload lists the services it backs (see workload.ts).
 *
 * Owns: the Service -> Service mapping and the `<namespace>/<hostname>` resource name.
 * Must not know about: stores, encoding, how the waypoint was found.
 */
import { serviceIpFamilies, serviceLoadBalancing, type IpFamiliesName, type LoadBalancingModeName, type LoadBalancingScopeName } from '../../shared/k8s/service-spec.ts';
import { ipToBytes } from '../../shared/xds/types.ts';
import { namespaceOf, type ServiceObject, type ServicePortSpec } from './kube-types.ts';
import type { PortMessage } from './workload.ts';
import type { GatewayAddressMessage } from './waypoint.ts';

/** protobufjs-encodable istio.workload.Service. */
export interface ServiceMessage {
  name: string;
  namespace: string;
  hostname: string;
  addresses: { network: string; address: Buffer }[];
  ports: PortMessage[];
  waypoint?: GatewayAddressMessage;
  loadBalancing?: { routingPreference: number[]; mode: number };
  ipFamilies: number;
  canonical: boolean;
  /** istio.workload.Service field 12: ingress gateways send this Service's traffic through its waypoint. */
  ingressUseWaypoint?: boolean;
}

/** Istio's label (on the Service, else its namespace) asking ingress gateways to go through the Service's waypoint. */
export const INGRESS_USE_WAYPOINT_LABEL = 'istio.io/ingress-use-waypoint';

/** The Service's own `istio.io/ingress-use-waypoint` label decides; without one, its namespace's; only "true" is on. */
export function ingressUseWaypoint(service: ServiceObject, namespaceLabels: Record<string, string> | undefined): boolean {
  const own = service.metadata.labels?.[INGRESS_USE_WAYPOINT_LABEL];
  return (own ?? namespaceLabels?.[INGRESS_USE_WAYPOINT_LABEL]) === 'true';
}

/** Numeric enum values of istio.workload.LoadBalancing and IPFamilies (encoding takes numbers). */
const SCOPE: Record<LoadBalancingScopeName, number> = { REGION: 1, ZONE: 2, SUBZONE: 3, NODE: 4, CLUSTER: 5, NETWORK: 6 };
const MODE: Record<LoadBalancingModeName, number> = { STRICT: 1, FAILOVER: 2 };
const IP_FAMILIES: Record<IpFamiliesName, number> = { AUTOMATIC: 0, IPV4_ONLY: 1, IPV6_ONLY: 2, DUAL: 3 };

export function serviceHostname(service: ServiceObject, clusterDomain: string): string {
  return `${service.metadata.name}.${namespaceOf(service)}.svc.${clusterDomain}`;
}

/** The xDS resource name of a service: `<namespace>/<hostname>`. */
export function serviceResourceName(service: ServiceObject, clusterDomain: string): string {
  return `${namespaceOf(service)}/${serviceHostname(service, clusterDomain)}`;
}

/** A numeric targetPort, the port itself when unset, 0 when named (resolved per workload). */
export function numericTargetPort(port: ServicePortSpec): number {
  if (port.targetPort === undefined || port.targetPort === '') return port.port;
  if (typeof port.targetPort === 'number') return port.targetPort;
  const parsed = Number(port.targetPort);
  return Number.isInteger(parsed) ? parsed : 0;
}

/**
 * Istio's protocol selection for a Service port (kube.ConvertProtocol), as istiod writes `app_protocol` for
 * waypoints: UDP ports never; `appProtocol` when set (the Kubernetes names `kubernetes.io/h2c` -> HTTP/2 and
 * `kubernetes.io/ws` -> HTTP first), else the port name; either one's part before the first '-' is looked up
 * case-insensitively (http, http2, grpc, grpc-web, and `h2c`, which ambit adds); `grpc-web` is HTTP (its clients
 * speak HTTP/1.1 or HTTP/2, the waypoint accepts both). Anything else (tcp, tls, https, mongo, ...) is UNKNOWN:
 * forwarded at L4. A declared appProtocol is never overridden by the name, as in Istio. Values of
 * istio.workload.AppProtocol (1 HTTP11, 2 HTTP2, 3 GRPC).
 */
export function appProtocolOf(port: ServicePortSpec): number | undefined {
  if (port.protocol === 'UDP') return undefined;
  const declared = port.appProtocol?.toLowerCase();
  if (declared === 'kubernetes.io/h2c') return 2;
  if (declared === 'kubernetes.io/ws') return 1;
  const name = declared ?? port.name?.toLowerCase() ?? '';
  if (name.startsWith('grpc-web')) return 1;
  const dash = name.indexOf('-');
  const protocol = dash < 0 ? name : name.slice(0, dash);
  if (protocol === 'http') return 1;
  if (protocol === 'http2' || protocol === 'h2c') return 2;
  if (protocol === 'grpc') return 3;
  return undefined;
}

export function serviceVips(service: ServiceObject): string[] {
  const ips = service.spec?.clusterIPs ?? (service.spec?.clusterIP ? [service.spec.clusterIP] : []);
  return ips.filter((ip) => ip && ip !== 'None');
}

export function serviceFromKube(service: ServiceObject, clusterDomain: string, waypoint: GatewayAddressMessage | undefined, namespaceLabels?: Record<string, string>): ServiceMessage {
  const addresses: { network: string; address: Buffer }[] = [];
  for (const ip of serviceVips(service)) {
    try {
      addresses.push({ network: '', address: ipToBytes(ip) });
    } catch {
      // skip an unparsable VIP
    }
  }
  const message: ServiceMessage = {
    name: service.metadata.name,
    namespace: namespaceOf(service),
    hostname: serviceHostname(service, clusterDomain),
    addresses,
    ports: (service.spec?.ports ?? []).map((port) => {
      const appProtocol = appProtocolOf(port);
      return appProtocol === undefined ? { servicePort: port.port, targetPort: numericTargetPort(port) } : { servicePort: port.port, targetPort: numericTargetPort(port), appProtocol };
    }),
    ipFamilies: IP_FAMILIES[serviceIpFamilies(service)],
    // As istiod: a Kubernetes Service is the canonical owner of its hostname (a ServiceEntry of the same name is not).
    canonical: true,
  };
  if (waypoint) message.waypoint = waypoint;
  if (ingressUseWaypoint(service, namespaceLabels)) message.ingressUseWaypoint = true;
  const loadBalancing = serviceLoadBalancing(service);
  if (loadBalancing) message.loadBalancing = { routingPreference: loadBalancing.routingPreference.map((scope) => SCOPE[scope]), mode: MODE[loadBalancing.mode] };
  return message;
}
