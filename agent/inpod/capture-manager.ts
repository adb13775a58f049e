/**
 * The lifecycle of captured pods on this node: add (CNI ADD), del (CNI DEL), reconcile (agent start-up),
 * and noticing a pod's namespace going away while it is captured.
 *
 * Owns: the order "rules and listeners (side by side), then captured" (an ADD is acknowledged only after both are
 * in place, and whichever went in is undone when the other failed); the set of captured pods by uid; one operation at a time per pod.
 * Must not know about: HTTP or the CNI protocol (cni-server.ts), rule text (rules.ts), what the proxy does
 * with a connection (the CapturedTrafficHandler).
 *
 * Closing the manager (agent shutdown or restart) closes the listeners but leaves the rules: the next agent
 * opens its own listeners with SO_REUSEPORT, ideally before this one closes, and the pods' traffic keeps
 * flowing to whichever is listening.
 *
 * A CNI DEL's release leaves the rules to the namespace's removal (as Istio's node agent does on a pod's deletion):
 * the runtime removes the namespace right after its DELs, and the rules go with it, so taking them out first is a
 * process in a dying pod on the pod's stop path. They are taken out only if the same namespace is still there
 * after RULE_REMOVAL_DEFER_MS, at once when another ADD names that namespace before then (a sandbox ADDed again, not
 * enrolled now), and at close (a stopping agent leaves no deferred removal undone).
 */
import net from 'node:net';
import { stat } from 'node:fs/promises';
import { CaptureError, errnoOf } from './errors.ts';
import { traceStep } from '../cni-trace.ts';
import { installInpodRules, removeInpodRules, detectIptablesBackend, prepareInpodRules } from './iptables.ts';
import { PodListeners, type CapturedDnsHandler, type CapturedPod, type CapturedTrafficHandler, type PodInfo, type PodListenerStats } from './pod-listeners.ts';
import { inPodSocketFactory, type SocketFactory } from './socket-factory.ts';
import type { InboundCapture, InpodRuleOptions, IptablesBackend } from './rules.ts';

/**
 * How often captured pods' namespaces are checked. A listener holds its namespace alive, so a deleted
 * namespace never makes the listeners fail by itself; without this check a pod deleted without a CNI DEL
 * would keep its namespace (and memory) forever. 2 s bounds that leak without measurable cost.
 */
const DEFAULT_NETNS_CHECK_INTERVAL_MS = 2_000;
/**
 * How long a DEL'd pod's rules are left to its namespace's removal. containerd removes the namespace right after
 * the DELs (milliseconds); a namespace still there after this is kept by someone, and gets its rules taken out.
 * The same bound as the namespace check: a kept namespace redirects to closed ports (its pod's traffic fails,
 * it is never let out uncaptured) for at most this long.
 */
const DEFAULT_RULE_REMOVAL_DEFER_MS = 2_000;

/** How rules get in and out of a namespace; swapped in tests, iptables.ts in production. */
export interface RuleInstaller {
  install(netns: string, backend: IptablesBackend, options: InpodRuleOptions): Promise<void>;
  /** `installed`: the options of this agent's own install, when it holds the pod (iptables.ts takes a fast path then). */
  remove(netns: string, backend: IptablesBackend, installed?: InpodRuleOptions): Promise<void>;
  /** Readies an install with these options ahead of the first pod (called once, at construction). */
  prepare?(options: InpodRuleOptions): void;
}

const iptablesInstaller: RuleInstaller = { install: installInpodRules, remove: removeInpodRules, prepare: prepareInpodRules };

export type ReleaseReason = 'deleted' | 'netns-gone' | 'listener-failed' | 'replaced' | 'shutdown';

export interface CaptureManagerOptions {
  handler: CapturedTrafficHandler;
  /** The node's iptables backend; detected once, at the first add, when absent. */
  backend?: IptablesBackend;
  /** TPROXY (default) or REDIRECT for inbound plaintext. */
  inbound?: InboundCapture;
  rules?: RuleInstaller;
  /** Sockets for a pod's namespace; default: in the namespace, marked 0x539, SO_REUSEPORT. */
  socketFactoryFor?: (netns: string) => SocketFactory;
  /** 0 disables the periodic namespace check. */
  netnsCheckIntervalMs?: number;
  /** How long a DEL's rule removal waits for the namespace to go (DEFAULT_RULE_REMOVAL_DEFER_MS when absent). */
  ruleRemovalDeferMs?: number;
  /** Where pods' net sysctls are written (agent/config.ts procSysNet); /proc/sys/net when absent. */
  procSysNet?: string;
  /**
   * The DNS proxy: with it, each pod's rules also redirect port 53 and its 15053 sockets are opened and handed
   * here. Only one data-plane thread (the main one) serves DNS.
   */
  dns?: CapturedDnsHandler;
  /** Told when a pod stops being captured, with why (for logs and the admin view). */
  onReleased?: (pod: CapturedPod, reason: ReleaseReason, error?: Error) => void;
}

export interface PodRef {
  uid: string;
  /** When given and the pod is not known (agent restarted before reconcile), rules in it are removed. */
  netns?: string;
  /**
   * The namespace's identity when the release was asked for (a DEL answered before the release runs): the release
   * touches the namespace at `netns` only while it is still that one, never a new namespace at the same path.
   */
  netnsIdentity?: NetnsIdentity;
  /**
   * A CNI DEL of a sandbox being torn down: the rules are left to the namespace's removal, and taken out only if
   * the namespace outlives RULE_REMOVAL_DEFER_MS (or another ADD names it first).
   */
  deferRuleRemoval?: boolean;
}

/** Rules left in a DEL'd pod's namespace, to be taken out if that namespace outlives the wait. */
interface DeferredRuleRemoval {
  uid: string;
  netns: string;
  identity: NetnsIdentity;
  /** What this agent installed, when it held the pod (the removal's fast path). */
  rules: InpodRuleOptions | undefined;
  timer: NodeJS.Timeout;
}

export interface NetnsIdentity {
  ino: bigint;
  dev: bigint;
}

export interface ReconcileResult {
  captured: string[];
  failed: { uid: string; error: CaptureError }[];
  released: string[];
}

interface PodState {
  pod: CapturedPod;
  listeners: PodListeners;
  /** Identity of the namespace file at capture time: a new namespace at the same path is another pod. */
  netnsIno: bigint;
  netnsDev: bigint;
  /** What its rules were installed with, so a DEL removes exactly those. */
  rules: InpodRuleOptions;
}

export class CaptureManager {
  private readonly options: CaptureManagerOptions;
  private readonly rules: RuleInstaller;
  private readonly inbound: InboundCapture;
  private readonly podsByUid = new Map<string, PodState>();
  /** Tail of each pod's operation queue, so add/del/release of one pod never interleave. */
  private readonly queueByUid = new Map<string, Promise<unknown>>();
  /** Deferred rule removals by namespace path (one per namespace: the latest DEL's). */
  private readonly deferredRemovalByNetns = new Map<string, DeferredRuleRemoval>();
  /** Deferred removals running now, by namespace path: an ADD naming that namespace waits for its end. */
  private readonly removingByNetns = new Map<string, Promise<void>>();
  private readonly ruleRemovalDeferMs: number;
  private backend: Promise<IptablesBackend> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(options: CaptureManagerOptions) {
    this.options = options;
    this.rules = options.rules ?? iptablesInstaller;
    this.inbound = options.inbound ?? 'tproxy';
    this.ruleRemovalDeferMs = options.ruleRemovalDeferMs ?? DEFAULT_RULE_REMOVAL_DEFER_MS;
    this.rules.prepare?.({ inbound: this.inbound, dnsCapture: options.dns !== undefined });
    if (options.backend !== undefined) this.backend = Promise.resolve(options.backend);
    const interval = options.netnsCheckIntervalMs ?? DEFAULT_NETNS_CHECK_INTERVAL_MS;
    if (interval > 0) {
      this.timer = setInterval(() => void this.checkNamespaces(), interval);
      this.timer.unref();
    }
  }

  /** Captures a pod: rules and listeners; resolves only when both are in place. Idempotent per uid. */
  add(info: PodInfo): Promise<void> {
    const problem = validatePod(info);
    if (problem !== undefined) return Promise.reject(new CaptureError('INVALID_POD', problem));
    return this.serialize(info.uid, () => this.addNow(info));
  }

  /** Stops capturing a pod; removes its rules when its namespace still exists. Never fails. */
  del(ref: PodRef): Promise<void> {
    return this.serialize(ref.uid, () => this.delNow(ref));
  }

  /**
   * At start-up: captures every pod in `pods` (rules re-installed in place, listeners opened next to a
   * previous agent's) and releases captured pods that are not in the list.
   */
  async reconcile(pods: readonly PodInfo[]): Promise<ReconcileResult> {
    const result: ReconcileResult = { captured: [], failed: [], released: [] };
    const wanted = new Set(pods.map((pod) => pod.uid));
    for (const uid of [...this.podsByUid.keys()]) {
      if (!wanted.has(uid)) {
        await this.del({ uid });
        result.released.push(uid);
      }
    }
    for (const pod of pods) {
      try {
        await this.add(pod);
        result.captured.push(pod.uid);
      } catch (error) {
        result.failed.push({ uid: pod.uid, error: asCaptureError(error) });
      }
    }
    return result;
  }

  isCaptured(uid: string): boolean {
    return this.podsByUid.has(uid);
  }

  /** Per-pod accept counters for the admin view; undefined for a pod that is not captured. */
  listenerStats(uid: string): Readonly<PodListenerStats> | undefined {
    return this.podsByUid.get(uid)?.listeners.stats;
  }

  capturedPods(): CapturedPod[] {
    return [...this.podsByUid.values()].map((state) => state.pod);
  }

  /**
   * Takes out at once the rules a DEL left in the namespace at `netns` for its removal, if that namespace is still
   * the one the DEL named (a not-enrolled ADD of a sandbox whose namespace was kept: it must not start redirected to
   * closed ports). Nothing when no removal is deferred there.
   */
  async settleDeferredRuleRemoval(netns: string): Promise<void> {
    const deferred = this.takeDeferredRemoval(netns);
    if (deferred !== undefined) await this.removeDeferredRules(deferred);
    else await this.removingByNetns.get(netns);
  }

  /** Closes every pod's listeners and stops; rules stay for the next agent (those of DEL'd pods are taken out). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    await Promise.allSettled([...this.queueByUid.values()]);
    // Pods DEL'd before the stop: nothing of them is left to the next agent, which would not know them.
    const deferred = [...this.deferredRemovalByNetns.keys()].map((netns) => this.takeDeferredRemoval(netns)!);
    await Promise.all(deferred.map((removal) => this.removeDeferredRules(removal)));
    const states = [...this.podsByUid.values()];
    this.podsByUid.clear();
    await Promise.all(states.map((state) => state.listeners.close()));
    for (const state of states) {
      state.pod.sockets.close?.();
      this.options.onReleased?.(state.pod, 'shutdown');
    }
  }

  private serialize<T>(uid: string, operation: () => Promise<T>): Promise<T> {
    const previous = this.queueByUid.get(uid) ?? Promise.resolve();
    const next = previous.then(operation, operation);
    const tail = next.catch(() => undefined);
    this.queueByUid.set(uid, tail);
    void tail.then(() => {
      if (this.queueByUid.get(uid) === tail) this.queueByUid.delete(uid);
    });
    return next;
  }

  private async addNow(info: PodInfo): Promise<void> {
    if (this.closed) throw new CaptureError('CLOSED', 'the agent is shutting down; retry when it is back');
    const identity = await netnsIdentity(info.netns);
    if (identity === undefined) {
      throw new CaptureError('NETNS_NOT_FOUND', `network namespace ${info.netns} of pod ${info.namespace}/${info.name} does not exist`);
    }
    const current = this.podsByUid.get(info.uid);
    if (current) {
      if (current.netnsIno === identity.ino && current.netnsDev === identity.dev && !current.listeners.isClosed) return;
      // The sandbox was recreated: a new namespace for the same pod.
      await this.release(current, 'replaced');
    }
    // Rules a DEL left here for the namespace's removal: the namespace was kept and is ADDed again; out first, so
    // the install below starts from a namespace holding nothing of ours.
    await this.settleDeferredRuleRemoval(info.netns);
    const backend = await this.detectBackend();
    // A dual-stack pod's IPv6 traffic is captured as its IPv4 traffic is; leaving it out would let it bypass policy.
    const rules: InpodRuleOptions = {
      inbound: this.inbound,
      ipv6: info.ips.some((ip) => net.isIPv6(ip)),
      ...(this.options.procSysNet !== undefined ? { procSysNet: this.options.procSysNet } : {}),
      dnsCapture: this.options.dns !== undefined,
    };
    const factory = (this.options.socketFactoryFor ?? defaultFactory)(info.netns);
    const pod: CapturedPod = Object.freeze({
      uid: info.uid, name: info.name, namespace: info.namespace, netns: info.netns,
      ips: Object.freeze([...info.ips]), sockets: factory,
    });
    // Rules and listeners side by side (with the nf_tables backend a fresh pod's rules are one netlink batch from this
    // thread, under a millisecond; otherwise the listeners' setns and binds run here while the rule process runs on
    // another core): neither needs the other in place, and no app runs in the pod before the ADD is answered.
    const installed = this.rules.install(info.netns, backend, rules).then(() => traceStep('rules'));
    const opened = PodListeners.open(pod, {
      factory,
      handler: this.options.handler,
      inbound: this.inbound,
      ...(this.options.dns ? { dns: this.options.dns } : {}),
      onFailure: (error) => void this.serialize(pod.uid, () => this.releaseIfCurrent(pod, 'listener-failed', error)),
    });
    const [rulesResult, listenersResult] = await Promise.allSettled([installed, opened]);
    if (rulesResult.status === 'rejected' || listenersResult.status === 'rejected') {
      // Whichever went in comes out again: a failed install takes its own half out; a failed open leaves no socket.
      if (listenersResult.status === 'fulfilled') await listenersResult.value.close();
      factory.close?.();
      if (rulesResult.status === 'fulfilled') await this.rules.remove(info.netns, backend, rules).catch(() => undefined);
      throw asCaptureError(rulesResult.status === 'rejected' ? rulesResult.reason : (listenersResult as PromiseRejectedResult).reason);
    }
    const listeners = listenersResult.value;
    traceStep('listeners');
    if (this.closed) {
      await listeners.close();
      factory.close?.();
      throw new CaptureError('CLOSED', 'the agent is shutting down; retry when it is back');
    }
    this.podsByUid.set(pod.uid, { pod, listeners, netnsIno: identity.ino, netnsDev: identity.dev, rules });
  }

  private async delNow(ref: PodRef): Promise<void> {
    const state = this.podsByUid.get(ref.uid);
    const netns = state?.pod.netns ?? (ref.netns || undefined);
    if (state) await this.release(state, 'deleted');
    traceStep('listeners');
    if (netns === undefined) return;
    // Rules vanish with the namespace; when it is still there (DEL before teardown, or an opt-out), take
    // them out so the pod's traffic is no longer sent to listeners that are gone.
    const identity = await netnsIdentity(netns);
    if (identity === undefined) return;
    if (state && (identity.ino !== state.netnsIno || identity.dev !== state.netnsDev)) return;
    if (ref.netnsIdentity && (identity.ino !== ref.netnsIdentity.ino || identity.dev !== ref.netnsIdentity.dev)) return;
    if (ref.deferRuleRemoval === true && !this.closed) {
      this.deferRuleRemoval(ref.uid, netns, identity, state?.rules);
      traceStep('rules-deferred');
      return;
    }
    try {
      await this.rules.remove(netns, await this.detectBackend(), state?.rules);
      traceStep('rules');
    } catch {
      // DEL must succeed (runtimes retry it forever otherwise); the rules point at closed ports and the
      // namespace is on its way out.
    }
  }

  private deferRuleRemoval(uid: string, netns: string, identity: NetnsIdentity, rules: InpodRuleOptions | undefined): void {
    const previous = this.deferredRemovalByNetns.get(netns);
    if (previous !== undefined) clearTimeout(previous.timer);
    const timer = setTimeout(() => {
      const deferred = this.takeDeferredRemoval(netns);
      // Not in the pod's queue: a capture of the same uid (a new sandbox) must not wait behind it; an ADD naming this
      // namespace waits for it instead (settleDeferredRuleRemoval).
      if (deferred !== undefined) void this.removeDeferredRules(deferred);
    }, this.ruleRemovalDeferMs);
    timer.unref();
    this.deferredRemovalByNetns.set(netns, { uid, netns, identity, rules, timer });
  }

  private takeDeferredRemoval(netns: string): DeferredRuleRemoval | undefined {
    const deferred = this.deferredRemovalByNetns.get(netns);
    if (deferred === undefined) return undefined;
    clearTimeout(deferred.timer);
    this.deferredRemovalByNetns.delete(netns);
    return deferred;
  }

  /** The rules go only from the namespace the DEL named: gone, or another one at the same path, means nothing to do. */
  private removeDeferredRules(deferred: DeferredRuleRemoval): Promise<void> {
    const removing = this.removeDeferredRulesNow(deferred).finally(() => {
      if (this.removingByNetns.get(deferred.netns) === removing) this.removingByNetns.delete(deferred.netns);
    });
    this.removingByNetns.set(deferred.netns, removing);
    return removing;
  }

  private async removeDeferredRulesNow(deferred: DeferredRuleRemoval): Promise<void> {
    try {
      const identity = await netnsIdentity(deferred.netns);
      if (identity === undefined || identity.ino !== deferred.identity.ino || identity.dev !== deferred.identity.dev) return;
      await this.rules.remove(deferred.netns, await this.detectBackend(), deferred.rules);
    } catch {
      // As a DEL's own removal: the rules point at closed ports; nothing a caller could do about it.
    }
  }

  private async release(state: PodState, reason: ReleaseReason, error?: Error): Promise<void> {
    if (this.podsByUid.get(state.pod.uid) === state) this.podsByUid.delete(state.pod.uid);
    await state.listeners.close();
    // The namespace descriptor the pod's factory held goes too (a deleted pod's namespace is freed only then).
    state.pod.sockets.close?.();
    this.options.onReleased?.(state.pod, reason, error);
  }

  private async releaseIfCurrent(pod: CapturedPod, reason: ReleaseReason, error?: Error): Promise<void> {
    const state = this.podsByUid.get(pod.uid);
    if (state && state.pod === pod) await this.release(state, reason, error);
  }

  private async checkNamespaces(): Promise<void> {
    for (const state of [...this.podsByUid.values()]) {
      const identity = await netnsIdentity(state.pod.netns).catch(() => null);
      if (identity === null) continue; // unreadable right now (EMFILE, EACCES): look again next round
      if (identity === undefined || identity.ino !== state.netnsIno || identity.dev !== state.netnsDev) {
        void this.serialize(state.pod.uid, () => this.releaseIfCurrent(state.pod, 'netns-gone'));
      }
    }
  }

  private detectBackend(): Promise<IptablesBackend> {
    this.backend ??= detectIptablesBackend().catch((error: unknown) => {
      this.backend = undefined;
      throw error;
    });
    return this.backend;
  }
}

function defaultFactory(netns: string): SocketFactory {
  return inPodSocketFactory(netns, { reusePort: true });
}

/** The identity of the namespace file at `path` now; undefined when there is none. */
export function readNetnsIdentity(path: string): Promise<NetnsIdentity | undefined> {
  return netnsIdentity(path);
}

async function netnsIdentity(path: string): Promise<NetnsIdentity | undefined> {
  try {
    const info = await stat(path, { bigint: true });
    return { ino: info.ino, dev: info.dev };
  } catch (error) {
    if (errnoOf(error) === 'ENOENT' || errnoOf(error) === 'ENOTDIR') return undefined;
    throw new CaptureError('NETNS_NOT_FOUND', `cannot read network namespace ${path}: ${(error as Error).message}`, { cause: error });
  }
}

function validatePod(info: PodInfo): string | undefined {
  if (typeof info.uid !== 'string' || info.uid === '') return 'pod uid is empty';
  if (typeof info.netns !== 'string' || !info.netns.startsWith('/')) {
    return `pod ${info.namespace}/${info.name}: netns must be an absolute path, got ${JSON.stringify(info.netns)}`;
  }
  if (!Array.isArray(info.ips)) return `pod ${info.namespace}/${info.name}: ips must be a list`;
  for (const ip of info.ips) {
    if (typeof ip !== 'string' || net.isIP(ip) === 0) {
      return `pod ${info.namespace}/${info.name}: ${JSON.stringify(ip)} is not an IP address (no prefix length)`;
    }
  }
  return undefined;
}

function asCaptureError(error: unknown): CaptureError {
  if (error instanceof CaptureError) return error;
  return new CaptureError('RULES_FAILED', error instanceof Error ? error.message : String(error), { cause: error });
}
