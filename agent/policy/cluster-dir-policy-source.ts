/**
 * Local mode's policy feed: AuthorizationPolicy and PeerAuthentication objects (security.istio.io/v1 and
 * v1beta1) in the cluster directory, validated as Istio's webhook would and handed to the PolicyStore.
 *
 * Owns: reading and watching the directory (as agent/state/cluster-dir-source.ts does for Pods), validating each
 * object, and reporting a bad one with its file, line and reason — once, not on every re-read. A bad policy is
 * skipped; every other policy stays in force.
 * Must not know about: compiling or evaluating policies (the store does), sockets.
 */
import { DirectoryWatcher } from '../../shared/k8s/dir-watcher.ts';
import { objectSource, readClusterDir, type ClusterDirParseCache } from '../../shared/k8s/cluster-dir.ts';
import { validatePolicy } from '../../shared/policy/index.ts';
import type { LocalPolicy, PolicyStore } from './policy-store.ts';

const POLICY_API_GROUP = 'security.istio.io/';

export interface PolicySourceLog {
  info(object: object, message: string): void;
  warn(object: object, message: string): void;
  error(object: object, message: string): void;
}

export class ClusterDirPolicySource {
  readonly #dir: string;
  readonly #parseCache: ClusterDirParseCache = new Map();
  readonly #store: Pick<PolicyStore, 'setLocal'>;
  readonly #log: PolicySourceLog;
  readonly #watcher: DirectoryWatcher;
  /** Problems already reported, so a bad file is logged once until it changes or is fixed. */
  #reported = new Set<string>();
  #lastContent = '';

  constructor(options: { dir: string; store: Pick<PolicyStore, 'setLocal'>; log: PolicySourceLog }) {
    this.#dir = options.dir;
    this.#store = options.store;
    this.#log = options.log;
    this.#watcher = new DirectoryWatcher({
      dir: this.#dir,
      read: () => this.#readOnce(),
      onError: (error) => this.#log.error({ scope: 'authz', err: error.message }, 'reading policies failed'),
    });
  }

  /** Reads once, then keeps watching. Resolves after the first complete read. */
  start(): Promise<void> {
    return this.#watcher.start();
  }

  stop(): void {
    this.#watcher.stop();
  }

  /** Re-reads the directory now; concurrent calls coalesce. */
  refresh(): Promise<void> {
    return this.#watcher.refresh();
  }

  async #readOnce(): Promise<void> {
    const snapshot = await readClusterDir(this.#dir, this.#parseCache);
    if (!snapshot.changed) return;
    const policies: LocalPolicy[] = [];
    const reported = new Set<string>();
    for (const object of snapshot.objects) {
      if (object.kind !== 'AuthorizationPolicy' && object.kind !== 'PeerAuthentication') continue;
      if (typeof object.apiVersion !== 'string' || !object.apiVersion.startsWith(POLICY_API_GROUP)) continue;
      const where = objectSource(object);
      const source = where ? `${where.file}:${where.line}` : undefined;
      const result = validatePolicy(object);
      if (!result.ok) {
        const message = `${result.error.message} (skipped; the other policies stay in force)`;
        const key = `${source ?? ''}\n${message}`;
        reported.add(key);
        if (!this.#reported.has(key)) {
          this.#log.error({ scope: 'authz', file: source, kind: object.kind, policy: `${object.metadata?.namespace ?? 'default'}/${object.metadata?.name ?? '?'}`, problems: result.error.problems }, `invalid policy: ${message}`);
        }
        continue;
      }
      policies.push(result.kind === 'AuthorizationPolicy' ? { kind: result.kind, object: result.object, ...(source ? { source } : {}) } : { kind: result.kind, object: result.object, ...(source ? { source } : {}) });
    }
    this.#reported = reported;
    // Most re-reads (the poll) find nothing new: hand the store only real changes.
    const content = JSON.stringify(policies);
    if (content === this.#lastContent) return;
    const first = this.#lastContent === '';
    this.#lastContent = content;
    this.#store.setLocal(policies);
    this.#log.info({ scope: 'authz', policies: policies.length, initial: first }, 'policies loaded from the cluster directory');
  }
}
