/**
 * TypeScript shapes of the decoded xDS messages, as protobufjs's `toObject(..., TO_OBJECT_OPTIONS)` returns them:
 * camelCase field names, enums as their names, bytes as Buffers, every field present (proto3 defaults filled in).
 *
 * Owns: the types only. Must not know about: how they are fetched or used.
 */

export type TunnelProtocolName = 'NONE' | 'HBONE' | 'LEGACY_ISTIO_MTLS';
export type WorkloadStatusName = 'HEALTHY' | 'UNHEALTHY';
export type WorkloadTypeName = 'DEPLOYMENT' | 'CRONJOB' | 'POD' | 'JOB';
export type NetworkModeName = 'STANDARD' | 'HOST_NETWORK';

export interface XdsPort {
  servicePort: number;
  targetPort: number;
  /** Istio's Port.app_protocol, an AppProtocol name (UNKNOWN when unset). */
  appProtocol?: string;
}

export interface XdsPortList {
  ports: XdsPort[];
}

export interface XdsNetworkAddress {
  network: string;
  /** 4 bytes (IPv4) or 16 bytes (IPv6). */
  address: Buffer;
}

export interface XdsNamespacedHostname {
  namespace: string;
  hostname: string;
}

export interface XdsGatewayAddress {
  hostname?: XdsNamespacedHostname | null;
  address?: XdsNetworkAddress | null;
  /** Which member of the `destination` oneof is set. */
  destination?: 'hostname' | 'address';
  hboneMtlsPort: number;
}

export interface XdsLocality {
  region: string;
  zone: string;
  subzone: string;
}

export interface XdsWorkload {
  uid: string;
  name: string;
  namespace: string;
  addresses: Buffer[];
  hostname: string;
  network: string;
  tunnelProtocol: TunnelProtocolName;
  trustDomain: string;
  serviceAccount: string;
  waypoint?: XdsGatewayAddress | null;
  networkGateway?: XdsGatewayAddress | null;
  node: string;
  canonicalName: string;
  canonicalRevision: string;
  workloadType: WorkloadTypeName;
  workloadName: string;
  nativeTunnel: boolean;
  services: Record<string, XdsPortList>;
  authorizationPolicies: string[];
  status: WorkloadStatusName;
  clusterId: string;
  locality?: XdsLocality | null;
  networkMode: NetworkModeName;
  extensions?: XdsExtension[];
}

export interface XdsExtension {
  name: string;
  /** google.protobuf.Any as protobufjs decodes it (its bundled Any keeps the field name `type_url`). */
  config?: { type_url?: string; value: Uint8Array } | null;
}

export interface XdsLoadBalancing {
  routingPreference: string[];
  mode: string;
  healthPolicy: string;
}

export interface XdsService {
  name: string;
  namespace: string;
  hostname: string;
  addresses: XdsNetworkAddress[];
  ports: XdsPort[];
  subjectAltNames: string[];
  waypoint?: XdsGatewayAddress | null;
  loadBalancing?: XdsLoadBalancing | null;
  ipFamilies: string;
  /** Takes priority in hostname lookups outside its namespace (istiod sets it for Kubernetes Services). */
  canonical: boolean;
  ingressUseWaypoint: boolean;
}

/** `type.googleapis.com/istio.workload.Address`: exactly one of `workload` and `service` is set. */
export interface XdsAddress {
  workload?: XdsWorkload | null;
  service?: XdsService | null;
  type?: 'workload' | 'service';
}

/** The subset of envoy.config.core.v3.Node ambit sends and reads. */
export interface XdsNode {
  id: string;
  cluster?: string;
  userAgentName?: string;
  userAgentVersion?: string;
  clientFeatures?: string[];
}

export interface XdsAny {
  typeUrl: string;
  value: Buffer | Uint8Array;
}

export interface XdsResource {
  name: string;
  version: string;
  resource?: XdsAny | null;
  aliases?: string[];
}

export interface DeltaDiscoveryRequest {
  node?: XdsNode | null;
  typeUrl: string;
  resourceNamesSubscribe?: string[];
  resourceNamesUnsubscribe?: string[];
  initialResourceVersions?: Record<string, string>;
  responseNonce?: string;
  errorDetail?: { code: number; message: string } | null;
}

export interface DeltaDiscoveryResponse {
  systemVersionInfo?: string;
  resources?: XdsResource[];
  typeUrl: string;
  removedResources?: string[];
  nonce: string;
}

/** IP text -> the raw bytes Istio's protos carry (4 or 16 bytes). */
export function ipToBytes(ip: string): Buffer {
  if (ip.includes(':')) {
    const [head = '', tail = ''] = ip.split('::');
    const parse = (part: string) => (part ? part.split(':') : []);
    let groups = parse(head);
    const tailGroups = parse(tail);
    if (ip.includes('::')) groups = [...groups, ...new Array<string>(8 - groups.length - tailGroups.length).fill('0'), ...tailGroups];
    if (groups.length !== 8) throw new Error(`not an IPv6 address: ${ip}`);
    const bytes = Buffer.alloc(16);
    groups.forEach((group, index) => bytes.writeUInt16BE(Number.parseInt(group, 16), index * 2));
    return bytes;
  }
  const parts = ip.split('.').map(Number);
  if (parts.length !== 4 || parts.some((part) => !Number.isInteger(part) || part < 0 || part > 255)) throw new Error(`not an IPv4 address: ${ip}`);
  return Buffer.from(parts);
}

/** Raw IP bytes (4 or 16) -> text, the inverse of `ipToBytes`. */
export function bytesToIp(bytes: Uint8Array): string {
  if (bytes.length === 4) return Array.from(bytes).join('.');
  if (bytes.length === 16) {
    const groups: string[] = [];
    for (let index = 0; index < 16; index += 2) groups.push(((bytes[index]! << 8) | bytes[index + 1]!).toString(16));
    // Compress the longest run of zero groups, as the canonical text form does.
    let best = -1;
    let bestLength = 0;
    for (let start = 0; start < 8; start++) {
      let length = 0;
      while (start + length < 8 && groups[start + length] === '0') length++;
      if (length > bestLength && length > 1) [best, bestLength] = [start, length];
    }
    if (best < 0) return groups.join(':');
    return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLength).join(':')}`;
  }
  throw new Error(`an IP address has 4 or 16 bytes, got ${bytes.length}`);
}
