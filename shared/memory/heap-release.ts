/**
 * Giving memory back after a burst: a memory-reducing full GC once the process is quiet again after its heap grew.
 * Used by both long-running data-path programs: each agent thread (agent/main.ts, agent/workers/) and the waypoint
 * (waypoint/main.ts: a flood of HTTP/2 requests grew its committed heap from 39 to 174 MB, 51 MB of it used, and an
 * idle waypoint never gave it back).
 *
 * Why it is needed: V8 keeps the pages a burst of allocation made (a connection storm grows the heap to a few
 * hundred MiB) and its own memory reducer never runs on an idle process: it waits for a low allocation rate, and
 * that rate is only re-measured at a GC, which an idle process does not have. A plain `gc()` shrinks the heap but
 * keeps the freed pages pooled (resident). `gc({ type: 'major', flavor: 'last-resort' })`, V8's "collect all
 * available garbage" (what a memory-pressure notification runs), also returns the pooled pages to the kernel:
 * measured here, a process that had allocated 330 MiB went from 354 MiB anonymous RSS to 19 MiB.
 *
 * When: every CHECK_INTERVAL_MS (one unref'd timer, no other wake-up), if the event loop was busy less than
 * QUIET_UTILIZATION of the last interval, it runs the GC when the committed heap grew by at least GROWTH_BYTES
 * since the last release, or when something said it freed a lot since (shared/memory/release-hint.ts: the HBONE
 * pool closing the connections a storm opened, which were live at the release right after the storm; their
 * garbage is not even counted as free until a full GC, and an idle agent runs none). So a steady agent never pays
 * for it, a burst is released within two intervals of its end, and the first check after start-up drops the
 * start-up garbage. A program whose "quiet" is strict (the waypoint's 1 %) can add a calm fallback: the release also
 * runs after a few checks in a row under a looser share, so a low steady rate after a burst (or its admin endpoint
 * polled) pays the pause once instead of keeping the burst's heap for good.
 *
 * After the GC, with `releaseNative` (the agent's main thread passes shared/memory/native-memory.ts: both calls are
 * process-wide), glibc's malloc_trim gives back the native memory freed with the connections (OpenSSL's,
 * nghttp2's), and the node binary's pages that start-up or the burst touched are dropped from the process: used
 * pages come back on their own. The
 * same native release also runs alone, without a GC, when the process's anonymous RSS grew NATIVE_GROWTH_BYTES
 * since the last one (capturing 20 pods grows native memory and touches code, not the V8 heap). Anonymous only: the
 * file-backed part grows back by itself after every drop (the binary's pages in use faulting in again), and counting
 * it made a cycle at low request rates, where the loop is quiet enough for the native release: drop, the hot code
 * faults back in on the next requests, that regrowth runs the next drop (test/unit/heap-release.test.ts).
 *
 * Owns: the decision and the GC call. Must not know about: what allocated the memory (connections, requests, xDS,
 * ...), which program it runs in, how native memory is released (the caller hands that in).
 */
import { readFileSync } from 'node:fs';
import { performance, type EventLoopUtilization } from 'node:perf_hooks';
import { onMemoryFreed } from './release-hint.ts';
import { exposedGc } from './v8-gc.ts';

/** The process-wide native releases a program can offer (the agent's addon: shared/memory/native-memory.ts). */
export interface NativeRelease {
  /** malloc_trim(0): true when glibc returned memory to the kernel. */
  trimMalloc(): boolean;
  /** Drops the executable's read-only, never-written pages from the process; KiB that were resident in them. */
  dropExecutablePages(): number;
}

/**
 * How often to look: often enough that memory is back within a minute of a storm's end (the goal is under 60 s),
 * rarely enough that the check is no measurable idle cost (one `memoryUsage()` call).
 */
export const CHECK_INTERVAL_MS = 10_000;
/**
 * Growth of V8's committed heap since the last release that is worth the GC's pause: measured here (load average
 * 11) 130-140 ms with 38 MiB live, where a regular full GC took 100 ms; rare, and only on a quiet agent.
 */
export const GROWTH_BYTES = 16 * 1024 * 1024;
/**
 * Anonymous RSS growth since the last native release that is worth another one without a GC: reading
 * /proc/self/smaps and the trim take about a millisecond, and every drop makes the binary's pages in use fault back
 * in on the next requests, so this is about not repeating them for nothing.
 */
export const NATIVE_GROWTH_BYTES = 8 * 1024 * 1024;
/**
 * "Quiet": the event loop busy less than this share of the last interval (a storm keeps it near 1.0; an idle agent
 * is under 1 %). Low, so an agent carrying steady traffic does not take the GC's pause mid-request.
 */
export const QUIET_UTILIZATION = 0.05;
/**
 * The native release alone (no GC pause; about a millisecond) only waits for a loop busy less than half the time:
 * measured at load average 40, an agent capturing 20 pods never had a 5 % interval before the idle reading, and
 * kept 35 MiB of the binary's start-up pages.
 */
export const NATIVE_QUIET_UTILIZATION = 0.5;
/**
 * The share of the native growth threshold that the process may grow back by between a native release and the
 * check that takes the new baseline (malloc's arenas and V8's new space refilling): a baseline at most this much
 * over what the release left, so the growth a burst adds meanwhile still counts.
 */
export const SETTLE_SHARE = 0.5;
/**
 * An idle process whose heap grew by less than the threshold still releases once it was quiet for IDLE_CHECKS checks
 * in a row with at least this share of the threshold grown: a burst's last regular GC can shrink the committed heap
 * under the threshold with its garbage and pooled pages still held (a waypoint after a flood: 6.3 of 8 MiB grown,
 * 24.5 MB of its 26 MB heap in use, 18 MB of anonymous RSS over its floor, and no release ever came).
 */
export const IDLE_GROWTH_SHARE = 0.25;
export const IDLE_CHECKS = 3;

export interface HeapReleaseStats {
  /** Memory-reducing GCs run so far. */
  releases: number;
  /** Committed V8 heap (bytes) right after the last release (0 before the first). */
  heapAfterLastRelease: number;
  /** Releases run because of a hint (noteMemoryFreed) rather than heap growth. */
  hintedReleases: number;
  /** Releases run on an idle process after a smaller growth (IDLE_GROWTH_SHARE, IDLE_CHECKS quiet checks in a row). */
  idleReleases: number;
  /**
   * Releases run on the calm fallback (calmUtilization held for calmChecks checks) because the loop was never
   * quiet: a low steady rate after a burst.
   */
  calmReleases: number;
  /**
   * Milliseconds the last memory-reducing GC took, wall clock (0 before the first): the loop stops for it, so a
   * request in flight meanwhile waits as long (the bench's rate steps show when releases ran).
   */
  lastGcMs: number;
  /** Native releases (malloc_trim and the binary's pages) so far, with or without a GC; releaseNative only. */
  nativeReleases: number;
  /**
   * Anonymous RSS (bytes) at the first check after the last native release (malloc's arenas and V8's new space
   * settle by then), capped at what the release left plus SETTLE_SHARE of the native growth threshold (a burst
   * under way at that check is not settling), so growth over it is new memory. File-backed pages are not counted: the dropped pages still
   * in use fault back in after every drop, and counting them repeated the release every other check.
   */
  anonymousAfterLastNativeRelease: number;
  /** KiB of the node binary's pages that were resident when the last native release dropped them. */
  executableKibDropped: number;
  /**
   * Share of the last check's interval the event loop was busy (0-1): what "quiet" was judged on, so a release that
   * does not come can be told from one that was not needed.
   */
  lastUtilization: number;
}

export interface HeapRelease {
  readonly stats: HeapReleaseStats;
  /** Runs the check now (tests; the timer calls it too). Resolves once a GC it started has finished. */
  check(): Promise<boolean>;
  stop(): void;
}

export interface HeapReleaseOptions {
  intervalMs?: number;
  growthBytes?: number;
  nativeGrowthBytes?: number;
  quietUtilization?: number;
  /**
   * A fallback for a process that is never quiet after a burst (a low, steady request rate, a scraper, the admin
   * endpoint polled): the release also runs once the loop was busy less than this share for `calmChecks` checks in a
   * row with the heap grown. Without it such a process keeps the burst's heap for good. Off unless both are given.
   */
  calmUtilization?: number;
  calmChecks?: number;
  /**
   * Also trim malloc's arenas and drop the node binary's pages after each GC, with these calls: process-wide, so
   * one thread (the main one) asks. None by default (tests of the GC alone; proxy workers; the waypoint).
   */
  releaseNative?: NativeRelease;
  /** Told after each release: committed heap before and after (bytes), for a debug log line. */
  onRelease?: (before: number, after: number) => void;
}

/**
 * This process's anonymous resident bytes (RssAnon of /proc/self/status: heap, malloc, stacks; not the binary's or
 * libraries' file pages); the whole RSS where /proc cannot be read.
 */
export function anonymousRss(): number {
  let status: string;
  try {
    status = readFileSync('/proc/self/status', 'latin1');
  } catch {
    return process.memoryUsage.rss();
  }
  const kib = /^RssAnon:\s+(\d+) kB/m.exec(status);
  return kib ? Number(kib[1]) * 1024 : process.memoryUsage.rss();
}

export function startHeapRelease(options: HeapReleaseOptions = {}): HeapRelease {
  const intervalMs = options.intervalMs ?? CHECK_INTERVAL_MS;
  const growthBytes = options.growthBytes ?? GROWTH_BYTES;
  const quietUtilization = options.quietUtilization ?? QUIET_UTILIZATION;
  const gc = exposedGc();
  const nativeGrowthBytes = options.nativeGrowthBytes ?? NATIVE_GROWTH_BYTES;
  const stats: HeapReleaseStats = { releases: 0, heapAfterLastRelease: 0, hintedReleases: 0, idleReleases: 0, calmReleases: 0, lastGcMs: 0, nativeReleases: 0, anonymousAfterLastNativeRelease: 0, executableKibDropped: 0, lastUtilization: 0 };
  const calmUtilization = options.calmUtilization ?? 0;
  const calmChecks = options.calmChecks ?? Number.POSITIVE_INFINITY;
  /** Checks in a row with the heap grown (or hinted) and the loop calm but not quiet. */
  let calmStreak = 0;
  /** Quiet checks in a row with the heap grown by IDLE_GROWTH_SHARE of the threshold but not the threshold. */
  let idleStreak = 0;
  let lastUtilization: EventLoopUtilization = performance.eventLoopUtilization();
  let running = false;
  let hinted = false;
  /** Set by a native release: the next check measures the anonymous RSS the growth is counted from. */
  let rebaseline = false;
  /** Anonymous RSS right after the last native release (the cap on the baseline the next check takes). */
  let anonymousRightAfterRelease = 0;
  const stopHints = onMemoryFreed(() => {
    hinted = true;
  });

  const native = options.releaseNative;
  const releaseNative = (): void => {
    if (native === undefined) return;
    native.trimMalloc();
    stats.executableKibDropped = native.dropExecutablePages();
    stats.nativeReleases += 1;
    anonymousRightAfterRelease = anonymousRss();
    rebaseline = true;
  };

  const check = async (): Promise<boolean> => {
    const utilization = performance.eventLoopUtilization(lastUtilization);
    lastUtilization = performance.eventLoopUtilization();
    stats.lastUtilization = utilization.utilization;
    if (running) return false;
    if (rebaseline) {
      rebaseline = false;
      // What the process settled at since the release, but never more than SETTLE_BYTES over what the release left:
      // a burst that began before this check (a flood started right after a release) is growth, not baseline. A
      // baseline read at the burst's peak kept its memory for good (the waypoint's rude-peers test read 78-83 MB
      // after some flood rounds and 46 after the others).
      stats.anonymousAfterLastNativeRelease = Math.min(anonymousRss(), anonymousRightAfterRelease + nativeGrowthBytes * SETTLE_SHARE);
    }
    const before = process.memoryUsage().heapTotal;
    const grown = before - stats.heapAfterLastRelease >= growthBytes;
    const quiet = utilization.utilization < quietUtilization;
    calmStreak = (grown || hinted) && !quiet && utilization.utilization < calmUtilization ? calmStreak + 1 : 0;
    const calmLongEnough = calmStreak >= calmChecks;
    idleStreak = quiet && !grown && !hinted && before - stats.heapAfterLastRelease >= growthBytes * IDLE_GROWTH_SHARE ? idleStreak + 1 : 0;
    const idleLongEnough = idleStreak >= IDLE_CHECKS;
    if ((!grown && !hinted && !idleLongEnough) || (!quiet && !calmLongEnough)) {
      const nativeQuiet = utilization.utilization < Math.max(quietUtilization, NATIVE_QUIET_UTILIZATION);
      if (native !== undefined && nativeQuiet && anonymousRss() - stats.anonymousAfterLastNativeRelease >= nativeGrowthBytes) releaseNative();
      return false;
    }
    running = true;
    if (!grown && hinted) stats.hintedReleases += 1;
    else if (!grown) stats.idleReleases += 1;
    if (!quiet) stats.calmReleases += 1;
    hinted = false;
    calmStreak = 0;
    idleStreak = 0;
    const started = performance.now();
    try {
      await gc({ type: 'major', execution: 'async', flavor: 'last-resort' });
    } finally {
      running = false;
    }
    stats.lastGcMs = performance.now() - started;
    if (native !== undefined) releaseNative();
    stats.releases += 1;
    stats.heapAfterLastRelease = process.memoryUsage().heapTotal;
    options.onRelease?.(before, stats.heapAfterLastRelease);
    return true;
  };
  const timer = setInterval(() => void check(), intervalMs);
  timer.unref();
  return {
    stats,
    check,
    stop: () => {
      clearInterval(timer);
      stopHints();
    },
  };
}
