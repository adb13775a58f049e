/**
 * Preloaded (`--import`) into the relays by bench/relay-allocations.ts: on each SIGUSR2 (a mark) one minor GC (so a
 * window's allocations end in a collection), then AMBIT_ALLOC_MARKS_DIR/<pid>-mark-<n>.json with the GCs by kind
 * since start and, from the second mark on, the bytes allocated on the V8 heap since the previous mark (v8.GCProfiler:
 * each GC's used heap before it minus the used heap after the one before it; the heap used at a mark is read after
 * its GC). With AMBIT_ALLOC_HEAP_PROFILE=1, V8's sampling heap profiler runs from the first mark to the second
 * (objects later collected kept, so it shows where the window's allocations were made) and is written as
 * AMBIT_ALLOC_MARKS_DIR/<pid>.heapprofile at the second. Does nothing unless AMBIT_ALLOC_MARKS_DIR is set.
 *
 * Owns: these hooks. Must not know about: what the process is.
 */
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import { GCProfiler, getHeapStatistics, setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { countGcsByKind } from './gc-counts.ts';

const outDir = process.env.AMBIT_ALLOC_MARKS_DIR;

interface GcStatistics {
  beforeGC: { heapStatistics: { usedHeapSize: number } };
  afterGC: { heapStatistics: { usedHeapSize: number } };
}

/** Bytes allocated between a mark (heap used `usedAtMark` after its GC) and the GCs since, the last one a mark's. */
function allocatedSince(usedAtMark: number, statistics: readonly GcStatistics[]): number {
  let allocated = 0;
  let usedAfter = usedAtMark;
  for (const gc of statistics) {
    allocated += Math.max(0, gc.beforeGC.heapStatistics.usedHeapSize - usedAfter);
    usedAfter = gc.afterGC.heapStatistics.usedHeapSize;
  }
  return allocated;
}

if (outDir !== undefined) {
  setFlagsFromString('--expose-gc');
  const minorGc = runInNewContext('gc') as (options: { type: 'minor'; execution: 'sync' }) => void;
  const counts = countGcsByKind();
  const heapSession = process.env.AMBIT_ALLOC_HEAP_PROFILE === '1' ? new Session() : undefined;
  heapSession?.connect();
  let profiler: GCProfiler | undefined;
  let usedAtMark = 0;
  let mark = 0;
  process.on('SIGUSR2', () => {
    // The GC profiler is stopped after the mark's own GC, so that GC ends the window.
    minorGc({ type: 'minor', execution: 'sync' });
    const record: Record<string, unknown> = { gcs: { ...counts } };
    if (profiler !== undefined) record.allocatedBytes = allocatedSince(usedAtMark, (profiler.stop() as { statistics: GcStatistics[] }).statistics);
    if (heapSession !== undefined && mark === 0) {
      heapSession.post('HeapProfiler.startSampling', { samplingInterval: 128, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true });
    } else if (heapSession !== undefined && mark === 1) {
      heapSession.post('HeapProfiler.stopSampling', (error, result) => {
        if (error === null) writeFileSync(`${outDir}/${process.pid}.heapprofile`, JSON.stringify(result.profile));
      });
    }
    profiler = new GCProfiler();
    profiler.start();
    usedAtMark = getHeapStatistics().used_heap_size;
    writeFileSync(`${outDir}/${process.pid}-mark-${mark++}.json`, JSON.stringify(record));
  });
}
