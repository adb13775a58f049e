/**
 * The DestinationRule's `connectionPool` limits for one Service at the waypoint, as Envoy's circuit breakers count
 * them: requests in flight to the Service (every request rides its own upstream stream, so this is also the number
 * of upstream connections: the smaller of `tcp.maxConnections` and `http.http2MaxRequests`), and requests waiting
 * for one of those slots (`http.http1MaxPendingRequests`). A request that finds both full overflows: the caller
 * answers 503 with Envoy's flag `UO`.
 *
 * Owns: the counts and the queue of waiting requests. Must not know about: HTTP, endpoints, what a slot is used for.
 */
import type { ConnectionPoolLimits } from './policy-table.ts';

export class ConnectionPoolOverflowError extends Error {
  readonly code = 'WAYPOINT_UPSTREAM_OVERFLOW';
  constructor(message: string) {
    super(message);
    this.name = 'ConnectionPoolOverflowError';
  }
}

export class ConnectionPool {
  readonly #maxActive: number;
  readonly #maxPending: number;
  readonly #service: string;
  #active = 0;
  readonly #waiting: (() => void)[] = [];
  #overflows = 0;

  constructor(service: string, limits: ConnectionPoolLimits) {
    this.#service = service;
    const limitsOfActive = [limits.maxConnections, limits.http2MaxRequests].filter((limit) => limit > 0);
    this.#maxActive = limitsOfActive.length > 0 ? Math.min(...limitsOfActive) : Infinity;
    this.#maxPending = limits.http1MaxPendingRequests > 0 ? limits.http1MaxPendingRequests : Infinity;
  }

  get active(): number {
    return this.#active;
  }

  get pending(): number {
    return this.#waiting.length;
  }

  get overflows(): number {
    return this.#overflows;
  }

  /**
   * Takes a slot: undefined when one was free (taken), a promise that resolves when one frees up, or throws
   * ConnectionPoolOverflowError when the waiting room is full too. Every taken slot must be released once.
   */
  acquire(): Promise<void> | undefined {
    if (this.#active < this.#maxActive) {
      this.#active++;
      return undefined;
    }
    if (this.#waiting.length >= this.#maxPending) {
      this.#overflows++;
      throw new ConnectionPoolOverflowError(
        `upstream overflow: service ${this.#service} has ${this.#active} requests in flight (limit ${this.#maxActive}) and ${this.#waiting.length} waiting (limit ${this.#maxPending})`,
      );
    }
    return new Promise<void>((resolve) => this.#waiting.push(resolve));
  }

  /** Gives a slot back: to the oldest waiting request, if any. */
  release(): void {
    const next = this.#waiting.shift();
    if (next) next();
    else this.#active--;
  }
}
