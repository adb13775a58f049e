/**
 * The mesh as this agent sees it: workloads by uid and by IP, services by VIP and by hostname, and each
 * service's endpoints (the workloads whose `services` map lists it), updated by a source (a cluster directory or
 * delta xDS) and read by the proxy on every new connection.
 *
 * Owns: indexes over workloads and services, the join of the two, change notification, and the addresses of this
 * node's pods as their CNI ADD gave them (the truth on the node), used for a pod whose source has no address for it
 * yet (status.podIP not yet written: in local mode under a runtime that writes none, or before the kubelet's status
 * update reaches the source). Once the source has addresses, they are the workload's (every node sees the same); a
 * disagreement is reported.
 * Must not know about: sources, sockets, certificates, how an endpoint is chosen.
 */
import { serviceKey, vipKey, type Service, type ServiceEndpoint } from './service.ts';
import type { Workload } from './workload.ts';

export type WorkloadChange = { type: 'upsert'; workload: Workload; previous?: Workload } | { type: 'remove'; workload: Workload };
export type ServiceChange = { type: 'upsert'; service: Service; previous?: Service } | { type: 'remove'; service: Service };

const NO_ENDPOINTS: readonly ServiceEndpoint[] = Object.freeze([]);
const NO_SERVICES: readonly Service[] = Object.freeze([]);

export class MeshState {
  readonly #workloadsByUid = new Map<string, Workload>();
  readonly #workloadsByIp = new Map<string, Workload>();
  /** `<namespace>/<name>`: how the CNI plugin names a pod (its uid format differs between sources). */
  readonly #workloadsByName = new Map<string, Workload>();
  readonly #listeners = new Set<(change: WorkloadChange) => void>();
  /** `<namespace>/<hostname>` -> service. */
  readonly #servicesByKey = new Map<string, Service>();
  /** vipKey(network, ip) -> service. */
  readonly #servicesByVip = new Map<string, Service>();
  /** Hostname -> services (one per namespace that has it; Kubernetes hostnames are unique). */
  readonly #servicesByHostname = new Map<string, Service[]>();
  /**
   * Service key -> workload uid -> endpoint, kept whether or not the service is known yet (a workload can arrive
   * before its service, as ztunnel stages them), so the service finds its endpoints when it comes.
   */
  readonly #endpointsByService = new Map<string, Map<string, ServiceEndpoint>>();
  /** Service key -> its endpoints as an array, built on first read after a change (the proxy's hot path reads it). */
  readonly #endpointListByService = new Map<string, readonly ServiceEndpoint[]>();
  readonly #serviceListeners = new Set<(change: ServiceChange) => void>();
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

  /** As workloadByName, by the `namespace/name` key a caller already holds (no string built per lookup). */
  workloadByKey(key: string): Workload | undefined {
    return this.#workloadsByName.get(key);
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
    if (previous) {
      for (const ip of previous.addresses) if (this.#workloadsByIp.get(ip) === previous) this.#workloadsByIp.delete(ip);
      this.#removeEndpoints(previous);
    }
    this.#workloadsByUid.set(workload.uid, workload);
    const nameKey = `${workload.namespace}/${workload.name}`;
    const holder = this.#workloadsByName.get(nameKey);
    // A host-network workload's name can be shared: istiod names each address of a user's EndpointSlice after the
    // slice. It never takes a name from a pod's workload (the CNI finds pods by name: a pod that met a slice of its
    // name would otherwise look uncaptured).
    if (workload.networkMode !== 'HOST_NETWORK' || holder === undefined || holder.uid === workload.uid || holder.networkMode === 'HOST_NETWORK') {
      this.#workloadsByName.set(nameKey, workload);
    }
    // A host-network pod's addresses are its node's: indexing them would make every connection to the node "that pod".
    if (workload.networkMode !== 'HOST_NETWORK') for (const ip of workload.addresses) this.#workloadsByIp.set(ip, workload);
    this.#addEndpoints(workload);
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
    this.#removeEndpoints(workload);
    this.#emit({ type: 'remove', workload });
  }

  /**
   * Replaces the whole set (a full snapshot from a source): removes what is gone, upserts what changed. Services
   * are replaced too when `services` is given (left alone when it is not).
   */
  replaceAll(workloads: Workload[], services?: Service[]): void {
    if (services) {
      const seenServices = new Set<string>();
      for (const service of services) {
        const key = serviceKey(service);
        seenServices.add(key);
        const current = this.#servicesByKey.get(key);
        if (!current || JSON.stringify(current) !== JSON.stringify(service)) this.upsertService(service);
      }
      for (const key of [...this.#servicesByKey.keys()]) if (!seenServices.has(key)) this.removeService(key);
    }
    const seen = new Set<string>();
    for (const workload of workloads) {
      seen.add(workload.uid);
      const current = this.#sourceWorkloadsByUid.get(workload.uid);
      if (!current || JSON.stringify(current) !== JSON.stringify(workload)) this.upsert(workload);
    }
    for (const uid of [...this.#workloadsByUid.keys()]) if (!seen.has(uid)) this.remove(uid);
  }

  /** The service whose VIP is `ip` on `network` ('' = the default network): the proxy's lookup for every connection. */
  serviceByVip(ip: string, network = ''): Service | undefined {
    return this.#servicesByVip.get(network ? vipKey(network, ip) : ip);
  }

  /** The services named `hostname` (`<name>.<namespace>.svc.<domain>`): at most one for Kubernetes Services. */
  servicesByHostname(hostname: string): readonly Service[] {
    return this.#servicesByHostname.get(hostname) ?? NO_SERVICES;
  }

  /** The service keyed `<namespace>/<hostname>`. */
  serviceByKey(key: string): Service | undefined {
    return this.#servicesByKey.get(key);
  }

  services(): Service[] {
    return [...this.#servicesByKey.values()];
  }

  /**
   * The workloads backing `service` (healthy or not, on any node: choosing among them is the caller's business),
   * each with its own port map. For a headless service these are the pods DNS answers with.
   */
  endpointsOf(service: Service | string): readonly ServiceEndpoint[] {
    const key = typeof service === 'string' ? service : serviceKey(service);
    const cached = this.#endpointListByService.get(key);
    if (cached) return cached;
    const endpoints = this.#endpointsByService.get(key);
    if (!endpoints) return NO_ENDPOINTS;
    const list = Object.freeze([...endpoints.values()]);
    this.#endpointListByService.set(key, list);
    return list;
  }

  upsertService(service: Service): void {
    const key = serviceKey(service);
    const previous = this.#servicesByKey.get(key);
    if (previous) this.#unindexService(previous);
    this.#servicesByKey.set(key, service);
    for (const vip of service.vips) this.#servicesByVip.set(vipKey(vip.network, vip.address), service);
    const sameHost = this.#servicesByHostname.get(service.hostname) ?? [];
    this.#servicesByHostname.set(service.hostname, [...sameHost, service]);
    this.#emitService(previous ? { type: 'upsert', service, previous } : { type: 'upsert', service });
  }

  /** Removes the service keyed `<namespace>/<hostname>`; its endpoints stay staged for when it comes back. */
  removeService(key: string): void {
    const service = this.#servicesByKey.get(key);
    if (!service) return;
    this.#unindexService(service);
    this.#servicesByKey.delete(key);
    this.#emitService({ type: 'remove', service });
  }

  onServiceChange(listener: (change: ServiceChange) => void): () => void {
    this.#serviceListeners.add(listener);
    return () => this.#serviceListeners.delete(listener);
  }

  #unindexService(service: Service): void {
    for (const vip of service.vips) {
      const key = vipKey(vip.network, vip.address);
      if (this.#servicesByVip.get(key) === service) this.#servicesByVip.delete(key);
    }
    const sameHost = this.#servicesByHostname.get(service.hostname)?.filter((entry) => entry !== service) ?? [];
    if (sameHost.length > 0) this.#servicesByHostname.set(service.hostname, sameHost);
    else this.#servicesByHostname.delete(service.hostname);
  }

  #addEndpoints(workload: Workload): void {
    const services = workload.services;
    if (!services) return;
    for (const key in services) {
      let endpoints = this.#endpointsByService.get(key);
      if (!endpoints) {
        endpoints = new Map();
        this.#endpointsByService.set(key, endpoints);
      }
      endpoints.set(workload.uid, { workload, ports: services[key] ?? [] });
      this.#endpointListByService.delete(key);
    }
  }

  #removeEndpoints(workload: Workload): void {
    const services = workload.services;
    if (!services) return;
    for (const key in services) {
      const endpoints = this.#endpointsByService.get(key);
      if (!endpoints || endpoints.get(workload.uid)?.workload !== workload) continue;
      endpoints.delete(workload.uid);
      if (endpoints.size === 0) this.#endpointsByService.delete(key);
      this.#endpointListByService.delete(key);
    }
  }

  #emitService(change: ServiceChange): void {
    this.#version++;
    for (const listener of this.#serviceListeners) listener(change);
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
