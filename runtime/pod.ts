/**
 * One pod of a local cluster: a network namespace set up by the CNI chain, and the processes run inside it.
 *
 * Owns: running commands in the pod's namespace and remembering which processes belong to the pod.
 * Must not know about: how the pod got its network (cluster.ts, cni-chain.ts).
 */
import type { ChildProcess, SpawnOptions } from 'node:child_process';
import type { CniResult } from './cni-chain.ts';
import { run, type ProcessTracker, type RunOptions, type RunResult } from './exec.ts';
import { netnsPath } from './netns.ts';
import type { ClusterNode } from './node.ts';

export interface PodIdentity {
  name: string;
  namespace: string;
  uid: string;
  containerId: string;
  serviceAccount: string;
  node: ClusterNode;
  netnsName: string;
}

export class Pod {
  readonly name: string;
  readonly namespace: string;
  readonly uid: string;
  /** The sandbox (infra container) id passed to CNI as CNI_CONTAINERID. */
  readonly containerId: string;
  readonly serviceAccount: string;
  readonly node: ClusterNode;
  readonly netnsName: string;
  readonly netnsPath: string;
  /** The pod's IPv4 address, set once the CNI chain succeeded. */
  ip = '';
  /** The IPv6 address in a dual-stack cluster; empty otherwise. */
  ip6 = '';
  /** The CNI chain's final result (kept for DEL's prevResult, as runtimes cache it). */
  cniResult: CniResult | undefined;
  /** How long the CNI chain's ADD took (every plugin, as the runtime ran them), in ms. */
  cniAddMs = 0;
  readonly processes = new Set<ChildProcess>();
  readonly #tracker: ProcessTracker;

  constructor(identity: PodIdentity, tracker: ProcessTracker) {
    this.name = identity.name;
    this.namespace = identity.namespace;
    this.uid = identity.uid;
    this.containerId = identity.containerId;
    this.serviceAccount = identity.serviceAccount;
    this.node = identity.node;
    this.netnsName = identity.netnsName;
    this.netnsPath = netnsPath(identity.netnsName);
    this.#tracker = tracker;
  }

  /** Runs a command to completion inside the pod's namespace. */
  exec(cmd: string, args: string[], options: RunOptions = {}): Promise<RunResult> {
    return run('ip', ['netns', 'exec', this.netnsName, cmd, ...args], options);
  }

  /**
   * Starts a long-lived process inside the pod's namespace in its own process group; it is stopped when the
   * pod is deleted or the cluster destroyed. Default stdio is piped: read (or ignore) stdout/stderr.
   */
  spawn(cmd: string, args: string[], options: SpawnOptions = {}): ChildProcess {
    const child = this.#tracker.spawn('ip', ['netns', 'exec', this.netnsName, cmd, ...args], options);
    this.processes.add(child);
    child.once('exit', () => this.processes.delete(child));
    return child;
  }

  async stopProcesses(): Promise<void> {
    await Promise.all([...this.processes].map((child) => this.#tracker.stop(child)));
    this.processes.clear();
  }
}
