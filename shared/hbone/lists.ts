/**
 * Emptying the hot path's reused lists without giving their storage back.
 *
 * `list.length = 0` is a store to an accessor (a V8 runtime call, ~400 instructions) and trims the array's backing
 * store to nothing, so the next `push` allocates it again (another runtime call and garbage): measured with callgrind
 * on a relay end, about five such stores and re-growths per 1 KiB request (BENCHMARKS.md, "Instructions per
 * request", session s10). Popping keeps the backing store (V8 does not trim on `pop`) and is inlined in optimized
 * code. For the short lists a loop turn fills (a few entries).
 *
 * Owns: that one idiom. Must not know about: what the lists hold.
 */

/** Removes every entry of `list`, keeping its capacity for the next turn. */
export function emptyList(list: unknown[]): void {
  while (list.length > 0) list.pop();
}
