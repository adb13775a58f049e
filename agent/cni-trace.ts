/**
 * Where a CNI call's milliseconds go inside the agent: each call the agent runs (a forwarded /v1/cni-call, or a
 * /v1/pod-* request from the Node plugin) carries a trace through its async work, and the steps it passes (pod
 * lookup, certificate, rules, listeners, worker round trips, record writes, the reply) mark the time since the last
 * step. The agent logs the whole trace at debug when the call is answered, and work left for after the answer (a
 * DEL's release) logs its own steps under the same call.
 *
 * Owns: the per-call step list and carrying it across awaits (AsyncLocalStorage), nothing else.
 * Must not know about: what the steps do; it is never on the data path (a pod's connections do not pass here).
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { performance } from 'node:perf_hooks';

export interface CniTrace {
  /** What the call is ("cni-call", refined to "cni-call ADD" once decoded, or "pod-del"). */
  what: string;
  readonly startedAt: number;
  lastAt: number;
  /** `[step, milliseconds since the previous step]`, in order. */
  readonly steps: [string, number][];
}

const current = new AsyncLocalStorage<CniTrace>();

/** Runs `work` with a new trace for `what` (e.g. "cni-call DEL"); `done` gets the trace once `work` settled. */
export function withCniTrace<T>(what: string, work: () => Promise<T>, done: (trace: CniTrace) => void): Promise<T> {
  const now = performance.now();
  const trace: CniTrace = { what, startedAt: now, lastAt: now, steps: [] };
  return current.run(trace, async () => {
    try {
      return await work();
    } finally {
      done(trace);
    }
  });
}

/** Names the current call more precisely once it is known (the forwarded call's CNI command, what it asks the agent). */
export function nameCniTrace(what: string, append = false): void {
  const trace = current.getStore();
  if (trace !== undefined) trace.what = append ? `${trace.what} ${what}` : what;
}

/** Marks the end of a step of the current call (nothing when no call is traced). */
export function traceStep(step: string): void {
  const trace = current.getStore();
  if (trace === undefined) return;
  const now = performance.now();
  trace.steps.push([step, Math.round((now - trace.lastAt) * 100) / 100]);
  trace.lastAt = now;
}

/** The trace as a log record: total and per-step milliseconds. */
export function traceRecord(trace: CniTrace): { call: string; totalMs: number; steps: Record<string, number> } {
  const steps: Record<string, number> = {};
  for (const [step, ms] of trace.steps) steps[step] = (steps[step] ?? 0) + ms;
  return { call: trace.what, totalMs: Math.round((trace.lastAt - trace.startedAt) * 100) / 100, steps };
}
