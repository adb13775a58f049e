/**
 * The real proxy worker (agent/workers/proxy-worker.ts) with one addition for tests: sent a workload whose uid is
 * CRASH_WORKLOAD_UID, it dies at once (exit code 3), as a worker thread that hit a fatal error would. A worker
 * started later gets that workload in its initial state, not as a message, so it lives. Imported on the main
 * thread (for the constant) it does nothing.
 * Used by tests only.
 */
import { parentPort } from 'node:worker_threads';
import type { ToWorker } from '../../agent/workers/protocol.ts';

export const CRASH_WORKLOAD_UID = 'crash-this-worker';

if (parentPort) {
  // Registered before the real worker's handler, so it runs first.
  parentPort.on('message', (message: ToWorker) => {
    if (message.type === 'workload-upsert' && message.workload.uid === CRASH_WORKLOAD_UID) process.exit(3);
  });
  await import('../../agent/workers/proxy-worker.ts');
}
