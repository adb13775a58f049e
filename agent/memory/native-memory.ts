/**
 * The process-wide memory releases only native code can ask for (agent/native/memory.c, addon `ambit_memory`):
 * glibc's malloc_trim, and dropping this process's mappings of the node binary's read-only pages (what start-up
 * touched stays counted in RSS otherwise: measured, a bare `node` holds 30 MiB of its binary, an agent 50 MiB).
 *
 * Owns: loading the addon and naming its two calls. Must not know about: when they are worth calling
 * (heap-release.ts decides), V8, connections.
 */
import { createRequire } from 'node:module';

interface NativeMemory {
  /** malloc_trim(0): true when glibc returned memory to the kernel. */
  trimMalloc(): boolean;
  /** Unmaps the executable's read-only, never-written mappings; KiB that were resident in them. */
  dropExecutablePages(): number;
}

const require = createRequire(import.meta.url);
export const nativeMemory: NativeMemory = require('../native/build/Release/ambit_memory.node') as NativeMemory;
