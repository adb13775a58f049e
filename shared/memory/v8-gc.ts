/**
 * V8's `gc()` for the calling isolate, exposed at run time: `--expose-gc` only adds the function to contexts made
 * after it is set, so the flag is set and a new context hands the function over (no command-line flag needed).
 * Used by the heap release (a memory-reducing major GC) and the splices' read-buffer scavenge (a minor GC).
 *
 * Owns: getting the function. Must not know about: when or why a caller runs a GC.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

export interface GcOptions {
  type: 'major' | 'minor';
  execution: 'sync' | 'async';
  flavor?: 'regular' | 'last-resort';
}
export type GcFunction = (options: GcOptions) => Promise<void> | undefined;

/** This isolate's gc(); throws if V8 refuses the flag. */
export function exposedGc(): GcFunction {
  const exposed = (globalThis as { gc?: unknown }).gc;
  if (typeof exposed === 'function') return exposed as GcFunction;
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as GcFunction;
}
