/**
 * The mesh as this agent sees it: workloads by uid and by IP, updated by a source (a cluster directory now,
 * delta xDS later) and read by the proxy on every new connection.
 *
 * Owns: indexes over workloads and change notification, and the addresses of this node's pods as their CNI ADD
 * gave them (the truth on the node), used for a pod whose source has no address for it yet (status.podIP not yet
 * written: in local mode under a runtime that writes none, or before the kubelet's status update reaches the source).
 * Once the source has addresses, they are the workload's (every node sees the same); a disagreement is reported.
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
  /** `<namespace>/<name>` -> the addresses this node's CNI ADD gave the pod. */
  readonly #nodeAddressesByName = new Map<string, readonly string[]>();
  /** Workloads as their source gave them (before node addresses were filled in), by uid. */
  readonly #sourceWorkloadsByUid = new Map<string, Workload>();
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

  /**
   * Records the addresses the CNI ADD gave pod `namespace/name` on this node; its workload uses them while the
   * source has none. Returns the source's addresses when they differ (for the caller to report), else undefined.
   */
  setNodeAddresses(namespace: string, name: string, addresses: readonly string[]): readonly string[] | undefined {
    const key = `${namespace}/${name}`;
    if (addresses.length === 0) return undefined;
    this.#nodeAddressesByName.set(key, Object.freeze([...addresses]));
    const source = this.#sourceOf(key);
    if (source && source.addresses.length === 0) this.upsert(source);
    return source && source.addresses.length > 0 && !sameAddresses(source.addresses, addresses) ? source.addresses : undefined;
  }

  /** Forgets the node's addresses of pod `namespace/name` (its DEL, or the pod forgotten). */
  clearNodeAddresses(namespace: string, name: string): void {
    const key = `${namespace}/${name}`;
    if (!this.#nodeAddressesByName.delete(key)) return;
    const source = this.#sourceOf(key);
    if (source && source.addresses.length === 0) this.upsert(source);
  }

  /** The addresses the CNI ADD gave pod `namespace/name`, if it was added on this node. */
  nodeAddresses(namespace: string, name: string): readonly string[] | undefined {
    return this.#nodeAddressesByName.get(`${namespace}/${name}`);
  }

  #sourceOf(key: string): Workload | undefined {
    const current = this.#workloadsByName.get(key);
    return current ? this.#sourceWorkloadsByUid.get(current.uid) : undefined;
  }

  /** The workload as the index holds it: the source's, with this node's addresses when the source has none. */
  #withNodeAddresses(workload: Workload): Workload {
    if (workload.addresses.length > 0) return workload;
    const nodeAddresses = this.#nodeAddressesByName.get(`${workload.namespace}/${workload.name}`);
    return nodeAddresses ? { ...workload, addresses: [...nodeAddresses] } : workload;
  }

  upsert(sourceWorkload: Workload): void {
    this.#sourceWorkloadsByUid.set(sourceWorkload.uid, sourceWorkload);
    const workload = this.#withNodeAddresses(sourceWorkload);
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
    this.#sourceWorkloadsByUid.delete(uid);
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
      const current = this.#sourceWorkloadsByUid.get(workload.uid);
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

function sameAddresses(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((address) => b.includes(address));
}
