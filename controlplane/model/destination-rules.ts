/**
 * DestinationRules (networking.istio.io/v1) compiled into one `ambit.waypoint.DestinationPolicy` per Service
 * (shared/xds/proto/ambit/waypoint/destination.proto) for waypoints: `host` resolved to a Service (short name in the
 * rule's namespace, `name.namespace`, or the FQDN; `exportTo` ignored: every waypoint gets every rule), the
 * trafficPolicy's loadBalancer, connectionPool and outlierDetection with Istio's defaults filled in, subsets kept
 * with the pods each selects (`<namespace>/<name>`: waypoints get no pod labels; recompiled when pods change).
 *
 * Every field is checked as Istio's schema would: an unknown field or a bad value is reported with the field's
 * path (`spec.trafficPolicy.loadBalancer.simple: must be one of ...`) and the rule is not served (never half
 * applied); a field Istio has but ambit does not implement at the waypoint (tls, portLevelSettings, ...) is
 * refused the same way, never silently ignored. Two rules for one host: the oldest wins (as istiod merges them
 * only for subsets), the other is reported.
 *
 * Owns: validation, host resolution, defaults and the resource shape.
 * Must not know about: encoding, the xDS server, how waypoints apply the policy.
 */
import { fields, Invalid, isMapping } from './strict-fields.ts';
import type { K8sObject, PodObject } from '../../shared/k8s/objects.ts';
import type { ObjectStore } from '../store.ts';
import { namespaceOf, type ServiceObject } from './kube-types.ts';
import { serviceHostname } from './service.ts';

/** One reason a DestinationRule is not served, with the path of the field to fix. */
export interface DestinationRuleProblem {
  /** `<namespace>/<name>` of the DestinationRule. */
  rule: string;
  /** e.g. `spec.trafficPolicy.outlierDetection.interval`; empty for the whole rule. */
  path: string;
  message: string;
}

export interface CompiledDestinationPolicy {
  /** `<namespace>/<hostname>` of the Service. */
  name: string;
  /** protobufjs `fromObject` input for ambit.waypoint.DestinationPolicy. */
  resource: {
    service: string;
    rule: string;
    loadBalancer: { simple: string; hashOn?: string; hashKey?: string; minimumRingSize?: number };
    connectionPool: Record<string, number>;
    outlierDetection?: { consecutive_5xxErrors: number; consecutiveGatewayErrors: number; intervalMs: number; baseEjectionTimeMs: number; maxEjectionPercent: number };
    subsets: { name: string; labels: Record<string, string>; pods: string[] }[];
  };
}

/** Istio's outlierDetection defaults (networking/v1alpha3/destination_rule.proto). */
const OUTLIER_DEFAULTS = { consecutive5xxErrors: 5, intervalMs: 10_000, baseEjectionTimeMs: 30_000, maxEjectionPercent: 10 };





function uint(value: unknown, path: string, max = 0xffffffff): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > max) throw new Invalid(path, `must be an integer from 0 to ${max}, not ${JSON.stringify(value)}`);
  return value;
}

function text(value: unknown, path: string): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || value === '') throw new Invalid(path, `must be a non-empty string, not ${JSON.stringify(value)}`);
  return value;
}

const DURATION_UNITS: Record<string, number> = { h: 3_600_000, m: 60_000, s: 1000, ms: 1, us: 0.001, µs: 0.001, ns: 0.000001 };

/** Istio's duration strings (`1s`, `100ms`, `1m30s`, `1.5s`) in milliseconds; at least 1 ms, as Istio requires. */
export function durationMs(value: unknown, path: string): number | undefined {
  if (value === undefined) return undefined;
  const form = 'a duration such as "30s", "100ms" or "1m30s"';
  if (typeof value !== 'string' || !/^(\d+(\.\d+)?(h|m|s|ms|us|µs|ns))+$/.test(value)) throw new Invalid(path, `must be ${form}, not ${JSON.stringify(value)}`);
  let total = 0;
  for (const match of value.matchAll(/(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns)/g)) total += Number(match[1]) * DURATION_UNITS[match[2]!]!;
  if (total < 1) throw new Invalid(path, `must be at least 1ms, not ${value}`);
  if (total > 0xffffffff) throw new Invalid(path, `is too long: ${value}`);
  return Math.round(total);
}

const SIMPLE = ['UNSPECIFIED', 'LEAST_CONN', 'RANDOM', 'PASSTHROUGH', 'ROUND_ROBIN', 'LEAST_REQUEST'];

function loadBalancer(value: unknown, path: string): CompiledDestinationPolicy['resource']['loadBalancer'] {
  const lb = fields(value, path, ['simple', 'consistentHash'], ['localityLbSetting', 'warmupDurationSecs', 'warmup']);
  if (lb.simple !== undefined && lb.consistentHash !== undefined) throw new Invalid(path, 'set simple or consistentHash, not both');
  if (lb.consistentHash === undefined) {
    const simple = lb.simple ?? 'UNSPECIFIED';
    if (typeof simple !== 'string' || !SIMPLE.includes(simple)) throw new Invalid(`${path}.simple`, `must be one of ${SIMPLE.join(', ')} (got ${JSON.stringify(simple)})`);
    if (simple === 'PASSTHROUGH') throw new Invalid(`${path}.simple`, 'PASSTHROUGH is not supported by ambit waypoints (the waypoint always picks an endpoint)');
    // LEAST_CONN is Istio's deprecated name of LEAST_REQUEST.
    return { simple: simple === 'LEAST_CONN' ? 'LEAST_REQUEST' : simple };
  }
  const hashPath = `${path}.consistentHash`;
  const hash = fields(lb.consistentHash, hashPath, ['httpHeaderName', 'httpCookie', 'useSourceIp', 'httpQueryParameterName', 'ringHash', 'minimumRingSize'], ['maglev']);
  const keys = ['httpHeaderName', 'httpCookie', 'useSourceIp', 'httpQueryParameterName'].filter((key) => hash[key] !== undefined);
  if (keys.length !== 1) throw new Invalid(hashPath, `set exactly one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName (got ${keys.length === 0 ? 'none' : keys.join(', ')})`);
  let minimumRingSize = uint(hash.minimumRingSize, `${hashPath}.minimumRingSize`, 1 << 16);
  if (hash.ringHash !== undefined) {
    const ring = fields(hash.ringHash, `${hashPath}.ringHash`, ['minimumRingSize']);
    minimumRingSize = uint(ring.minimumRingSize, `${hashPath}.ringHash.minimumRingSize`, 1 << 16) ?? minimumRingSize;
  }
  const ring = minimumRingSize ? { minimumRingSize } : {};
  if (hash.httpHeaderName !== undefined) return { simple: 'CONSISTENT_HASH', hashOn: 'HTTP_HEADER', hashKey: text(hash.httpHeaderName, `${hashPath}.httpHeaderName`)!.toLowerCase(), ...ring };
  if (hash.httpQueryParameterName !== undefined) return { simple: 'CONSISTENT_HASH', hashOn: 'QUERY_PARAMETER', hashKey: text(hash.httpQueryParameterName, `${hashPath}.httpQueryParameterName`)!, ...ring };
  if (hash.useSourceIp !== undefined) {
    if (hash.useSourceIp !== true) throw new Invalid(`${hashPath}.useSourceIp`, `must be true when set, not ${JSON.stringify(hash.useSourceIp)}`);
    return { simple: 'CONSISTENT_HASH', hashOn: 'SOURCE_IP', hashKey: '', ...ring };
  }
  const cookie = fields(hash.httpCookie, `${hashPath}.httpCookie`, ['name', 'path', 'ttl']);
  const name = text(cookie.name, `${hashPath}.httpCookie.name`);
  if (name === undefined) throw new Invalid(`${hashPath}.httpCookie.name`, 'required field is missing');
  text(cookie.path, `${hashPath}.httpCookie.path`);
  if (cookie.ttl !== undefined && cookie.ttl !== '0s') throw new Invalid(`${hashPath}.httpCookie.ttl`, 'generating the cookie (a ttl) is not supported by ambit waypoints yet: leave ttl out and let the application set the cookie');
  return { simple: 'CONSISTENT_HASH', hashOn: 'HTTP_COOKIE', hashKey: name, ...ring };
}

function connectionPool(value: unknown, path: string): Record<string, number> {
  const pool = fields(value, path, ['tcp', 'http']);
  const result: Record<string, number> = {};
  const set = (key: string, number: number | undefined): void => {
    if (number !== undefined) result[key] = number;
  };
  if (pool.tcp !== undefined) {
    const tcp = fields(pool.tcp, `${path}.tcp`, ['maxConnections', 'connectTimeout', 'idleTimeout'], ['tcpKeepalive', 'maxConnectionDuration']);
    set('maxConnections', uint(tcp.maxConnections, `${path}.tcp.maxConnections`));
    set('connectTimeoutMs', durationMs(tcp.connectTimeout, `${path}.tcp.connectTimeout`));
    set('idleTimeoutMs', durationMs(tcp.idleTimeout, `${path}.tcp.idleTimeout`));
  }
  if (pool.http !== undefined) {
    const http = fields(pool.http, `${path}.http`, ['http1MaxPendingRequests', 'http2MaxRequests', 'maxRequestsPerConnection', 'maxRetries', 'idleTimeout'], ['h2UpgradePolicy', 'useClientProtocol', 'maxConcurrentStreams']);
    set('http1MaxPendingRequests', uint(http.http1MaxPendingRequests, `${path}.http.http1MaxPendingRequests`));
    set('http2MaxRequests', uint(http.http2MaxRequests, `${path}.http.http2MaxRequests`));
    set('maxRequestsPerConnection', uint(http.maxRequestsPerConnection, `${path}.http.maxRequestsPerConnection`));
    set('maxRetries', uint(http.maxRetries, `${path}.http.maxRetries`));
    set('idleTimeoutMs', durationMs(http.idleTimeout, `${path}.http.idleTimeout`));
  }
  return result;
}

function outlierDetection(value: unknown, path: string): NonNullable<CompiledDestinationPolicy['resource']['outlierDetection']> {
  const outlier = fields(value, path, ['consecutive5xxErrors', 'consecutiveGatewayErrors', 'interval', 'baseEjectionTime', 'maxEjectionPercent'], ['splitExternalLocalOriginErrors', 'consecutiveLocalOriginFailures', 'minHealthPercent', 'consecutiveErrors']);
  return {
    consecutive_5xxErrors: uint(outlier.consecutive5xxErrors, `${path}.consecutive5xxErrors`) ?? OUTLIER_DEFAULTS.consecutive5xxErrors,
    consecutiveGatewayErrors: uint(outlier.consecutiveGatewayErrors, `${path}.consecutiveGatewayErrors`) ?? 0,
    intervalMs: durationMs(outlier.interval, `${path}.interval`) ?? OUTLIER_DEFAULTS.intervalMs,
    baseEjectionTimeMs: durationMs(outlier.baseEjectionTime, `${path}.baseEjectionTime`) ?? OUTLIER_DEFAULTS.baseEjectionTimeMs,
    maxEjectionPercent: uint(outlier.maxEjectionPercent, `${path}.maxEjectionPercent`, 100) ?? OUTLIER_DEFAULTS.maxEjectionPercent,
  };
}

const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;

/** `<namespace>/<name>` of the pods the Service selects whose labels also carry the subset's, sorted. */
function subsetPods(store: ObjectStore, service: ServiceObject, labels: Record<string, string>): string[] {
  const selector = service.spec?.selector;
  if (!selector || Object.keys(selector).length === 0) return [];
  const namespace = namespaceOf(service);
  const wanted = { ...selector, ...labels };
  const pods: string[] = [];
  for (const pod of store.list<PodObject>('Pod')) {
    if (namespaceOf(pod) !== namespace) continue;
    const podLabels = pod.metadata.labels ?? {};
    if (Object.entries(wanted).every(([key, value]) => podLabels[key] === value)) pods.push(`${namespace}/${pod.metadata.name}`);
  }
  return pods.sort();
}

function subsets(value: unknown, path: string): { name: string; labels: Record<string, string> }[] {
  if (!Array.isArray(value)) throw new Invalid(path, 'must be a list');
  const names = new Set<string>();
  return value.map((item, index) => {
    const at = `${path}[${index}]`;
    const subset = fields(item, at, ['name', 'labels'], ['trafficPolicy']);
    const name = text(subset.name, `${at}.name`);
    if (name === undefined) throw new Invalid(`${at}.name`, 'required field is missing');
    if (names.has(name)) throw new Invalid(`${at}.name`, `duplicate subset name ${name}`);
    names.add(name);
    const labels: Record<string, string> = {};
    if (subset.labels !== undefined) {
      if (!isMapping(subset.labels)) throw new Invalid(`${at}.labels`, 'must be a map of label names to values');
      for (const [key, labelValue] of Object.entries(subset.labels)) {
        if (typeof labelValue !== 'string' || !LABEL_VALUE.test(labelValue) || labelValue.length > 63) throw new Invalid(`${at}.labels.${key}`, `must be a label value, not ${JSON.stringify(labelValue)}`);
        labels[key] = labelValue;
      }
    }
    return { name, labels };
  });
}

interface DestinationRuleObject extends K8sObject {
  metadata: K8sObject['metadata'] & { name: string; creationTimestamp?: string };
  spec?: unknown;
}

/** The Service a rule's `host` names in the rule's namespace, as `<namespace>/<name>`; a problem otherwise. */
function hostService(host: string, namespace: string, clusterDomain: string): { namespace: string; name: string } {
  if (host.includes('*')) throw new Invalid('spec.host', `wildcard hosts are not supported by ambit waypoints yet (got ${host})`);
  const suffix = `.svc.${clusterDomain}`;
  const trimmed = host.endsWith(suffix) ? host.slice(0, -suffix.length) : host;
  const parts = trimmed.split('.');
  if (parts.length === 1) return { namespace, name: parts[0]! };
  if (parts.length === 2) return { namespace: parts[1]!, name: parts[0]! };
  throw new Invalid('spec.host', `${host} is not a Service name (short name, name.namespace, or name.namespace.svc.${clusterDomain}); ServiceEntry hosts are not supported yet`);
}

/** Compiles every DestinationRule in the store; problems go to `onProblem` (the rule is then not served). */
export function compileDestinationRules(store: ObjectStore, clusterDomain: string, onProblem: (problem: DestinationRuleProblem) => void): CompiledDestinationPolicy[] {
  const rules = store.list<DestinationRuleObject>('DestinationRule').sort((a, b) => {
    const created = (a.metadata.creationTimestamp ?? '').localeCompare(b.metadata.creationTimestamp ?? '');
    return created || `${namespaceOf(a)}/${a.metadata.name}`.localeCompare(`${namespaceOf(b)}/${b.metadata.name}`);
  });
  const byService = new Map<string, CompiledDestinationPolicy>();
  for (const object of rules) {
    const namespace = namespaceOf(object);
    const ruleKey = `${namespace}/${object.metadata.name}`;
    try {
      const spec = fields(object.spec, 'spec', ['host', 'trafficPolicy', 'subsets', 'exportTo'], ['workloadSelector']);
      const host = text(spec.host, 'spec.host');
      if (host === undefined) throw new Invalid('spec.host', 'required field is missing');
      const target = hostService(host, namespace, clusterDomain);
      const service = store.get<ServiceObject>('Service', `${target.namespace}/${target.name}`);
      if (!service) throw new Invalid('spec.host', `no Service ${target.namespace}/${target.name} for host ${host}`);
      const key = `${target.namespace}/${serviceHostname(service, clusterDomain)}`;
      if (spec.exportTo !== undefined && !Array.isArray(spec.exportTo)) throw new Invalid('spec.exportTo', 'must be a list');
      const policy = spec.trafficPolicy === undefined ? {} : fields(spec.trafficPolicy, 'spec.trafficPolicy', ['loadBalancer', 'connectionPool', 'outlierDetection'], ['tls', 'portLevelSettings', 'tunnel', 'proxyProtocol']);
      const resource: CompiledDestinationPolicy['resource'] = {
        service: key,
        rule: ruleKey,
        loadBalancer: policy.loadBalancer === undefined ? { simple: 'UNSPECIFIED' } : loadBalancer(policy.loadBalancer, 'spec.trafficPolicy.loadBalancer'),
        connectionPool: policy.connectionPool === undefined ? {} : connectionPool(policy.connectionPool, 'spec.trafficPolicy.connectionPool'),
        subsets: spec.subsets === undefined ? [] : subsets(spec.subsets, 'spec.subsets').map((subset) => ({ ...subset, pods: subsetPods(store, service, subset.labels) })),
      };
      if (policy.outlierDetection !== undefined) resource.outlierDetection = outlierDetection(policy.outlierDetection, 'spec.trafficPolicy.outlierDetection');
      const earlier = byService.get(key);
      if (earlier) throw new Invalid('spec.host', `DestinationRule ${earlier.resource.rule} (older) already applies to ${key}; only the oldest rule for a host is served`);
      byService.set(key, { name: key, resource });
    } catch (error) {
      if (!(error instanceof Invalid)) throw error;
      onProblem({ rule: ruleKey, path: error.path, message: error.message });
    }
  }
  return [...byService.values()];
}
