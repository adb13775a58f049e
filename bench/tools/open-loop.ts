/**
 * The open-loop request schedule the L7 load tools share (http-load, grpc-load): calls started at R/s whatever
 * became of the earlier ones, each timed from its scheduled start (no coordinated omission), and the tally of
 * outcomes by backend and by failure reason.
 *
 * Owns: the schedule, the timing and the tally. Must not know about: the protocol a call speaks.
 */
import { summarizeLatencies } from '../lib/stats.ts';

/** One call: resolves with the backend that answered (`x-backend`), rejects with the reason it failed. */
export type Call = () => Promise<string>;

/** Answers counted by backend, failures by reason. */
export class CallTally {
  readonly backends: Record<string, number> = {};
  readonly errors = new Map<string, number>();
  failed = 0;

  readonly record = (backend: string): void => {
    this.backends[backend] = (this.backends[backend] ?? 0) + 1;
  };

  readonly fail = (error: Error): void => {
    this.failed++;
    this.errors.set(error.message, (this.errors.get(error.message) ?? 0) + 1);
  };

  /** The fields every load tool's result carries beside its latency summary. */
  summary(): { failed: number; backends: Record<string, number>; errors: Record<string, number> } {
    return { failed: this.failed, backends: this.backends, errors: Object.fromEntries(this.errors) };
  }
}

/** `count` calls one after another, outcomes not counted: warm-up. */
export async function warmUp(call: Call, count: number): Promise<void> {
  for (let index = 0; index < count; index++) await call().catch(() => undefined);
}

/**
 * `rate` calls a second for `seconds`, each started on schedule (a 1 ms timer catches up on what fell due), each
 * timed in µs from when it was due to when it settled; resolves once every call settled.
 */
export async function runOpenLoop(call: Call, tally: CallTally, rate: number, seconds: number): Promise<ReturnType<typeof summarizeLatencies> & { requestsPerSecond: number }> {
  const total = Math.round(rate * seconds);
  const latencies = new Float64Array(total);
  let done = 0;
  const started = performance.now();
  await new Promise<void>((resolve) => {
    let sent = 0;
    const tick = (): void => {
      const due = Math.min(total, Math.floor(((performance.now() - started) / 1000) * rate) + 1);
      for (; sent < due; sent++) {
        const scheduled = started + (sent / rate) * 1000;
        const slot = sent;
        call().then(tally.record, tally.fail).finally(() => {
          latencies[slot] = (performance.now() - scheduled) * 1000;
          if (++done === total) resolve();
        });
      }
      if (sent < total) setTimeout(tick, 1);
    };
    tick();
  });
  const elapsed = (performance.now() - started) / 1000;
  return { ...summarizeLatencies(latencies), requestsPerSecond: (total - tally.failed) / elapsed };
}
