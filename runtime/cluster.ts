/**
 * A local Kubernetes-like cluster on one Linux box: nodes are network namespaces joined by an underlay fabric
 * namespace, pods are network namespaces wired by the real CNI chain (loopback, bridge + host-local, then
 * ambit-cni), and Namespace/Pod objects are published for the mesh to read: in a cluster directory by default, or
 * wherever a ClusterObjectStore puts them (an API server, in Kubernetes mode).
 *
 * Owns: cluster lifecycle (create, pods in and out, destroy), the node network topology, and crash recovery.
 * Must not know about: the agent's internals (it is an opaque command) or what runs in pods.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { execFileSync, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import type { PodObject } from '../shared/k8s/objects.ts';
import { directoryObjectStore, mergedAnnotations, namespaceObject, type ClusterObjectStore, type PodMetadataChange } from './cluster-store.ts';
import { CniChain, kubernetesCniArgs, type PluginConfig } from './cni-chain.ts';
import { RuntimeError } from './errors.ts';
import { ProcessTracker } from './exec.ts';
import { addNetns, addVethBetween, deleteNetns, ipIn, listNetns, sysctlIn } from './netns.ts';
import { ClusterNode, type AgentCommand } from './node.ts';
import { Pod } from './pod.ts';
import { processStartTime, reapDeadRuns, removeRecord, removeRun, writeRecord, type RunRecord } from './run-registry.ts';
import { removePodResolvConf, removeResolvConfsWithPrefix, removeResolvConfsWithPrefixSync, writePodResolvConf } from './cluster-dns.ts';
import { ServiceNetwork } from './service-network.ts';
import type { ClusterServices } from './services.ts';
import * as topology from './topology.ts';

/** Debian's containernetworking-plugins (loopback, bridge, host-local). */
export const REFERENCE_PLUGINS_DIR = '/usr/lib/cni';
/** The directory holding the `ambit-cni` executable in this checkout. */
export const AMBIT_CNI_DIR = path.resolve(import.meta.dirname, '..', 'cni');
const DEFAULT_CLUSTER_NAME = 'ambit';

export interface ClusterOptions {
  nodes: number;
  /** Cluster name: prefixes node names (`<name>-node<i>`). Default "ambit". */
  name?: string;
  /** Where Namespace/Pod objects are written; a directory in the run's temp dir by default (removed on destroy). */
  clusterDir?: string;
  /**
   * Publish Namespace/Pod objects here instead of the cluster directory (Kubernetes mode: an API server). The
   * agents are then not told about the directory (AMBIT_CLUSTER_DIR), as in a cluster.
   */
  objectStore?: ClusterObjectStore;
  /**
   * Kubernetes mode for ambit-cni: its config carries this kubeconfig (the plugin reads pods from the API server)
   * instead of the cluster directory.
   */
  cniKubeconfig?: string;
  /**
   * Dual stack: every pod also gets an IPv6 address (host-local from the node's fd00:... /64), nodes route IPv6
   * pod ranges to each other over the underlay. Default false (IPv4 only).
   */
  dualStack?: boolean;
  /** Chain ambit's CNI plugin after bridge (default true). False gives a mesh-less baseline. */
  ambitCni?: boolean;
  /** When set, one agent per node is started inside the node namespace before any pod is created. */
  agentCommand?: (node: ClusterNode) => AgentCommand;
  agentReadyTimeoutMs?: number;
  /** ambit-cni's logLevel; its log goes to `<node.dir>/ambit-cni.log`. */
  cniLogLevel?: string;
  /** Runs after the network exists and before the agents start (e.g. to start a control plane they connect to). */
  beforeAgents?: (cluster: Cluster) => Promise<void>;
  /**
   * A run made beforehand with reserveRun(), whose temp dir already holds the caller's files (the local mesh's CA
   * key): they go wherever the run's temp dir goes (destroy, the exit hook, the next run's reaper).
   */
  run?: ReservedRun;
  /**
   * Services (services.ts): cluster IPs for the directory's Services, a kube-proxy stand-in and a cluster DNS
   * (dnsmasq) in every node, a resolv.conf for every pod. Default: on with the cluster directory, off when
   * `objectStore` publishes elsewhere.
   */
  services?: boolean;
}

/** A run id and temp dir, recorded in the run registry (so the next run reaps them if this process dies). */
export interface ReservedRun {
  runId: string;
  tmpDir: string;
}

/** What destroy() removed, for a person watching the teardown. */
export interface TeardownReport {
  runId: string;
  /** `namespace/name` of each pod deleted (CNI DEL). */
  pods: string[];
  /** Process groups stopped (agents, control plane, pod apps). */
  processes: number;
  /** Network namespaces deleted (nodes, fabric, pods). */
  namespaces: string[];
  /** The run's temp dir (cluster directory, logs, and in a local mesh the CA's private key), removed. */
  tmpDir: string;
}

export interface CreatePodOptions {
  /** Node index, name, or object. */
  node: number | string | ClusterNode;
  name: string;
  namespace?: string;
  serviceAccount?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  /** Labels merged into the pod's Namespace object (created if new). */
  namespaceLabels?: Record<string, string>;
  /** Container names (default ["app"]); "istio-proxy" marks a sidecar pod. */
  containers?: string[];
  /**
   * The user's own Pod object (from a manifest): its metadata (owner references, ...) and spec are published as
   * given, with the runtime's name, namespace, uid, node, labels and annotations over them.
   */
  object?: PodObject;
  /**
   * The Ready condition published with the pod's IPs (default true). A kubelet publishes false until the pod's
   * readiness probe passes; so does the local runtime's supervisor, which then publishes what its probes find.
   */
  ready?: boolean;
}

/** A Pod's Ready condition as the kubelet reports it. */
function readyCondition(ready: boolean): { type: 'Ready'; status: 'True' | 'False'; lastTransitionTime: string } {
  return { type: 'Ready', status: ready ? 'True' : 'False', lastTransitionTime: new Date().toISOString() };
}

/** Clusters not yet destroyed, cleaned synchronously if the process exits without destroy(). */
const liveClusters = new Set<Cluster>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const cluster of liveClusters) cluster.destroyNowSync();
  });
}

export class Cluster {
  readonly runId: string;
  readonly name: string;
  readonly tmpDir: string;
  /** The cluster directory (made, and read by the mesh, unless `objectStore` publishes the objects elsewhere). */
  readonly clusterDir: string;
  readonly nodes: ClusterNode[] = [];
  readonly networkName: string;
  readonly #options: ClusterOptions;
  readonly #tracker = new ProcessTracker();
  /** By `namespace/name`: pod names are unique per namespace, as in Kubernetes. */
  readonly #podsByKey = new Map<string, Pod>();
  readonly #podObjects = new Map<Pod, PodObject>();
  readonly #namespaceLabels = new Map<string, Record<string, string>>();
  readonly #chains = new Map<ClusterNode, CniChain>();
  readonly #objects: ClusterObjectStore;
  #serviceNetwork: ServiceNetwork | undefined;
  #destroying: Promise<TeardownReport> | undefined;

  constructor(runId: string, tmpDir: string, options: ClusterOptions) {
    this.runId = runId;
    this.name = options.name ?? DEFAULT_CLUSTER_NAME;
    this.tmpDir = tmpDir;
    this.clusterDir = options.clusterDir ?? path.join(tmpDir, 'cluster');
    this.networkName = `ambit-${runId}`;
    this.#options = options;
    this.#objects = options.objectStore ?? directoryObjectStore(this.clusterDir);
  }

  get pods(): Pod[] {
    return [...this.#podsByKey.values()];
  }

  /** The pod `namespace/name`, if it exists. */
  findPod(namespace: string, name: string): Pod | undefined {
    return this.#podsByKey.get(`${namespace}/${name}`);
  }

  /** The Services controller (cluster IPs, endpoints, problems), when the cluster runs Services. */
  get services(): ClusterServices | undefined {
    return this.#serviceNetwork?.services;
  }

  /** The cluster DNS address pods' resolv.conf names, when the cluster runs Services. */
  get dnsServers(): string[] {
    return this.#serviceNetwork?.nameservers ?? [];
  }

  get fabricNetns(): string {
    return topology.fabricNetnsName(this.runId);
  }

  node(ref: number | string | ClusterNode): ClusterNode {
    const node = ref instanceof ClusterNode ? ref : this.nodes.find((n) => n.index === ref || n.name === ref);
    if (node === undefined || !this.nodes.includes(node)) {
      throw new RuntimeError('NO_SUCH_NODE', `no node ${String(ref instanceof ClusterNode ? ref.name : ref)} in cluster ${this.name} (${this.nodes.length} nodes)`);
    }
    return node;
  }

  /** @internal Builds the fabric and the nodes; called once by createCluster. */
  async build(): Promise<void> {
    await mkdir(this.clusterDir, { recursive: true });
    const fabric = this.fabricNetns;
    await addNetns(fabric);
    await ipIn(fabric, ['link', 'add', topology.FABRIC_BRIDGE, 'type', 'bridge']);
    await ipIn(fabric, ['link', 'set', topology.FABRIC_BRIDGE, 'up']);
    for (let index = 0; index < this.#options.nodes; index++) {
      const node = new ClusterNode({
        index,
        name: `${this.name}-node${index}`,
        netnsName: topology.nodeNetnsName(this.runId, index),
        podCidr: topology.podCidr(this.runId, index),
        podGateway: topology.podGateway(this.runId, index),
        underlayIp: topology.underlayIp(this.runId, index),
        dir: path.join(this.tmpDir, `n${index}`),
        ...(this.#options.objectStore === undefined ? { clusterDir: this.clusterDir } : {}),
        tracker: this.#tracker,
        ...(this.#options.agentCommand ? { agentCommand: (node: ClusterNode) => this.#agentCommandFor(node) } : {}),
        ...(this.#options.agentReadyTimeoutMs ? { agentReadyTimeoutMs: this.#options.agentReadyTimeoutMs } : {}),
      });
      this.nodes.push(node);
      await this.#buildNode(node);
    }
    for (const node of this.nodes) {
      for (const other of this.nodes) {
        if (other === node) continue;
        await ipIn(node.netnsName, ['route', 'add', other.podCidr, 'via', other.underlayIp]);
        if (this.#options.dualStack) {
          await ipIn(node.netnsName, ['-6', 'route', 'add', topology.podCidr6(this.runId, other.index), 'via', topology.underlayIp6(this.runId, other.index)]);
        }
      }
    }
    if (this.#servicesEnabled) {
      this.#serviceNetwork = await ServiceNetwork.start({
        clusterDir: this.clusterDir,
        dualStack: this.#options.dualStack === true,
        nodes: this.nodes,
        dir: this.tmpDir,
      });
    }
    await this.#options.beforeAgents?.(this);
    if (this.#options.agentCommand !== undefined) {
      await Promise.all(this.nodes.map((node) => node.startAgent()));
    }
  }

  /**
   * The caller's agent command, pointed at this cluster's DNS for names outside it: the agent's DNS proxy forwards
   * what it does not answer to the nameservers of its own resolv.conf (as ztunnel does), and the box's resolver is
   * not one a node may use; the node's cluster DNS plays kube-dns, which the agent's resolv.conf names in a cluster.
   */
  #agentCommandFor(node: ClusterNode): AgentCommand {
    const command = this.#options.agentCommand!(node);
    const dns = this.dnsServers;
    if (dns.length === 0 || command.env?.AMBIT_DNS_UPSTREAM !== undefined) return command;
    return { ...command, env: { ...command.env, AMBIT_DNS_UPSTREAM: dns.join(',') } };
  }

  /**
   * Gives the fabric (the underlay every node is attached to) an address of its own and returns it: where a
   * control plane for this cluster listens, reachable from every node and from nowhere else.
   */
  async addFabricAddress(): Promise<string> {
    const address = topology.fabricServiceIp(this.runId);
    await ipIn(this.fabricNetns, ['addr', 'add', `${address}/24`, 'dev', topology.FABRIC_BRIDGE]);
    return address;
  }

  /** Starts a long-lived process inside the fabric namespace, stopped (with its process group) on destroy. */
  spawnInFabric(cmd: string, args: string[], options: SpawnOptions = {}): ChildProcess {
    return this.#tracker.spawn('ip', ['netns', 'exec', this.fabricNetns, cmd, ...args], options);
  }

  async #buildNode(node: ClusterNode): Promise<void> {
    await mkdir(node.dir, { recursive: true });
    await addNetns(node.netnsName);
    const port = topology.fabricPortName(node.index);
    await addVethBetween({ netns: this.fabricNetns, name: port }, { netns: node.netnsName, name: topology.NODE_UNDERLAY_IF });
    await ipIn(this.fabricNetns, ['link', 'set', port, 'master', topology.FABRIC_BRIDGE, 'up']);
    await ipIn(node.netnsName, ['addr', 'add', `${node.underlayIp}/${topology.UNDERLAY_PREFIX_LENGTH}`, 'dev', topology.NODE_UNDERLAY_IF]);
    await ipIn(node.netnsName, ['link', 'set', topology.NODE_UNDERLAY_IF, 'up']);
    await sysctlIn(node.netnsName, 'net.ipv4.ip_forward', '1');
    const dualStack = this.#options.dualStack === true;
    if (dualStack) {
      // nodad: the underlay address is usable at once, not after duplicate address detection.
      await ipIn(node.netnsName, ['-6', 'addr', 'add', `${topology.underlayIp6(this.runId, node.index)}/${topology.UNDERLAY_PREFIX_LENGTH_6}`, 'dev', topology.NODE_UNDERLAY_IF, 'nodad']);
      await sysctlIn(node.netnsName, 'net.ipv6.conf.all.forwarding', '1');
    }
    const plugins: PluginConfig[] = [
      {
        type: 'bridge',
        bridge: topology.NODE_BRIDGE,
        isGateway: true,
        ipMasq: false,
        // A pod reaching its own Service through the node's DNAT gets the frame back on its own bridge port, which
        // the bridge forwards only in hairpin mode (kubelet sets it on every pod's port for the same reason).
        ...(this.#servicesEnabled ? { hairpinMode: true } : {}),
        ipam: {
          type: 'host-local',
          ranges: [
            [{ subnet: node.podCidr, gateway: node.podGateway }],
            ...(dualStack ? [[{ subnet: topology.podCidr6(this.runId, node.index), gateway: topology.podGateway6(this.runId, node.index) }]] : []),
          ],
          routes: [{ dst: '0.0.0.0/0' }, ...(dualStack ? [{ dst: '::/0' }] : [])],
          dataDir: path.join(node.dir, 'ipam'),
        },
      },
    ];
    if (this.#options.ambitCni !== false) {
      plugins.push({
        type: 'ambit-cni',
        agentSocket: node.agentSocket,
        ...(this.#options.cniKubeconfig !== undefined ? { kubeconfig: this.#options.cniKubeconfig } : { clusterDir: this.clusterDir }),
        logLevel: this.#options.cniLogLevel ?? 'info',
        logFile: path.join(node.dir, 'ambit-cni.log'),
      });
    }
    this.#chains.set(
      node,
      new CniChain({ runInNetns: node.netnsName, cniPath: [REFERENCE_PLUGINS_DIR, AMBIT_CNI_DIR], networkName: this.networkName, plugins }),
    );
  }

  get #servicesEnabled(): boolean {
    return this.#options.services ?? this.#options.objectStore === undefined;
  }

  #assertLive(): void {
    if (this.#destroying !== undefined) throw new RuntimeError('CLUSTER_DESTROYED', `cluster ${this.name} (run ${this.runId}) is destroyed`);
  }

  /** Replaces a namespace's labels and republishes its Namespace object. */
  async setNamespaceLabels(namespace: string, labels: Record<string, string>): Promise<void> {
    this.#namespaceLabels.set(namespace, { ...labels });
    await this.#objects.writeNamespace(namespaceObject(namespace, { ...labels }));
  }

  #podObject(pod: Pod, options: CreatePodOptions): PodObject {
    const template = options.object;
    return {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {
        ...template?.metadata,
        name: pod.name,
        namespace: pod.namespace,
        uid: pod.uid,
        labels: { ...options.labels },
        annotations: { ...options.annotations },
      },
      spec: {
        ...template?.spec,
        nodeName: pod.node.name,
        serviceAccountName: pod.serviceAccount,
        hostNetwork: false,
        containers: template?.spec?.containers ?? (options.containers ?? ['app']).map((name) => ({ name })),
      },
      status: { phase: 'Pending' },
    };
  }

  /**
   * Creates a pod as kubelet + containerd would: publish the Pod object, make the sandbox namespace, run the CNI
   * chain. If a plugin fails the pod is torn down (CNI DEL, namespace, object) and its CniPluginError thrown.
   */
  async createPod(options: CreatePodOptions): Promise<Pod> {
    this.#assertLive();
    const node = this.node(options.node);
    const namespace = options.namespace ?? 'default';
    if (!topology.isValidPodName(options.name)) {
      throw new RuntimeError('BAD_OPTIONS', `pod name "${options.name}" must be a DNS label (lowercase letters, digits, '-')`);
    }
    if (this.#podsByKey.has(`${namespace}/${options.name}`)) {
      throw new RuntimeError('POD_EXISTS', `pod ${namespace}/${options.name} already exists`);
    }
    const pod = new Pod(
      {
        name: options.name,
        namespace,
        uid: randomUUID(),
        containerId: randomBytes(32).toString('hex'),
        serviceAccount: options.serviceAccount ?? 'default',
        node,
        netnsName: topology.podNetnsName(this.runId, namespace, options.name),
      },
      this.#tracker,
    );
    this.#podsByKey.set(`${namespace}/${pod.name}`, pod);
    try {
      if (!this.#namespaceLabels.has(namespace) || options.namespaceLabels !== undefined) {
        await this.setNamespaceLabels(namespace, { ...this.#namespaceLabels.get(namespace), ...options.namespaceLabels });
      }
      const object = this.#podObject(pod, options);
      this.#podObjects.set(pod, object);
      await this.#objects.writePod(object);
      await addNetns(pod.netnsName, { loopbackUp: false }); // the chain's loopback plugin brings lo up
      if (this.#serviceNetwork !== undefined) await writePodResolvConf(pod.netnsName, namespace, this.#serviceNetwork.nameservers);
      const cniStarted = performance.now();
      const result = await this.#chain(node).add(this.#sandbox(pod, pod.netnsPath));
      pod.cniAddMs = performance.now() - cniStarted;
      pod.cniResult = result;
      const addresses = ((result.ips as { address?: string }[] | undefined) ?? []).map((entry) => entry.address?.split('/')[0] ?? '').filter((ip) => ip !== '');
      pod.ip = addresses.find((ip) => !ip.includes(':')) ?? addresses[0] ?? '';
      pod.ip6 = addresses.find((ip) => ip.includes(':')) ?? '';
      // As the kubelet reports them: the primary (IPv4 here) first.
      const podIPs = [pod.ip, ...(pod.ip6 ? [pod.ip6] : [])].filter((ip) => ip !== '').map((ip) => ({ ip }));
      await this.#objects.updatePodStatus(object, { phase: 'Running', podIP: pod.ip, podIPs, conditions: [readyCondition(options.ready ?? true)] });
      return pod;
    } catch (error) {
      // The chain already ran DEL for what it added; remove the sandbox and the object.
      this.#podsByKey.delete(`${namespace}/${pod.name}`);
      this.#podObjects.delete(pod);
      await deleteNetns(pod.netnsName).catch(() => undefined);
      await removePodResolvConf(pod.netnsName).catch(() => undefined);
      await this.#objects.removePod(namespace, pod.name).catch(() => undefined);
      throw error;
    }
  }

  /** Publishes a pod's status as the kubelet reports it (phase, IPs, Ready condition), keeping the rest of the object. */
  async updatePodStatus(pod: Pod, status: NonNullable<PodObject['status']>): Promise<void> {
    const object = this.#podObjects.get(pod);
    if (object === undefined) return; // deleted meanwhile
    await this.#objects.updatePodStatus(object, status);
  }

  /**
   * Changes a running pod's labels and annotations in place, as `kubectl label pod` does: same sandbox, IP and
   * processes; what reads the Pod object (agents, control plane) sees the new metadata and acts on it.
   */
  async updatePodMetadata(pod: Pod, change: PodMetadataChange): Promise<void> {
    const object = this.#podObjects.get(pod);
    if (object === undefined) throw new RuntimeError('BAD_OPTIONS', `pod ${pod.namespace}/${pod.name} is not running`);
    if (this.#objects.updatePodMetadata === undefined) throw new RuntimeError('BAD_OPTIONS', 'this cluster\'s object store cannot change a pod\'s metadata in place');
    const metadata = { ...object.metadata, labels: { ...change.labels }, annotations: mergedAnnotations(object.metadata.annotations ?? {}, change) };
    this.#podObjects.set(pod, { ...object, metadata });
    await this.#objects.updatePodMetadata(object, change);
  }

  #chain(node: ClusterNode): CniChain {
    const chain = this.#chains.get(node);
    if (chain === undefined) throw new RuntimeError('NO_SUCH_NODE', `node ${node.name} is not built`);
    return chain;
  }

  #sandbox(pod: Pod, netnsPath: string): { containerId: string; netnsPath: string; cniArgs: string } {
    return { containerId: pod.containerId, netnsPath, cniArgs: kubernetesCniArgs(pod) };
  }

  /**
   * Deletes a pod as containerd does: stop its processes, CNI DEL (reverse order) with the namespace, DEL again
   * with an empty CNI_NETNS, delete the namespace, remove the Pod object. Rethrows the first DEL error, after
   * cleaning up regardless.
   */
  async deletePod(pod: Pod): Promise<void> {
    if (this.#podsByKey.get(`${pod.namespace}/${pod.name}`) !== pod) return;
    this.#podsByKey.delete(`${pod.namespace}/${pod.name}`);
    this.#podObjects.delete(pod);
    let firstError: unknown;
    await pod.stopProcesses();
    const chain = this.#chain(pod.node);
    for (const netnsPath of [pod.netnsPath, '']) {
      try {
        await chain.del(this.#sandbox(pod, netnsPath), pod.cniResult);
      } catch (error) {
        firstError ??= error;
      }
    }
    await deleteNetns(pod.netnsName);
    await removePodResolvConf(pod.netnsName);
    await this.#objects.removePod(pod.namespace, pod.name);
    if (firstError !== undefined) throw firstError;
  }

  /**
   * Where the cluster DNS sends names outside cluster.local (addresses every node namespace reaches, e.g. a server
   * the caller runs in the fabric); by default there is none and such names are refused.
   */
  async setDnsUpstream(servers: string[]): Promise<void> {
    if (this.#serviceNetwork === undefined) throw new RuntimeError('BAD_OPTIONS', `cluster ${this.name} runs no cluster DNS (services are off)`);
    await this.#serviceNetwork.setDnsUpstream(servers);
  }

  /**
   * Sets the pod's Ready condition, as the kubelet does when a readiness probe passes or fails: a pod that is not
   * Ready stays running but is no Service's endpoint.
   */
  async setPodReady(pod: Pod, ready: boolean): Promise<void> {
    const podIPs = [pod.ip, ...(pod.ip6 ? [pod.ip6] : [])].filter((ip) => ip !== '').map((ip) => ({ ip }));
    const object: PodObject = { apiVersion: 'v1', kind: 'Pod', metadata: { name: pod.name, namespace: pod.namespace, uid: pod.uid } };
    await this.#objects.updatePodStatus(object, { phase: 'Running', podIP: pod.ip, podIPs, conditions: [readyCondition(ready)] });
  }

  /** CNI CHECK through the pod network's plugins (ambit-cni checks that the node agent answers for enrolled pods). */
  async checkPod(pod: Pod): Promise<void> {
    if (pod.cniResult === undefined) throw new RuntimeError('BAD_OPTIONS', `pod ${pod.name} has no network to check`);
    await this.#chain(pod.node).check(this.#sandbox(pod, pod.netnsPath), pod.cniResult);
  }

  /**
   * Tears everything down: pods (CNI DEL), agents and every process started, namespaces, temp dir. Idempotent:
   * every call resolves with the same report of what was removed.
   */
  destroy(): Promise<TeardownReport> {
    this.#destroying ??= this.#destroy();
    return this.#destroying;
  }

  async #destroy(): Promise<TeardownReport> {
    this.#serviceNetwork?.stop();
    const pods = this.pods;
    await Promise.all(pods.map((pod) => this.deletePod(pod).catch(() => undefined)));
    const processes = await this.#tracker.stopAll();
    const prefix = topology.runPrefix(this.runId);
    const leftovers = (await listNetns()).filter((name) => name.startsWith(prefix));
    await Promise.all(leftovers.map((name) => deleteNetns(name)));
    await removeResolvConfsWithPrefix(prefix);
    await rm(this.tmpDir, { recursive: true, force: true });
    await removeRecord(this.runId);
    liveClusters.delete(this);
    return { runId: this.runId, pods: pods.map((pod) => `${pod.namespace}/${pod.name}`), processes, namespaces: [...leftovers, ...pods.map((pod) => pod.netnsName)].sort(), tmpDir: this.tmpDir };
  }

  /** @internal Synchronous last-resort cleanup when the process exits without destroy(). */
  destroyNowSync(): void {
    this.#tracker.killAllNow();
    const prefix = topology.runPrefix(this.runId);
    try {
      const names = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
        .split('\n')
        .map((line) => line.split(' ')[0] ?? '')
        .filter((name) => name.startsWith(prefix));
      for (const name of names) execFileSync('ip', ['netns', 'del', name], { stdio: 'ignore' });
      removeResolvConfsWithPrefixSync(prefix);
      rmSync(this.tmpDir, { recursive: true, force: true });
      rmSync(`/run/ambit-runtime/${this.runId}.json`, { force: true });
    } catch {
      // the next createCluster reaps what is left
    }
  }
}

/**
 * Starts a run: removes what crashed earlier runs left behind, then picks a run id and makes its temp dir (mode
 * 0700), recorded in the run registry before anything is written into it. createCluster does this itself; a
 * caller that must put files in the run's temp dir before the cluster exists (the local mesh's CA) reserves the
 * run first and passes it as `run`, so those files share the run's fate, crash included.
 */
export async function reserveRun(): Promise<ReservedRun> {
  await reapDeadRuns();
  const runId = topology.newRunId();
  const tmpDir = await mkdtemp(path.join(os.tmpdir(), `${topology.runPrefix(runId)}`));
  await writeRecord({ runId, pid: process.pid, pidStartTime: processStartTime(process.pid) ?? '', tmpDir, createdAt: new Date().toISOString() });
  return { runId, tmpDir };
}

/** Gives up a reserved run no cluster was built for: its temp dir and record go. */
export async function releaseRun(run: ReservedRun): Promise<void> {
  const record: RunRecord = { ...run, pid: process.pid, pidStartTime: '', createdAt: '' };
  await removeRun(record);
}

/**
 * Builds a cluster of `nodes` nodes. First removes what crashed earlier runs left behind. On any failure the
 * partial cluster is destroyed before the error is rethrown.
 */
export async function createCluster(options: ClusterOptions): Promise<Cluster> {
  if (!Number.isInteger(options.nodes) || options.nodes < 1 || options.nodes > topology.MAX_NODES) {
    if (options.run !== undefined) await releaseRun(options.run);
    throw new RuntimeError('BAD_OPTIONS', `nodes must be an integer from 1 to ${topology.MAX_NODES}, got ${options.nodes}`);
  }
  if (options.services === true && options.objectStore !== undefined) {
    if (options.run !== undefined) await releaseRun(options.run);
    throw new RuntimeError('BAD_OPTIONS', 'services: the runtime runs Services for the cluster directory only; with objectStore the cluster (API server) has its own');
  }
  const { runId, tmpDir } = options.run ?? (await reserveRun());
  const cluster = new Cluster(runId, tmpDir, options);
  liveClusters.add(cluster);
  installExitHook();
  try {
    await cluster.build();
  } catch (error) {
    await cluster.destroy().catch(() => undefined);
    throw error;
  }
  return cluster;
}
