/**
 * Problems of the policies a compile met, told once: a compile collects them per policy (begin, add, flush) and
 * flush() hands on only those of policies that are new or changed since the last compile (a policy's spec or
 * messages), and forgets the policies that are now fine or gone. The agents' policy model and the waypoints' use it.
 *
 * Owns: that bookkeeping. Must not know about: what a policy is, how problems are shown.
 */
import type { K8sObject } from '../../shared/k8s/objects.ts';
import type { PolicyProblem } from './policies.ts';

export class ProblemReports {
  readonly #onProblem: (problem: PolicyProblem) => void;
  #reported = new Map<string, string>();
  #pending = new Map<string, { spec: unknown; list: PolicyProblem[] }>();

  constructor(onProblem: (problem: PolicyProblem) => void) {
    this.#onProblem = onProblem;
  }

  /** Starts a compile's collection. */
  begin(): void {
    this.#pending = new Map();
  }

  /** A problem of `object` found by this compile. */
  add(object: K8sObject, problem: PolicyProblem): void {
    const id = `${problem.kind} ${problem.policy}`;
    const entry = this.#pending.get(id) ?? { spec: (object as { spec?: unknown }).spec, list: [] };
    entry.list.push(problem);
    this.#pending.set(id, entry);
  }

  /** Ends the compile: tells the problems of policies new or changed since the last one. */
  flush(): void {
    const reported = new Map<string, string>();
    for (const [id, { spec, list }] of this.#pending) {
      const fingerprint = JSON.stringify({ spec, messages: list.map((problem) => problem.message) });
      reported.set(id, fingerprint);
      if (this.#reported.get(id) !== fingerprint) for (const problem of list) this.#onProblem(problem);
    }
    this.#reported = reported;
    this.#pending = new Map();
  }
}
