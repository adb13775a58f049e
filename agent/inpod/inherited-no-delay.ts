/**
 * TCP_NODELAY on accepted connections without a setsockopt each: Linux copies the option from a listening socket to
 * the connections it accepts (checked on this kernel: an accepted socket reads 1 when its listener had it, 0 when
 * not), so a listener the addon made with it hands every connection over with Nagle already off. Node does not know
 * that: a net.Server with `noDelay` sets it again per connection, and a later `setNoDelay(true)` (the splice's) would
 * too. So the in-pod listeners are made with TCP_NODELAY and a net.Server without `noDelay`, and each accepted socket
 * is told it has it (Node's own per-socket flag, the one `setNoDelay` reads): one syscall less per connection on
 * the client agent (issue 14, the storm step). Where this Node has no such flag to set, the listener is made the old
 * way (Node sets it per connection).
 *
 * Owns: the flag and which servers pass the option on. Must not know about: pods, what the connections carry.
 */
import net from 'node:net';

/** Node's per-socket "TCP_NODELAY is set" flag (net.js kSetNoDelay), read from a socket it made; undefined if absent. */
const kSetNoDelay: symbol | undefined = (() => {
  const probe = new net.Socket();
  const symbol = Object.getOwnPropertySymbols(probe).find((candidate) => candidate.description === 'kSetNoDelay');
  probe.destroy();
  return symbol !== undefined && (probe as unknown as Record<symbol, unknown>)[symbol] === false ? symbol : undefined;
})();

/** True when accepted sockets can be told they inherited TCP_NODELAY (so listeners should be made with it). */
export const noDelayInheritable = kSetNoDelay !== undefined && process.env.AMBIT_NODELAY_PER_ACCEPT !== '1';

const inheritingServers = new WeakSet<net.Server>();

/** `server` listens on a socket made with TCP_NODELAY and was created without Node's `noDelay`. */
export function passesNoDelayOn(server: net.Server): void {
  inheritingServers.add(server);
}

/** Whether `server`'s accepted sockets come with TCP_NODELAY set (and must be told so with `markNoDelaySet`). */
export function passesNoDelay(server: net.Server): boolean {
  return inheritingServers.has(server);
}

/** Records on an accepted socket that it has TCP_NODELAY (inherited): its `setNoDelay(true)` is then no syscall. */
export function markNoDelaySet(socket: net.Socket): void {
  (socket as unknown as Record<symbol, unknown>)[kSetNoDelay!] = true;
}
