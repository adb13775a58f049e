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
 * Owns: the decision call, dry-run logging, and the per-pod sets of open connections (added at open, removed at
 * close: nothing per chunk).
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
}

export interface EnforcerLog {
  info(object: object, message: string): void;
  warn(object: object, message: string): void;
  error(object: object, message: string): void;
}

interface OpenConnection {
  kind: InboundKind;
  connection: Connection;
  close: (reason: string) => void;
  closed: boolean;
}

interface PodConnections {
  pod: Workload;
  open: Set<OpenConnection>;
}

/** IPv4-mapped IPv6 (`::ffff:10.0.0.1`, from dual-stack sockets) as plain IPv4, so IPv4 blocks match. */
export function plainIp(address: string): string {
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}

function podKey(pod: Workload): string {
  return `${pod.namespace}/${pod.name}`;
}

function describe(connection: Connection): object {
  return {
    src: { address: connection.sourceIp, ...(connection.sourcePrincipal ? { principal: connection.sourcePrincipal } : {}) },
    dst: { address: `${connection.destinationIp}:${connection.destinationPort}` },
  };
}

export class PolicyEnforcer implements InboundPolicy {
  readonly #store: PolicyStore;
  readonly #state: Pick<MeshState, 'workloadByName' | 'onChange'> | undefined;
  readonly #log: EnforcerLog;
  readonly #pods = new Map<string, PodConnections>();
  readonly #unsubscribe: Array<() => void> = [];

  constructor(options: { store: PolicyStore; state?: Pick<MeshState, 'workloadByName' | 'onChange'>; log: EnforcerLog }) {
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
    const key = podKey(pod);
    let entry = this.#pods.get(key);
    if (!entry) this.#pods.set(key, (entry = { pod, open: new Set() }));
    entry.pod = pod;
    const open: OpenConnection = { kind, connection, close, closed: false };
    entry.open.add(open);
    const set = entry.open;
    return () => {
      set.delete(open);
      if (set.size === 0 && this.#pods.get(key)?.open === set) this.#pods.delete(key);
    };
  }

  /** Open connections tracked now (for tests and the admin view). */
  get openConnections(): number {
    let count = 0;
    for (const entry of this.#pods.values()) count += entry.open.size;
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
      for (const open of [...entry.open]) {
        if (open.closed) continue;
        const decision = index.evaluate(open.connection);
        if (decision.allowed) continue;
        open.closed = true;
        entry.open.delete(open);
        this.#log.warn(
          { scope: 'authz', kind: open.kind, pod: key, ...describe(open.connection), ...(decision.decidingPolicy ? { policy: decision.decidingPolicy } : {}), reason: decision.reason },
          'policy changed: closing a connection the policies now deny',
        );
        try {
          open.close(decision.reason);
        } catch (error) {
          this.#log.error({ scope: 'authz', pod: key, err: (error as Error).message }, 'closing a denied connection failed');
        }
      }
      if (entry.open.size === 0 && this.#pods.get(key) === entry) this.#pods.delete(key);
    }
  }

  /** The pod's workload as the mesh state knows it now (labels may have changed since the proxy saw it). */
  #current(pod: Workload): Workload {
    return this.#state?.workloadByName(pod.namespace, pod.name) ?? pod;
  }
}
