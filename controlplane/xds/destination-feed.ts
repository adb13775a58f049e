/**
 * Serves `type.googleapis.com/ambit.waypoint.DestinationPolicy` (one per Service a DestinationRule applies to) from
 * the compiled rules (controlplane/model/destination-rules.ts).
 *
 * Owns: encoding and replacing the served set. Must not know about: how rules compile.
 */
import type protobuf from 'protobufjs';
import { DESTINATION_POLICY_TYPE_URL, typeForUrl } from '../../shared/xds/protos.ts';
import type { CompiledDestinationPolicy } from '../model/destination-rules.ts';
import type { ResourceCache } from './resource-cache.ts';

export class DestinationFeed {
  readonly #cache: ResourceCache;
  readonly #type: protobuf.Type;
  #names = new Set<string>();

  constructor(cache: ResourceCache) {
    this.#cache = cache;
    const type = typeForUrl(DESTINATION_POLICY_TYPE_URL);
    if (!type) throw new Error('ambit.waypoint.DestinationPolicy is not loaded (shared/xds/proto/ambit/waypoint/destination.proto)');
    this.#type = type;
    cache.declareType(DESTINATION_POLICY_TYPE_URL);
  }

  /** Makes the served set exactly `policies` (unchanged ones keep their version and are not re-pushed). */
  replace(policies: readonly CompiledDestinationPolicy[]): void {
    const encoded = new Map<string, Uint8Array>();
    for (const policy of policies) encoded.set(policy.name, this.#type.encode(this.#type.fromObject(policy.resource)).finish());
    for (const [name, bytes] of encoded) this.#cache.set(DESTINATION_POLICY_TYPE_URL, name, bytes);
    for (const name of this.#names) if (!encoded.has(name)) this.#cache.delete(DESTINATION_POLICY_TYPE_URL, name);
    this.#names = new Set(encoded.keys());
  }
}
