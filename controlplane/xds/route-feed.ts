/**
 * Serves `type.googleapis.com/ambit.waypoint.HttpRoutes` (one per Service with routes attached) from the compiled
 * HTTPRoutes and GRPCRoutes (controlplane/model/http-routes.ts, grpc-routes.ts).
 *
 * Owns: encoding and replacing the served set. Must not know about: how routes compile.
 */
import type protobuf from 'protobufjs';
import { HTTP_ROUTES_TYPE_URL, typeForUrl } from '../../shared/xds/protos.ts';
import type { ResourceCache } from './resource-cache.ts';

export class RouteFeed {
  readonly #cache: ResourceCache;
  readonly #type: protobuf.Type;
  #names = new Set<string>();

  constructor(cache: ResourceCache) {
    this.#cache = cache;
    const type = typeForUrl(HTTP_ROUTES_TYPE_URL);
    if (!type) throw new Error('ambit.waypoint.HttpRoutes is not loaded (shared/xds/proto/ambit/waypoint/routes.proto)');
    this.#type = type;
    cache.declareType(HTTP_ROUTES_TYPE_URL);
  }

  /** Makes the served set exactly `routes` (unchanged ones keep their version and are not re-pushed). */
  replace(routes: readonly { name: string; resource: object }[]): void {
    const encoded = new Map<string, Uint8Array>();
    for (const route of routes) encoded.set(route.name, this.#type.encode(this.#type.fromObject(route.resource as Record<string, unknown>)).finish());
    for (const [name, bytes] of encoded) this.#cache.set(HTTP_ROUTES_TYPE_URL, name, bytes);
    for (const name of this.#names) if (!encoded.has(name)) this.#cache.delete(HTTP_ROUTES_TYPE_URL, name);
    this.#names = new Set(encoded.keys());
  }
}
