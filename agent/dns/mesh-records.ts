/**
 * The DNS proxy's view of the mesh state: ServiceRecords over MeshState, so the DNS server itself never holds the
 * state (it cannot see workloads, policies or certificates; only "which addresses does this hostname have").
 *
 * What a hostname resolves to, as ztunnel's DNS server answers: a Service with VIPs gives its VIPs on the default
 * network; a headless Service (no VIP) gives, per endpoint workload, its first address of each family, endpoints
 * that are UNHEALTHY (not Ready, being deleted) left out as CoreDNS leaves out not-ready endpoints; a Service whose
 * `ipFamilies` is IPv4-only or IPv6-only gives only that family (a dual-stack pod behind a single-stack headless
 * Service must not be announced in the other family).
 *
 * Owns: that mapping, and a cache of it per hostname that is dropped whenever the mesh state changes (its version),
 * so a query costs one map lookup, not an endpoint walk.
 * Must not know about: DNS messages, pods, sockets.
 */
import type { Service } from '../../shared/mesh/service.ts';
import { isHeadless } from '../../shared/mesh/service.ts';
import type { MeshState } from '../../shared/mesh/mesh-state.ts';
import type { ServiceRecords } from './service-records.ts';

/** The read-only part of MeshState this adapter uses. */
export type ServiceState = Pick<MeshState, 'version' | 'servicesByHostname' | 'endpointsOf'>;

const NONE: readonly string[] = Object.freeze([]);

export class MeshServiceRecords implements ServiceRecords {
  readonly #state: ServiceState;
  readonly #cache = new Map<string, readonly string[] | undefined>();
  #cachedVersion = -1;

  constructor(state: ServiceState) {
    this.#state = state;
  }

  get generation(): number {
    return this.#state.version;
  }

  addressesOf(hostname: string): readonly string[] | undefined {
    if (this.#state.version !== this.#cachedVersion) {
      this.#cache.clear();
      this.#cachedVersion = this.#state.version;
    }
    if (this.#cache.has(hostname)) return this.#cache.get(hostname);
    const addresses = this.#compute(hostname);
    // Unknown names are cached too (NXDOMAIN floods); the cache is bounded by the names clients ask for between changes.
    if (this.#cache.size > 10_000) this.#cache.clear();
    this.#cache.set(hostname, addresses);
    return addresses;
  }

  #compute(hostname: string): readonly string[] | undefined {
    const services = this.#state.servicesByHostname(hostname);
    if (services.length === 0) return undefined;
    // Kubernetes gives one Service per hostname; a second (a ServiceEntry with the same host) adds nothing here.
    const service = services[0]!;
    if (!isHeadless(service)) {
      const vips = service.vips.filter((vip) => vip.network === '').map((vip) => vip.address);
      return Object.freeze(vips.filter((address) => familyAllowed(service, address)));
    }
    const addresses: string[] = [];
    for (const endpoint of this.#state.endpointsOf(service)) {
      if (endpoint.workload.status === 'UNHEALTHY') continue;
      let v4 = false;
      let v6 = false;
      for (const address of endpoint.workload.addresses) {
        const isV6 = address.includes(':');
        if (isV6 ? v6 : v4) continue;
        if (!familyAllowed(service, address)) continue;
        addresses.push(address);
        if (isV6) v6 = true;
        else v4 = true;
      }
    }
    return addresses.length === 0 ? NONE : Object.freeze(addresses);
  }
}

function familyAllowed(service: Service, address: string): boolean {
  if (service.ipFamilies === 'IPV4_ONLY') return !address.includes(':');
  if (service.ipFamilies === 'IPV6_ONLY') return address.includes(':');
  return true;
}
