/**
 * The xDS server's resources, per type URL, already encoded: what every connection is served from.
 *
 * Owns: the encoded bytes of each resource (the envoy `Resource` message, framed as field 2 of a
 * DeltaDiscoveryResponse so a response is a concatenation), its version (a content hash, so an unchanged
 * recomputation is not a change and a reconnecting client's `initial_resource_versions` can be compared), and
 * the set of names changed since the last drain.
 * Must not know about: Kubernetes objects, connections, gRPC.
 */
import { createHash } from 'node:crypto';
import protobuf from 'protobufjs';

export interface CachedResource {
  name: string;
  version: string;
  /** The message bytes (the Any's value). */
  value: Uint8Array;
  /** Tag + length + envoy Resource{name, version, resource: Any}: field 2 of DeltaDiscoveryResponse, ready to splice. */
  framed: Uint8Array;
}

/** Characters of the SHA-256 digest kept as the version: 96 bits is plenty to tell two contents apart. */
const VERSION_LENGTH = 16;
/** DeltaDiscoveryResponse.resources is field 2, length-delimited. */
const RESPONSE_RESOURCES_TAG = (2 << 3) | 2;

export function contentVersion(value: Uint8Array): string {
  return createHash('sha256').update(value).digest('base64url').slice(0, VERSION_LENGTH);
}

function frameResource(typeUrl: string, name: string, version: string, value: Uint8Array): Uint8Array {
  // envoy.service.discovery.v3.Resource: version=1, resource(Any)=2, name=3; Any: type_url=1, value=2.
  const any = protobuf.Writer.create().uint32((1 << 3) | 2).string(typeUrl).uint32((2 << 3) | 2).bytes(value).finish();
  const resource = protobuf.Writer.create().uint32((1 << 3) | 2).string(version).uint32((2 << 3) | 2).bytes(any).uint32((3 << 3) | 2).string(name).finish();
  return protobuf.Writer.create().uint32(RESPONSE_RESOURCES_TAG).bytes(resource).finish();
}

export type ChangeListener = (typeUrl: string) => void;

export class ResourceCache {
  readonly #resourcesByType = new Map<string, Map<string, CachedResource>>();
  readonly #changedByType = new Map<string, Set<string>>();
  readonly #listeners = new Set<ChangeListener>();

  /** Registers a type URL so it is served (possibly empty) before anything is set. */
  declareType(typeUrl: string): void {
    if (!this.#resourcesByType.has(typeUrl)) this.#resourcesByType.set(typeUrl, new Map());
  }

  types(): string[] {
    return [...this.#resourcesByType.keys()];
  }

  /** Sets a resource's encoded message. Returns whether it changed (same bytes, same version: no change). */
  set(typeUrl: string, name: string, value: Uint8Array): boolean {
    const resources = this.#resources(typeUrl);
    const version = contentVersion(value);
    if (resources.get(name)?.version === version) return false;
    resources.set(name, { name, version, value, framed: frameResource(typeUrl, name, version, value) });
    this.#markChanged(typeUrl, name);
    return true;
  }

  delete(typeUrl: string, name: string): boolean {
    if (!this.#resources(typeUrl).delete(name)) return false;
    this.#markChanged(typeUrl, name);
    return true;
  }

  get(typeUrl: string, name: string): CachedResource | undefined {
    return this.#resourcesByType.get(typeUrl)?.get(name);
  }

  all(typeUrl: string): ReadonlyMap<string, CachedResource> {
    return this.#resources(typeUrl);
  }

  /** Names changed per type since the last call (the pusher's work list). */
  drainChanges(): Map<string, Set<string>> {
    const changes = new Map(this.#changedByType);
    this.#changedByType.clear();
    return changes;
  }

  /** Called (synchronously) on every change; the listener is expected to debounce. */
  onChange(listener: ChangeListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #resources(typeUrl: string): Map<string, CachedResource> {
    let resources = this.#resourcesByType.get(typeUrl);
    if (!resources) {
      resources = new Map();
      this.#resourcesByType.set(typeUrl, resources);
    }
    return resources;
  }

  #markChanged(typeUrl: string, name: string): void {
    let changed = this.#changedByType.get(typeUrl);
    if (!changed) {
      changed = new Set();
      this.#changedByType.set(typeUrl, changed);
    }
    changed.add(name);
    for (const listener of this.#listeners) listener(typeUrl);
  }
}
