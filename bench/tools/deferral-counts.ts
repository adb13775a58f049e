/**
 * Preloaded (`--import`) into the waypoint by bench/waypoint-http1-bytes.ts `--deferrals`: counts the asynchronous
 * resources the process creates, by async_hooks type (TickObject: process.nextTick; Immediate: setImmediate;
 * Timeout: setTimeout/setInterval; PROMISE: a promise; Microtask: queueMicrotask; TLSWRAP, WRITEWRAP, ...: native
 * requests), and on each SIGUSR2 writes the counts so far to AMBIT_DEFERRALS_DIR/deferrals-<n>.json. Between two
 * marks, divided by the requests, it says how many ticks, immediates, timers and promises a request costs: each
 * deferral on a request's way is a hop the request waits for. Does nothing unless AMBIT_DEFERRALS_DIR is set.
 * (async_hooks with promise hooks slows the process: counts only, no timing, from such a run.)
 *
 * Owns: these counts. Must not know about: what the process is.
 */
import { createHook } from 'node:async_hooks';
import { writeFileSync } from 'node:fs';

const outDir = process.env.AMBIT_DEFERRALS_DIR;
if (outDir !== undefined) {
  const counts: Record<string, number> = {};
  createHook({
    init(_id, type) {
      counts[type] = (counts[type] ?? 0) + 1;
    },
  }).enable();
  let mark = 0;
  process.on('SIGUSR2', () => writeFileSync(`${outDir}/deferrals-${mark++}.json`, JSON.stringify(counts)));
}
