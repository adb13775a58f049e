/**
 * A captured pod's stock of TCP sockets made ahead of need in its network namespace (issue 14, the storm step).
 *
 * A connection delivered into a pod (the server agent makes one per HBONE tunnel) needs a socket made in the pod's
 * namespace, marked 0x539, and, when it keeps the client's address, with IP_TRANSPARENT and IP_BIND_ADDRESS_NO_PORT:
 * made one at a time, that is two setns, a socket and three setsockopt on the connection's path. The stock makes
 * them in batches (the addon's socketsTcp: one setns pair per batch, the options set there), so a connection takes
 * one, binds it to its source address if it has one (bindTcp) and connects.
 *
 * Sizing: a kind of socket (family, transparent, bound) has no stock until asked for one. Its batch starts at one
 * socket (a pod that gets a connection now and then holds no spare, as before the stock) and doubles each time the
 * stock runs empty within GROWTH_WINDOW_MS of its last fill, up to STOCK_MAX: a pod under a storm holds at most
 * STOCK_MAX spares per kind. A kind nobody took from during a whole sweep period (STOCK_IDLE_SWEEP_MS) has its spares
 * closed and starts again at one, so an idle pod holds no descriptor of ours beyond its listeners and its namespace.
 *
 * Safety: the sockets are made through the namespace descriptor the pod's factory holds (the namespace the pod was
 * captured in, never another one at the same path), with the factory's mark; the source address is bound per
 * connection, never in advance. The factory closes the stock when the pod is released: every spare is closed then.
 *
 * Owns: the spare descriptors, by kind, and closing them (close(), the idle sweep). Must not know about: pods, what
 * the sockets connect to, Node's socket objects.
 */
import { nativeSockets, type StockSocketOptions } from './sockets.ts';

/**
 * The most spares one kind keeps. The batch's saving is the setns pair and the addon call spread over the batch
 * (s8-storm's micro-benchmark: 21.6 us per socket one at a time, 14.4 in batches of 8, 13.1 in batches of 32), so past
 * 16 there is little left to gain, and a pod under a storm holds at most 16 descriptors more per kind.
 */
export const STOCK_MAX = 16;
/** A stock that runs empty this soon after its last fill is in demand: its next batch is twice as large. */
const GROWTH_WINDOW_MS = 1_000;
/**
 * How often stocks are looked at: a kind not taken from since the last look has its spares closed. 10 s keeps a stock
 * across the gaps of bursty traffic and bounds how long an idle pod holds spares (under 20 s).
 */
const STOCK_IDLE_SWEEP_MS = 10_000;

/** Whether in-pod factories keep stocks (AMBIT_INPOD_SOCKET_STOCK=0: every socket made on its connection's path). */
export const socketStockEnabled = process.env.AMBIT_INPOD_SOCKET_STOCK !== '0';

class KindStock {
  readonly options: StockSocketOptions;
  readonly fds = new Int32Array(STOCK_MAX);
  count = 0;
  batch = 1;
  filledAt = -Infinity;
  /** Taken from since the last sweep. */
  taken = false;

  constructor(options: StockSocketOptions) {
    this.options = options;
  }
}

/** Spares held by every stock of this thread (the admin's /memory shows the main thread's). */
let sparesHeld = 0;

/** What the stocks of this thread hold now, for the admin view and tests that count the agent's descriptors. */
export function socketStockStats(): { spares: number } {
  return { spares: sparesHeld };
}

/** Stocks holding spares, looked at by the sweep (per thread: each data plane has its own factories). */
const stocksWithSpares = new Set<SocketStock>();
let sweepTimer: NodeJS.Timeout | undefined;

function sweep(): void {
  for (const stock of stocksWithSpares) if (!stock.sweep()) stocksWithSpares.delete(stock);
  if (stocksWithSpares.size === 0 && sweepTimer !== undefined) {
    clearInterval(sweepTimer);
    sweepTimer = undefined;
  }
}

export class SocketStock {
  readonly #netnsFd: number;
  readonly #mark: number | undefined;
  readonly #netns: string | undefined;
  /** By kind: (family 6 ? 4 : 0) | (transparent ? 2 : 0) | (bound ? 1 : 0). */
  readonly #kinds: (KindStock | undefined)[] = [undefined, undefined, undefined, undefined, undefined, undefined, undefined, undefined];
  #closed = false;

  /** `netnsFd`: the namespace descriptor the pod's factory holds (and keeps open longer than this stock). */
  constructor(netnsFd: number, mark: number | undefined, netns?: string) {
    this.#netnsFd = netnsFd;
    this.#mark = mark;
    this.#netns = netns;
  }

  /**
   * An unconnected socket of this kind, the caller's to use or close: from the stock, which is filled first when empty.
   * `bound`: the caller binds it to a source address with port 0 (it has IP_BIND_ADDRESS_NO_PORT). Throws as the
   * addon's socketsTcp does (the namespace gone, EMFILE, an option refused).
   */
  take(family: 4 | 6, transparent: boolean, bound: boolean): number {
    const index = (family === 6 ? 4 : 0) | (transparent ? 2 : 0) | (bound ? 1 : 0);
    const kind = this.#kinds[index] ?? (this.#kinds[index] = this.#newKind(family, transparent, bound));
    kind.taken = true;
    if (kind.count === 0) this.#fill(kind);
    sparesHeld--;
    return kind.fds[--kind.count]!;
  }

  /** Spares held now, all kinds together (diagnostics, tests). */
  get spares(): number {
    let spares = 0;
    for (const kind of this.#kinds) spares += kind?.count ?? 0;
    return spares;
  }

  /** Closes every spare; the stock makes no more (the pod is released). Idempotent. */
  close(): void {
    this.#closed = true;
    for (const kind of this.#kinds) if (kind !== undefined) closeSpares(kind);
    stocksWithSpares.delete(this);
  }

  /** The idle sweep: kinds not taken from since the last one give their spares back. Returns whether any are left. */
  sweep(): boolean {
    let left = false;
    for (const kind of this.#kinds) {
      if (kind === undefined) continue;
      if (!kind.taken) {
        closeSpares(kind);
        kind.batch = 1;
        kind.filledAt = -Infinity;
      }
      kind.taken = false;
      if (kind.count > 0) left = true;
    }
    return left;
  }

  #newKind(family: 4 | 6, transparent: boolean, bound: boolean): KindStock {
    const options: StockSocketOptions = { netnsFd: this.#netnsFd, family, transparent, bindNoPort: bound };
    if (this.#mark) options.mark = this.#mark;
    // Named in errors only (the descriptor is what the sockets are made through).
    if (this.#netns !== undefined) options.netns = this.#netns;
    return new KindStock(options);
  }

  #fill(kind: KindStock): void {
    if (this.#closed) throw new Error('the socket stock is closed (its pod was released)');
    const now = performance.now();
    if (now - kind.filledAt < GROWTH_WINDOW_MS) kind.batch = Math.min(kind.batch * 2, STOCK_MAX);
    kind.filledAt = now;
    kind.count = nativeSockets.socketsTcp(kind.options, kind.fds, kind.batch);
    sparesHeld += kind.count;
    if (kind.count > 1 && !stocksWithSpares.has(this)) {
      stocksWithSpares.add(this);
      sweepTimer ??= setInterval(sweep, STOCK_IDLE_SWEEP_MS).unref();
    }
  }
}

function closeSpares(kind: KindStock): void {
  for (let index = 0; index < kind.count; index++) {
    try {
      nativeSockets.closeFd(kind.fds[index]!);
    } catch {
      // Nothing else owns these descriptors; a failed close leaves nothing to do.
    }
  }
  sparesHeld -= kind.count;
  kind.count = 0;
}
