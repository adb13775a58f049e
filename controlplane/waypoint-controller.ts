/**
 * Kubernetes mode's waypoint deployment controller, as Istio's: for every Gateway of class `istio-waypoint` in the
 * store, its ServiceAccount, Service and Deployment (controlplane/model/waypoint-instance.ts) are written to the API
 * server, and the Gateway's status (addresses: the Service's cluster IP; Accepted, Programmed) is written back.
 *
 * Owns: when to write (a Gateway added or changed, its Service's address changed), writing only what changed (the
 * last objects written per Gateway are remembered; a status equal to the one the Gateway carries is not written
 * again, so the Gateway's own status event ends the loop), one reconcile at a time per Gateway, and retrying a
 * failed write with back-off. A deleted Gateway's objects go with it (ownerReferences: Kubernetes' garbage
 * collector), so deletion needs nothing here.
 * Must not know about: the objects' shape, HTTP (controlplane/kube-writer.ts).
 */
import { isDeepStrictEqual } from 'node:util';
import type { ServiceObject } from '../shared/k8s/objects.ts';
import type { GatewayObject } from './model/kube-types.ts';
import { isWaypointGateway, waypointGatewayStatus, waypointInstance, type GatewayCondition, type GatewayStatus, type WaypointInstanceSettings } from './model/waypoint-instance.ts';
import type { ObjectStore, StoreChange } from './store.ts';
import type { KubeWriter } from './kube-writer.ts';

/** First retry of a failed write; doubled per failure up to the maximum. */
export const WAYPOINT_RETRY_INITIAL_MS = 1_000;
export const WAYPOINT_RETRY_MAX_MS = 30_000;

export interface WaypointControllerLog {
  info(fields: object, message: string): void;
  warn(fields: object, message: string): void;
}

export interface WaypointControllerOptions {
  store: ObjectStore;
  writer: KubeWriter;
  settings: WaypointInstanceSettings;
  clusterDomain: string;
  log?: WaypointControllerLog;
  now?: () => Date;
  retryInitialMs?: number;
}

interface GatewayState {
  /** The instance last written successfully (JSON), so an unchanged Gateway writes nothing. */
  writtenInstance: string | undefined;
  /** The cluster IP the API server gave the Service. */
  clusterIp: string | undefined;
  /** The Gateway's resourceVersion when its status was last written: until its own event arrives, nothing to check. */
  statusWrittenOver: string | undefined;
  running: boolean;
  again: boolean;
  retryTimer: NodeJS.Timeout | undefined;
  retryMs: number;
}

const SILENT: WaypointControllerLog = { info() {}, warn() {} };

/** Conditions compared without their timestamps. */
function sameStatus(current: unknown, next: GatewayStatus): boolean {
  const strip = (status: unknown) => {
    const value = (status ?? {}) as { addresses?: unknown; conditions?: GatewayCondition[] };
    return { addresses: value.addresses ?? [], conditions: (value.conditions ?? []).map(({ lastTransitionTime: _time, ...rest }) => rest) };
  };
  return isDeepStrictEqual(strip(current), strip(next));
}

export class WaypointController {
  readonly #options: WaypointControllerOptions;
  readonly #log: WaypointControllerLog;
  readonly #gateways = new Map<string, GatewayState>();
  readonly #unsubscribe: () => void;
  #stopped = false;
  /** Writes made (objects and statuses), for tests and the log. */
  writes = 0;

  constructor(options: WaypointControllerOptions) {
    this.#options = options;
    this.#log = options.log ?? SILENT;
    this.#unsubscribe = options.store.onChanges((changes) => this.#onChanges(changes));
    for (const key of options.store.keys('Gateway')) this.#schedule(key);
  }

  stop(): void {
    this.#stopped = true;
    this.#unsubscribe();
    for (const state of this.#gateways.values()) clearTimeout(state.retryTimer);
  }

  /** Resolves once no reconcile is running or queued (tests). */
  async idle(): Promise<void> {
    while ([...this.#gateways.values()].some((state) => state.running || state.again)) await new Promise((resolve) => setTimeout(resolve, 10));
  }

  #onChanges(changes: StoreChange[]): void {
    for (const change of changes) {
      if (change.kind === 'Gateway') {
        if (change.type === 'delete') {
          clearTimeout(this.#gateways.get(change.key)?.retryTimer);
          this.#gateways.delete(change.key);
        } else {
          this.#schedule(change.key);
        }
      } else if (change.kind === 'Service' && this.#gateways.has(change.key)) {
        // The waypoint's own Service (named after its Gateway): its address goes into the Gateway's status.
        this.#schedule(change.key);
      }
    }
  }

  #schedule(key: string): void {
    if (this.#stopped) return;
    let state = this.#gateways.get(key);
    if (!state) {
      state = { writtenInstance: undefined, clusterIp: undefined, statusWrittenOver: undefined, running: false, again: false, retryTimer: undefined, retryMs: this.#options.retryInitialMs ?? WAYPOINT_RETRY_INITIAL_MS };
      this.#gateways.set(key, state);
    }
    if (state.running) {
      state.again = true;
      return;
    }
    clearTimeout(state.retryTimer);
    state.retryTimer = undefined;
    state.running = true;
    void this.#reconcile(key, state).finally(() => {
      state.running = false;
      if (state.again && !this.#stopped && this.#gateways.get(key) === state) {
        state.again = false;
        this.#schedule(key);
      }
      state.again = false;
    });
  }

  async #reconcile(key: string, state: GatewayState): Promise<void> {
    const gateway = this.#options.store.get<GatewayObject>('Gateway', key);
    if (!gateway || !isWaypointGateway(gateway)) return;
    try {
      const instance = waypointInstance(gateway, this.#options.settings);
      const text = JSON.stringify(instance);
      if (text !== state.writtenInstance) {
        await this.#options.writer.ensure(instance.serviceAccount);
        const service = (await this.#options.writer.ensure(instance.service)) as ServiceObject;
        await this.#options.writer.ensure(instance.deployment);
        this.writes += 3;
        state.writtenInstance = text;
        state.clusterIp = service.spec?.clusterIP;
        this.#log.info({ gateway: key }, `waypoint ${key}: ServiceAccount, Service and Deployment written`);
      }
      const stored = this.#options.store.get<ServiceObject>('Service', key);
      const clusterIp = stored?.spec?.clusterIP ?? state.clusterIp;
      const status = waypointGatewayStatus(gateway, clusterIp, this.#options.clusterDomain);
      const version = (gateway.metadata as { resourceVersion?: string }).resourceVersion;
      const statusEventPending = version !== undefined && version === state.statusWrittenOver;
      if (!statusEventPending && !sameStatus(gateway.status, status)) {
        const previous = (gateway.status?.conditions ?? []) as GatewayCondition[];
        const now = (this.#options.now ?? (() => new Date()))().toISOString().replace(/\.\d+Z$/, 'Z');
        for (const condition of status.conditions) {
          const before = previous.find((entry) => entry.type === condition.type);
          condition.lastTransitionTime = before && before.status === condition.status && before.lastTransitionTime ? before.lastTransitionTime : now;
        }
        await this.#options.writer.patchStatus('Gateway', gateway.metadata.namespace ?? 'default', gateway.metadata.name, { ...gateway.status, ...status });
        state.statusWrittenOver = version;
        this.writes++;
        this.#log.info({ gateway: key, conditions: status.conditions.map((condition) => `${condition.type}=${condition.status} (${condition.reason})`) }, `waypoint ${key}: status written`);
      }
      state.retryMs = this.#options.retryInitialMs ?? WAYPOINT_RETRY_INITIAL_MS;
    } catch (error) {
      const delay = state.retryMs;
      state.retryMs = Math.min(state.retryMs * 2, WAYPOINT_RETRY_MAX_MS);
      this.#log.warn({ gateway: key, err: (error as Error).message }, `waypoint ${key} not reconciled: ${(error as Error).message}; retrying in ${delay} ms`);
      if (!this.#stopped) state.retryTimer = setTimeout(() => this.#schedule(key), delay);
    }
  }
}
