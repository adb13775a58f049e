/**
 * Local mode's policy feed: AuthorizationPolicy and PeerAuthentication objects (security.istio.io/v1 and
 * v1beta1) in the cluster directory, validated as Istio's webhook would and handed to the PolicyStore.
 *
 * Owns: reading and watching the directory (as agent/state/cluster-dir-source.ts does for Pods), validating each
 * object, and reporting a bad one with its file, line and reason — once, not on every re-read. A bad policy is
 * skipped; every other policy stays in force.
 * Must not know about: compiling or evaluating policies (the store does), sockets.
 */
import { watch, type FSWatcher } from 'node:fs';
import { objectSource, readClusterDir, type ClusterDirParseCache } from '../../shared/k8s/cluster-dir.ts';
import { validatePolicy } from '../../shared/policy/index.ts';
import type { LocalPolicy, PolicyStore } from './policy-store.ts';

/** fs.watch misses events on some filesystems: poll as a backstop (as the workload source does). */
const POLL_INTERVAL_MS = 1000;
/** Writers replace several files at once; coalesce their events into one re-read. */
const DEBOUNCE_MS = 20;
const POLICY_API_GROUP = 'security.istio.io/';

export interface PolicySourceLog {
  info(object: object, message: string): void;
  warn(object: object, message: string): void;
  error(object: object, message: string): void;
}

export class ClusterDirPolicySource {
  readonly #dir: string;
  readonly #parseCache: ClusterDirParseCache = new Map();
  readonly #store: PolicyStore;
  readonly #log: PolicySourceLog;
  #watcher: FSWatcher | undefined;
  #poll: NodeJS.Timeout | undefined;
  #debounce: NodeJS.Timeout | undefined;
  #reading: Promise<void> | undefined;
  #again = false;
  /** Problems already reported, so a bad file is logged once until it changes or is fixed. */
  #reported = new Set<string>();
  #lastContent = '';

  constructor(options: { dir: string; store: PolicyStore; log: PolicySourceLog }) {
    this.#dir = options.dir;
    this.#store = options.store;
    this.#log = options.log;
  }

  /** Reads once, then keeps watching. Resolves after the first complete read. */
  async start(): Promise<void> {
    await this.refresh();
    try {
      this.#watcher = watch(this.#dir, { recursive: true }, () => this.#schedule());
      this.#watcher.on('error', () => {});
    } catch {
      // Polling alone still converges.
    }
    this.#poll = setInterval(() => this.#schedule(), POLL_INTERVAL_MS);
    this.#poll.unref();
  }

  stop(): void {
    this.#watcher?.close();
    clearInterval(this.#poll);
    clearTimeout(this.#debounce);
  }

  /** Re-reads the directory now; concurrent calls coalesce. */
  async refresh(): Promise<void> {
    if (this.#reading) {
      this.#again = true;
      return this.#reading;
    }
    this.#reading = (async () => {
      do {
        this.#again = false;
        await this.#readOnce();
      } while (this.#again);
    })().finally(() => {
      this.#reading = undefined;
    });
    return this.#reading;
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

  #schedule(): void {
    clearTimeout(this.#debounce);
    this.#debounce = setTimeout(() => void this.refresh().catch((error: Error) => this.#log.error({ scope: 'authz', err: error.message }, 'reading policies failed')), DEBOUNCE_MS);
  }
}
