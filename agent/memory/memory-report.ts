/**
 * Where this process's memory is, for the admin endpoint `/memory`: what an operator (or a benchmark) needs to tell
 * a leak from a high-water mark and the V8 heap from native memory and from the node binary's touched pages.
 *
 * Owns: reading /proc/self (smaps_rollup, and smaps grouped by mapping), V8's heap statistics per space, Node's
 * memoryUsage and the count of live libuv resources by kind. Must not know about: what allocated any of it.
 * Not on any data path: built only when asked (reading smaps walks every mapping: a few milliseconds).
 */
import { readFileSync } from 'node:fs';
import { getHeapSpaceStatistics, getHeapStatistics } from 'node:v8';

const KIB = 1024;

export interface MappingRss {
  /** The mapping's path, `[heap]`, `[stack]`, or `anonymous`. */
  name: string;
  rssBytes: number;
  anonymousBytes: number;
}

export interface MemoryReport {
  /** From /proc/self/smaps_rollup (bytes): resident, anonymous, file-backed, shared memory; swap. */
  rss: { total: number; anonymous: number; file: number; shmem: number; swap: number } | undefined;
  /** Resident bytes per mapping name, largest first (the top `mappings` of them). */
  mappings: MappingRss[];
  /** process.memoryUsage(): rss, heapTotal, heapUsed, external, arrayBuffers (bytes). */
  process: NodeJS.MemoryUsage;
  /** V8's totals: committed, used, malloced (V8's own C++ allocations), native contexts (isolates' realms). */
  heap: { committed: number; used: number; limit: number; malloced: number; peakMalloced: number; externalMemory: number; nativeContexts: number; detachedContexts: number };
  /** Per V8 space (new, old, code, large object, ...): committed and used bytes. */
  spaces: { name: string; committed: number; used: number }[];
  /** Live libuv handles and requests by kind (TCPWRAP, TLSWRAP, Timeout, ...): per-connection objects show here. */
  resources: Record<string, number>;
}

function parseKib(text: string, field: string): number | undefined {
  const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text);
  return match ? Number(match[1]) * KIB : undefined;
}

function readRollup(): MemoryReport['rss'] {
  let text: string;
  let status: string;
  try {
    text = readFileSync('/proc/self/smaps_rollup', 'utf8');
    status = readFileSync('/proc/self/status', 'utf8');
  } catch {
    return undefined;
  }
  return {
    total: parseKib(text, 'Rss') ?? 0,
    anonymous: parseKib(status, 'RssAnon') ?? 0,
    file: parseKib(status, 'RssFile') ?? 0,
    shmem: parseKib(status, 'RssShmem') ?? 0,
    swap: parseKib(text, 'Swap') ?? 0,
  };
}

/** Resident memory per mapping name from /proc/self/smaps (summed over a file's several mappings). */
export function residentByMapping(limit: number, smaps = '/proc/self/smaps'): MappingRss[] {
  let text: string;
  try {
    text = readFileSync(smaps, 'utf8');
  } catch {
    return [];
  }
  const byName = new Map<string, MappingRss>();
  let current: MappingRss | undefined;
  for (const line of text.split('\n')) {
    const header = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \d+\s*(.*)$/.exec(line);
    if (header) {
      const name = header[1] || 'anonymous';
      current = byName.get(name);
      if (!current) {
        current = { name, rssBytes: 0, anonymousBytes: 0 };
        byName.set(name, current);
      }
      continue;
    }
    if (!current) continue;
    if (line.startsWith('Rss:')) current.rssBytes += Number(/(\d+)/.exec(line)?.[1] ?? 0) * KIB;
    else if (line.startsWith('Anonymous:')) current.anonymousBytes += Number(/(\d+)/.exec(line)?.[1] ?? 0) * KIB;
  }
  return [...byName.values()].filter((mapping) => mapping.rssBytes > 0).sort((a, b) => b.rssBytes - a.rssBytes).slice(0, limit);
}

export function memoryReport(options: { mappings?: number } = {}): MemoryReport {
  const heap = getHeapStatistics();
  const resources: Record<string, number> = {};
  for (const kind of process.getActiveResourcesInfo()) resources[kind] = (resources[kind] ?? 0) + 1;
  return {
    rss: readRollup(),
    mappings: residentByMapping(options.mappings ?? 12),
    process: process.memoryUsage(),
    heap: {
      committed: heap.total_heap_size,
      used: heap.used_heap_size,
      limit: heap.heap_size_limit,
      malloced: heap.malloced_memory,
      peakMalloced: heap.peak_malloced_memory,
      externalMemory: heap.external_memory,
      nativeContexts: heap.number_of_native_contexts,
      detachedContexts: heap.number_of_detached_contexts,
    },
    spaces: getHeapSpaceStatistics().map((space) => ({ name: space.space_name, committed: space.space_size, used: space.space_used_size })),
    resources,
  };
}
