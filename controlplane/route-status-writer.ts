/**
 * Kubernetes mode: writes `status.parents` of HTTPRoutes and GRPCRoutes (controlplane/model/route-status.ts) to the
 * API server, as Istio's gateway controller does, so `kubectl get httproute -o yaml` says whether a route attached
 * and why not.
 *
 * Owns: when to write (after a batch of changes to routes, Services, Gateways or Namespaces, debounced), writing only
 * a route whose entries for our controller differ from what it carries (timestamps aside; entries of other
 * controllers kept), keeping `lastTransitionTime` while a condition's status holds, and retrying failures at the
 * next change or after a delay.
 * Must not know about: the report's content, HTTP (controlplane/kube-writer.ts).
 */
import { isDeepStrictEqual } from 'node:util';
import type { K8sObject } from '../shared/k8s/objects.ts';
import type { KubeWriter } from './kube-writer.ts';
import { ROUTE_KINDS, ROUTE_STATUS_CONTROLLER, routeStatuses, type RouteParentStatus, type RouteProblemInput } from './model/route-status.ts';
import type { ObjectStore, StoreChange } from './store.ts';

/** Changes within this long are written as one pass (a relabelled namespace changes many routes' status). */
export const ROUTE_STATUS_DEBOUNCE_MS = 100;
/** After a failed write, the next pass comes at the latest this much later. */
export const ROUTE_STATUS_RETRY_MS = 5_000;

const RELEVANT = new Set<string>([...ROUTE_KINDS, 'Service', 'Gateway', 'Namespace']);

export interface RouteStatusWriterOptions {
  store: ObjectStore;
  writer: KubeWriter;
  /** The route compilers' latest problems (read after the store's change listeners ran). */
  problems: () => readonly RouteProblemInput[];
  clusterDomain: string;
  log?: { info(fields: object, message: string): void; warn(fields: object, message: string): void };
  now?: () => Date;
  debounceMs?: number;
}

function withoutTimes(parents: readonly RouteParentStatus[]): unknown {
  return parents.map((parent) => ({ ...parent, conditions: parent.conditions.map(({ lastTransitionTime: _time, ...rest }) => rest) }));
}

export class RouteStatusWriter {
  readonly #options: RouteStatusWriterOptions;
  readonly #unsubscribe: () => void;
  /** `<kind>/<ns>/<name>` -> the route's resourceVersion when its status was written (its own event is pending until it moves). */
  readonly #writtenOver = new Map<string, string>();
  #timer: NodeJS.Timeout | undefined;
  #running = false;
  #again = false;
  #stopped = false;
  writes = 0;
  /** The store's `changesApplied` when the last completed pass began: every change up to it has been considered. */
  consideredThrough = 0;

  constructor(options: RouteStatusWriterOptions) {
    this.#options = options;
    this.#unsubscribe = options.store.onChanges((changes: StoreChange[]) => {
      if (changes.some((change) => RELEVANT.has(change.kind))) this.#schedule(options.debounceMs ?? ROUTE_STATUS_DEBOUNCE_MS);
    });
    this.#schedule(0);
  }

  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#unsubscribe();
  }

  #schedule(delayMs: number): void {
    if (this.#stopped) return;
    if (this.#running) {
      this.#again = true;
      return;
    }
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => void this.#pass(), delayMs);
  }

  async #pass(): Promise<void> {
    this.#running = true;
    const storeChanges = this.#options.store.changesApplied;
    let failed = false;
    try {
      const now = (this.#options.now ?? (() => new Date()))().toISOString().replace(/\.\d+Z$/, 'Z');
      for (const report of routeStatuses(this.#options.store, this.#options.problems())) {
        const key = `${report.kind}/${report.namespace}/${report.name}`;
        const route = this.#options.store.get<K8sObject>(report.kind, `${report.namespace}/${report.name}`);
        if (!route) continue;
        const version = (route.metadata as { resourceVersion?: string } | undefined)?.resourceVersion;
        if (version !== undefined && this.#writtenOver.get(key) === version) continue;
        const carried = ((route.status as { parents?: RouteParentStatus[] } | undefined)?.parents ?? []);
        const ours = carried.filter((parent) => parent.controllerName === ROUTE_STATUS_CONTROLLER);
        if (isDeepStrictEqual(withoutTimes(ours), withoutTimes(report.parents))) continue;
        for (const [index, parent] of report.parents.entries()) {
          const before = ours.find((entry) => isDeepStrictEqual(entry.parentRef, parent.parentRef)) ?? ours[index];
          for (const condition of parent.conditions) {
            const previous = before?.conditions.find((entry) => entry.type === condition.type);
            condition.lastTransitionTime = previous && previous.status === condition.status && previous.lastTransitionTime ? previous.lastTransitionTime : now;
          }
        }
        const others = carried.filter((parent) => parent.controllerName !== ROUTE_STATUS_CONTROLLER);
        try {
          await this.#options.writer.patchStatus(report.kind, report.namespace, report.name, { parents: [...others, ...report.parents] });
          this.writes++;
          if (version !== undefined) this.#writtenOver.set(key, version);
          const summary = report.parents.map((parent) => parent.conditions.map((condition) => `${condition.type}=${condition.status}(${condition.reason})`).join(' ')).join('; ');
          this.#options.log?.info({ route: key }, `${report.kind} ${report.namespace}/${report.name}: status written: ${summary || 'no parentRefs'}`);
        } catch (error) {
          failed = true;
          this.#options.log?.warn({ route: key, err: (error as Error).message }, `${report.kind} ${report.namespace}/${report.name}: status not written: ${(error as Error).message}`);
        }
      }
    } finally {
      this.consideredThrough = storeChanges;
      this.#running = false;
      if (this.#again) {
        this.#again = false;
        this.#schedule(this.#options.debounceMs ?? ROUTE_STATUS_DEBOUNCE_MS);
      } else if (failed) {
        this.#schedule(ROUTE_STATUS_RETRY_MS);
      }
    }
  }
}
