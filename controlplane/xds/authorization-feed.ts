/**
 * Serves `type.googleapis.com/istio.security.Authorization` resources: the policy compiler (shared/policy, written
 * separately) produces them; this feed encodes them with `istio/security/authorization.proto` and puts them in the
 * xDS resource cache. Until that proto is present the type URL is served with an empty set.
 *
 * Owns: encoding compiled policies and replacing the served set. Must not know about: how policies compile.
 */
import type protobuf from 'protobufjs';
import { AUTHORIZATION_TYPE_URL, typeForUrl } from '../../shared/xds/protos.ts';
import type { ResourceCache } from './resource-cache.ts';

export interface CompiledAuthorization {
  /** Istio names them `<namespace>/<policy name>`. */
  name: string;
  /** What protobufjs's `fromObject` takes for an istio.security.Authorization (camelCase fields, enums by name). */
  resource: object;
}

export class AuthorizationFeed {
  readonly #cache: ResourceCache;
  readonly #type: protobuf.Type | undefined;
  #names = new Set<string>();

  constructor(cache: ResourceCache) {
    this.#cache = cache;
    this.#type = typeForUrl(AUTHORIZATION_TYPE_URL);
    cache.declareType(AUTHORIZATION_TYPE_URL);
  }

  /** Whether authorization.proto is loaded (else every replace is refused and the set stays empty). */
  get available(): boolean {
    return this.#type !== undefined;
  }

  /** Makes the served set exactly `policies` (unchanged ones keep their version and are not re-pushed). */
  replace(policies: CompiledAuthorization[]): void {
    if (!this.#type) {
      if (policies.length > 0) throw new Error('istio.security.Authorization is not available: shared/xds/proto/istio/security/authorization.proto is missing');
      return;
    }
    const next = new Set<string>();
    // Encode everything first: a policy that cannot be encoded leaves the served set as it was.
    const encoded = new Map<string, Uint8Array>();
    for (const policy of policies) {
      try {
        encoded.set(policy.name, this.#type.encode(this.#type.fromObject(policy.resource)).finish());
      } catch (error) {
        throw new Error(`authorization ${policy.name} cannot be encoded: ${(error as Error).message}`, { cause: error });
      }
    }
    for (const [name, bytes] of encoded) {
      next.add(name);
      this.#cache.set(AUTHORIZATION_TYPE_URL, name, bytes);
    }
    for (const name of this.#names) if (!next.has(name)) this.#cache.delete(AUTHORIZATION_TYPE_URL, name);
    this.#names = next;
  }
}
