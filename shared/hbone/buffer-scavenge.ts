/**
 * Frees the buffers Node allocates per socket read with a scavenge, before V8 frees them with a full mark-compact.
 *
 * Why: node:http2 reads its TLS socket into a fresh backing store per read and hands DATA to JavaScript as views of
 * it (nothing ambit can reuse; the own layer reads its TLS socket into pooled buffers instead, pooled-reads.ts
 * SharedPooledReader, and counts here only what Node would not switch). The backing stores
 * are V8 external memory held by young ArrayBuffers; a scavenge frees them, but a proxy makes little JavaScript
 * garbage per chunk, so its young generation fills only after gigabytes, and V8 answers the external memory first,
 * with a full mark-compact of the whole heap (measured, mesh suite, 1 stream: the receiving agent ran one every
 * ~190 ms at 150 MB/s, "GC in old space requested" with no scavenge in between; V8's concurrent-marking threads
 * were a fifth of its perf samples). A minor GC every BYTES_PER_SCAVENGE bytes relayed in such buffers keeps
 * external memory under V8's trigger (same run with it: 1 mark-compact per agent instead of 12-21).
 *
 * Owns: the count of bytes relayed per thread in per-read buffers and when to ask for a scavenge.
 * Must not know about: streams, sockets, what the bytes are.
 */
import { exposedGc, type GcFunction } from '../memory/v8-gc.ts';

/**
 * 32 MiB: under V8's external-memory trigger (64 MiB of growth), so the trigger is not reached between two
 * scavenges; a scavenge of a proxy's nearly empty young generation costs well under a millisecond, about 1/200 of
 * the time 32 MiB take to relay at 150 MB/s.
 */
export const BYTES_PER_SCAVENGE = 32 * 1024 * 1024;

let relayedSinceScavenge = 0;
let scavengeQueued = false;
let minorGc: GcFunction | null | undefined;
let scavenges = 0;

/** This isolate's gc(), or null if V8 refused to expose it (the scavenge is then skipped). */
function loadMinorGc(): GcFunction | null {
  try {
    return exposedGc();
  } catch {
    return null;
  }
}

function scavenge(): void {
  scavengeQueued = false;
  relayedSinceScavenge = 0;
  minorGc ??= loadMinorGc();
  if (minorGc === null) return;
  minorGc({ type: 'minor', execution: 'sync' });
  scavenges++;
}

/** Counts `bytes` relayed in a buffer Node allocated for one read; past the threshold, one scavenge runs after this I/O phase. */
export function relayedInReadBuffers(bytes: number): void {
  relayedSinceScavenge += bytes;
  if (relayedSinceScavenge < BYTES_PER_SCAVENGE || scavengeQueued) return;
  scavengeQueued = true;
  setImmediate(scavenge);
}

/** Scavenges asked for so far on this thread (tests, and the agent's admin view of its splices' reads). */
export function readBufferScavenges(): number {
  return scavenges;
}
