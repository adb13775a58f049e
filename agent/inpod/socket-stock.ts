/**
 * A captured pod's stock of TCP sockets made ahead of need in its network namespace (issue 14, the storm step).
 *
 * A connection delivered into a pod (the server agent makes one per HBONE tunnel) needs a socket made in the pod's
 * namespace, marked 0x539, and, when it keeps the client's address, with IP_TRANSPARENT and IP_BIND_ADDRESS_NO_PORT:
 * made one at a time, that is two setns, a socket and three setsockopt on the connection's path. The stock makes
 * them in batches (the addon's socketsTcp: one setns pair per batch, the options set there), so a connection takes
 * one, binds it to its source address if it has one (bindTcp) and connects.
 *
 * Off the connection's path: taking is a pop. The stock is topped up after the turn that took from it (one
 * setImmediate per thread, armed when a kind falls to half its level, for every stock that did), not inside a take. A
 * take that finds its kind empty while the kind has no level yet (a connection now and then, or the first of a burst)
 * makes one socket for itself, as without a stock. (Until session s14 a take that found the stock empty filled a
 * whole batch in place: the first connection of a burst paid for the sockets of the ones after it.) One that finds it
 * empty although it has a level is in a burst larger than the stock inside one turn: it makes half the level in one
 * visit, its own socket and spares for the burst's next connections (one socket per such take cost a setns pair per
 * connection for the rest of the burst).
 *
 * Sizing: a kind of socket (family, transparent, bound) has no stock until asked for one, and its level is 0 (no
 * spare) while it runs empty no more than once per GROWTH_WINDOW_MS: a pod that gets a connection now and then holds
 * no spare, as before the stock. Found empty twice within the window, it gets a level of 2; a refill that follows the
 * last one within the window (steady demand, even one connection at a time) or a take that finds it empty (demand
 * outrunning the refills) doubles the level, up to STOCK_MAX: a pod under a storm holds at most STOCK_MAX spares per
 * kind, refilled in batches of about half of that (one setns pair per batch). A kind nobody took from during a whole
 * sweep period (STOCK_IDLE_SWEEP_MS) has its spares closed and its level back at 0, so an idle pod holds no
 * descriptor of ours beyond its listeners and its namespace.
 *
 * Safety: the sockets are made through the namespace descriptor the pod's factory holds (the namespace the pod was
 * captured in, never another one at the same path), with the factory's mark; the source address is bound per
 * connection, never in advance. The factory closes the stock when the pod is released: every spare is closed then,
 * and a refill queued before that makes nothing.
 *
 * Owns: the spare descriptors, by kind, the refill after the turn, and closing them (close(), the idle sweep). Must
 * not know about: pods, what the sockets connect to, Node's socket objects.
 */
import { nativeSockets, type StockSocketOptions } from './sockets.ts';

/**
 * The most spares one kind keeps (its level at most). The batch's saving is the setns pair and the addon call spread
 * over the batch (s8-storm's micro-benchmark: 21.6 us per socket one at a time, 14.4 in batches of 8, 13.1 in batches
 * of 32). Refilled at half its level, a kind's batches are half of this: 32 keeps them at 16 (one setns pair per 16
 * connections, as the in-turn fill of s13 had), and a pod under a storm holds at most 32 descriptors more per kind
 * (about 3.3 KB of kernel memory each, none of the process's heap), for 10-20 s after its last connection.
 */
export const STOCK_MAX = 32;
/** A kind found empty twice, or refilled twice, within this is in demand: the level its refill keeps doubles. */
const GROWTH_WINDOW_MS = 1_000;
/**
 * How often stocks are looked at: a kind not taken from since the last look has its spares closed. 10 s keeps a stock
 * across the gaps of bursty traffic and bounds how long an idle pod holds spares (under 20 s).
 */
const STOCK_IDLE_SWEEP_MS = 10_000;

/**
 * Whether in-pod factories keep stocks: **off by default** since session s14 (AMBIT_INPOD_SOCKET_STOCK=1 turns them
 * on). It counts two setns fewer per connection, but in quiet A/B runs of the mesh suite's storm step the stock read
 * lower than without it (3,000/s answered, four runs each: 1,380 / 2,255 / 1,892 / 1,526 with it, two of them failing
 * connections, against 2,044 / 2,058 / 2,452 / 2,246 without, none failing; BENCHMARKS.md, "The in-pod socket stock
 * ... quiet A/B"). Kept, tested, for a machine where the counts show in wall clock.
 */
export let socketStockEnabled = process.env.AMBIT_INPOD_SOCKET_STOCK === '1';

/** Turns stocks on or off for factories' later connections (the stock's own tests; the environment decides at start). */
export function setSocketStockEnabled(enabled: boolean): void {
  socketStockEnabled = enabled;
}

class KindStock {
  readonly stock: SocketStock;
  readonly options: StockSocketOptions;
  readonly fds = new Int32Array(STOCK_MAX);
  count = 0;
  /** The level a refill tops the kind up to: 0 (no spare) until it runs empty twice within GROWTH_WINDOW_MS. */
  level = 0;
  /** When a take last found it empty, and when it was last refilled (performance.now()). */
  emptyAt = -Infinity;
  refilledAt = -Infinity;
  /** Taken from since the last sweep. */
  taken = false;
  /** In the refill queue. */
  queued = false;

  constructor(stock: SocketStock, options: StockSocketOptions) {
    this.stock = stock;
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

/**
 * Kinds below half their level, topped up after the turn that took from them: one Immediate per turn for all of them,
 * not one per connection; the list is reused (emptied, not replaced).
 */
const refillQueue: KindStock[] = [];
let refillQueueLength = 0;

function queueRefill(kind: KindStock): void {
  if (kind.queued) return;
  kind.queued = true;
  refillQueue[refillQueueLength++] = kind;
  if (refillQueueLength === 1) setImmediate(runRefills);
}

function runRefills(): void {
  const length = refillQueueLength;
  refillQueueLength = 0;
  for (let index = 0; index < length; index++) {
    const kind = refillQueue[index]!;
    refillQueue[index] = undefined as unknown as KindStock;
    kind.queued = false;
    kind.stock.refill(kind);
  }
}

/** Where socketsTcp writes a refill's (or a lone socket's) descriptors before they join a kind: made once per thread. */
const made = new Int32Array(STOCK_MAX);

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
   * An unconnected socket of this kind, the caller's to use or close: a spare when there is one (the refill after
   * the turn tops the stock up), else one made now. `bound`: the caller binds it to a source address with port 0
   * (it has IP_BIND_ADDRESS_NO_PORT). Throws as the addon's socketsTcp does (the namespace gone, EMFILE, an option
   * refused), and once the stock is closed.
   */
  take(family: 4 | 6, transparent: boolean, bound: boolean): number {
    const index = (family === 6 ? 4 : 0) | (transparent ? 2 : 0) | (bound ? 1 : 0);
    const kind = this.#kinds[index] ?? (this.#kinds[index] = this.#newKind(family, transparent, bound));
    kind.taken = true;
    if (kind.count > 0) {
      sparesHeld--;
      const fd = kind.fds[--kind.count]!;
      if (kind.count <= kind.level >> 1) queueRefill(kind);
      return fd;
    }
    if (this.#closed) throw new Error('the socket stock is closed (its pod was released)');
    // Empty: this connection makes its own socket. A kind found empty twice within the window gets a stock (level 2);
    // one found empty although it has a level is outrunning its refills: twice the level.
    const now = performance.now();
    if (now - kind.emptyAt < GROWTH_WINDOW_MS) kind.level = kind.level === 0 ? 2 : Math.min(kind.level * 2, STOCK_MAX);
    kind.emptyAt = now;
    if (kind.level === 0) {
      nativeSockets.socketsTcp(kind.options, made, 1);
      return made[0]!;
    }
    // A kind with demand found empty inside a turn (a burst beyond its level): half its level in one visit, this
    // connection's socket and spares for the rest of the burst, not one visit per connection (with one socket per
    // empty take, 128 connects in flight cost 1.53 setns each against 0.13 for the in-place batch: BENCHMARKS.md,
    // session s14-storm). The rest of the level is the refill's, after the turn.
    const count = nativeSockets.socketsTcp(kind.options, made, kind.level >> 1);
    this.#keep(kind, 1, count);
    queueRefill(kind);
    return made[0]!;
  }

  /** Spares held now, all kinds together (diagnostics, tests). */
  get spares(): number {
    let spares = 0;
    for (const kind of this.#kinds) spares += kind?.count ?? 0;
    return spares;
  }

  /** Closes every spare; the stock makes no more (the pod is released; a refill already queued makes nothing). Idempotent. */
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
        kind.level = 0;
        kind.emptyAt = -Infinity;
        kind.refilledAt = -Infinity;
      }
      kind.taken = false;
      if (kind.count > 0) left = true;
    }
    return left;
  }

  /**
   * Tops `kind` up to its level in one visit to the namespace (runRefills, after the turn that took from it). A
   * failure (the namespace gone, EMFILE) makes no spare and drops the level: the next take makes its own socket and
   * meets the error itself.
   */
  refill(kind: KindStock): void {
    if (this.#closed || kind.level === 0) return;
    // Refilled again within the window: the demand is steady, so the batches grow (up to half of STOCK_MAX each).
    const now = performance.now();
    if (now - kind.refilledAt < GROWTH_WINDOW_MS) kind.level = Math.min(kind.level * 2, STOCK_MAX);
    kind.refilledAt = now;
    const wanted = kind.level - kind.count;
    if (wanted <= 0) return;
    let count: number;
    try {
      count = nativeSockets.socketsTcp(kind.options, made, wanted);
    } catch {
      kind.level = 0;
      return;
    }
    this.#keep(kind, 0, count);
  }

  /** Adds `made[from..to)` to the kind's spares (the sweep looks at this stock from now on). */
  #keep(kind: KindStock, from: number, to: number): void {
    if (to <= from) return;
    const fds = kind.fds;
    let at = kind.count;
    for (let index = from; index < to; index++) fds[at++] = made[index]!;
    kind.count = at;
    sparesHeld += to - from;
    if (!stocksWithSpares.has(this)) {
      stocksWithSpares.add(this);
      sweepTimer ??= setInterval(sweep, STOCK_IDLE_SWEEP_MS).unref();
    }
  }

  #newKind(family: 4 | 6, transparent: boolean, bound: boolean): KindStock {
    const options: StockSocketOptions = { netnsFd: this.#netnsFd, family, transparent, bindNoPort: bound };
    if (this.#mark) options.mark = this.#mark;
    // Named in errors only (the descriptor is what the sockets are made through).
    if (this.#netns !== undefined) options.netns = this.#netns;
    return new KindStock(this, options);
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
