/**
 * Preloaded (`--import`) into the waypoint by bench/waypoint-grpc-instructions.ts, inside valgrind: what the harness
 * needs around its measured window besides callgrind's counters. Does nothing unless AMBIT_GRPC_INSTR_DIR is set.
 *
 * - The heap release's GCs off (unless AMBIT_GRPC_INSTR_RELEASE_GC=1): shared/memory/v8-gc.ts takes `globalThis.gc`
 *   when there is one, so a no-op there means the release's memory-reducing major GCs never run. At the harness's
 *   few calls per second the loop is quiet enough for them, and one falling in or out of the window moved a run by
 *   tens of thousands of instructions per call (session s10: one tree read 514-641); at 1,000 calls/s they do not run.
 * - On each SIGUSR2 (a mark): one minor GC (so the window's allocations end in a GC), then
 *   AMBIT_GRPC_INSTR_DIR/mark-<n>.json with the GCs by kind since start and, from the second mark on, the bytes
 *   allocated on the V8 heap since the previous mark (v8.GCProfiler: each GC's used heap before it minus the used
 *   heap after the one before; heap used at a mark after its GC).
 * - With AMBIT_GRPC_INSTR_HEAP_PROFILE=1: V8's sampling heap profiler from the first mark to the second (objects
 *   later collected by either GC included, so it says where the window's allocations were made), written as
 *   AMBIT_GRPC_INSTR_DIR/window.heapprofile at the second.
 * - With AMBIT_GRPC_INSTR_CPU_PROFILE=1 (session s14): V8's sampling CPU profiler (100 µs) from the first mark to the
 *   second, written as AMBIT_GRPC_INSTR_DIR/window.cpuprofile: where the window's main-thread time went, by function
 *   (builtins and native calls charged to the JS function that made them), at the rate the harness drives.
 * - With AMBIT_GRPC_INSTR_TRACE_GC=1 (session s15): V8's `--trace-gc` from the first mark to the second (a line per
 *   collection with its reason, in the waypoint's log between the marks' `grpc-instr mark` lines).
 *
 * - AMBIT_GRPC_INSTR_V8_FLAGS (session s15): V8 flags set at start (say `--no-allocation-site-pretenuring`), for A/B
 *   runs of GC settings that NODE_OPTIONS does not take.
 *
 * Owns: these hooks. Must not know about: what the process is.
 */
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import { countGcsByKind } from './tools/gc-counts.ts';
import { GCProfiler, getHeapStatistics, setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

const outDir = process.env.AMBIT_GRPC_INSTR_DIR;

interface GcStatistics {
  gcType: string;
  beforeGC: { heapStatistics: { usedHeapSize: number } };
  afterGC: { heapStatistics: { usedHeapSize: number } };
}

if (outDir !== undefined) {
  setFlagsFromString('--expose-gc');
  // AMBIT_GRPC_INSTR_V8_FLAGS: V8 flags NODE_OPTIONS refuses, set before the waypoint's code runs (A/B of GC settings).
  for (const flag of (process.env.AMBIT_GRPC_INSTR_V8_FLAGS ?? '').split(' ')) if (flag !== '') setFlagsFromString(flag);
  const realGc = runInNewContext('gc') as (options: { type: 'minor'; execution: 'sync' }) => void;
  if (process.env.AMBIT_GRPC_INSTR_RELEASE_GC !== '1') (globalThis as { gc?: unknown }).gc = (): undefined => undefined;
  const counts = countGcsByKind();
  let profiler: GCProfiler | undefined;
  let usedAfterMark = 0;
  let mark = 0;
  const heapSession = process.env.AMBIT_GRPC_INSTR_HEAP_PROFILE === '1' ? new Session() : undefined;
  heapSession?.connect();
  const cpuSession = process.env.AMBIT_GRPC_INSTR_CPU_PROFILE === '1' ? new Session() : undefined;
  cpuSession?.connect();
  cpuSession?.post('Profiler.enable');
  cpuSession?.post('Profiler.setSamplingInterval', { interval: 100 });
  const traceGc = process.env.AMBIT_GRPC_INSTR_TRACE_GC === '1';
  process.on('SIGUSR2', () => {
    realGc({ type: 'minor', execution: 'sync' });
    if (traceGc) {
      process.stdout.write(`grpc-instr mark ${mark}\n`);
      setFlagsFromString(mark === 0 ? '--trace-gc' : '--no-trace-gc');
    }
    if (heapSession !== undefined && mark === 0) {
      heapSession.post('HeapProfiler.startSampling', { samplingInterval: 256, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true });
    } else if (heapSession !== undefined && mark === 1) {
      heapSession.post('HeapProfiler.stopSampling', (error, result) => {
        if (error === null) writeFileSync(`${outDir}/window.heapprofile`, JSON.stringify(result.profile));
      });
    }
    if (cpuSession !== undefined && mark === 0) {
      cpuSession.post('Profiler.start');
    } else if (cpuSession !== undefined && mark === 1) {
      cpuSession.post('Profiler.stop', (error, result) => {
        if (error === null) writeFileSync(`${outDir}/window.cpuprofile`, JSON.stringify(result.profile));
      });
    }
    const record: Record<string, unknown> = { gcs: { ...counts } };
    if (profiler !== undefined) {
      const statistics = (profiler.stop() as { statistics: GcStatistics[] }).statistics;
      let allocated = 0;
      let usedAfter = usedAfterMark;
      const kinds: Record<string, number> = {};
      for (const gc of statistics) {
        allocated += Math.max(0, gc.beforeGC.heapStatistics.usedHeapSize - usedAfter);
        usedAfter = gc.afterGC.heapStatistics.usedHeapSize;
        kinds[gc.gcType] = (kinds[gc.gcType] ?? 0) + 1;
      }
      record.allocatedBytes = allocated;
      record.gcsByType = kinds;
    }
    profiler = new GCProfiler();
    profiler.start();
    usedAfterMark = getHeapStatistics().used_heap_size;
    writeFileSync(`${outDir}/mark-${mark++}.json`, JSON.stringify(record));
  });
}
