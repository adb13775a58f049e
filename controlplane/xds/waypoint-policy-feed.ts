/**
 * Serves `type.googleapis.com/ambit.waypoint.HttpAuthorization`, `ambit.waypoint.RequestAuthentication` and `RateLimit` (one
 * resource per policy, named `namespace/name`) from the compiled waypoint policies
 * (controlplane/model/waypoint-policies.ts). Only waypoints subscribe to these types.
 *
 * Owns: encoding and replacing the two served sets. Must not know about: how policies compile.
 */
import type protobuf from 'protobufjs';
import { HTTP_AUTHORIZATION_TYPE_URL, RATE_LIMIT_TYPE_URL, REQUEST_AUTHENTICATION_TYPE_URL, typeForUrl } from '../../shared/xds/protos.ts';
import type { CompiledWaypointPolicies } from '../model/waypoint-policies.ts';
import type { ResourceCache } from './resource-cache.ts';

class TypedSet {
  readonly #cache: ResourceCache;
  readonly #typeUrl: string;
  readonly #type: protobuf.Type;
  #names = new Set<string>();

  constructor(cache: ResourceCache, typeUrl: string) {
    const type = typeForUrl(typeUrl);
    if (!type) throw new Error(`${typeUrl} is not loaded (shared/xds/proto/ambit/waypoint/policies.proto)`);
    this.#cache = cache;
    this.#typeUrl = typeUrl;
    this.#type = type;
    cache.declareType(typeUrl);
  }

  replace(resources: ReadonlyMap<string, object>): void {
    // Encode everything first: one that cannot be encoded leaves the served set as it was.
    const encoded = new Map<string, Uint8Array>();
    for (const [name, resource] of resources) encoded.set(name, this.#type.encode(this.#type.fromObject(resource)).finish());
    for (const [name, bytes] of encoded) this.#cache.set(this.#typeUrl, name, bytes);
    for (const name of this.#names) if (!encoded.has(name)) this.#cache.delete(this.#typeUrl, name);
    this.#names = new Set(encoded.keys());
  }
}

export class WaypointPolicyFeed {
  readonly #authorizations: TypedSet;
  readonly #requestAuthentications: TypedSet;
  readonly #rateLimits: TypedSet;

  constructor(cache: ResourceCache) {
    this.#authorizations = new TypedSet(cache, HTTP_AUTHORIZATION_TYPE_URL);
    this.#requestAuthentications = new TypedSet(cache, REQUEST_AUTHENTICATION_TYPE_URL);
    this.#rateLimits = new TypedSet(cache, RATE_LIMIT_TYPE_URL);
  }

  replace(policies: CompiledWaypointPolicies): void {
    this.#authorizations.replace(policies.authorizations);
    this.#requestAuthentications.replace(policies.requestAuthentications);
    this.#rateLimits.replace(policies.rateLimits);
  }
}
