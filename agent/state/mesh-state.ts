/**
 * The mesh as this agent sees it: workloads by uid and by IP, updated by a source (a cluster directory now,
 * delta xDS later) and read by the proxy on every new connection.
 *
 * Owns: indexes over workloads and change notification.
 * Must not know about: sources, sockets, certificates.
 */
import type { Workload } from './workload.ts';

export type WorkloadChange = { type: 'upsert'; workload: Workload; previous?: Workload } | { type: 'remove'; workload: Workload };

export class MeshState {
  readonly #workloadsByUid = new Map<string, Workload>();
  readonly #workloadsByIp = new Map<string, Workload>();
  /** `<namespace>/<name>`: how the CNI plugin names a pod (its uid format differs between sources). */
  readonly #workloadsByName = new Map<string, Workload>();
  readonly #listeners = new Set<(change: WorkloadChange) => void>();
  #version = 0;

  /** Bumped on every change: a caller holding a lookup made at the same version may reuse it. */
  get version(): number {
    return this.#version;
  }

  /** The workload that owns `ip`, if any: the proxy's lookup for every connection. */
  workloadByIp(ip: string): Workload | undefined {
    return this.#workloadsByIp.get(ip);
  }

  workloadByName(namespace: string, name: string): Workload | undefined {
    return this.#workloadsByName.get(`${namespace}/${name}`);
  }

  /** Resolves when the pod named `namespace/name` is known, or with undefined after `timeoutMs`. */
  waitForWorkload(namespace: string, name: string, timeoutMs: number): Promise<Workload | undefined> {
    const known = this.workloadByName(namespace, name);
    if (known) return Promise.resolve(known);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        stop();
        resolve(undefined);
      }, timeoutMs);
      const stop = this.onChange((change) => {
        if (change.type === 'upsert' && change.workload.namespace === namespace && change.workload.name === name) {
          clearTimeout(timer);
          stop();
          resolve(change.workload);
        }
      });
    });
  }

  workloadByUid(uid: string): Workload | undefined {
    return this.#workloadsByUid.get(uid);
  }

  workloads(): Workload[] {
    return [...this.#workloadsByUid.values()];
  }

  upsert(workload: Workload): void {
    const previous = this.#workloadsByUid.get(workload.uid);
    if (previous) for (const ip of previous.addresses) if (this.#workloadsByIp.get(ip) === previous) this.#workloadsByIp.delete(ip);
    this.#workloadsByUid.set(workload.uid, workload);
    this.#workloadsByName.set(`${workload.namespace}/${workload.name}`, workload);
    for (const ip of workload.addresses) this.#workloadsByIp.set(ip, workload);
    this.#emit(previous ? { type: 'upsert', workload, previous } : { type: 'upsert', workload });
  }

  remove(uid: string): void {
    const workload = this.#workloadsByUid.get(uid);
    if (!workload) return;
    this.#workloadsByUid.delete(uid);
    const key = `${workload.namespace}/${workload.name}`;
    if (this.#workloadsByName.get(key) === workload) this.#workloadsByName.delete(key);
    for (const ip of workload.addresses) if (this.#workloadsByIp.get(ip) === workload) this.#workloadsByIp.delete(ip);
    this.#emit({ type: 'remove', workload });
  }

  /** Replaces the whole set (a full snapshot from a source): removes what is gone, upserts what changed. */
  replaceAll(workloads: Workload[]): void {
    const seen = new Set<string>();
    for (const workload of workloads) {
      seen.add(workload.uid);
      const current = this.#workloadsByUid.get(workload.uid);
      if (!current || JSON.stringify(current) !== JSON.stringify(workload)) this.upsert(workload);
    }
    for (const uid of [...this.#workloadsByUid.keys()]) if (!seen.has(uid)) this.remove(uid);
  }

  onChange(listener: (change: WorkloadChange) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #emit(change: WorkloadChange): void {
    this.#version++;
    for (const listener of this.#listeners) listener(change);
  }
}
