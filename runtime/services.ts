/**
 * Services in the local runtime: the parts of a cluster's control plane that Services need and the mesh does not
 * provide, played by the runtime for the cluster directory. It gives a Service without `clusterIP` its cluster IPs
 * (the API server's allocator; written back into the Service's file), checks the ones users set (in range, not
 * another Service's), computes each Service's endpoints from the Pods its selector picks, or from its
 * EndpointSlices when it has no selector (the endpoint controller), and hands the resulting table to the node
 * programs (the kube-proxy stand-in and the cluster DNS) whenever it changes. It watches the directory.
 *
 * Owns: reading Services, Pods and EndpointSlices from the directory, cluster IP assignment and write-back, what
 * counts as a ready endpoint, the service table, and the problems found (each naming the Service's file).
 * Must not know about: nftables or DNS (kube-proxy.ts, cluster-dns.ts consume the table), nor the mesh.
 */
import { appendFile, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseAllDocuments, stringify } from 'yaml';
import { objectSource, readClusterDir, type ClusterDirParseCache } from '../shared/k8s/cluster-dir.ts';
import { DirectoryWatcher } from '../shared/k8s/dir-watcher.ts';
import { isPod, podNamespace, type K8sObject, type PodObject } from '../shared/k8s/objects.ts';
import { RuntimeError, type RuntimeErrorCode } from './errors.ts';
import { podTargetPort } from '../shared/k8s/pod-facts.ts';
import {
  Cidr,
  ClusterIpAllocator,
  SERVICE_CIDR_V4,
  SERVICE_CIDR_V6,
  canonicalIp,
  describeRefusal,
  familyOf,
  type ClusterIpRefusal,
  type IpFamily,
} from './service-ips.ts';

export const CLUSTER_DOMAIN = 'cluster.local';
/** The label an EndpointSlice names its Service with. */
const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';

export interface ServicePortSpec {
  name?: string;
  port: number;
  targetPort?: number | string;
  protocol?: string;
}

export interface ServiceObject extends K8sObject {
  kind: 'Service';
  metadata: { name: string; namespace?: string; [field: string]: unknown };
  spec?: {
    selector?: Record<string, string>;
    clusterIP?: string;
    clusterIPs?: string[];
    ipFamilies?: string[];
    ipFamilyPolicy?: string;
    ports?: ServicePortSpec[];
    type?: string;
    internalTrafficPolicy?: string;
    publishNotReadyAddresses?: boolean;
    [field: string]: unknown;
  };
}

interface EndpointSliceObject extends K8sObject {
  kind: 'EndpointSlice';
  addressType?: string;
  endpoints?: { addresses?: string[]; nodeName?: string; conditions?: { ready?: boolean } }[];
  ports?: { name?: string; port?: number; protocol?: string }[];
}

/** One ready endpoint of a service port, the target port resolved for it. */
export interface EndpointView {
  ip: string;
  port: number;
  /** The node the endpoint runs on ('' when unknown): internalTrafficPolicy Local keeps only this node's. */
  nodeName: string;
}

export interface ServicePortView {
  /** The port's name ('' when the Service has one unnamed port). */
  name: string;
  protocol: 'tcp' | 'udp' | 'sctp';
  port: number;
  /** Ready endpoints only, both families. */
  endpoints: EndpointView[];
}

export interface ServiceView {
  namespace: string;
  name: string;
  /** The file the Service was read from. */
  file: string;
  /** Its cluster IPs, primary first; empty for a headless Service. */
  clusterIPs: string[];
  headless: boolean;
  /** internalTrafficPolicy Local: only endpoints on the client's node. */
  localOnly: boolean;
  ports: ServicePortView[];
  /** The addresses of its ready endpoints (a headless Service's DNS answer), both families. */
  endpointIps: string[];
}

/** What the node programs are given: every Service that got its addresses, in a stable order. */
export interface ServiceTable {
  services: ServiceView[];
}

export type ServiceProblemCode = Extract<RuntimeErrorCode, 'SERVICE_IP_REFUSED' | 'SERVICE_INVALID'>;

export interface ServiceProblem {
  code: ServiceProblemCode;
  /** `<namespace>/<name>` */
  service: string;
  file: string;
  message: string;
}

/** Consumers of the table; each is awaited, so after refresh() the node programs are in step. */
export type ServiceTableConsumer = (table: ServiceTable) => Promise<void>;

export interface ClusterServicesOptions {
  clusterDir: string;
  dualStack: boolean;
  consumers: ServiceTableConsumer[];
  /** Problems and consumer failures are appended here, one line each. */
  logFile: string;
}

export function serviceFile(clusterDir: string, namespace: string, name: string): string {
  return path.join(clusterDir, 'services', `${namespace}.${name}.yaml`);
}

function isService(object: K8sObject): object is ServiceObject {
  return object.kind === 'Service' && typeof object.metadata?.name === 'string';
}

function namespaceOf(object: K8sObject): string {
  return object.metadata?.namespace || 'default';
}

/** A pod's addresses, canonical; anything that is not an address is dropped (it could not be a DNAT target). */
function podIps(pod: PodObject): string[] {
  const listed = Array.isArray(pod.status?.podIPs) ? pod.status.podIPs.map((entry) => entry?.ip) : [pod.status?.podIP];
  return listed.flatMap((ip) => (typeof ip === 'string' ? (canonicalIp(ip) ?? []) : []));
}

function isPortNumber(port: unknown): port is number {
  return Number.isInteger(port) && (port as number) >= 1 && (port as number) <= 65535;
}

/**
 * A pod is a ready endpoint when it runs, has an address, is not being deleted and its Ready condition (when it
 * reports one) is True: what the endpoint controller puts in an EndpointSlice as `ready: true`.
 */
export function isPodReady(pod: PodObject): boolean {
  if (pod.status?.phase !== 'Running' || podIps(pod).length === 0) return false;
  if ((pod.metadata as { deletionTimestamp?: string }).deletionTimestamp) return false;
  const conditions = (pod.status as { conditions?: { type?: string; status?: string }[] }).conditions;
  const ready = Array.isArray(conditions) ? conditions.find((condition) => condition?.type === 'Ready') : undefined;
  return ready === undefined || ready.status === 'True';
}

function selects(selector: Record<string, string>, pod: PodObject): boolean {
  const labels = pod.metadata.labels ?? {};
  return Object.entries(selector).every(([key, value]) => labels[key] === value);
}


function protocolOf(port: ServicePortSpec): 'tcp' | 'udp' | 'sctp' | undefined {
  const protocol = (port.protocol ?? 'TCP').toLowerCase();
  return protocol === 'tcp' || protocol === 'udp' || protocol === 'sctp' ? protocol : undefined;
}

class ServiceRefused extends Error {
  readonly code: ServiceProblemCode;
  constructor(code: ServiceProblemCode, message: string) {
    super(message);
    this.code = code;
  }
}

interface Assignment {
  clusterIPs: string[];
  headless: boolean;
  /** The fields to write back into the Service (absent when the user's own values stand). */
  writeBack?: { clusterIP: string; clusterIPs: string[]; ipFamilies: IpFamily[]; ipFamilyPolicy: string };
}

export class ClusterServices {
  readonly #options: ClusterServicesOptions;
  readonly allocator: ClusterIpAllocator;
  readonly #watcher: DirectoryWatcher;
  readonly #parseCache: ClusterDirParseCache = new Map();
  #table: ServiceTable = { services: [] };
  #tableText = '';
  #problems: ServiceProblem[] = [];
  #problemsText = '';
  #lock: Promise<unknown> = Promise.resolve();

  constructor(options: ClusterServicesOptions) {
    this.#options = options;
    this.allocator = new ClusterIpAllocator([new Cidr(SERVICE_CIDR_V4), ...(options.dualStack ? [new Cidr(SERVICE_CIDR_V6)] : [])]);
    this.#watcher = new DirectoryWatcher({
      dir: options.clusterDir,
      read: () => this.#serial(() => this.#sync()),
      onError: (error) => void this.#log(`reading ${options.clusterDir} failed: ${error.message}`),
    });
  }

  /** The table the node programs were last given. */
  get table(): ServiceTable {
    return this.#table;
  }

  /** Services refused at the last read (bad or taken cluster IPs, bad specs), each naming its file. */
  get problems(): readonly ServiceProblem[] {
    return this.#problems;
  }

  /** Reads the directory, programs the nodes, then follows changes. */
  async start(): Promise<void> {
    await mkdir(this.#options.clusterDir, { recursive: true });
    await this.#watcher.start();
  }

  stop(): void {
    this.#watcher.stop();
  }

  /** Reads the directory now; resolves once the node programs have the result. */
  refresh(): Promise<void> {
    return this.#watcher.refresh();
  }

  /**
   * Creates or replaces a Service as `kubectl apply` does through an API server: cluster IPs assigned when absent,
   * refused (RuntimeError SERVICE_IP_REFUSED / SERVICE_INVALID, naming the file) when set to one that is out of
   * range or another Service's. Written to `services/<namespace>.<name>.yaml`; resolves with the object as written,
   * once the nodes are programmed.
   */
  async applyService(service: ServiceObject): Promise<ServiceObject> {
    const key = `${namespaceOf(service)}/${service.metadata.name}`;
    const file = serviceFile(this.#options.clusterDir, namespaceOf(service), service.metadata.name);
    const written = await this.#serial(async () => {
      await this.#sync();
      let assignment: Assignment;
      try {
        assignment = this.#assign(key, service);
        this.#view(key, service, file, assignment, [], []); // the checks a read makes, before anything is written
      } catch (error) {
        this.allocator.releaseAllBut(key); // a Service it replaces gets its addresses back from its file at the next read
        const code: ServiceProblemCode = error instanceof ServiceRefused ? error.code : 'SERVICE_INVALID';
        throw new RuntimeError(code, `Service ${key} (${file}): ${(error as Error).message}`);
      }
      const object: ServiceObject = assignment.writeBack ? { ...service, spec: { ...service.spec, ...assignment.writeBack } } : service;
      await writeAtomically(file, stringify(object));
      return object;
    });
    await this.refresh();
    return written;
  }

  #serial<T>(work: () => Promise<T>): Promise<T> {
    const result = this.#lock.then(work, work);
    this.#lock = result.catch(() => undefined);
    return result;
  }

  async #log(line: string): Promise<void> {
    await appendFile(this.#options.logFile, `${new Date().toISOString()} ${line}\n`).catch(() => undefined);
  }

  /**
   * The cluster IPs `key` gets: the user's (checked and claimed), or new ones (claimed, to be written back).
   * Throws ServiceRefused; on refusal the Service holds nothing.
   */
  #assign(key: string, service: ServiceObject): Assignment {
    const spec = service.spec ?? {};
    const requested = spec.clusterIPs ?? (spec.clusterIP !== undefined && spec.clusterIP !== '' ? [spec.clusterIP] : []);
    if (spec.clusterIP !== undefined && spec.clusterIP !== '' && spec.clusterIPs !== undefined && spec.clusterIPs[0] !== spec.clusterIP) {
      throw new ServiceRefused('SERVICE_INVALID', `clusterIP ${spec.clusterIP} must be the first of clusterIPs [${spec.clusterIPs.join(', ')}]`);
    }
    if (requested[0] === 'None') {
      this.allocator.releaseAllBut(key);
      if (requested.length > 1) throw new ServiceRefused('SERVICE_INVALID', 'a headless Service (clusterIP None) has no other cluster IPs');
      return { clusterIPs: [], headless: true };
    }
    if (requested.length > 0) {
      const families = requested.map((ip) => familyOf(ip));
      if (requested.length > 2 || (requested.length === 2 && families[0] === families[1])) {
        throw new ServiceRefused('SERVICE_INVALID', `clusterIPs [${requested.join(', ')}]: at most one address per family`);
      }
      let refusal: ClusterIpRefusal | undefined;
      for (const ip of requested) refusal ??= this.allocator.check(key, ip);
      if (refusal !== undefined) {
        this.allocator.releaseAllBut(key);
        throw new ServiceRefused('SERVICE_IP_REFUSED', describeRefusal(refusal));
      }
      for (const ip of requested) this.allocator.claim(key, ip);
      this.allocator.releaseAllBut(key, requested);
      return { clusterIPs: requested.map((ip) => canonicalIp(ip)!), headless: false };
    }
    // No clusterIP: allocate one per family, as the API server does.
    const families = this.#families(spec);
    const clusterIPs: string[] = [];
    for (const family of families) {
      const allocated = this.allocator.allocate(key, family);
      if (!('ip' in allocated)) {
        this.allocator.releaseAllBut(key);
        throw new ServiceRefused('SERVICE_IP_REFUSED', describeRefusal(allocated));
      }
      clusterIPs.push(allocated.ip);
    }
    this.allocator.releaseAllBut(key, clusterIPs);
    return {
      clusterIPs,
      headless: false,
      writeBack: { clusterIP: clusterIPs[0]!, clusterIPs, ipFamilies: families, ipFamilyPolicy: families.length > 1 ? 'PreferDualStack' : 'SingleStack' },
    };
  }

  /** The families a new Service gets: its ipFamilies, else both in a dual-stack cluster unless it asks for SingleStack. */
  #families(spec: NonNullable<ServiceObject['spec']>): IpFamily[] {
    if (spec.ipFamilies !== undefined && spec.ipFamilies.length > 0) {
      const families = spec.ipFamilies.filter((family): family is IpFamily => family === 'IPv4' || family === 'IPv6');
      if (families.length !== spec.ipFamilies.length || new Set(families).size !== families.length) {
        throw new ServiceRefused('SERVICE_INVALID', `ipFamilies [${spec.ipFamilies.join(', ')}]: each of IPv4, IPv6 at most once`);
      }
      const missing = families.find((family) => !this.allocator.ranges.has(family));
      if (missing !== undefined) throw new ServiceRefused('SERVICE_IP_REFUSED', `this cluster has no ${missing} service range (single-stack cluster)`);
      return spec.ipFamilyPolicy === 'SingleStack' ? families.slice(0, 1) : families;
    }
    if (this.allocator.ranges.has('IPv6') && spec.ipFamilyPolicy !== 'SingleStack') return ['IPv4', 'IPv6'];
    return ['IPv4'];
  }

  /** One read: assign cluster IPs (writing back new ones), compute endpoints, hand a changed table to the nodes. */
  async #sync(): Promise<void> {
    const snapshot = await readClusterDir(this.#options.clusterDir, this.#parseCache);
    const services = new Map<string, ServiceObject>();
    const pods: PodObject[] = [];
    const slicesByService = new Map<string, EndpointSliceObject[]>();
    for (const object of snapshot.objects) {
      if (isService(object)) {
        services.set(`${namespaceOf(object)}/${object.metadata.name}`, object); // later documents win
      } else if (isPod(object)) {
        pods.push(object);
      } else if (object.kind === 'EndpointSlice') {
        const owner = object.metadata?.labels?.[SERVICE_NAME_LABEL];
        if (owner === undefined) continue;
        const key = `${namespaceOf(object)}/${owner}`;
        slicesByService.set(key, [...(slicesByService.get(key) ?? []), object as EndpointSliceObject]);
      }
    }
    for (const holder of this.allocator.holders()) if (!services.has(holder)) this.allocator.releaseAllBut(holder);

    // Services holding their addresses from earlier reads go first, so a newcomer cannot take one from them.
    const held = this.allocator.holders();
    const ordered = [...services.entries()].sort(([a], [b]) => Number(held.has(b)) - Number(held.has(a)) || a.localeCompare(b));
    const problems: ServiceProblem[] = [];
    const views: ServiceView[] = [];
    const writeBacks: { key: string; file: string; assignment: Assignment }[] = [];
    for (const [key, service] of ordered) {
      const file = objectSource(service)?.file ?? serviceFile(this.#options.clusterDir, namespaceOf(service), service.metadata.name);
      if (service.spec?.type === 'ExternalName') continue; // a DNS alias: no cluster IP, no endpoints
      try {
        const assignment = this.#assign(key, service);
        views.push(this.#view(key, service, file, assignment, pods, slicesByService.get(key) ?? []));
        if (assignment.writeBack) writeBacks.push({ key, file, assignment });
      } catch (error) {
        // A user's YAML can be anything: one bad Service is reported and skipped, the others are programmed.
        const code: ServiceProblemCode = error instanceof ServiceRefused ? error.code : 'SERVICE_INVALID';
        if (!(error instanceof ServiceRefused)) this.allocator.releaseAllBut(key);
        problems.push({ code, service: key, file, message: `Service ${key} (${file}): ${(error as Error).message}` });
      }
    }
    for (const { key, file, assignment } of writeBacks) {
      try {
        await writeBackClusterIps(file, key, assignment.writeBack!);
      } catch (error) {
        await this.#log(`cannot write the cluster IPs of Service ${key} back to ${file}: ${(error as Error).message}`);
      }
    }
    views.sort((a, b) => `${a.namespace}/${a.name}`.localeCompare(`${b.namespace}/${b.name}`));

    const problemsText = JSON.stringify(problems);
    if (problemsText !== this.#problemsText) {
      this.#problemsText = problemsText;
      for (const problem of problems) await this.#log(`refused: ${problem.message}`);
    }
    this.#problems = problems;
    const table: ServiceTable = { services: views };
    const tableText = JSON.stringify(table);
    if (tableText === this.#tableText) return;
    for (const consume of this.#options.consumers) {
      try {
        await consume(table);
      } catch (error) {
        // Not marked applied: the next read tries again.
        await this.#log(`programming the nodes failed: ${(error as Error).message}`);
        throw error;
      }
    }
    this.#table = table;
    this.#tableText = tableText;
  }

  #view(key: string, service: ServiceObject, file: string, assignment: Assignment, pods: PodObject[], slices: EndpointSliceObject[]): ServiceView {
    const namespace = namespaceOf(service);
    const spec = service.spec ?? {};
    if (spec.ports !== undefined && !Array.isArray(spec.ports)) throw new Error('spec.ports must be a list');
    if (spec.selector !== undefined && (typeof spec.selector !== 'object' || spec.selector === null || Array.isArray(spec.selector))) {
      throw new Error('spec.selector must be a map of labels');
    }
    const includeUnready = spec.publishNotReadyAddresses === true;
    const ports: ServicePortView[] = [];
    const endpointIps = new Set<string>();
    const selected =
      spec.selector !== undefined && Object.keys(spec.selector).length > 0
        ? pods.filter((pod) => podNamespace(pod) === namespace && selects(spec.selector!, pod) && (includeUnready ? podIps(pod).length > 0 : isPodReady(pod)))
        : [];
    for (const pod of selected) for (const ip of podIps(pod)) endpointIps.add(ip);
    for (const port of spec.ports ?? []) {
      if (typeof port !== 'object' || port === null) throw new Error('each of spec.ports must be a map (port, targetPort, protocol, name)');
      const protocol = protocolOf(port);
      if (protocol === undefined) throw new Error(`port ${String(port.port)}: protocol ${String(port.protocol)} is not TCP, UDP or SCTP`);
      if (!isPortNumber(port.port)) throw new Error(`port ${String(port.port)} is not a port number (1-65535)`);
      const endpoints: EndpointView[] = [];
      for (const pod of selected) {
        const target = podTargetPort(port.targetPort, port.port, pod);
        if (!isPortNumber(target)) continue; // the pod does not declare this named port: not an endpoint of it
        for (const ip of podIps(pod)) endpoints.push({ ip, port: target, nodeName: pod.spec?.nodeName ?? '' });
      }
      for (const slice of slices) {
        const slicePort = slice.ports?.find((candidate) => (candidate.name ?? '') === (port.name ?? '') && (candidate.protocol ?? 'TCP').toLowerCase() === protocol);
        if (!isPortNumber(slicePort?.port)) continue;
        for (const endpoint of slice.endpoints ?? []) {
          if (!includeUnready && endpoint.conditions?.ready === false) continue;
          for (const ip of endpoint.addresses ?? []) {
            const canonical = canonicalIp(ip);
            if (canonical === undefined) continue;
            endpointIps.add(canonical);
            endpoints.push({ ip: canonical, port: slicePort!.port!, nodeName: endpoint.nodeName ?? '' });
          }
        }
      }
      endpoints.sort((a, b) => a.ip.localeCompare(b.ip) || a.port - b.port);
      ports.push({ name: port.name ?? '', protocol, port: port.port, endpoints });
    }
    const [, name = ''] = key.split('/');
    return {
      namespace,
      name,
      file,
      clusterIPs: assignment.clusterIPs,
      headless: assignment.headless,
      localOnly: spec.internalTrafficPolicy === 'Local',
      ports,
      endpointIps: [...endpointIps].sort(),
    };
  }
}

async function writeAtomically(file: string, text: string): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  const temp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${Date.now()}.tmp`);
  await writeFile(temp, text);
  await rename(temp, file);
}

/**
 * Sets the assigned addresses in the Service's own document of its file, keeping every other document, field and
 * comment as the user wrote them (the file may hold several objects).
 */
async function writeBackClusterIps(file: string, key: string, fields: NonNullable<Assignment['writeBack']>): Promise<void> {
  const text = await readFile(file, 'utf8');
  const documents = parseAllDocuments(text);
  // Rewriting a file with a broken document could lose what the user wrote: leave it (the IPs stay assigned).
  if (documents.some((document) => document.errors.length > 0)) throw new Error('the file has YAML errors; not rewritten');
  let found = false;
  for (const document of documents) {
    if (document.errors.length > 0) continue;
    const value = document.toJS() as K8sObject | null;
    if (value === null || typeof value !== 'object' || !isService(value) || `${namespaceOf(value)}/${value.metadata.name}` !== key) continue;
    if (value.spec?.clusterIP !== undefined && value.spec.clusterIP !== '') return; // set meanwhile: the user's value stands
    document.setIn(['spec', 'clusterIP'], fields.clusterIP);
    document.setIn(['spec', 'clusterIPs'], fields.clusterIPs);
    document.setIn(['spec', 'ipFamilies'], fields.ipFamilies);
    document.setIn(['spec', 'ipFamilyPolicy'], fields.ipFamilyPolicy);
    found = true;
  }
  if (!found) return; // moved or removed meanwhile: the next read sees it
  await writeAtomically(file, documents.map((document) => document.toString()).join(''));
}
