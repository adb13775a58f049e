/**
 * Least-request load balancing over a Service's endpoints, Istio's default for waypoints (Envoy's LEAST_REQUEST
 * with equal weights: the power of two choices): two endpoints drawn at random among the best-ranked healthy ones,
 * the one with fewer requests in flight wins.
 *
 * Owns: the in-flight count per endpoint address and the choice between two draws.
 * Must not know about: how endpoints are drawn (shared/mesh/load-balance.ts), sockets, HTTP.
 */
import type { PickedEndpoint } from '../shared/mesh/load-balance.ts';

/**
 * Addresses kept in the map at zero requests in flight, up to this many: deleted and added again per request, an entry
 * leaves a hole in the map's table, which is rebuilt (a new table) every few requests to drop them.
 */
const MAX_ADDRESSES_AT_ZERO = 1024;

export class LeastRequestBalancer {
  readonly #inFlight = new Map<string, number>();

  /** The draw with fewer requests in flight (the first on a tie). */
  choose(first: PickedEndpoint, second: PickedEndpoint): PickedEndpoint {
    return this.inFlight(second.address) < this.inFlight(first.address) ? second : first;
  }

  inFlight(address: string): number {
    return this.#inFlight.get(address) ?? 0;
  }

  started(address: string): void {
    this.#inFlight.set(address, this.inFlight(address) + 1);
  }

  finished(address: string): void {
    const count = this.inFlight(address) - 1;
    if (count > 0 || (count === 0 && this.#inFlight.size <= MAX_ADDRESSES_AT_ZERO)) this.#inFlight.set(address, count);
    else this.#inFlight.delete(address);
  }
}
