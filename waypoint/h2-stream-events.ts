/**
 * The events of the waypoint's own-layer stream adapters (h2-own-downstream.ts, h2-own-upstream.ts): the part of
 * node:events' EventEmitter that the proxy, the try and the body feed use of a node:http2 stream (`on`, `once`,
 * `off`, `emit`, `listenerCount`; `addListener`/`removeListener` for node:events' `once()` helper), kept in one flat
 * list per stream.
 *
 * Why not EventEmitter: a gRPC call registers about twenty listeners on its two adapters, most of them `once`, and
 * EventEmitter makes each `once` a state object and a bound function with a property added to it, and keeps each
 * stream's listeners in a dictionary of arrays keyed by event name (megamorphic property access per emit). Here a
 * listener is three slots of one array per stream (event, function, once flag), found by a linear scan: a stream has
 * a handful of listeners at most.
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
type Listener = StreamListener;

/** Slots per registration in the flat list: event, listener, once (1) or not (0). */
const SLOTS = 3;

/** Removes the registration at `index` from `list`, moving the later ones down (no array made, as splice would). */
function removeAt(list: unknown[], index: number): void {
  const length = list.length;
  for (let at = index + SLOTS; at < length; at++) list[at - SLOTS] = list[at];
  // Popped, not `length` set shorter: V8 trims the backing store on a shorter length (a runtime call), and the next
  // registration grows it again; pop keeps it (lists.ts).
  list.pop();
  list.pop();
  list.pop();
}

export class StreamEvents {
  /** [event, listener, once, event, listener, once, ...], in the order they were added. */
  #listeners: Array<string | symbol | Listener | number> = [];

  on(event: string | symbol, listener: Listener): this {
    this.#listeners.push(event, listener, 0);
    return this;
  }

  addListener(event: string | symbol, listener: Listener): this {
    return this.on(event, listener);
  }

  once(event: string | symbol, listener: Listener): this {
    this.#listeners.push(event, listener, 1);
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
      if (list[at + 2] === 1) removeAt(list, at);
      this.#call(listener, argumentCount, first, second);
      return true;
    }
    if (count === 2) {
      // Two (a stream's 'close' heard by the request flow and the relay): taken into locals, no array.
      const first1 = list[at + 1] as Listener;
      if (list[at + 2] === 1) removeAt(list, at);
      else at += SLOTS;
      while (list[at] !== event) at += SLOTS;
      const second1 = list[at + 1] as Listener;
      if (list[at + 2] === 1) removeAt(list, at);
      this.#call(first1, argumentCount, first, second);
      this.#call(second1, argumentCount, first, second);
      return true;
    }
    // Several: taken (and the once ones removed) before any runs, as EventEmitter does.
    const taken: Listener[] = [];
    for (let index = at; index < list.length; ) {
      if (list[index] !== event) {
        index += SLOTS;
        continue;
      }
      taken.push(list[index + 1] as Listener);
      if (list[index + 2] === 1) removeAt(list, index);
      else index += SLOTS;
    }
    for (const listener of taken) this.#call(listener, argumentCount, first, second);
    return true;
  }

  #call(listener: Listener, argumentCount: number, first: unknown, second: unknown): void {
    if (argumentCount <= 0) listener.call(this);
    else if (argumentCount === 1) listener.call(this, first);
    else listener.call(this, first, second);
  }
}
