/**
 * A thread-wide hint that a lot of memory has just become garbage (the HBONE pool closed connections it kept after
 * a burst), so whoever gives memory back to the kernel (shared/memory/heap-release.ts) should look at
 * its next quiet moment instead of waiting for the heap to grow again: garbage in V8's old space is not even
 * counted as free until a full GC runs, and an idle process runs none.
 *
 * Owns: the hint and its listeners (per thread: each isolate has its own heap). Must not know about: GC, V8, who
 * frees what.
 */
const listeners = new Set<() => void>();

/** Says memory was freed; listeners run synchronously and must only take note (set a flag), never do the work. */
export function noteMemoryFreed(): void {
  for (const listener of listeners) listener();
}

/** Subscribes; returns the unsubscribe function. */
export function onMemoryFreed(listener: () => void): () => void {
  listeners.add(listener);
  return () => void listeners.delete(listener);
}
