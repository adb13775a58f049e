/**
 * Loads ambit's xDS `.proto` files (under `proto/`) at runtime with protobufjs: no code generation step.
 *
 * Owns: the one protobufjs Root for the xDS protos, the type URL constants, and lookups by type URL.
 * Must not know about: gRPC, connections, what the resources mean.
 */
import path from 'node:path';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';

export const PROTO_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), 'proto');

export const ADDRESS_TYPE_URL = 'type.googleapis.com/istio.workload.Address';
export const AUTHORIZATION_TYPE_URL = 'type.googleapis.com/istio.security.Authorization';
/** ambit's compiled HTTPRoutes per Service, for waypoints (proto/ambit/waypoint/routes.proto). */
export const HTTP_ROUTES_TYPE_URL = 'type.googleapis.com/ambit.waypoint.HttpRoutes';
/** ambit's compiled DestinationRule traffic policy per Service, for waypoints (proto/ambit/waypoint/destination.proto). */
export const DESTINATION_POLICY_TYPE_URL = 'type.googleapis.com/ambit.waypoint.DestinationPolicy';
/** ambit's L7 AuthorizationPolicy and RequestAuthentication for waypoints (proto/ambit/waypoint/policies.proto). */
export const HTTP_AUTHORIZATION_TYPE_URL = 'type.googleapis.com/ambit.waypoint.HttpAuthorization';
export const REQUEST_AUTHENTICATION_TYPE_URL = 'type.googleapis.com/ambit.waypoint.RequestAuthentication';
/** ambit's LocalRateLimitPolicy for waypoints (proto/ambit/waypoint/policies.proto). */
export const RATE_LIMIT_TYPE_URL = 'type.googleapis.com/ambit.waypoint.RateLimit';
export const DELTA_ADS_METHOD = '/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources';

const TYPE_URL_PREFIX = 'type.googleapis.com/';

/** Proto files loaded when present. The authorization proto is written by the policy module and may be absent. */
const PROTO_FILES = ['envoy/service/discovery/v3/discovery.proto', 'istio/workload/workload.proto', 'istio/security/authorization.proto', 'ambit/waypoint/routes.proto', 'ambit/waypoint/policies.proto', 'ambit/waypoint/destination.proto'];

/** Options for turning decoded messages into plain objects: enums as names, 64-bit ints as numbers, bytes as Buffers. */
export const TO_OBJECT_OPTIONS: protobuf.IConversionOptions = { enums: String, longs: Number, bytes: Buffer, defaults: true, arrays: true, objects: true, oneofs: true };

let cachedRoot: protobuf.Root | undefined;

/** The protobufjs Root holding every xDS message ambit knows. Loaded once, synchronously, on first use. */
export function xdsProtoRoot(): protobuf.Root {
  if (cachedRoot) return cachedRoot;
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => (path.isAbsolute(target) ? target : path.join(PROTO_DIR, target));
  const files = PROTO_FILES.filter((file) => existsSync(path.join(PROTO_DIR, file)));
  root.loadSync(files, { keepCase: false });
  root.resolveAll();
  cachedRoot = root;
  return root;
}

/** The message type a type URL names (`type.googleapis.com/<full name>`), or undefined when this build lacks it. */
export function typeForUrl(typeUrl: string, root: protobuf.Root = xdsProtoRoot()): protobuf.Type | undefined {
  const name = typeUrl.startsWith(TYPE_URL_PREFIX) ? typeUrl.slice(TYPE_URL_PREFIX.length) : typeUrl;
  try {
    return root.lookupType(name);
  } catch {
    return undefined;
  }
}

export function messageType(fullName: string): protobuf.Type {
  return xdsProtoRoot().lookupType(fullName);
}
