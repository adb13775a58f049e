/**
 * Kubernetes mode: writes the `Accepted` condition (policy-status.ts) on every L7 policy the store holds, through
 * the status subresource, whenever a policy is added or changed and its condition is not already the one written.
 *
 * Owns: which objects get a status (AuthorizationPolicies with targetRefs, every RequestAuthentication and
 * LocalRateLimitPolicy), one write at a time per object, not writing what is already there (so the watch event of
 * our own write ends the loop), and reporting a failed write (retried at the object's next change, or after
 * RETRY_MS).
 * Must not know about: how the patch reaches the API server (`patchStatus`), xDS.
 */
import type { K8sObject } from '../../shared/k8s/objects.ts';
import { checkWaypointPolicy, isWaypointPolicyKind } from '../model/waypoint-policy-check.ts';
import type { ObjectStore } from '../store.ts';
import { acceptedCondition, isCurrent } from './policy-status.ts';

/** After a failed write, the object is tried again this much later (unless it changes first). */
export const STATUS_RETRY_MS = 5_000;

export interface StatusTarget {
  kind: string;
  namespace: string;
  name: string;
}

export interface PolicyStatusWriterOptions {
  store: ObjectStore;
  /** Sends `{status}` as a merge patch to the object's status subresource. */
  patchStatus: (target: StatusTarget, status: Record<string, unknown>) => Promise<void>;
  rootNamespace?: string;
  onError?: (target: StatusTarget, error: Error) => void;
  /** Clock for lastTransitionTime (tests). */
  now?: () => Date;
  retryMs?: number;
}

function wantsStatus(object: K8sObject): boolean {
  if (!isWaypointPolicyKind(object.kind)) return false;
  if (object.kind !== 'AuthorizationPolicy') return true;
  const spec = object.spec as { targetRef?: unknown; targetRefs?: unknown[] } | undefined;
  return Boolean(spec?.targetRef) || Boolean(spec?.targetRefs?.length);
}

export class PolicyStatusWriter {
  readonly #options: PolicyStatusWriterOptions;
  /** `kind ns/name` -> the object to write a status for (latest seen wins). */
  readonly #queue = new Map<string, K8sObject>();
  readonly #retries = new Map<string, NodeJS.Timeout>();
  #unsubscribe: (() => void) | undefined;
  #running: Promise<void> | undefined;
  #stopped = false;
  /** Writes done (successful PATCHes), for tests and metrics. */
  written = 0;

  constructor(options: PolicyStatusWriterOptions) {
    this.#options = options;
  }

  /** Writes what the store holds now, then follows its changes. */
  start(): void {
    for (const kind of ['AuthorizationPolicy', 'RequestAuthentication', 'LocalRateLimitPolicy']) for (const object of this.#options.store.list(kind)) this.#enqueue(object);
    this.#unsubscribe = this.#options.store.onChanges((changes) => {
      for (const change of changes) {
        if (change.type === 'delete') this.#queue.delete(this.#key(change.object));
        else this.#enqueue(change.object);
      }
    });
  }

  stop(): void {
    this.#stopped = true;
    this.#unsubscribe?.();
    for (const timer of this.#retries.values()) clearTimeout(timer);
    this.#queue.clear();
  }

  /** Resolves once every queued write is done (tests). */
  async idle(): Promise<void> {
    while (this.#running) await this.#running;
  }

  #key(object: K8sObject): string {
    return `${object.kind} ${object.metadata?.namespace || 'default'}/${object.metadata?.name}`;
  }

  #enqueue(object: K8sObject): void {
    if (this.#stopped || !wantsStatus(object)) return;
    const key = this.#key(object);
    clearTimeout(this.#retries.get(key));
    this.#retries.delete(key);
    this.#queue.set(key, object);
    this.#running ??= this.#drain().finally(() => {
      this.#running = undefined;
    });
  }

  async #drain(): Promise<void> {
    while (!this.#stopped && this.#queue.size > 0) {
      const [key, object] = this.#queue.entries().next().value!;
      this.#queue.delete(key);
      const verdict = checkWaypointPolicy(object, { ...(this.#options.rootNamespace ? { rootNamespace: this.#options.rootNamespace } : {}) });
      const condition = acceptedCondition(object, verdict, this.#options.now?.() ?? new Date());
      if (isCurrent(object, condition)) continue;
      const target = { kind: object.kind!, namespace: object.metadata?.namespace || 'default', name: object.metadata?.name ?? '' };
      try {
        await this.#options.patchStatus(target, { conditions: [condition] });
        this.written++;
      } catch (error) {
        this.#options.onError?.(target, error as Error);
        if (this.#stopped) return;
        const timer = setTimeout(() => {
          this.#retries.delete(key);
          const latest = this.#options.store.get(object.kind!, `${target.namespace}/${target.name}`);
          if (latest) this.#enqueue(latest);
        }, this.#options.retryMs ?? STATUS_RETRY_MS);
        timer.unref();
        this.#retries.set(key, timer);
      }
    }
  }
}
