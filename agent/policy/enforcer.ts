/**
 * L4 authorization in the destination agent: decides each inbound connection (HBONE stream or plaintext on
 * 15006) against the policies in scope for the destination pod, and keeps deciding while it is open (late
 * enforcement: when policies or the pod's labels change, every open connection of the affected pods is
 * re-checked and the now-denied ones are closed).
 *
 * Denials are reported with response_flags `DENY`, the value ztunnel puts in `response_flags` for a connection
 * its authorization policy rejected (Envoy's HTTP RBAC filter has no TCP flag of its own, and UAEX means an
 * external authorizer); the access log's `error` says `policy rejection: <why>` at open and
 * `policy changed: <why>` for late enforcement. Dry-run policies are evaluated and logged
 * (`dry_run_result`), never enforced.
 *
 * Owns: the decision call, dry-run logging, and the per-pod lists of open connections (added at open, removed at
 * close: nothing per chunk; linked through the proxy's own connection objects, nothing made per connection).
 * Must not know about: HBONE or sockets (the proxy hands in a close function), where policies come from.
 */
import type { Connection, Decision } from '../../shared/policy/index.ts';
import type { MeshState } from '../../shared/mesh/mesh-state.ts';
import type { Workload } from '../../shared/mesh/workload.ts';
import type { PolicyStore } from './policy-store.ts';

/** ztunnel's response_flags value for a connection denied by authorization policy. */
export const POLICY_DENIED_FLAG = 'DENY';

export type InboundKind = 'hbone' | 'plaintext';

/** The proxy's view of policy: decide a new connection; register an open one for late enforcement. */
export interface InboundPolicy {
  /** Decides a new connection to `pod`. Never throws (a failure denies). */
  check(pod: Workload, kind: InboundKind, connection: Connection): Decision;
  /**
   * Registers an open connection. `close` is called (once) when a policy change denies it; the returned
   * function unregisters it and must be called when the connection ends.
   */
  track(pod: Workload, kind: InboundKind, connection: Connection, close: (reason: string) => void): () => void;
  /**
   * Registers an open connection the proxy's own object carries (no closure, no entry made per connection): its
   * `policyDenied` is called (once) when a policy change denies it. `untrack` it when the connection ends.
   */
  trackOpen(pod: Workload, kind: InboundKind, connection: Connection, tracked: PolicyTracked): void;
  /** Unregisters a connection `trackOpen` registered; nothing for one that is not (any more). */
  untrack(tracked: PolicyTracked): void;
}

export interface EnforcerLog {
  info(object: object, message: string): void;
  warn(object: object, message: string): void;
  error(object: object, message: string): void;
}

/**
 * An open connection under late enforcement, carried by the proxy's own per-connection object (which extends this):
 * what it is decided on, what to do when a change denies it, and its links in its pod's list. Tracking one makes no
 * object, closure or collection entry (issue 14, the storm step: a `Set` entry, a record and two closures per stream
 * before).
 */
export abstract class PolicyTracked {
  /** Set by the enforcer while tracked: what it is decided on, its pod's list and its neighbours there. */
  policyKind: InboundKind = 'hbone';
  policyConnection: Connection | undefined = undefined;
  policyList: PodConnections | undefined = undefined;
  policyPrevious: PolicyTracked | undefined = undefined;
  policyNext: PolicyTracked | undefined = undefined;

  /** A policy change denies the connection (it is no longer tracked): close it. Called once. */
  abstract policyDenied(reason: string): void;
}

/** `track`'s closure form (tests, the plaintext path): the close function kept on the tracked object. */
class ClosureTracked extends PolicyTracked {
  readonly #close: (reason: string) => void;

  constructor(close: (reason: string) => void) {
    super();
    this.#close = close;
  }

  override policyDenied(reason: string): void {
    this.#close(reason);
  }
}

/** A pod's open connections, oldest first (a list through their own links). */
interface PodConnections {
  pod: Workload;
  first: PolicyTracked | undefined;
  last: PolicyTracked | undefined;
  size: number;
}

/**
 * Pods whose lists are empty stay in the map (a pod with one connection at a time would otherwise make its entry
 * and key again per connection) until a re-check, or until this many pods are known: then the empty ones go.
 */
const EMPTY_LISTS_KEPT_UP_TO = 1024;

/** IPv4-mapped IPv6 (`::ffff:10.0.0.1`, from dual-stack sockets) as plain IPv4, so IPv4 blocks match. */
export function plainIp(address: string): string {
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}

/** Each workload object's key, made once (the map lookup per tracked connection then builds no string). */
const podKeys = new WeakMap<Workload, string>();

function podKey(pod: Workload): string {
  let key = podKeys.get(pod);
  if (key === undefined) podKeys.set(pod, (key = `${pod.namespace}/${pod.name}`));
  return key;
}

function describe(connection: Connection): object {
  return {
    src: { address: connection.sourceIp, ...(connection.sourcePrincipal ? { principal: connection.sourcePrincipal } : {}) },
    dst: { address: `${connection.destinationIp}:${connection.destinationPort}` },
  };
}

export class PolicyEnforcer implements InboundPolicy {
  readonly #store: PolicyStore;
  readonly #state: Pick<MeshState, 'workloadByKey' | 'onChange'> | undefined;
  readonly #log: EnforcerLog;
  readonly #pods = new Map<string, PodConnections>();
  readonly #unsubscribe: Array<() => void> = [];

  constructor(options: { store: PolicyStore; state?: Pick<MeshState, 'workloadByKey' | 'onChange'>; log: EnforcerLog }) {
    this.#store = options.store;
    this.#state = options.state;
    this.#log = options.log;
  }

  /** Starts late enforcement: policy changes, and pod label changes, re-check open connections. */
  start(): void {
    this.#unsubscribe.push(this.#store.onChange(() => this.recheck()));
    if (this.#state) {
      this.#unsubscribe.push(
        this.#state.onChange((change) => {
          if (change.type === 'upsert' && change.previous && this.#pods.has(podKey(change.workload))) this.recheck([podKey(change.workload)]);
        }),
      );
    }
  }

  stop(): void {
    for (const unsubscribe of this.#unsubscribe.splice(0)) unsubscribe();
  }

  check(pod: Workload, kind: InboundKind, connection: Connection): Decision {
    let decision: Decision;
    try {
      decision = this.#store.policiesFor(this.#current(pod)).evaluate(connection);
    } catch (error) {
      this.#log.error({ scope: 'authz', pod: podKey(pod), err: (error as Error).message }, 'policy evaluation failed; denying');
      return { allowed: false, reason: `policy evaluation failed: ${(error as Error).message}` };
    }
    if (decision.dryRun) {
      const report = decision.dryRun;
      this.#log.info(
        {
          scope: 'authz',
          kind,
          pod: podKey(pod),
          ...describe(connection),
          allowed: decision.allowed,
          dry_run_result: report.allowedIfEnforced ? 'allow' : 'deny',
          dry_run_policies: report.matchedPolicies,
          reason: report.reason,
        },
        'dry-run policy evaluated',
      );
    }
    return decision;
  }

  track(pod: Workload, kind: InboundKind, connection: Connection, close: (reason: string) => void): () => void {
    const tracked = new ClosureTracked(close);
    this.trackOpen(pod, kind, connection, tracked);
    return () => this.untrack(tracked);
  }

  trackOpen(pod: Workload, kind: InboundKind, connection: Connection, tracked: PolicyTracked): void {
    if (tracked.policyList !== undefined) this.untrack(tracked);
    const key = podKey(pod);
    let list = this.#pods.get(key);
    if (list === undefined) {
      if (this.#pods.size >= EMPTY_LISTS_KEPT_UP_TO) this.#dropEmptyLists();
      this.#pods.set(key, (list = { pod, first: undefined, last: undefined, size: 0 }));
    }
    list.pod = pod;
    tracked.policyKind = kind;
    tracked.policyConnection = connection;
    tracked.policyList = list;
    tracked.policyPrevious = list.last;
    tracked.policyNext = undefined;
    if (list.last === undefined) list.first = tracked;
    else list.last.policyNext = tracked;
    list.last = tracked;
    list.size++;
  }

  untrack(tracked: PolicyTracked): void {
    const list = tracked.policyList;
    if (list === undefined) return;
    const previous = tracked.policyPrevious;
    const next = tracked.policyNext;
    if (previous === undefined) list.first = next;
    else previous.policyNext = next;
    if (next === undefined) list.last = previous;
    else next.policyPrevious = previous;
    list.size--;
    tracked.policyList = undefined;
    tracked.policyPrevious = undefined;
    tracked.policyNext = undefined;
    tracked.policyConnection = undefined;
  }

  #dropEmptyLists(): void {
    for (const [key, list] of this.#pods) if (list.size === 0) this.#pods.delete(key);
  }

  /** Open connections tracked now (for tests and the admin view). */
  get openConnections(): number {
    let count = 0;
    for (const list of this.#pods.values()) count += list.size;
    return count;
  }

  /**
   * Re-checks the open connections of the given pods (all pods when omitted) and closes the ones the policies
   * in force now deny. A decision costs microseconds, so every open connection of the pods is simply decided
   * again rather than diffing the policies in scope.
   */
  recheck(keys?: readonly string[]): void {
    for (const key of keys ?? [...this.#pods.keys()]) {
      const entry = this.#pods.get(key);
      if (!entry) continue;
      const pod = this.#current(entry.pod);
      let index;
      try {
        index = this.#store.policiesFor(pod);
      } catch (error) {
        this.#log.error({ scope: 'authz', pod: key, err: (error as Error).message }, 'policy re-check failed; open connections kept');
        continue;
      }
      for (let open = entry.first; open !== undefined; ) {
        const next = open.policyNext;
        const connection = open.policyConnection!;
        const decision = index.evaluate(connection);
        if (!decision.allowed) {
          const kind = open.policyKind;
          this.untrack(open);
          this.#log.warn(
            { scope: 'authz', kind, pod: key, ...describe(connection), ...(decision.decidingPolicy ? { policy: decision.decidingPolicy } : {}), reason: decision.reason },
            'policy changed: closing a connection the policies now deny',
          );
          try {
            open.policyDenied(decision.reason);
          } catch (error) {
            this.#log.error({ scope: 'authz', pod: key, err: (error as Error).message }, 'closing a denied connection failed');
          }
        }
        // A close that ended the next connection too untracked it: start over (the ones still listed are allowed and
        // are decided again; each start-over follows an untracked connection, so this ends).
        open = next === undefined || next.policyList === entry ? next : entry.first;
      }
      if (entry.size === 0 && this.#pods.get(key) === entry) this.#pods.delete(key);
    }
  }

  /**
   * The pod's workload as the mesh state knows it now (labels may have changed since the proxy saw it); looked up by
   * the key made once per workload object (a decision per stream builds no string).
   */
  #current(pod: Workload): Workload {
    return this.#state?.workloadByKey(podKey(pod)) ?? pod;
  }
}
