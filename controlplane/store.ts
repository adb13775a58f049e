/**
 * The control plane's copy of the cluster: every object a source reported, by kind and name, fed by exactly one
 * source (the YAML directory or the Kubernetes API) through the same event stream.
 *
 * Owns: the objects, dropping events that change nothing (same resourceVersion, or same content when a source
 * has no resourceVersions), and handing each batch of real changes to listeners (the model).
 * Must not know about: where events come from, or what the mesh makes of them.
 */
import { isDeepStrictEqual } from 'node:util';
import type { K8sObject } from '../shared/k8s/objects.ts';

/** The kinds the control plane watches and models (others may be stored for later consumers). */
export const WATCHED_KINDS = ['Namespace', 'Node', 'Pod', 'Service', 'EndpointSlice', 'Gateway', 'AuthorizationPolicy', 'PeerAuthentication'] as const;
export type WatchedKind = (typeof WATCHED_KINDS)[number];

/** Kinds that are not namespaced: their key is just the name. */
const CLUSTER_SCOPED_KINDS = new Set(['Namespace', 'Node']);

export interface SourceEvent {
  type: 'upsert' | 'delete';
  object: K8sObject;
}

export interface StoreChange {
  type: 'upsert' | 'delete';
  kind: string;
  /** `<namespace>/<name>` for namespaced kinds, `<name>` for cluster-scoped ones. */
  key: string;
  object: K8sObject;
  previous?: K8sObject;
}

export function objectKey(object: K8sObject): string {
  const name = object.metadata?.name ?? '';
  if (CLUSTER_SCOPED_KINDS.has(object.kind ?? '')) return name;
  return `${object.metadata?.namespace || 'default'}/${name}`;
}

export class ObjectStore {
  readonly #objectsByKind = new Map<string, Map<string, K8sObject>>();
  readonly #listeners = new Set<(changes: StoreChange[]) => void>();
  /** Changes applied (after dedupe) since start: for tests and status. */
  changesApplied = 0;

  get<T extends K8sObject = K8sObject>(kind: string, key: string): T | undefined {
    return this.#objectsByKind.get(kind)?.get(key) as T | undefined;
  }

  list<T extends K8sObject = K8sObject>(kind: string): T[] {
    return [...(this.#objectsByKind.get(kind)?.values() ?? [])] as T[];
  }

  keys(kind: string): string[] {
    return [...(this.#objectsByKind.get(kind)?.keys() ?? [])];
  }

  /** Applies a batch of source events; listeners see only the real changes, once, in order. */
  apply(events: SourceEvent[]): StoreChange[] {
    const changes: StoreChange[] = [];
    for (const event of events) {
      const change = this.#applyOne(event);
      if (change) changes.push(change);
    }
    if (changes.length > 0) {
      this.changesApplied += changes.length;
      for (const listener of this.#listeners) listener(changes);
    }
    return changes;
  }

  /**
   * Makes the store's objects of `kinds` exactly `objects` (a relist or a re-read directory): missing objects
   * are deleted, others upserted; unchanged ones produce no change.
   */
  replace(kinds: readonly string[], objects: K8sObject[]): StoreChange[] {
    const seen = new Set<string>();
    const events: SourceEvent[] = [];
    for (const object of objects) {
      seen.add(`${object.kind}\u0000${objectKey(object)}`);
      events.push({ type: 'upsert', object });
    }
    for (const kind of kinds) {
      for (const [key, object] of this.#objectsByKind.get(kind) ?? []) if (!seen.has(`${kind}\u0000${key}`)) events.push({ type: 'delete', object });
    }
    return this.apply(events);
  }

  onChanges(listener: (changes: StoreChange[]) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #applyOne(event: SourceEvent): StoreChange | undefined {
    const kind = event.object.kind ?? '';
    const key = objectKey(event.object);
    let objects = this.#objectsByKind.get(kind);
    if (!objects) {
      objects = new Map();
      this.#objectsByKind.set(kind, objects);
    }
    const previous = objects.get(key);
    if (event.type === 'delete') {
      if (!previous) return undefined;
      objects.delete(key);
      return { type: 'delete', kind, key, object: previous, previous };
    }
    if (previous && isSameVersion(previous, event.object)) return undefined;
    objects.set(key, event.object);
    return previous ? { type: 'upsert', kind, key, object: event.object, previous } : { type: 'upsert', kind, key, object: event.object };
  }
}

/** Same resourceVersion (API server objects) or, without versions (YAML files), the same content. */
function isSameVersion(previous: K8sObject, next: K8sObject): boolean {
  const previousVersion = (previous.metadata as { resourceVersion?: string } | undefined)?.resourceVersion;
  const nextVersion = (next.metadata as { resourceVersion?: string } | undefined)?.resourceVersion;
  if (previousVersion && nextVersion) return previousVersion === nextVersion;
  return isDeepStrictEqual(previous, next);
}
