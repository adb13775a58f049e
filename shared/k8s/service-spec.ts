/**
 * What a Kubernetes Service's spec says about routing, in the terms of Istio's workload API, as istiod derives it
 * (pilot's ambient service index): internalTrafficPolicy Local -> only endpoints on the client's node (NODE,
 * STRICT); trafficDistribution PreferClose / PreferSameZone (or Istio's `networking.istio.io/traffic-distribution`
 * annotation) -> the closest endpoints by network, region, zone, subzone, failing over (FAILOVER);
 * PreferSameNode -> as PreferClose with the node as the closest scope. Local wins over a traffic distribution.
 * And the IP families from spec.ipFamilies.
 *
 * Owns: those two mappings, by enum name. Used by the control plane (encoded as numbers) and by the agent's
 * cluster-directory source.
 * Must not know about: encoding, stores, the mesh state.
 */
import type { ServiceObject } from './objects.ts';

export type LoadBalancingScopeName = 'REGION' | 'ZONE' | 'SUBZONE' | 'NODE' | 'CLUSTER' | 'NETWORK';
export type LoadBalancingModeName = 'STRICT' | 'FAILOVER';
export type IpFamiliesName = 'AUTOMATIC' | 'IPV4_ONLY' | 'IPV6_ONLY' | 'DUAL';

export interface ServiceLoadBalancing {
  routingPreference: LoadBalancingScopeName[];
  mode: LoadBalancingModeName;
}

/** Istio's annotation for a traffic distribution on clusters whose Services lack the field. */
export const TRAFFIC_DISTRIBUTION_ANNOTATION = 'networking.istio.io/traffic-distribution';

const CLOSE: LoadBalancingScopeName[] = ['NETWORK', 'REGION', 'ZONE', 'SUBZONE'];

export function serviceLoadBalancing(service: ServiceObject): ServiceLoadBalancing | undefined {
  if (service.spec?.internalTrafficPolicy === 'Local') return { routingPreference: ['NODE'], mode: 'STRICT' };
  const distribution = (service.spec?.trafficDistribution ?? service.metadata.annotations?.[TRAFFIC_DISTRIBUTION_ANNOTATION] ?? '').toLowerCase();
  switch (distribution) {
    case 'preferclose':
    case 'prefersamezone':
      return { routingPreference: [...CLOSE], mode: 'FAILOVER' };
    case 'prefersamenode':
      // Ranks count matching scopes from the first: NODE last, so a same-zone endpoint still outranks a far one.
      return { routingPreference: [...CLOSE, 'NODE'], mode: 'FAILOVER' };
    default:
      return undefined;
  }
}

export function serviceIpFamilies(service: ServiceObject): IpFamiliesName {
  const families = (service.spec as { ipFamilies?: string[] } | undefined)?.ipFamilies ?? [];
  if (families.length === 2) return 'DUAL';
  if (families.length === 1) return families[0] === 'IPv6' ? 'IPV6_ONLY' : 'IPV4_ONLY';
  return 'AUTOMATIC';
}
