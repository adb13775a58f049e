/**
 * A bound on outbound tunnels being opened at once (accepted, CONNECT sent, not yet answered), so a connection
 * storm cannot grow the heap without limit and the agent finishes the tunnels it started instead of advancing
 * thousands a little each (Envoy's and ztunnel's overload managers bound work in flight the same way).
 *
 * Connections past the bound wait in arrival order, untouched: nothing reads them yet, so what the client sends
 * waits in the socket's buffer and then the kernel's, as it does while a tunnel opens. One whose client gave up while
 * it waited is dropped from the queue when its turn comes.
 * Every admitted connection must call `done()` exactly once, when its tunnel opened or failed.
 *
 * Owns: the count, the queue and the order. Must not know about: HBONE, pools, what a connection does once admitted.
 */
import type net from 'node:net';

/**
 * Default: no bound. On this 2-core machine at load average 16-20, A/B runs of a 3,000/s storm with bounds of 64,
 * 256 and none answered 92-311 connections/s in no order the bound explains (run-to-run spread larger than any
 * effect), so nothing showed a bound answers more. AMBIT_MAX_OPENING_TUNNELS sets one, for an A/B on a quiet machine.
 */
export const DEFAULT_MAX_OPENING_TUNNELS = Number.POSITIVE_INFINITY;

export interface AdmissionStats {
  /** Tunnels being opened now. */
  opening: number;
  /** Connections waiting for a turn. */
  queued: number;
  /** Connections that waited, and those dropped from the queue because their client had gone. */
  everQueued: number;
  abandoned: number;
}

/** A connection asking for a slot: the object itself waits in the queue (no wrapper, no closures). */
export interface AdmissionWaiter {
  readonly socket: net.Socket;
  /** Its slot: open the tunnel now (and call `done()` once it opened or failed). */
  admitted(): void;
  /** Its client left while it waited: it holds no slot and calls no `done()`. */
  abandoned(): void;
}

export class TunnelAdmission {
  readonly #max: number;
  readonly #waiting: AdmissionWaiter[] = [];
  /** Index of the queue's head (the array is compacted once the head passes half of it: no shift per dequeue). */
  #head = 0;
  readonly stats: AdmissionStats = { opening: 0, queued: 0, everQueued: 0, abandoned: 0 };

  constructor(max = DEFAULT_MAX_OPENING_TUNNELS) {
    if (!(Number.isInteger(max) || max === Number.POSITIVE_INFINITY) || max < 1) throw new RangeError(`the bound on tunnels being opened must be a whole number >= 1 or Infinity, got ${max}`);
    this.#max = max;
  }

  /**
   * Runs `start` now, or once a slot is free; for a socket destroyed while it waited, `abandoned` instead (then the
   * connection holds no slot, and calls no `done()`).
   */
  admit(socket: net.Socket, start: () => void, abandoned: () => void): void {
    this.enter({ socket, admitted: start, abandoned });
  }

  /** As admit, for a waiter object. */
  enter(waiter: AdmissionWaiter): void {
    if (this.stats.opening < this.#max) {
      this.stats.opening++;
      waiter.admitted();
      return;
    }
    this.#waiting.push(waiter);
    this.stats.queued++;
    this.stats.everQueued++;
  }

  /** A tunnel admitted earlier opened or failed: its slot goes to the next waiting connection still alive. */
  done(): void {
    this.stats.opening--;
    while (this.#head < this.#waiting.length && this.stats.opening < this.#max) {
      const next = this.#waiting[this.#head]!;
      this.#waiting[this.#head] = undefined as never;
      this.#head++;
      this.stats.queued--;
      if (next.socket.destroyed) {
        this.stats.abandoned++;
        next.abandoned();
        continue;
      }
      this.stats.opening++;
      next.admitted();
    }
    if (this.#head > 1024 && this.#head * 2 > this.#waiting.length) {
      this.#waiting.splice(0, this.#head);
      this.#head = 0;
    }
  }
}
