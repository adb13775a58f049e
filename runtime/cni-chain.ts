/**
 * Calls CNI plugins the way a container runtime (containerd via libcni) does: the `loopback` network for `lo`,
 * then the pod network's plugin list with `prevResult` chaining; DEL in reverse with the cached result, twice
 * on removal (the second time with an empty CNI_NETNS). Plugins run inside the node's network namespace.
 *
 * Owns: plugin lookup on CNI_PATH, the CNI_* environment, stdin configs, parsing results and spec errors.
 * Must not know about: clusters, Kubernetes objects, or what any plugin does.
 */
import { access, constants } from 'node:fs/promises';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { CniPluginError, RuntimeError, type CniErrorOutput } from './errors.ts';
import { run } from './exec.ts';

/** The spec version our configs declare; Debian's reference plugins and ambit-cni both implement it. */
export const CNI_VERSION = '1.0.0';
/** Upper bound on one plugin run: above ambit-cni's 10 s agent deadline so its own error wins, like kubelet's CRI timeout would. */
export const PLUGIN_TIMEOUT_MS = 30_000;
/** The network name containerd uses for its loopback network. */
const LOOPBACK_NETWORK = 'cni-loopback';

export type PluginConfig = { type: string } & Record<string, unknown>;
export type CniResult = Record<string, unknown>;

export interface PodSandbox {
  containerId: string;
  /** Empty for the second DEL, as containerd sends it. */
  netnsPath: string;
  /** `IgnoreUnknown=1;K8S_POD_NAMESPACE=..;...` */
  cniArgs: string;
}

export interface CniChainOptions {
  /** Namespace the plugins run in (the node's). */
  runInNetns: string;
  cniPath: string[];
  networkName: string;
  plugins: PluginConfig[];
}

export function kubernetesCniArgs(pod: { namespace: string; name: string; containerId: string; uid: string }): string {
  return `IgnoreUnknown=1;K8S_POD_NAMESPACE=${pod.namespace};K8S_POD_NAME=${pod.name};K8S_POD_INFRA_CONTAINER_ID=${pod.containerId};K8S_POD_UID=${pod.uid}`;
}

/** One plugin run as a benchmark sees it: which plugin, which command, and how long its process took (ms). */
export interface CniPluginRun {
  type: string;
  command: 'ADD' | 'DEL' | 'CHECK';
  /** Empty for the second DEL (no namespace), as in the sandbox. */
  netnsPath: string;
  ms: number;
}

let pluginRunObserver: ((run: CniPluginRun) => void) | undefined;

/**
 * Tells `observer` about every plugin run of every chain in this process (bench/cni-steps.ts splits a pod cycle into
 * its calls with it); `undefined` stops. Nothing is timed while no observer is set.
 */
export function observeCniPluginRuns(observer: ((run: CniPluginRun) => void) | undefined): void {
  pluginRunObserver = observer;
}

export class CniChain {
  readonly #options: CniChainOptions;

  constructor(options: CniChainOptions) {
    this.#options = options;
  }

  /**
   * Where each plugin type was found: a pod's ADD and DELs call three plugins each, and looking them up again every
   * time was a visible share of a busy supervisor's main thread (an `access` per directory per call). A plugin
   * removed later fails its spawn with a clear error instead.
   */
  readonly #pluginPaths = new Map<string, string>();

  async #findPlugin(type: string): Promise<string> {
    const known = this.#pluginPaths.get(type);
    if (known !== undefined) return known;
    for (const dir of this.#options.cniPath) {
      const candidate = path.join(dir, type);
      try {
        await access(candidate, constants.X_OK);
        this.#pluginPaths.set(type, candidate);
        return candidate;
      } catch {
        // next directory
      }
    }
    throw new RuntimeError('COMMAND_FAILED', `CNI plugin "${type}" not found in CNI_PATH ${this.#options.cniPath.join(':')}`);
  }

  async #invoke(command: 'ADD' | 'DEL' | 'CHECK', sandbox: PodSandbox, ifName: string, config: Record<string, unknown>): Promise<CniResult | undefined> {
    const type = String(config.type);
    const binary = await this.#findPlugin(type);
    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH,
      CNI_COMMAND: command,
      CNI_CONTAINERID: sandbox.containerId,
      CNI_NETNS: sandbox.netnsPath,
      CNI_IFNAME: ifName,
      CNI_ARGS: sandbox.cniArgs,
      CNI_PATH: this.#options.cniPath.join(':'),
    };
    const observer = pluginRunObserver;
    const started = observer === undefined ? 0 : performance.now();
    const result = await run('ip', ['netns', 'exec', this.#options.runInNetns, binary], {
      env,
      input: JSON.stringify(config),
      timeoutMs: PLUGIN_TIMEOUT_MS,
    });
    observer?.({ type, command, netnsPath: sandbox.netnsPath, ms: performance.now() - started });
    if (result.code !== 0) {
      let cniError: CniErrorOutput;
      try {
        cniError = JSON.parse(result.stdout) as CniErrorOutput;
        if (typeof cniError.code !== 'number') throw new Error('not an error result');
      } catch {
        const why = result.signal !== null ? `killed by ${result.signal}` : `exit ${result.code}`;
        cniError = { code: -1, msg: `${why} without a CNI error result: ${(result.stdout + result.stderr).trim().slice(0, 500)}` };
      }
      throw new CniPluginError(type, command, cniError, result.stderr);
    }
    if (command !== 'ADD') return undefined;
    try {
      return JSON.parse(result.stdout) as CniResult;
    } catch {
      throw new CniPluginError(type, command, { code: -1, msg: `printed no JSON result: ${result.stdout.slice(0, 200)}` }, result.stderr);
    }
  }

  #config(networkName: string, plugin: PluginConfig, prevResult: CniResult | undefined): Record<string, unknown> {
    return { cniVersion: CNI_VERSION, name: networkName, ...plugin, ...(prevResult !== undefined ? { prevResult } : {}) };
  }

  /**
   * ADD: loopback, then each plugin with the previous result. On failure, DELs everything it called (as
   * containerd tears down a failed sandbox) and rethrows the plugin's error. Returns the final result.
   */
  async add(sandbox: PodSandbox): Promise<CniResult> {
    try {
      await this.#invoke('ADD', sandbox, 'lo', this.#config(LOOPBACK_NETWORK, { type: 'loopback' }, undefined));
      let result: CniResult | undefined;
      for (const plugin of this.#options.plugins) {
        result = await this.#invoke('ADD', sandbox, 'eth0', this.#config(this.#options.networkName, plugin, result));
      }
      if (result === undefined) throw new RuntimeError('BAD_OPTIONS', 'the pod network has no plugins');
      return result;
    } catch (error) {
      await this.del(sandbox, undefined).catch(() => undefined);
      throw error;
    }
  }

  /** DEL in reverse order with the cached result; every plugin is called even if one fails (first error rethrown). */
  async del(sandbox: PodSandbox, cachedResult: CniResult | undefined): Promise<void> {
    let firstError: unknown;
    for (const plugin of [...this.#options.plugins].reverse()) {
      try {
        await this.#invoke('DEL', sandbox, 'eth0', this.#config(this.#options.networkName, plugin, cachedResult));
      } catch (error) {
        firstError ??= error;
      }
    }
    try {
      await this.#invoke('DEL', sandbox, 'lo', this.#config(LOOPBACK_NETWORK, { type: 'loopback' }, undefined));
    } catch (error) {
      firstError ??= error;
    }
    if (firstError !== undefined) throw firstError;
  }

  async check(sandbox: PodSandbox, cachedResult: CniResult): Promise<void> {
    for (const plugin of this.#options.plugins) {
      await this.#invoke('CHECK', sandbox, 'eth0', this.#config(this.#options.networkName, plugin, cachedResult));
    }
  }
}
