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
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import path from 'node:path';

const directory = process.env.AMBIT_HEAP_SAMPLE_DIR;
if (directory !== undefined) {
  const session = new Session();
  session.connect();
  let running = false;
  let written = 0;
  process.on('SIGUSR2', () => {
    if (!running) {
      running = true;
      session.post('HeapProfiler.enable', () => {
        session.post('HeapProfiler.startSampling', {
          samplingInterval: Number(process.env.AMBIT_HEAP_SAMPLE_INTERVAL ?? 1024),
          includeObjectsCollectedByMajorGC: true,
          includeObjectsCollectedByMinorGC: true,
        });
      });
      return;
    }
    running = false;
    session.post('HeapProfiler.stopSampling', (error, result) => {
      const file = path.join(directory, `${process.pid}-${++written}`);
      if (error === null) writeFileSync(`${file}.heapprofile`, JSON.stringify(result.profile));
      else writeFileSync(`${file}.error`, String(error));
    });
  });
}
