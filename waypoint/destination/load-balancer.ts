/**
 * The DestinationRule's `loadBalancer` at the waypoint: which of a Service's usable endpoints takes a request.
 * ROUND_ROBIN (in turn), LEAST_REQUEST (Envoy's power of two choices: two at random, the one with fewer requests in
 * flight), RANDOM, and consistentHash on a ring (Envoy's ring hash: every endpoint gets ceil(minimumRingSize / n)
 * points, rounded up to a power of two; a key goes to the first point at or after its hash, so one key stays on one
 * endpoint and removing an endpoint moves only the keys that were on it, unless the count crosses a power of two).
 *
 * Owns: the choice among candidates given by key, and the rings. Must not know about: HTTP, workloads, health,
 * ejection (the caller passes only the endpoints that may be chosen), where the hash key comes from.
 */
import type { LoadBalancerPolicy } from './policy-table.ts';

/** 32-bit FNV-1a of a string's UTF-16 code units: cheap, allocation-free, well spread for ring points. */
export function hash32(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  // Final avalanche (murmur3's fmix32): FNV alone clusters keys that differ in their last characters.
  hash ^= hash >>> 16;
  hash = Math.imul(hash, 0x85ebca6b);
  hash ^= hash >>> 13;
  hash = Math.imul(hash, 0xc2b2ae35);
  hash ^= hash >>> 16;
  return hash >>> 0;
}

interface Ring {
  /** The candidate set it was built for (keys joined), to know when to rebuild. */
  signature: string;
  points: Uint32Array;
  /** Index into the candidate list, per point. */
  owners: Uint16Array;
}

function buildRing(keys: readonly string[], minimumRingSize: number): Ring {
  // Envoy's ceil(minimumRingSize / n) points each, rounded up to a power of two: an endpoint keeps the same points
  // while the count of endpoints stays between two powers of two, so removing one moves only the keys it held.
  const perEndpoint = 2 ** Math.ceil(Math.log2(Math.max(1, Math.ceil(minimumRingSize / keys.length))));
  const entries: { point: number; owner: number }[] = [];
  keys.forEach((key, owner) => {
    for (let i = 0; i < perEndpoint; i++) entries.push({ point: hash32(`${key}_${i}`), owner });
  });
  // Ties (two endpoints on one point) broken by key so every waypoint replica builds the same ring.
  entries.sort((a, b) => a.point - b.point || (keys[a.owner]! < keys[b.owner]! ? -1 : 1));
  return { signature: keys.join('\n'), points: Uint32Array.from(entries, (entry) => entry.point), owners: Uint16Array.from(entries, (entry) => entry.owner) };
}

export class EndpointBalancer {
  readonly #policy: LoadBalancerPolicy;
  readonly #random: () => number;
  #next = 0;
  #ring: Ring | undefined;

  constructor(policy: LoadBalancerPolicy, random: () => number = Math.random) {
    this.#policy = policy;
    this.#random = random;
  }

  get policy(): LoadBalancerPolicy {
    return this.#policy;
  }

  /**
   * Index into `keys` (stable endpoint keys, in a stable order) of the endpoint to use. `inFlight(i)` is the
   * number of requests candidate i has in flight (LEAST_REQUEST); `hashKey` is the request's key for
   * consistentHash (undefined: no key, e.g. the header is absent: a random endpoint, as Envoy does).
   */
  choose(keys: readonly string[], inFlight: (index: number) => number, hashKey: string | undefined): number {
    const n = keys.length;
    if (n <= 1) return 0;
    switch (this.#policy.simple) {
      case 'ROUND_ROBIN':
        this.#next = (this.#next + 1) % n;
        return this.#next;
      case 'RANDOM':
        return Math.floor(this.#random() * n);
      case 'LEAST_REQUEST': {
        const first = Math.floor(this.#random() * n);
        let second = Math.floor(this.#random() * (n - 1));
        if (second >= first) second++;
        return inFlight(second) < inFlight(first) ? second : first;
      }
      case 'CONSISTENT_HASH': {
        if (hashKey === undefined) return Math.floor(this.#random() * n);
        let ring = this.#ring;
        if (ring === undefined || !sameKeys(ring.signature, keys)) ring = this.#ring = buildRing(keys, this.#policy.minimumRingSize);
        return ring.owners[lowerBound(ring.points, hash32(hashKey)) % ring.points.length]!;
      }
    }
  }
}

/** Whether `signature` (keys joined by newlines) is exactly `keys`, without joining them. */
function sameKeys(signature: string, keys: readonly string[]): boolean {
  let offset = 0;
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i]!;
    if (!signature.startsWith(key, offset)) return false;
    offset += key.length;
    if (i < keys.length - 1) {
      if (signature.charCodeAt(offset) !== 10) return false;
      offset++;
    }
  }
  return offset === signature.length;
}

/** First index whose point is >= value (points.length when none). */
function lowerBound(points: Uint32Array, value: number): number {
  let low = 0;
  let high = points.length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    if (points[middle]! < value) low = middle + 1;
    else high = middle;
  }
  return low;
}
