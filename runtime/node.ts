/**
 * One node of a local cluster: a network namespace with its own pod bridge and routes, and (optionally) the
 * ambit agent running inside it.
 *
 * Owns: running processes in the node namespace and the agent's lifecycle (start, wait until its CNI socket
 * answers, stop, restart).
 * Must not know about: pods, CNI, or what the agent does.
 */
import { closeSync, openSync, statSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { ChildProcess, SpawnOptions } from 'node:child_process';
import { RuntimeError } from './errors.ts';
import { run, type ProcessTracker, type RunOptions, type RunResult } from './exec.ts';
import { netnsPath } from './netns.ts';

/** How long an agent gets to answer on its CNI socket after start: it loads certificates and state first. */

/**
 * How long a stopping agent gets before SIGKILL: its default drain time (AMBIT_DRAIN_MS, 5 s) and a margin, as
 * a DaemonSet's terminationGracePeriodSeconds gives it. An agent with nothing open exits at once; killed earlier,
 * a tunnel still draining would be reset, which is what a restart must not do.
 */
export const AGENT_STOP_GRACE_MS = 7_000;
export const AGENT_READY_TIMEOUT_MS = 20_000;
/** Poll interval while waiting for the agent's socket. */
const AGENT_READY_POLL_MS = 50;

export interface AgentCommand {
  cmd: string;
  args: string[];
  env?: Record<string, string>;
}

export interface NodeSettings {
  index: number;
  name: string;
  netnsName: string;
  podCidr: string;
  podGateway: string;
  underlayIp: string;
  /** Per-node directory under the run's temp dir (IPAM state, agent socket and logs). */
  dir: string;
  /** The cluster directory the agent is told about (AMBIT_CLUSTER_DIR); absent when objects go to an API server. */
  clusterDir?: string;
  tracker: ProcessTracker;
  agentCommand?: (node: ClusterNode) => AgentCommand;
  agentReadyTimeoutMs?: number;
}

function canConnect(socketPath: string): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const socket = net.connect({ path: socketPath });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

function inode(file: string): number | undefined {
  try {
    return statSync(file).ino;
  } catch {
    return undefined;
  }
}

export class ClusterNode {
  readonly index: number;
  /** The Kubernetes node name (Pod spec.nodeName, AMBIT_NODE_NAME). */
  readonly name: string;
  readonly netnsName: string;
  readonly netnsPath: string;
  readonly podCidr: string;
  readonly podGateway: string;
  readonly underlayIp: string;
  readonly dir: string;
  /** Where this node's agent listens for the CNI plugin (the plugin config's `agentSocket`). */
  readonly agentSocket: string;
  /** The agent's stdout and stderr, appended across restarts. */
  readonly agentLogFile: string;
  readonly #settings: NodeSettings;
  #agent: ChildProcess | undefined;

  constructor(settings: NodeSettings) {
    this.#settings = settings;
    this.index = settings.index;
    this.name = settings.name;
    this.netnsName = settings.netnsName;
    this.netnsPath = netnsPath(settings.netnsName);
    this.podCidr = settings.podCidr;
    this.podGateway = settings.podGateway;
    this.underlayIp = settings.underlayIp;
    this.dir = settings.dir;
    this.agentSocket = path.join(settings.dir, 'cni.sock');
    this.agentLogFile = path.join(settings.dir, 'agent.log');
  }

  get agent(): ChildProcess | undefined {
    return this.#agent;
  }

  /** Runs a command to completion inside the node namespace. */
  exec(cmd: string, args: string[], options: RunOptions = {}): Promise<RunResult> {
    return run('ip', ['netns', 'exec', this.netnsName, cmd, ...args], options);
  }

  /** Starts a long-lived process inside the node namespace, killed (with its process group) on destroy. */
  spawn(cmd: string, args: string[], options: SpawnOptions = {}): ChildProcess {
    return this.#settings.tracker.spawn('ip', ['netns', 'exec', this.netnsName, cmd, ...args], options);
  }

  /** Starts the agent and waits until its CNI socket accepts connections. No-op when it is already running. */
  async startAgent(): Promise<void> {
    if (this.#agent !== undefined) return;
    this.#agent = this.#launchAgent();
    await this.#waitReady(this.#agent, undefined);
  }

  async stopAgent(): Promise<void> {
    const agent = this.#agent;
    this.#agent = undefined;
    if (agent !== undefined) await this.#settings.tracker.stop(agent, AGENT_STOP_GRACE_MS);
  }

  /**
   * Restarts the agent. By default stop, then start. With `overlap`, the new agent starts first and the old one
   * is stopped only once the new one has replaced the CNI socket (a new inode that answers): the SO_REUSEPORT
   * handover the agent is built for.
   */
  async restartAgent(options: { overlap?: boolean } = {}): Promise<void> {
    if (!options.overlap || this.#agent === undefined) {
      await this.stopAgent();
      await this.startAgent();
      return;
    }
    const old = this.#agent;
    const next = this.#launchAgent();
    this.#agent = next;
    try {
      await this.#waitReady(next, inode(this.agentSocket));
    } finally {
      await this.#settings.tracker.stop(old, AGENT_STOP_GRACE_MS);
    }
    if (!(await canConnect(this.agentSocket))) {
      // libuv unlinks a unix socket's path when its listener closes, even if another process has bound it since.
      throw new RuntimeError(
        'AGENT_NOT_READY',
        `after the old agent on node ${this.name} stopped, ${this.agentSocket} no longer answers: the old agent removed the new agent's socket when it closed its listener`,
      );
    }
  }

  #launchAgent(): ChildProcess {
    const factory = this.#settings.agentCommand;
    if (factory === undefined) {
      throw new RuntimeError('NO_AGENT_COMMAND', `node ${this.name} has no agent: pass agentCommand to createCluster`);
    }
    const command = factory(this);
    const log = openSync(this.agentLogFile, 'a');
    try {
      return this.spawn(command.cmd, command.args, {
        stdio: ['ignore', log, log],
        env: {
          ...process.env,
          ...command.env,
          AMBIT_NODE_NAME: this.name,
          ...(this.#settings.clusterDir !== undefined ? { AMBIT_CLUSTER_DIR: this.#settings.clusterDir } : {}),
          AMBIT_CNI_SOCKET: this.agentSocket,
        },
      });
    } finally {
      closeSync(log);
    }
  }

  async #waitReady(agent: ChildProcess, oldInode: number | undefined): Promise<void> {
    const deadline = Date.now() + (this.#settings.agentReadyTimeoutMs ?? AGENT_READY_TIMEOUT_MS);
    while (Date.now() < deadline) {
      if (agent.exitCode !== null || agent.signalCode !== null) {
        if (this.#agent === agent) this.#agent = undefined;
        throw new RuntimeError(
          'AGENT_NOT_READY',
          `agent on node ${this.name} exited (${agent.exitCode ?? agent.signalCode}) before its CNI socket answered; see ${this.agentLogFile}`,
        );
      }
      const current = inode(this.agentSocket);
      if (current !== undefined && current !== oldInode && (await canConnect(this.agentSocket))) return;
      await new Promise((resolve) => setTimeout(resolve, AGENT_READY_POLL_MS));
    }
    await this.stopAgent();
    throw new RuntimeError('AGENT_NOT_READY', `agent on node ${this.name} did not answer on ${this.agentSocket} in time; see ${this.agentLogFile}`);
  }
}
