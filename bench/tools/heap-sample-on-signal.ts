/**
 * Preloaded into a Node process (`--import`) by bench/connection-counts.ts --heap-sample: the first SIGUSR2 starts
 * V8's sampling heap profiler in the process with the objects the garbage collector already took kept in the
 * profile (so it shows what a window allocated, not what survived it), the next one stops it and writes
 * AMBIT_HEAP_SAMPLE_DIR/<pid>-<n>.heapprofile (Chrome DevTools' format; sample sizes are bytes allocated at each
 * stack, sampled every AMBIT_HEAP_SAMPLE_INTERVAL bytes on average, default 1024). Does nothing unless
 * AMBIT_HEAP_SAMPLE_DIR is set.
 *
 * Owns: that window. Must not know about: what the process is.
 */
import { windowOnSignal } from './inspector-window.ts';

const directory = process.env.AMBIT_HEAP_SAMPLE_DIR;
if (directory !== undefined) {
  windowOnSignal(directory, 'heapprofile', (session) => session.post('HeapProfiler.enable', () => {
    session.post('HeapProfiler.startSampling', {
      samplingInterval: Number(process.env.AMBIT_HEAP_SAMPLE_INTERVAL ?? 1024),
      includeObjectsCollectedByMajorGC: true,
      includeObjectsCollectedByMinorGC: true,
    });
  }), (session, done) => session.post('HeapProfiler.stopSampling', (error, result) => done(error, result?.profile)));
}
