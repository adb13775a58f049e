/**
 * Applies each Service's DestinationRule policy (policy-table.ts) to the requests the waypoint sends it: the pool
 * slot a request must hold (connection-pool.ts), which usable endpoint it goes to (load-balancer.ts, with ejected
 * endpoints left out: outlier-detection.ts) and what the answer says about that endpoint. Also the Envoy-named
 * metrics for ejections and overflows, and the config-dump view.
 *
 * Owns: per-Service traffic state (kept while the policy is unchanged but for its subsets' pods), the request's hash key, requests in flight
 * per endpoint. Must not know about: HTTP framing, routes, sockets, xDS.
 */
import type http from 'node:http';
import { Counter, Gauge, type Registry } from 'prom-client';
import { pickEndpoint, type PickedEndpoint } from '../../shared/mesh/load-balance.ts';
import { targetPortOf, type Service, type ServiceEndpoint } from '../../shared/mesh/service.ts';
import type { Workload } from '../../shared/mesh/workload.ts';
import { ConnectionPool } from './connection-pool.ts';
import { EndpointBalancer } from './load-balancer.ts';
import { OutlierDetector, type UpstreamOutcome } from './outlier-detection.ts';
import type { DestinationPolicy, DestinationPolicyTable } from './policy-table.ts';
import { WaypointError } from '../errors.ts';
import { ConnectionPoolOverflowError } from './connection-pool.ts';

/** What a consistent hash may be computed from. */
export interface HashSource {
  headers: http.IncomingHttpHeaders;
  /** The request target (`/path?query`). */
  url: string;
  sourceIp: string;
}

/** Chooses the endpoint among a Service's endpoints; the signature of shared/mesh/load-balance.ts pickEndpoint. */
export type EndpointChooser = (source: Workload, service: Service, endpoints: readonly ServiceEndpoint[], servicePort: number, vip: string) => PickedEndpoint;

export function endpointKey(workload: Workload): string {
  return workload.uid || `${workload.namespace}/${workload.name}`;
}

function cookieValue(header: string | undefined, name: string): string | undefined {
  if (header === undefined) return undefined;
  for (const part of header.split(';')) {
    const equals = part.indexOf('=');
    if (equals > 0 && part.slice(0, equals).trim() === name) return part.slice(equals + 1).trim();
  }
  return undefined;
}

function queryValue(url: string, name: string): string | undefined {
  const question = url.indexOf('?');
  if (question < 0) return undefined;
  const value = new URLSearchParams(url.slice(question + 1)).get(name);
  return value ?? undefined;
}

function addressOf(workload: Workload, v6: boolean): string | undefined {
  for (const address of workload.addresses) if (address.includes(':') === v6) return address;
  return undefined;
}

/** Whether two policies differ only in their subsets (whose pod lists change as pods come and go). */
function sameTrafficPolicy(a: DestinationPolicy, b: DestinationPolicy): boolean {
  return a.rule === b.rule && JSON.stringify([a.loadBalancer, a.connectionPool, a.outlierDetection]) === JSON.stringify([b.loadBalancer, b.connectionPool, b.outlierDetection]);
}

/** One Service's traffic state under one policy. */
export class ServiceTraffic {
  /** Replaced in place when only the subsets changed (forService), so pods coming and going keep the state. */
  policy: DestinationPolicy;
  readonly pool: ConnectionPool;
  readonly outliers: OutlierDetector | undefined;
  readonly #balancer: EndpointBalancer;
  readonly #inFlight = new Map<string, number>();
  #endpointCount = 0;

  constructor(policy: DestinationPolicy, onEject: (endpoint: string) => void) {
    this.policy = policy;
    this.pool = new ConnectionPool(policy.service, policy.connectionPool);
    this.outliers = policy.outlierDetection ? new OutlierDetector(policy.outlierDetection, { onEject }) : undefined;
    this.#balancer = new EndpointBalancer(policy.loadBalancer);
  }

  /** The request's consistent-hash key, or undefined (no hashing, or the request lacks it). */
  hashKey(request: HashSource): string | undefined {
    const lb = this.policy.loadBalancer;
    if (lb.simple !== 'CONSISTENT_HASH') return undefined;
    switch (lb.hashOn) {
      case 'HTTP_HEADER': {
        const value = request.headers[lb.hashKey];
        return Array.isArray(value) ? value.join(',') : value;
      }
      case 'HTTP_COOKIE':
        return cookieValue(request.headers.cookie, lb.hashKey);
      case 'QUERY_PARAMETER':
        return queryValue(request.url, lb.hashKey);
      case 'SOURCE_IP':
        return request.sourceIp;
    }
  }

  /**
   * An EndpointChooser for one request: among the endpoints pickEndpoint would accept (healthy, serving the port,
   * of the VIP's family) and not ejected, the one the load balancer picks.
   */
  chooser(hashKey: string | undefined): EndpointChooser {
    return (source, service, endpoints, servicePort, vip) => {
      const v6 = vip.includes(':');
      const keys: string[] = [];
      const picks: PickedEndpoint[] = [];
      let ejected = 0;
      const allowUnhealthy = service.loadBalancing?.healthPolicy === 'ALLOW_ALL';
      for (const endpoint of endpoints) {
        if (endpoint.workload.status === 'UNHEALTHY' && !allowUnhealthy) continue;
        const targetPort = targetPortOf(service, endpoint, servicePort);
        const address = addressOf(endpoint.workload, v6);
        if (targetPort === undefined || address === undefined) continue;
        const key = endpointKey(endpoint.workload);
        if (this.outliers?.isEjected(key)) {
          ejected++;
          continue;
        }
        keys.push(key);
        picks.push({ endpoint, address, targetPort });
      }
      this.#endpointCount = keys.length + ejected;
      if (picks.length === 0) {
        if (ejected > 0) throw new WaypointError('WAYPOINT_NO_HEALTHY_UPSTREAM', `no healthy upstream: service ${service.hostname}; ${ejected} endpoint${ejected === 1 ? '' : 's'} ejected by outlier detection`);
        // Nothing usable at all: pickEndpoint says why, as without a DestinationRule.
        return pickEndpoint(source, service, endpoints, servicePort, vip);
      }
      return picks[this.#balancer.choose(keys, (index) => this.#inFlight.get(keys[index]!) ?? 0, hashKey)]!;
    };
  }

  /** `<namespace>/<name>` of the pods of the named subset, or undefined when the rule defines no such subset. */
  subsetPods(name: string): ReadonlySet<string> | undefined {
    for (const subset of this.policy.subsets) if (subset.name === name) return subset.pods;
    return undefined;
  }

  /**
   * Admits one request: a DestinationRequest once it holds a pool slot (at once, or a promise while it waits), or
   * throws WaypointError WAYPOINT_UPSTREAM_OVERFLOW (503 UO) when the pool and its waiting room are full.
   * `subset`: the pods of the subset a VirtualService destination names; only they are chosen.
   */
  begin(request: HashSource, subset?: ReadonlySet<string>): DestinationRequest | Promise<DestinationRequest> {
    let waiting: Promise<void> | undefined;
    try {
      waiting = this.pool.acquire();
    } catch (error) {
      if (error instanceof ConnectionPoolOverflowError) throw new WaypointError('WAYPOINT_UPSTREAM_OVERFLOW', error.message, { cause: error });
      throw error;
    }
    const admitted = new DestinationRequest(this, this.hashKey(request), subset);
    return waiting === undefined ? admitted : waiting.then(() => admitted);
  }

  /** A request to `endpoint` started (LEAST_REQUEST counts these). */
  started(endpoint: Workload): void {
    const key = endpointKey(endpoint);
    this.#inFlight.set(key, (this.#inFlight.get(key) ?? 0) + 1);
  }

  /** A request to `endpoint` ended with `outcome` (a status, or a connect failure). */
  finished(endpoint: Workload, outcome: UpstreamOutcome | undefined): void {
    const key = endpointKey(endpoint);
    const count = (this.#inFlight.get(key) ?? 1) - 1;
    if (count > 0) this.#inFlight.set(key, count);
    else this.#inFlight.delete(key);
    if (outcome !== undefined) this.outliers?.report(key, outcome, this.#endpointCount);
  }
}

/** One admitted request: holds its pool slot until done(), chooses its endpoint once, reports the outcome. */
export class DestinationRequest {
  readonly #traffic: ServiceTraffic;
  #endpoint: Workload | undefined;
  #done = false;
  /** The EndpointChooser for Upstreams.open: the load balancer's pick among usable, non-ejected endpoints. */
  readonly choose: EndpointChooser;

  constructor(traffic: ServiceTraffic, hashKey: string | undefined, subset?: ReadonlySet<string>) {
    this.#traffic = traffic;
    const chooser = traffic.chooser(hashKey);
    this.choose = (source, service, all, servicePort, vip) => {
      // A subset: its pods only (none left: 503 UH, as Envoy's empty subset cluster).
      const endpoints = subset ? all.filter((endpoint) => subset.has(`${endpoint.workload.namespace}/${endpoint.workload.name}`)) : all;
      // A retry chooses again: the previous try's endpoint is no longer in flight for this request.
      if (this.#endpoint !== undefined) traffic.finished(this.#endpoint, undefined);
      this.#endpoint = undefined;
      const picked = chooser(source, service, endpoints, servicePort, vip);
      this.#endpoint = picked.endpoint.workload;
      traffic.started(this.#endpoint);
      return picked;
    };
  }

  /** A try that is being retried ended with `outcome`: outlier detection hears it, the endpoint is no longer in flight. */
  tryEnded(outcome: UpstreamOutcome): void {
    if (this.#done || this.#endpoint === undefined) return;
    this.#traffic.finished(this.#endpoint, outcome);
    this.#endpoint = undefined;
  }

  /** Releases the slot and, when an endpoint was chosen and `outcome` is known, tells outlier detection. Idempotent. */
  done(outcome: UpstreamOutcome | undefined): void {
    if (this.#done) return;
    this.#done = true;
    this.#traffic.pool.release();
    if (this.#endpoint !== undefined) this.#traffic.finished(this.#endpoint, outcome);
  }
}

export class DestinationTraffic {
  readonly #policies: DestinationPolicyTable;
  readonly #byService = new Map<string, ServiceTraffic>();
  readonly #ejections: Counter<'cluster_name'>;
  readonly #overflows: Counter<'cluster_name'>;

  constructor(policies: DestinationPolicyTable, registry: Registry) {
    this.#policies = policies;
    const byService = this.#byService;
    this.#ejections = new Counter({ name: 'envoy_cluster_outlier_detection_ejections_enforced_total', help: 'Endpoints ejected by outlier detection', labelNames: ['cluster_name'], registers: [registry] });
    this.#overflows = new Counter({ name: 'envoy_cluster_upstream_rq_pending_overflow', help: 'Requests refused 503 UO by a connection pool limit', labelNames: ['cluster_name'], registers: [registry] });
    new Gauge({
      name: 'envoy_cluster_outlier_detection_ejections_active',
      help: 'Endpoints ejected by outlier detection now',
      labelNames: ['cluster_name'],
      registers: [registry],
      collect() {
        this.reset();
        for (const [service, traffic] of byService) if (traffic.outliers) this.set({ cluster_name: service }, traffic.outliers.ejectedCount);
      },
    });
  }

  /** The traffic state for a Service (`<namespace>/<hostname>`), or undefined when no DestinationRule applies. */
  forService(serviceKey: string): ServiceTraffic | undefined {
    const policy = this.#policies.policyFor(serviceKey);
    if (policy === undefined) {
      this.#byService.delete(serviceKey);
      return undefined;
    }
    let traffic = this.#byService.get(serviceKey);
    if (traffic !== undefined && traffic.policy !== policy && sameTrafficPolicy(traffic.policy, policy)) {
      // Only a subset's pods changed: pool slots, ejections and the balancer's state stay.
      traffic.policy = policy;
    } else if (traffic?.policy !== policy) {
      traffic = new ServiceTraffic(policy, () => this.#ejections.inc({ cluster_name: serviceKey }));
      this.#byService.set(serviceKey, traffic);
    }
    return traffic;
  }

  /** Counts a 503 UO for the Service. */
  overflowed(serviceKey: string): void {
    this.#overflows.inc({ cluster_name: serviceKey });
  }

  view(): object {
    const view: Record<string, object> = {};
    for (const [service, traffic] of this.#byService) {
      view[service] = { rule: traffic.policy.rule, active: traffic.pool.active, pending: traffic.pool.pending, overflows: traffic.pool.overflows, ejected: traffic.outliers?.view() ?? [], ejectionsTotal: traffic.outliers?.ejectionsTotal ?? 0 };
    }
    return view;
  }
}
