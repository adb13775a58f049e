/**
 * Which waypoint a workload or service uses, with Istio ambient's labels: `istio.io/use-waypoint` on the object
 * (or else its namespace) names a Gateway of class `istio-waypoint` (in `istio.io/use-waypoint-namespace`, or
 * the object's own namespace); the Gateway's `istio.io/waypoint-for` says whether it serves services (the
 * default), workloads, all or none.
 *
 * Owns: that rule and the GatewayAddress it produces. Must not know about: stores, encoding, xDS.
 */
import type { NamespaceObject } from '../../shared/k8s/objects.ts';
import { ipToBytes } from '../../shared/xds/types.ts';
import type { GatewayObject, ServiceObject } from './kube-types.ts';

export const USE_WAYPOINT_LABEL = 'istio.io/use-waypoint';
export const USE_WAYPOINT_NAMESPACE_LABEL = 'istio.io/use-waypoint-namespace';
export const WAYPOINT_FOR_LABEL = 'istio.io/waypoint-for';
export const WAYPOINT_GATEWAY_CLASS = 'istio-waypoint';
/** `istio.io/use-waypoint: none` on an object opts it out of its namespace's waypoint. */
export const NO_WAYPOINT = 'none';
/** Waypoints accept HBONE on the standard port. */
export const WAYPOINT_HBONE_PORT = 15008;

export type WaypointClient = 'workload' | 'service';

/** protobufjs-encodable istio.workload.GatewayAddress. */
export interface GatewayAddressMessage {
  address?: { network: string; address: Buffer };
  hostname?: { namespace: string; hostname: string };
  hboneMtlsPort: number;
}

export interface WaypointLookup {
  gateway(namespace: string, name: string): GatewayObject | undefined;
  service(namespace: string, name: string): ServiceObject | undefined;
  clusterDomain: string;
}

/** The `<namespace>/<name>` of the Gateway an object asks for, or undefined (no label, or `none`). */
export function requestedWaypoint(
  labels: Record<string, string> | undefined,
  objectNamespace: string,
  namespace: NamespaceObject | undefined,
): string | undefined {
  const own = labels?.[USE_WAYPOINT_LABEL];
  if (own === NO_WAYPOINT) return undefined;
  if (own) return `${labels?.[USE_WAYPOINT_NAMESPACE_LABEL] || objectNamespace}/${own}`;
  const namespaceLabels = namespace?.metadata.labels;
  const fromNamespace = namespaceLabels?.[USE_WAYPOINT_LABEL];
  if (!fromNamespace || fromNamespace === NO_WAYPOINT) return undefined;
  return `${namespaceLabels?.[USE_WAYPOINT_NAMESPACE_LABEL] || objectNamespace}/${fromNamespace}`;
}

function serves(gateway: GatewayObject, client: WaypointClient): boolean {
  const waypointFor = gateway.metadata.labels?.[WAYPOINT_FOR_LABEL] ?? 'service';
  return waypointFor === 'all' || waypointFor === client;
}

/** The GatewayAddress for `gatewayKey` if it is a waypoint serving `client`, else undefined. */
export function waypointAddress(gatewayKey: string, client: WaypointClient, lookup: WaypointLookup): GatewayAddressMessage | undefined {
  const [namespace = '', name = ''] = gatewayKey.split('/');
  const gateway = lookup.gateway(namespace, name);
  if (!gateway || gateway.spec?.gatewayClassName !== WAYPOINT_GATEWAY_CLASS || !serves(gateway, client)) return undefined;
  // Prefer an IP (the agent can tunnel to it without a lookup): the Gateway's status address, or the VIP of
  // the Service Istio's deployment controller names after the Gateway; else the hostname.
  const ip =
    gateway.status?.addresses?.find((entry) => (entry.type ?? 'IPAddress') === 'IPAddress' && entry.value)?.value ??
    validClusterIp(lookup.service(namespace, name)?.spec?.clusterIP);
  if (ip) {
    try {
      return { address: { network: '', address: ipToBytes(ip) }, hboneMtlsPort: WAYPOINT_HBONE_PORT };
    } catch {
      // fall through to the hostname
    }
  }
  return { hostname: { namespace, hostname: `${name}.${namespace}.svc.${lookup.clusterDomain}` }, hboneMtlsPort: WAYPOINT_HBONE_PORT };
}

export function validClusterIp(ip: string | undefined): string | undefined {
  return ip && ip !== 'None' ? ip : undefined;
}
