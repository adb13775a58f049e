/**
 * The main thread's side of the proxy workers (agent/workers/proxy-worker.ts): starts them, keeps their replicas
 * of the mesh state (workloads and services) and the policies in step with the main thread's, captures and releases pods on all of them,
 * answers their certificate requests, gathers their metrics, restarts one that dies, and stops them with a drain.
 *
 * With `count` 0 nothing runs and every call is a no-op: the main thread's own data plane serves alone.
 *
 * Owns: the worker threads' lifecycle and the replication order (state before the pod add that needs it).
 * Must not know about: what a worker does with a connection.
 */
import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import type { AgentConfig } from '../config.ts';
import type { CertificateManager } from '../../shared/ca/certificate-manager.ts';
import type { PodInfo } from '../inpod/pod-listeners.ts';
import type { AuthorizationUpdate, LocalPolicy } from '../policy/policy-store.ts';
import type { MeshState } from '../../shared/mesh/mesh-state.ts';
import { serviceKey } from '../../shared/mesh/service.ts';
import type { FromWorker, ToWorker, WorkerInit, WorkerRequest } from './protocol.ts';

export const PROXY_WORKER_MAIN = new URL('./proxy-worker.ts', import.meta.url);
/** A worker that does not answer a request in this time is treated as failed for that request. */
const REQUEST_TIMEOUT_MS = 15_000;
/** A worker that died is started again after this long (and no more often). */
const RESTART_DELAY_MS = 1_000;

export interface ProxyWorkersOptions {
  count: number;
  config: AgentConfig;
  state: MeshState;
  certificates: Pick<CertificateManager, 'certificateFor' | 'rootsPem'>;
  log: Pick<Logger, 'info' | 'warn' | 'error'>;
  /** The pods captured now: a restarted worker opens listeners for each. */
  capturedPods: () => readonly PodInfo[];
  /** The worker's entry module (PROXY_WORKER_MAIN); tests run a scripted one. */
  workerMain?: URL;
  /** How long after a worker died it is started again. */
  restartDelayMs?: number;
}

interface Pending {
  resolve: (value: unknown) => void;
  reject: (error: Error) => void;
  timer: NodeJS.Timeout;
}

/** The plain data of a pod for a worker (a captured pod also holds its socket factory, which cannot cross threads). */
function podInfo(pod: PodInfo): PodInfo {
  return { uid: pod.uid, name: pod.name, namespace: pod.namespace, netns: pod.netns, ips: [...pod.ips] };
}

class ProxyWorker {
  readonly index: number;
  readonly worker: Worker;
  readonly ready: Promise<void>;
  readonly #pending = new Map<number, Pending>();
  #nextId = 1;
  #exited = false;

  constructor(main: URL, index: number, init: WorkerInit, onMessage: (worker: ProxyWorker, message: FromWorker) => void, onExit: (worker: ProxyWorker, reason: string) => void) {
    this.index = index;
    this.worker = new Worker(main, { workerData: init, name: `ambit-proxy-${index}` });
    this.ready = new Promise<void>((resolve, reject) => {
      const onReady = (message: FromWorker): void => {
        if (message.type !== 'ready') return;
        this.worker.off('message', onReady);
        resolve();
      };
      this.worker.on('message', onReady);
      this.worker.once('exit', (code) => reject(new Error(`proxy worker ${index} exited (${code}) before it was ready`)));
    });
    this.ready.catch(() => undefined);
    this.worker.on('message', (message: FromWorker) => {
      if (message.type === 'reply') this.#settle(message);
      else onMessage(this, message);
    });
    this.worker.on('error', (error) => onExit(this, error.stack ?? error.message));
    this.worker.on('exit', (code) => {
      this.#exited = true;
      for (const [id, pending] of this.#pending) {
        clearTimeout(pending.timer);
        pending.reject(new Error(`proxy worker ${index} exited (${code})`));
        this.#pending.delete(id);
      }
      onExit(this, `exit code ${code}`);
    });
  }

  get exited(): boolean {
    return this.#exited;
  }

  post(message: ToWorker): void {
    if (!this.#exited) this.worker.postMessage(message);
  }

  request<T>(request: WorkerRequest, timeoutMs = REQUEST_TIMEOUT_MS): Promise<T> {
    if (this.#exited) return Promise.reject(new Error(`proxy worker ${this.index} is not running`));
    const id = this.#nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new Error(`proxy worker ${this.index} did not answer ${request.op} in ${timeoutMs} ms`));
      }, timeoutMs);
      this.#pending.set(id, { resolve: resolve as (value: unknown) => void, reject, timer });
      this.worker.postMessage({ type: 'request', id, request } satisfies ToWorker);
    });
  }

  #settle(message: Extract<FromWorker, { type: 'reply' }>): void {
    const pending = this.#pending.get(message.id);
    if (!pending) return;
    this.#pending.delete(message.id);
    clearTimeout(pending.timer);
    if (message.error !== undefined) pending.reject(new Error(`proxy worker ${this.index}: ${message.error}`));
    else pending.resolve(message.result);
  }
}

export class ProxyWorkers {
  readonly #options: ProxyWorkersOptions;
  readonly #workers: ProxyWorker[] = [];
  #localPolicies: LocalPolicy[] | undefined;
  readonly #xdsPolicies = new Map<string, AuthorizationUpdate>();
  #logLevel: string;
  #stopping = false;
  #unsubscribe: (() => void) | undefined;
  #unsubscribeServices: (() => void) | undefined;

  constructor(options: ProxyWorkersOptions) {
    this.#options = options;
    this.#logLevel = options.config.logLevel;
  }

  get count(): number {
    return this.#workers.length;
  }

  /** Starts the workers with the current state and policies; resolves when all are ready. */
  async start(): Promise<void> {
    if (this.#options.count <= 0) return;
    this.#unsubscribe = this.#options.state.onChange((change) => {
      const message: ToWorker = change.type === 'upsert' ? { type: 'workload-upsert', workload: change.workload } : { type: 'workload-remove', uid: change.workload.uid };
      for (const worker of this.#workers) worker.post(message);
    });
    this.#unsubscribeServices = this.#options.state.onServiceChange((change) => {
      const message: ToWorker = change.type === 'upsert' ? { type: 'service-upsert', service: change.service } : { type: 'service-remove', key: serviceKey(change.service) };
      for (const worker of this.#workers) worker.post(message);
    });
    for (let index = 1; index <= this.#options.count; index++) this.#workers.push(this.#spawn(index));
    await Promise.all(this.#workers.map((worker) => worker.ready));
  }

  /** The local (cluster-directory) policies, replacing the previous set, on every worker. */
  setLocalPolicies(policies: readonly LocalPolicy[]): void {
    this.#localPolicies = [...policies];
    for (const worker of this.#workers) worker.post({ type: 'policies-local', policies: this.#localPolicies });
  }

  /** Accepted xDS policy updates, on every worker. */
  applyXdsPolicies(added: readonly AuthorizationUpdate[], removed: readonly string[]): void {
    const updates = added.map((update) => ({ name: update.name, resource: update.resource }));
    for (const update of updates) this.#xdsPolicies.set(update.name, update);
    for (const name of removed) this.#xdsPolicies.delete(name);
    for (const worker of this.#workers) worker.post({ type: 'policies-xds', added: updates, removed: [...removed] });
  }

  setLogLevel(level: string): void {
    this.#logLevel = level;
    for (const worker of this.#workers) worker.post({ type: 'log-level', level });
  }

  /** Opens the pod's listeners on every worker (its rules are the main thread's business). */
  async addPod(pod: PodInfo): Promise<void> {
    const info = podInfo(pod);
    await Promise.all(this.#live().map((worker) => worker.request({ op: 'add-pod', pod: info })));
  }

  /** Closes the pod's listeners on every worker; never fails (a worker that cannot answer is logged). */
  async delPod(uid: string): Promise<void> {
    await Promise.all(this.#live().map((worker) => worker.request({ op: 'del-pod', uid }).catch((error: Error) => this.#options.log.warn({ uid, err: error.message }, 'proxy worker release failed'))));
  }

  /** Every worker's metrics, as registry JSON (a worker that does not answer is left out of this scrape). */
  async metrics(): Promise<object[][]> {
    const results = await Promise.all(this.#live().map((worker) => worker.request<object[]>({ op: 'metrics' }, 2_000).catch(() => undefined)));
    return results.filter((result): result is object[] => result !== undefined);
  }

  /** Stops accepting on every worker and lets their connections drain (bounded by the config's drain time). */
  async stop(): Promise<void> {
    this.#stopping = true;
    this.#unsubscribe?.();
    this.#unsubscribeServices?.();
    const drainMs = this.#options.config.drainMs;
    await Promise.all(this.#workers.map(async (worker) => {
      await worker.request({ op: 'stop' }, drainMs + 5_000).catch(() => undefined);
      await worker.worker.terminate();
    }));
  }

  #live(): ProxyWorker[] {
    return this.#workers.filter((worker) => !worker.exited);
  }

  #spawn(index: number): ProxyWorker {
    const init: WorkerInit = {
      index,
      config: { ...this.#options.config, logLevel: this.#logLevel },
      rootsPem: this.#options.certificates.rootsPem(),
      workloads: this.#options.state.workloads(),
      services: this.#options.state.services(),
      localPolicies: this.#localPolicies,
      xdsPolicies: [...this.#xdsPolicies.values()],
    };
    return new ProxyWorker(this.#options.workerMain ?? PROXY_WORKER_MAIN, index, init, (worker, message) => this.#onMessage(worker, message), (worker, reason) => this.#onExit(worker, reason));
  }

  #onMessage(worker: ProxyWorker, message: FromWorker): void {
    if (message.type !== 'certificate-request') return;
    const { certificates } = this.#options;
    Promise.resolve(certificates.certificateFor(message.identity)).then(
      (certificate) => worker.post({ type: 'certificate', id: message.id, certificate, rootsPem: certificates.rootsPem() }),
      (error: Error) => worker.post({ type: 'certificate', id: message.id, rootsPem: [], error: error.message }),
    );
  }

  #onExit(worker: ProxyWorker, reason: string): void {
    const slot = this.#workers.indexOf(worker);
    if (this.#stopping || slot < 0) return;
    this.#options.log.error({ worker: worker.index, reason }, 'proxy worker died; starting it again');
    this.#workers.splice(slot, 1);
    setTimeout(() => {
      if (this.#stopping) return;
      const next = this.#spawn(worker.index);
      this.#workers.push(next);
      void next.ready
        .then(() => Promise.all(this.#options.capturedPods().map((pod) => next.request({ op: 'add-pod', pod: podInfo(pod) }))))
        .then(() => this.#options.log.info({ worker: worker.index }, 'proxy worker back'))
        .catch((error: Error) => this.#options.log.error({ worker: worker.index, err: error.message }, 'restarting the proxy worker failed'));
    }, this.#options.restartDelayMs ?? RESTART_DELAY_MS).unref();
  }
}
