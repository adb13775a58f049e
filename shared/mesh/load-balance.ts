/**
 * Picks the endpoint a connection to a Service's VIP goes to, as ztunnel's `state.rs` `load_balance` does: among
 * the workloads that back the service, those that serve the port (named target ports resolved per endpoint),
 * are healthy (unless the service allows all), have an address of the connection's family, and rank best by the
 * service's load balancing (STRICT: every routing preference must match, e.g. internalTrafficPolicy Local = same
 * node; FAILOVER: the closest rank present wins, e.g. trafficDistribution PreferClose). Uniform among equals.
 *
 * Owns: the choice and the typed error for "no endpoint can take it" (ztunnel's NoHealthyUpstream), with counts
 * of why each endpoint was passed over, for the access log.
 * Must not know about: sockets, HBONE, telemetry.
 */
import { targetPortOf, type LoadBalancingScope, type Service, type ServiceEndpoint } from './service.ts';
import type { Workload } from './workload.ts';

/** Envoy's response flag for "no healthy upstream", the value ztunnel reports for NoHealthyUpstream. */
export const NO_HEALTHY_UPSTREAM_FLAG = 'UH';

export interface PassedOver {
  /** Endpoints whose workload is UNHEALTHY (not Ready, or being deleted). */
  unhealthy: number;
  /** Endpoints that do not serve the port (a named target port they do not declare, or a port the service lacks). */
  noPort: number;
  /** Endpoints with no address in the connection's family. */
  otherFamily: number;
  /** Endpoints a STRICT load balancing rule (internalTrafficPolicy Local) excludes, e.g. on another node. */
  notLocal: number;
}

/** No endpoint of the service can take the connection: the client is refused, the access log says why. */
export class NoHealthyUpstreamError extends Error {
  readonly code = 'NO_HEALTHY_UPSTREAM';
  readonly responseFlags = NO_HEALTHY_UPSTREAM_FLAG;
  readonly service: string;
  readonly endpoints: number;
  readonly passedOver: PassedOver;

  constructor(service: Service, servicePort: number, endpoints: number, passedOver: PassedOver) {
    const reasons: string[] = [];
    if (passedOver.unhealthy) reasons.push(`${passedOver.unhealthy} unhealthy`);
    if (passedOver.notLocal) reasons.push(`${passedOver.notLocal} excluded by the service's load balancing (${service.loadBalancing?.routingPreference.join('/') ?? ''} ${service.loadBalancing?.mode ?? ''})`);
    if (passedOver.noPort) reasons.push(`${passedOver.noPort} without port ${servicePort}`);
    if (passedOver.otherFamily) reasons.push(`${passedOver.otherFamily} without an address of this family`);
    const why = endpoints === 0 ? 'it has no endpoints' : `of ${endpoints} endpoint${endpoints === 1 ? '' : 's'}: ${reasons.join(', ')}`;
    const portKnown = service.ports.some((port) => port.servicePort === servicePort);
    super(`no healthy upstream: service ${service.hostname} ${portKnown ? `port ${servicePort}` : `has no port ${servicePort}`}; ${why}`);
    this.name = 'NoHealthyUpstreamError';
    this.service = service.hostname;
    this.endpoints = endpoints;
    this.passedOver = passedOver;
  }
}

export interface PickedEndpoint {
  endpoint: ServiceEndpoint;
  /** The endpoint's address in the connection's family. */
  address: string;
  /** The port to dial on it (the service port mapped to the endpoint's target port). */
  targetPort: number;
}

function scopeMatches(scope: LoadBalancingScope, source: Workload, candidate: Workload): boolean {
  switch (scope) {
    case 'NODE':
      return source.node === candidate.node;
    case 'NETWORK':
      return (source.network ?? '') === (candidate.network ?? '');
    case 'CLUSTER':
      // One cluster per control plane in ambit.
      return true;
    case 'REGION':
      return (source.locality?.region ?? '') === (candidate.locality?.region ?? '');
    case 'ZONE':
      return (source.locality?.zone ?? '') === (candidate.locality?.zone ?? '');
    case 'SUBZONE':
      return (source.locality?.subzone ?? '') === (candidate.locality?.subzone ?? '');
  }
}

function addressLike(workload: Workload, v6: boolean): string | undefined {
  const addresses = workload.addresses;
  for (let index = 0; index < addresses.length; index++) if (addresses[index]!.includes(':') === v6) return addresses[index];
  return undefined;
}

/**
 * The endpoint for a connection from `source` to `servicePort` of `service` at a VIP of the family of `vip`.
 * One pass over the endpoints, no array built: the best rank seen so far and a reservoir pick among its equals.
 * Throws NoHealthyUpstreamError when none qualifies.
 */
export function pickEndpoint(source: Workload, service: Service, endpoints: readonly ServiceEndpoint[], servicePort: number, vip: string, random: () => number = Math.random): PickedEndpoint {
  return drawEndpoint({ endpoint: undefined as unknown as ServiceEndpoint, address: '', targetPort: 0 }, source, service, endpoints, servicePort, vip, random);
}

/**
 * pickEndpoint's choice written into `into` (returned): for a caller that draws per request and keeps nothing of a
 * draw past its next one (the waypoint's least-request choice draws twice per request).
 */
export function drawEndpoint(into: PickedEndpoint, source: Workload, service: Service, endpoints: readonly ServiceEndpoint[], servicePort: number, vip: string, random: () => number = Math.random): PickedEndpoint {
  const v6 = vip.includes(':');
  const lb = service.loadBalancing;
  // UNSPECIFIED_MODE and PASSTHROUGH: any endpoint, unranked.
  const preference = lb !== undefined && (lb.mode === 'STRICT' || lb.mode === 'FAILOVER') && lb.routingPreference.length > 0 ? lb.routingPreference : undefined;
  const strict = preference !== undefined && lb?.mode === 'STRICT';
  const allowUnhealthy = lb?.healthPolicy === 'ALLOW_ALL';
  let chosen: ServiceEndpoint | undefined;
  let chosenAddress = '';
  let chosenPort = 0;
  let bestRank = -1;
  let equals = 0;
  let unhealthy = 0;
  let noPort = 0;
  let otherFamily = 0;
  let notLocal = 0;
  // Indexed loops: the waypoint draws twice per request, and an array iterator's results were 0.16 KB per request there.
  for (let index = 0; index < endpoints.length; index++) {
    const endpoint = endpoints[index]!;
    const workload = endpoint.workload;
    if (workload.status === 'UNHEALTHY' && !allowUnhealthy) {
      unhealthy++;
      continue;
    }
    const targetPort = targetPortOf(service, endpoint, servicePort);
    if (targetPort === undefined) {
      noPort++;
      continue;
    }
    const address = addressLike(workload, v6);
    if (address === undefined) {
      otherFamily++;
      continue;
    }
    let rank = 0;
    if (preference !== undefined) {
      for (let scope = 0; scope < preference.length; scope++) {
        if (!scopeMatches(preference[scope]!, source, workload)) break;
        rank++;
      }
      if (strict && rank !== preference.length) {
        notLocal++;
        continue;
      }
    }
    if (rank > bestRank) {
      bestRank = rank;
      equals = 1;
    } else if (rank === bestRank) {
      equals++;
      if (random() * equals >= 1) continue;
    } else {
      continue;
    }
    chosen = endpoint;
    chosenAddress = address;
    chosenPort = targetPort;
  }
  if (!chosen) throw new NoHealthyUpstreamError(service, servicePort, endpoints.length, { unhealthy, noPort, otherFamily, notLocal });
  into.endpoint = chosen;
  into.address = chosenAddress;
  into.targetPort = chosenPort;
  return into;
}
