/**
 * Local rate limiting at the waypoint (ambit's LocalRateLimitPolicy, shared/policy/rate-limit.ts): token buckets
 * per limit and key (the whole limit for `Route`, else the source principal, the client address or a header's
 * value), refilled continuously at `requests` per period up to `burst`. Buckets live in the `RateLimiter` by policy
 * and limit name, so a policy update that keeps a limit keeps its buckets; a Service's `ServiceRateLimiter` is
 * rebuilt with the policy table.
 *
 * Owns: buckets, which limits a request counts against, and the answer's numbers. Must not know about: HTTP
 * serving, policies' decisions, xDS.
 */
import type { L7RateLimit, L7RateLimitPolicy } from '../../shared/policy/rate-limit.ts';

/** Keys kept per limit at most (the oldest bucket goes first): a flood of distinct keys cannot grow memory. */
export const RATE_LIMIT_MAX_KEYS = 100_000;

interface Bucket {
  tokens: number;
  lastMs: number;
}

export interface RateLimitHit {
  /** `namespace/policy/limit`. */
  limit: string;
  requests: number;
  periodSeconds: number;
  /** Seconds until one token is back (at least 1). */
  resetSeconds: number;
}

export interface RateLimitRequest {
  method: string;
  path: string;
  sourcePrincipal: string;
  clientAddress: string;
  headers: Readonly<Record<string, string | string[] | undefined>>;
}

function wildcard(values: readonly string[]): ((value: string) => boolean) | undefined {
  if (values.length === 0) return undefined;
  const tests = values.map((value): ((candidate: string) => boolean) => {
    if (value === '*') return (candidate) => candidate !== '';
    if (value.startsWith('*')) return (candidate) => candidate.endsWith(value.slice(1));
    if (value.endsWith('*')) return (candidate) => candidate.startsWith(value.slice(0, -1));
    return (candidate) => candidate === value;
  });
  return (candidate) => tests.some((test) => test(candidate));
}

class CompiledLimit {
  readonly id: string;
  readonly limit: L7RateLimit;
  readonly buckets: Map<string, Bucket>;
  readonly #paths: ((value: string) => boolean) | undefined;
  readonly #methods: Set<string> | undefined;
  readonly #ratePerMs: number;

  constructor(id: string, limit: L7RateLimit, buckets: Map<string, Bucket>) {
    this.id = id;
    this.limit = limit;
    this.buckets = buckets;
    this.#paths = wildcard(limit.paths);
    this.#methods = limit.methods.length > 0 ? new Set(limit.methods) : undefined;
    this.#ratePerMs = limit.requests / limit.periodMs;
  }

  #key(request: RateLimitRequest): string | undefined {
    switch (this.limit.keyType) {
      case 'Route':
        return '';
      case 'SourcePrincipal':
        return request.sourcePrincipal;
      case 'ClientIP':
        return request.clientAddress;
      case 'Header': {
        const value = request.headers[this.limit.header];
        // No header: this limit does not count the request (as Envoy's descriptor without its entry).
        return Array.isArray(value) ? value.join(',') : value;
      }
    }
  }

  /** Takes a token for the request; a hit when the bucket is empty, undefined when allowed or not counted. */
  take(request: RateLimitRequest, nowMs: number): RateLimitHit | undefined {
    if (this.#methods !== undefined && !this.#methods.has(request.method)) return undefined;
    if (this.#paths !== undefined && !this.#paths(request.path)) return undefined;
    const key = this.#key(request);
    if (key === undefined) return undefined;
    let bucket = this.buckets.get(key);
    if (bucket === undefined) {
      if (this.buckets.size >= RATE_LIMIT_MAX_KEYS) this.buckets.delete(this.buckets.keys().next().value!);
      bucket = { tokens: this.limit.burst, lastMs: nowMs };
      this.buckets.set(key, bucket);
    } else {
      bucket.tokens = Math.min(this.limit.burst, bucket.tokens + (nowMs - bucket.lastMs) * this.#ratePerMs);
      bucket.lastMs = nowMs;
    }
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return undefined;
    }
    return { limit: this.id, requests: this.limit.requests, periodSeconds: this.limit.periodMs / 1000, resetSeconds: Math.max(1, Math.ceil((1 - bucket.tokens) / this.#ratePerMs / 1000)) };
  }
}

/** The limits that apply to one Service here. */
export class ServiceRateLimiter {
  readonly #limits: CompiledLimit[];
  readonly #now: () => number;

  constructor(limits: CompiledLimit[], now: () => number) {
    this.#limits = limits;
    this.#now = now;
  }

  get empty(): boolean {
    return this.#limits.length === 0;
  }

  /** Counts the request against every limit that selects it; the first exhausted one refuses it. */
  take(request: RateLimitRequest): RateLimitHit | undefined {
    const now = this.#now();
    for (const limit of this.#limits) {
      const hit = limit.take(request, now);
      if (hit) return hit;
    }
    return undefined;
  }
}

export class RateLimiter {
  #buckets = new Map<string, Map<string, Bucket>>();
  readonly #now: () => number;

  constructor(now: () => number = () => performance.now()) {
    this.#now = now;
  }

  /** Keeps the buckets of limits still in `policies`, drops the others. */
  update(policies: readonly L7RateLimitPolicy[]): void {
    const next = new Map<string, Map<string, Bucket>>();
    for (const policy of policies) for (const limit of policy.limits) {
      const id = `${policy.namespace}/${policy.name}/${limit.name}`;
      next.set(id, this.#buckets.get(id) ?? new Map());
    }
    this.#buckets = next;
  }

  forService(policies: readonly L7RateLimitPolicy[]): ServiceRateLimiter {
    const limits: CompiledLimit[] = [];
    for (const policy of policies) for (const limit of policy.limits) {
      const id = `${policy.namespace}/${policy.name}/${limit.name}`;
      let buckets = this.#buckets.get(id);
      if (buckets === undefined) {
        buckets = new Map();
        this.#buckets.set(id, buckets);
      }
      limits.push(new CompiledLimit(id, limit, buckets));
    }
    return new ServiceRateLimiter(limits, this.#now);
  }
}
