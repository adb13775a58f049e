/**
 * The agent's policies: AuthorizationPolicy and PeerAuthentication objects (local mode, from the cluster
 * directory) and compiled `istio.security.Authorization` resources (from the control plane over delta xDS),
 * and, per destination workload, the AuthorizationIndex the enforcer decides connections with.
 *
 * Scope, as ztunnel resolves it:
 *   - local objects: GLOBAL (root namespace, no selector), NAMESPACE, and WORKLOAD_SELECTOR policies whose
 *     selector matches the workload's labels; plus the DENY policies PeerAuthentication converts to
 *     (peerAuthenticationToAuthorization). Those match only connections without a peer identity, so they bite
 *     on plaintext (port 15006) and never on HBONE, whose peer is always verified.
 *   - xDS resources: GLOBAL and NAMESPACE policies, plus those named in the workload's `authorizationPolicies`
 *     keys (the control plane resolved selectors and converted PeerAuthentication already).
 *
 * Owns: holding both feeds, compiling local objects (warnings such as "needs a waypoint" logged once per
 * policy), the per-workload index cache (dropped on every change), and the change event.
 * Must not know about: files, sockets, how a decision is enforced.
 */
import {
  AuthorizationIndex,
  authorizationFromWireObject,
  authorizationKey,
  compileAuthorizationPolicy,
  peerAuthenticationToAuthorization,
  policiesForWorkload,
  policiesForWorkloadKeys,
  type Authorization,
  type AuthorizationPolicyObject,
  type PeerAuthenticationObject,
} from '../../shared/policy/index.ts';
import type { Workload } from '../../shared/mesh/workload.ts';

/** Istio's default root namespace: policies there without a selector apply to the whole mesh. */
export const ROOT_NAMESPACE = 'istio-system';

/** A validated object from the local feed, with where it came from (for messages). */
export type LocalPolicy =
  | { kind: 'AuthorizationPolicy'; object: AuthorizationPolicyObject; source?: string }
  | { kind: 'PeerAuthentication'; object: PeerAuthenticationObject; source?: string };

/** The decoded xDS resources the store takes (XdsResourceUpdate from shared/xds/client.ts). */
export interface AuthorizationUpdate {
  name: string;
  resource: unknown;
}

export interface PolicyStoreLog {
  warn(object: object, message: string): void;
}

export interface PolicyStoreOptions {
  rootNamespace?: string;
  log?: PolicyStoreLog;
}

/** What /config_dump shows for one policy. */
export type PolicyView =
  | ({ kind: 'Authorization'; origin: 'local' | 'xds'; source?: string; warnings?: string[] } & Authorization)
  | { kind: 'PeerAuthentication'; origin: 'local'; namespace: string; name: string; source?: string; spec: unknown };

interface LocalAuthorization {
  authorization: Authorization;
  /** The object's content, to keep the compiled policy (and its warnings) when nothing changed. */
  fingerprint: string;
  warnings: string[];
  source: string | undefined;
}

interface CacheEntry {
  generation: number;
  index: AuthorizationIndex;
}

const EMPTY_INDEX = new AuthorizationIndex([]);

export class PolicyStore {
  readonly rootNamespace: string;
  readonly #log: PolicyStoreLog | undefined;
  /** Local AuthorizationPolicies, compiled, by `namespace/name`. */
  #local = new Map<string, LocalAuthorization>();
  /**
   * `namespace/name` -> content of every local policy whose warnings were logged, including those that compile to
   * nothing the agent enforces (targetRef, AUDIT, CUSTOM) and so are not in #local: logged again only when changed.
   */
  #warned = new Map<string, string>();
  #localList: Authorization[] = [];
  #peerAuthentications: PeerAuthenticationObject[] = [];
  #peerSources = new Map<PeerAuthenticationObject, string | undefined>();
  /** xDS resources by resource name, and the same by `namespace/name` (what workloads reference). */
  readonly #xdsByName = new Map<string, Authorization>();
  #xdsByKey = new Map<string, Authorization>();
  #generation = 0;
  #cache = new WeakMap<Workload, CacheEntry>();
  readonly #listeners = new Set<() => void>();

  constructor(options: PolicyStoreOptions = {}) {
    this.rootNamespace = options.rootNamespace ?? ROOT_NAMESPACE;
    this.#log = options.log;
  }

  /** Bumped on every change; an index built for an older generation is stale. */
  get generation(): number {
    return this.#generation;
  }

  /**
   * Replaces the whole local feed (validated objects). A policy whose content did not change keeps its compiled
   * form, and its warnings are not logged again. Emits a change only when something changed.
   */
  setLocal(policies: readonly LocalPolicy[]): void {
    const local = new Map<string, LocalAuthorization>();
    const warned = new Map<string, string>();
    const peerAuthentications: PeerAuthenticationObject[] = [];
    const peerSources = new Map<PeerAuthenticationObject, string | undefined>();
    for (const policy of policies) {
      if (policy.kind === 'PeerAuthentication') {
        peerAuthentications.push(policy.object);
        peerSources.set(policy.object, policy.source);
        continue;
      }
      const object = policy.object;
      const key = `${object.metadata.namespace ?? 'default'}/${object.metadata.name}`;
      const fingerprint = JSON.stringify(object);
      const previous = this.#local.get(key);
      if (previous && previous.fingerprint === fingerprint) {
        local.set(key, { ...previous, source: policy.source });
        continue;
      }
      const compiled = compileAuthorizationPolicy(object, { rootNamespace: this.rootNamespace });
      if (compiled.warnings.length > 0) {
        if (this.#warned.get(key) !== fingerprint) for (const warning of compiled.warnings) this.#log?.warn({ scope: 'authz', policy: key, file: policy.source }, warning);
        warned.set(key, fingerprint);
      }
      if (!compiled.authorization) continue;
      local.set(key, { authorization: compiled.authorization, fingerprint, warnings: compiled.warnings, source: policy.source });
    }
    const changed =
      local.size !== this.#local.size ||
      [...local].some(([key, entry]) => this.#local.get(key)?.authorization !== entry.authorization) ||
      JSON.stringify(peerAuthentications) !== JSON.stringify(this.#peerAuthentications);
    this.#local = local;
    this.#warned = warned;
    this.#localList = [...local.values()].map((entry) => entry.authorization);
    this.#peerAuthentications = peerAuthentications;
    this.#peerSources = peerSources;
    if (changed) this.#changed();
  }

  /**
   * Applies one xDS response for `istio.security.Authorization` (decoded to plain objects by the xDS client).
   * A resource that cannot be read is rejected by name (the client NACKs it) and the others are applied.
   */
  applyXds(added: readonly AuthorizationUpdate[], removed: readonly string[]): { rejected?: Array<{ name: string; reason: string }> } | undefined {
    const rejected: Array<{ name: string; reason: string }> = [];
    let changed = false;
    for (const update of added) {
      try {
        this.#xdsByName.set(update.name, authorizationFromWireObject(update.resource as Record<string, unknown>));
        changed = true;
      } catch (error) {
        rejected.push({ name: update.name, reason: (error as Error).message });
      }
    }
    for (const name of removed) changed = this.#xdsByName.delete(name) || changed;
    if (changed) {
      this.#xdsByKey = new Map([...this.#xdsByName.values()].map((policy) => [authorizationKey(policy), policy]));
      this.#changed();
    }
    return rejected.length > 0 ? { rejected } : undefined;
  }

  /** The policies in scope for a destination workload, indexed; cached until the policies or the workload change. */
  policiesFor(workload: Workload): AuthorizationIndex {
    const cached = this.#cache.get(workload);
    if (cached && cached.generation === this.#generation) return cached.index;
    const policies = this.policyListFor(workload);
    const index = policies.length === 0 ? EMPTY_INDEX : new AuthorizationIndex(policies);
    this.#cache.set(workload, { generation: this.#generation, index });
    return index;
  }

  /** The policies in scope for a workload, unindexed (PeerAuthentication-converted ones first). */
  policyListFor(workload: Workload): Authorization[] {
    const labels = workload.labels ?? {};
    const namespace = workload.namespace;
    const out: Authorization[] = [];
    if (this.#peerAuthentications.length > 0) out.push(...peerAuthenticationToAuthorization({ namespace, labels }, this.#peerAuthentications, this.rootNamespace));
    if (this.#localList.length > 0) out.push(...policiesForWorkload(labels, namespace, this.rootNamespace, this.#localList));
    if (this.#xdsByKey.size > 0) out.push(...policiesForWorkloadKeys(namespace, workload.authorizationPolicies ?? [], this.#xdsByKey));
    return out;
  }

  /** Called after every change (the enforcer re-checks open connections). Returns the unsubscribe function. */
  onChange(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Every policy held, for /config_dump. */
  dump(): PolicyView[] {
    const views: PolicyView[] = [];
    for (const entry of this.#local.values()) {
      views.push({
        kind: 'Authorization',
        origin: 'local',
        ...(entry.source ? { source: entry.source } : {}),
        ...(entry.warnings.length > 0 ? { warnings: entry.warnings } : {}),
        ...entry.authorization,
      });
    }
    for (const policy of this.#xdsByName.values()) views.push({ kind: 'Authorization', origin: 'xds', ...policy });
    for (const object of this.#peerAuthentications) {
      const source = this.#peerSources.get(object);
      views.push({
        kind: 'PeerAuthentication',
        origin: 'local',
        namespace: object.metadata.namespace ?? 'default',
        name: object.metadata.name,
        ...(source ? { source } : {}),
        spec: object.spec ?? {},
      });
    }
    return views;
  }

  #changed(): void {
    this.#generation++;
    this.#cache = new WeakMap();
    for (const listener of this.#listeners) listener();
  }
}
