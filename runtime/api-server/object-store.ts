/**
 * The API server's view of the cluster: every object with a resourceVersion (one counter, as etcd's revision), a
 * uid and a creationTimestamp, and the history of changes watches replay. It is fed whole snapshots of the cluster
 * state (`replaceAll`) and turns the difference into ADDED, MODIFIED and DELETED events; nothing else writes it.
 *
 * Owns: versions, history (bounded: a watch from before it gets 410 Expired and must relist), watchers.
 * Must not know about: where the snapshots come from or how requests are served.
 */
import { randomUUID } from 'node:crypto';
import type { K8sObject } from '../../shared/k8s/objects.ts';
import { ApiError } from './errors.ts';
import { resourceByKind, type ApiResource } from './resources.ts';

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED';

export interface WatchEvent {
  type: WatchEventType;
  object: K8sObject;
}

/** Changes kept for watches resuming from an older version: minutes of a busy local cluster. */
const HISTORY_LIMIT = 10_000;

interface Entry {
  /** The snapshot's object as given, serialised: a change is a different text. */
  input: string;
  object: K8sObject;
}

interface HistoryEntry extends WatchEvent {
  resourceVersion: number;
  plural: string;
}

interface Watcher {
  plural: string;
  namespace: string | undefined;
  send: (event: WatchEvent) => void;
}

function keyOf(resource: ApiResource, object: K8sObject): string {
  return resource.namespaced ? `${object.metadata?.namespace || 'default'}/${object.metadata?.name}` : String(object.metadata?.name);
}

export class VersionedObjectStore {
  readonly #entries = new Map<string, Map<string, Entry>>();
  readonly #history: HistoryEntry[] = [];
  readonly #watchers = new Set<Watcher>();
  #resourceVersion = 1;
  #compactedThrough = 0;

  get resourceVersion(): number {
    return this.#resourceVersion;
  }

  /** Makes the store hold exactly `objects` (of served kinds; others are ignored), recording what changed. */
  replaceAll(objects: readonly K8sObject[]): void {
    const seen = new Map<string, Set<string>>();
    for (const input of objects) {
      const resource = resourceByKind(input.kind ?? '');
      if (resource === undefined || typeof input.metadata?.name !== 'string') continue;
      const key = keyOf(resource, input);
      let keys = seen.get(resource.plural);
      if (keys === undefined) seen.set(resource.plural, (keys = new Set()));
      keys.add(key);
      const entries = this.#table(resource.plural);
      const previous = entries.get(key);
      const text = JSON.stringify(input);
      if (previous?.input === text) continue;
      const metadata = input.metadata;
      const object: K8sObject = {
        ...input,
        apiVersion: resource.group === '' ? resource.version : `${resource.group}/${resource.version}`,
        kind: resource.kind,
        metadata: {
          ...metadata,
          ...(resource.namespaced ? { namespace: metadata.namespace || 'default' } : {}),
          uid: metadata.uid ?? previous?.object.metadata?.uid ?? randomUUID(),
          creationTimestamp: (metadata as { creationTimestamp?: string }).creationTimestamp ?? (previous?.object.metadata as { creationTimestamp?: string } | undefined)?.creationTimestamp ?? new Date().toISOString(),
          resourceVersion: String(++this.#resourceVersion),
        } as K8sObject['metadata'],
      };
      entries.set(key, { input: text, object });
      this.#record(resource.plural, previous === undefined ? 'ADDED' : 'MODIFIED', object);
    }
    for (const [plural, entries] of this.#entries) {
      for (const [key, entry] of entries) {
        if (seen.get(plural)?.has(key)) continue;
        entries.delete(key);
        const object = { ...entry.object, metadata: { ...entry.object.metadata, resourceVersion: String(++this.#resourceVersion) } as K8sObject['metadata'] };
        this.#record(plural, 'DELETED', object);
      }
    }
  }

  list(resource: ApiResource, namespace?: string): K8sObject[] {
    const objects = [...this.#table(resource.plural).values()].map((entry) => entry.object);
    return namespace === undefined ? objects : objects.filter((object) => object.metadata?.namespace === namespace);
  }

  get(resource: ApiResource, namespace: string | undefined, name: string): K8sObject | undefined {
    return this.#table(resource.plural).get(resource.namespaced ? `${namespace || 'default'}/${name}` : name)?.object;
  }

  /**
   * Sends every change of `resource` (in `namespace` when given) after `from`, then live ones, until the returned
   * function is called. Without `from` (or "0") the current objects come first as ADDED, as the real server does.
   * A version older than the history kept throws 410 Expired.
   */
  watch(resource: ApiResource, namespace: string | undefined, from: string | undefined, send: (event: WatchEvent) => void): () => void {
    const inScope = (object: K8sObject): boolean => namespace === undefined || object.metadata?.namespace === namespace;
    if (from === undefined || from === '' || from === '0') {
      for (const object of this.list(resource, namespace)) send({ type: 'ADDED', object });
    } else {
      const version = Number(from);
      if (!Number.isInteger(version) || version < this.#compactedThrough) {
        throw new ApiError('Expired', `too old resource version: ${from} (${this.#compactedThrough})`);
      }
      for (const entry of this.#history) {
        if (entry.resourceVersion > version && entry.plural === resource.plural && inScope(entry.object)) send({ type: entry.type, object: entry.object });
      }
    }
    const watcher: Watcher = { plural: resource.plural, namespace, send };
    this.#watchers.add(watcher);
    return () => this.#watchers.delete(watcher);
  }

  #table(plural: string): Map<string, Entry> {
    let entries = this.#entries.get(plural);
    if (entries === undefined) this.#entries.set(plural, (entries = new Map()));
    return entries;
  }

  #record(plural: string, type: WatchEventType, object: K8sObject): void {
    this.#history.push({ resourceVersion: this.#resourceVersion, plural, type, object });
    if (this.#history.length > HISTORY_LIMIT) {
      const dropped = this.#history.splice(0, this.#history.length - HISTORY_LIMIT);
      this.#compactedThrough = dropped.at(-1)!.resourceVersion;
    }
    for (const watcher of this.#watchers) {
      if (watcher.plural === plural && (watcher.namespace === undefined || object.metadata?.namespace === watcher.namespace)) watcher.send({ type, object });
    }
  }
}
