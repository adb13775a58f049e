/**
 * The events of the waypoint's own-layer stream adapters (h2-own-downstream.ts, h2-own-upstream.ts): the part of
 * node:events' EventEmitter that the proxy, the try and the body feed use of a node:http2 stream (`on`, `once`,
 * `off`, `emit`, `listenerCount`; `addListener`/`removeListener` for node:events' `once()` helper), kept in one flat
 * list per stream.
 *
 * Why not EventEmitter: a gRPC call registers about twenty listeners on its two adapters, most of them `once`, and
 * EventEmitter makes each `once` a state object and a bound function with a property added to it, and keeps each
 * stream's listeners in a dictionary of arrays keyed by event name (megamorphic property access per emit). Here a
 * listener is four slots of one array per stream (event, function, once flag, receiver), found by a linear scan: a
 * stream has a handful of listeners at most.
 *
 * The receiver: a listener registered with `listenFor` is called with that object as `this` (not the stream), so a
 * per-call object's methods serve as its listeners without a closure each (the request flow and the try,
 * h2-proxy.ts, h2-try.ts and h2-request-body.ts: about fifteen closures per gRPC call before session s13); `listen`
 * does the same on node:http2's streams (the `node` legs) with a function bound per registration.
 *
 * Semantics kept from EventEmitter: listeners run in the order they were added; a listener added during an emit is
 * not called by it, one removed during an emit still is (the listeners are taken when the emit starts); a `once`
 * listener is removed before it runs; `off` removes the most recently added registration of that function; 'error'
 * emitted with no listener throws the error.
 * Owns: listener bookkeeping. Must not know about: HTTP/2, what the events mean.
 * Hot path: an emit with one or two listeners ('data' per chunk, 'close') allocates nothing; removing a registration moves the later
 * slots down in place (`Array.prototype.splice` would make an array of the removed slots each time: a call removes
 * about ten `once` registrations, measured 0.5 KB of garbage per gRPC call).
 */

// Listeners take whatever their event carries, as EventEmitter's do.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type StreamListener = (...args: any[]) => void;
/** A listener called with a receiver of its own as `this` (listenFor, listen). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type ReceiverListener<T> = (this: T, ...args: any[]) => void;
type Listener = StreamListener;

/** Slots per registration in the flat list: event, listener, once (1) or not (0), receiver (undefined: the stream). */
const SLOTS = 4;

/** Removes the registration at `index` from `list`, moving the later ones down (no array made, as splice would). */
function removeAt(list: unknown[], index: number): void {
  const length = list.length;
  for (let at = index + SLOTS; at < length; at++) list[at - SLOTS] = list[at];
  // Popped, not `length` set shorter: V8 trims the backing store on a shorter length (a runtime call), and the next
  // registration grows it again; pop keeps it (lists.ts).
  list.pop();
  list.pop();
  list.pop();
  list.pop();
}

export class StreamEvents {
  /** [event, listener, once, receiver, event, listener, once, receiver, ...], in the order they were added. */
  #listeners: unknown[] = [];

  on(event: string | symbol, listener: Listener): this {
    this.#listeners.push(event, listener, 0, undefined);
    return this;
  }

  addListener(event: string | symbol, listener: Listener): this {
    return this.on(event, listener);
  }

  once(event: string | symbol, listener: Listener): this {
    this.#listeners.push(event, listener, 1, undefined);
    return this;
  }

  /** `on` (or `once`) with `receiver` as the listener's `this` (see the top comment). */
  listenFor<T>(event: string | symbol, listener: ReceiverListener<T>, receiver: T, once: boolean): this {
    this.#listeners.push(event, listener, once ? 1 : 0, receiver);
    return this;
  }

  off(event: string | symbol, listener: Listener): this {
    const list = this.#listeners;
    for (let index = list.length - SLOTS; index >= 0; index -= SLOTS) {
      if (list[index] === event && list[index + 1] === listener) {
        removeAt(list, index);
        break;
      }
    }
    return this;
  }

  /** `off` of the most recent registration of `listener` for `receiver` (listenFor's). */
  offFor<T>(event: string | symbol, listener: ReceiverListener<T>, receiver: T): this {
    const list = this.#listeners;
    for (let index = list.length - SLOTS; index >= 0; index -= SLOTS) {
      if (list[index] === event && list[index + 1] === listener && list[index + 3] === receiver) {
        removeAt(list, index);
        break;
      }
    }
    return this;
  }

  removeListener(event: string | symbol, listener: Listener): this {
    return this.off(event, listener);
  }

  listenerCount(event: string | symbol): number {
    const list = this.#listeners;
    let count = 0;
    for (let index = 0; index < list.length; index += SLOTS) if (list[index] === event) count++;
    return count;
  }

  /** Calls the event's listeners with up to two arguments (what the adapters' events carry), as many as given. */
  emit(event: string | symbol, first?: unknown, second?: unknown): boolean {
    const argumentCount = arguments.length - 1;
    const list = this.#listeners;
    let at = -1;
    let count = 0;
    for (let index = 0; index < list.length; index += SLOTS) {
      if (list[index] !== event) continue;
      if (count === 0) at = index;
      count++;
    }
    if (count === 0) {
      if (event === 'error') throw first instanceof Error ? first : new Error(`unhandled 'error' event: ${String(first)}`);
      return false;
    }
    if (count === 1) {
      const listener = list[at + 1] as Listener;
      const receiver = list[at + 3] ?? this;
      if (list[at + 2] === 1) removeAt(list, at);
      call(listener, receiver, argumentCount, first, second);
      return true;
    }
    if (count === 2) {
      // Two (a stream's 'close' heard by the request flow and the try): taken into locals, no array.
      const first1 = list[at + 1] as Listener;
      const firstReceiver = list[at + 3] ?? this;
      if (list[at + 2] === 1) removeAt(list, at);
      else at += SLOTS;
      while (list[at] !== event) at += SLOTS;
      const second1 = list[at + 1] as Listener;
      const secondReceiver = list[at + 3] ?? this;
      if (list[at + 2] === 1) removeAt(list, at);
      call(first1, firstReceiver, argumentCount, first, second);
      call(second1, secondReceiver, argumentCount, first, second);
      return true;
    }
    // Several: taken (and the once ones removed) before any runs, as EventEmitter does.
    const taken: unknown[] = [];
    for (let index = at; index < list.length; ) {
      if (list[index] !== event) {
        index += SLOTS;
        continue;
      }
      taken.push(list[index + 1], list[index + 3] ?? this);
      if (list[index + 2] === 1) removeAt(list, index);
      else index += SLOTS;
    }
    for (let index = 0; index < taken.length; index += 2) call(taken[index] as Listener, taken[index + 1], argumentCount, first, second);
    return true;
  }
}

/**
 * The events of a stream adapter whose body flows once a 'data' listener is there, as a node:stream Readable's does
 * (the own layer's request and answer streams, h2-own-downstream.ts and h2-own-upstream.ts): a lasting 'data'
 * registration, by `on` or with a receiver by `listenFor`, calls `dataListened`, where the adapter starts delivering.
 */
export abstract class FlowingStreamEvents extends StreamEvents {
  override on(event: string | symbol, listener: Listener): this {
    super.on(event, listener);
    if (event === 'data') this.dataListened();
    return this;
  }

  override listenFor<T>(event: string | symbol, listener: ReceiverListener<T>, receiver: T, once: boolean): this {
    super.listenFor(event, listener, receiver, once);
    if (event === 'data' && !once) this.dataListened();
    return this;
  }

  /** A 'data' listener was added: deliver (what is held, and from now on) unless already doing so. */
  protected abstract dataListened(): void;
}

function call(listener: Listener, receiver: unknown, argumentCount: number, first: unknown, second: unknown): void {
  if (argumentCount <= 0) listener.call(receiver);
  else if (argumentCount === 1) listener.call(receiver, first);
  else listener.call(receiver, first, second);
}

/** What `listen` registers on: the own layer's adapters (StreamEvents) or node:http2's streams. */
interface ListenerTarget {
  on(event: string, listener: Listener): unknown;
  once(event: string, listener: Listener): unknown;
}

/**
 * Registers `listener` on `target` with `receiver` as its `this`: a receiver slot on the own layer's adapters (no
 * function made), a bound function on node:http2's streams (for one that is removed later, `unlisten` needs the
 * bound function: keep it and `off` it there).
 */
export function listen<T>(target: ListenerTarget, event: string, listener: ReceiverListener<T>, receiver: T, once: boolean): void {
  if (target instanceof StreamEvents) target.listenFor(event, listener, receiver, once);
  else if (once) target.once(event, listener.bind(receiver));
  else target.on(event, listener.bind(receiver));
}
