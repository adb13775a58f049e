/**
 * The DestinationRule traffic policies the control plane compiled per Service (`ambit.waypoint.DestinationPolicy`
 * over delta xDS), checked and kept by service key (`<namespace>/<hostname>`).
 *
 * Owns: the typed policy and turning decoded resources into it (a malformed one is NACKed, the last good kept: the
 * bookkeeping is ../service-resource-table.ts).
 * Must not know about: HTTP, sockets, how the policy is applied.
 */
import { ServiceResourceTable } from '../service-resource-table.ts';

export type LoadBalancerPolicy =
  | { simple: 'ROUND_ROBIN' | 'LEAST_REQUEST' | 'RANDOM' }
  | { simple: 'CONSISTENT_HASH'; hashOn: 'HTTP_HEADER' | 'HTTP_COOKIE' | 'SOURCE_IP' | 'QUERY_PARAMETER'; hashKey: string; minimumRingSize: number };

/** Limits of the pool to one Service; 0 means unlimited. */
export interface ConnectionPoolLimits {
  maxConnections: number;
  connectTimeoutMs: number;
  http1MaxPendingRequests: number;
  http2MaxRequests: number;
  maxRequestsPerConnection: number;
  maxRetries: number;
  idleTimeoutMs: number;
}

export interface OutlierDetectionSettings {
  /** 0: 5xx answers do not eject. */
  consecutive5xxErrors: number;
  /** 0: gateway errors (502, 503, 504, connect failures) do not eject on their own count. */
  consecutiveGatewayErrors: number;
  intervalMs: number;
  baseEjectionTimeMs: number;
  maxEjectionPercent: number;
}

export interface DestinationPolicy {
  /** `<namespace>/<hostname>` of the Service. */
  service: string;
  /** `<namespace>/<name>` of the DestinationRule. */
  rule: string;
  loadBalancer: LoadBalancerPolicy;
  connectionPool: ConnectionPoolLimits;
  outlierDetection?: OutlierDetectionSettings;
  /** `pods`: `<namespace>/<name>` of the pods each subset selects (the control plane matched the labels). */
  subsets: readonly { name: string; labels: Readonly<Record<string, string>>; pods: ReadonlySet<string> }[];
}

/** Envoy's default ring size for ring hash. */
export const DEFAULT_MINIMUM_RING_SIZE = 1024;
/** A ring bigger than this costs memory for no better spread (Envoy's maximum_ring_size default is 8M; ours is per waypoint). */
const MAXIMUM_RING_SIZE = 1 << 16;

interface DecodedPolicy {
  service?: string;
  rule?: string;
  loadBalancer?: { simple?: string; hashOn?: string; hashKey?: string; minimumRingSize?: number } | null;
  connectionPool?: Partial<ConnectionPoolLimits> | null;
  outlierDetection?: { consecutive_5xxErrors?: number; consecutive5xxErrors?: number; consecutiveGatewayErrors?: number; intervalMs?: number; baseEjectionTimeMs?: number; maxEjectionPercent?: number } | null;
  subsets?: { name?: string; labels?: Record<string, string>; pods?: string[] }[];
}

function loadBalancerFromXds(decoded: DecodedPolicy['loadBalancer']): LoadBalancerPolicy {
  const simple = decoded?.simple ?? 'UNSPECIFIED';
  switch (simple) {
    case 'UNSPECIFIED':
      return { simple: 'LEAST_REQUEST' };
    case 'ROUND_ROBIN':
    case 'LEAST_REQUEST':
    case 'RANDOM':
      return { simple };
    case 'CONSISTENT_HASH': {
      const hashOn = decoded?.hashOn;
      if (hashOn !== 'HTTP_HEADER' && hashOn !== 'HTTP_COOKIE' && hashOn !== 'SOURCE_IP' && hashOn !== 'QUERY_PARAMETER') throw new Error(`consistent hash on ${String(hashOn)}`);
      const hashKey = decoded?.hashKey ?? '';
      if (hashOn !== 'SOURCE_IP' && hashKey === '') throw new Error(`consistent hash on ${hashOn} without a name`);
      const ring = decoded?.minimumRingSize || DEFAULT_MINIMUM_RING_SIZE;
      if (ring > MAXIMUM_RING_SIZE) throw new Error(`minimum ring size ${ring} is above ${MAXIMUM_RING_SIZE}`);
      return { simple, hashOn, hashKey: hashOn === 'HTTP_HEADER' ? hashKey.toLowerCase() : hashKey, minimumRingSize: ring };
    }
    default:
      throw new Error(`unknown load balancer ${simple}`);
  }
}

function policyFromXds(decoded: DecodedPolicy): DestinationPolicy {
  if (!decoded.service) throw new Error('no service');
  const pool = decoded.connectionPool ?? {};
  const outlier = decoded.outlierDetection;
  const policy: DestinationPolicy = {
    service: decoded.service,
    rule: decoded.rule ?? '',
    loadBalancer: loadBalancerFromXds(decoded.loadBalancer),
    connectionPool: {
      maxConnections: pool.maxConnections ?? 0,
      connectTimeoutMs: pool.connectTimeoutMs ?? 0,
      http1MaxPendingRequests: pool.http1MaxPendingRequests ?? 0,
      http2MaxRequests: pool.http2MaxRequests ?? 0,
      maxRequestsPerConnection: pool.maxRequestsPerConnection ?? 0,
      maxRetries: pool.maxRetries ?? 0,
      idleTimeoutMs: pool.idleTimeoutMs ?? 0,
    },
    subsets: (decoded.subsets ?? []).map((subset) => ({ name: subset.name ?? '', labels: { ...subset.labels }, pods: new Set(subset.pods ?? []) })),
  };
  if (outlier) {
    const settings: OutlierDetectionSettings = {
      // protobufjs camel-cases `consecutive_5xx_errors` as consecutive_5xxErrors.
      consecutive5xxErrors: outlier.consecutive_5xxErrors ?? outlier.consecutive5xxErrors ?? 0,
      consecutiveGatewayErrors: outlier.consecutiveGatewayErrors ?? 0,
      intervalMs: outlier.intervalMs ?? 0,
      baseEjectionTimeMs: outlier.baseEjectionTimeMs ?? 0,
      maxEjectionPercent: outlier.maxEjectionPercent ?? 0,
    };
    if (settings.maxEjectionPercent > 100) throw new Error(`maxEjectionPercent ${settings.maxEjectionPercent} is above 100`);
    if (settings.baseEjectionTimeMs === 0) throw new Error('outlier detection without a base ejection time');
    policy.outlierDetection = settings;
  }
  return policy;
}

export class DestinationPolicyTable {
  readonly #table: ServiceResourceTable<DestinationPolicy>;

  constructor(onChange: (service: string) => void = () => {}) {
    this.#table = new ServiceResourceTable((resource) => {
      const policy = policyFromXds(resource as DecodedPolicy);
      return { service: policy.service, value: policy };
    }, onChange);
  }

  policyFor(serviceKey: string): DestinationPolicy | undefined {
    return this.#table.get(serviceKey);
  }

  /** The delta xDS handler for DESTINATION_POLICY_TYPE_URL. */
  get apply(): ServiceResourceTable<DestinationPolicy>['apply'] {
    return this.#table.apply;
  }

  view(): object {
    return Object.fromEntries([...this.#table.entries()].map(([service, policy]) => [service, { ...policy, subsets: policy.subsets.map((subset) => ({ ...subset, pods: [...subset.pods] })) }]));
  }
}
