/**
 * Fresh TCP sockets made in one network namespace in batches, for the connects of one event-loop turn.
 *
 * Why: a socket in another namespace costs an open of the namespace's file, two setns calls and the socket itself
 * (41-61 us per socket under load here, of which the socket about 11 us). The server agent makes one per tunnel, its
 * connection to the application inside the pod: in a 3,000 connections/s storm profile, the socket factory's
 * `connect` was 12.5 % self of that agent's busy samples. The streams of one read of an HBONE connection are
 * connected in one turn (the tunnel server waits a turn before connecting), so one trip into the namespace can make
 * the sockets of all of them.
 *
 * Spares not used by the end of the turn are closed in the next turn's check phase: an unused socket never holds a
 * namespace (a deleted pod's) or a descriptor for longer than that. The first batch of a turn is half of what the
 * previous turn used (at least one); a turn that runs out makes a batch twice the size of its last one (at most
 * MAX_SOCKET_BATCH): a steady storm makes a few batches per turn, a lone connection one socket.
 *
 * Owns: the spare sockets, their sizes and their closing. Must not know about: socket options (mark, transparent,
 * bind: the caller gives them to each socket it takes), connecting, pods.
 */
import { nativeSockets } from './sockets.ts';

/** The most sockets one batch makes (the addon's own limit is 64). */
export const MAX_SOCKET_BATCH = 32;

export class NamespaceSocketBatch {
  readonly #netns: string;
  readonly #spares4: number[] = [];
  readonly #spares6: number[] = [];
  /** Size of the last batch made in this turn (0: none yet). */
  #lastBatch = 0;
  #usedThisTurn = 0;
  #usedLastTurn = 0;
  #closeScheduled = false;
  /** Sockets made and closed unused, for the admin dump and tests. */
  readonly stats = { batches: 0, socketsMade: 0, sparesClosed: 0 };

  constructor(netns: string) {
    this.#netns = netns;
  }

  /** A fresh, option-less TCP socket of `family` made in the namespace; throws the addon's error (ENOENT, EMFILE...). */
  take(family: 4 | 6): number {
    const spares = family === 6 ? this.#spares6 : this.#spares4;
    let fd = spares.pop();
    if (fd === undefined) {
      const count = this.#lastBatch === 0 ? Math.max(1, Math.ceil(this.#usedLastTurn / 2)) : this.#lastBatch * 2;
      const made = nativeSockets.socketsTcp({ netns: this.#netns, family, count: Math.min(count, MAX_SOCKET_BATCH) });
      this.#lastBatch = made.length;
      this.stats.batches++;
      this.stats.socketsMade += made.length;
      fd = made.pop()!;
      for (let index = 0; index < made.length; index++) spares.push(made[index]!);
      if (!this.#closeScheduled) {
        this.#closeScheduled = true;
        setImmediate(closeSpares, this);
      }
    }
    this.#usedThisTurn++;
    return fd;
  }

  /** The turn is over: spares are closed, the next turn starts from what this one used. */
  endTurn(): void {
    this.#closeScheduled = false;
    this.#usedLastTurn = this.#usedThisTurn;
    this.#usedThisTurn = 0;
    this.#lastBatch = 0;
    for (const fd of this.#spares4.splice(0)) this.#closeSpare(fd);
    for (const fd of this.#spares6.splice(0)) this.#closeSpare(fd);
  }

  #closeSpare(fd: number): void {
    try {
      nativeSockets.closeFd(fd);
      this.stats.sparesClosed++;
    } catch {
      // Never handed to anyone: a failing close leaves nothing to do.
    }
  }
}

function closeSpares(batch: NamespaceSocketBatch): void {
  batch.endTurn();
}
