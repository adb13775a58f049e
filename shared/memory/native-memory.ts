/**
 * The process-wide memory releases only native code can ask for (agent/native/memory.c, addon `ambit_memory`):
 * glibc's malloc_trim, and dropping this process's mappings of the node binary's read-only pages (what start-up
 * touched stays counted in RSS otherwise: measured, a bare `node` holds 30 MiB of its binary, an agent 50 MiB).
 *
 * Used by the agent's main thread and by the waypoint (both hand it to heap-release.ts): it lives in shared/ for that;
 * the addon itself is built with the agent's others in agent/native/ (one binding.gyp, one image carries them all).
 *
 * Owns: loading the addon and naming its two calls. Must not know about: when they are worth calling
 * (shared/memory/heap-release.ts decides), V8, connections.
 */
import { createRequire } from 'node:module';
import type { NativeRelease } from './heap-release.ts';

const require = createRequire(import.meta.url);
export const nativeMemory: NativeRelease = require('../../agent/native/build/Release/ambit_memory.node') as NativeRelease;
