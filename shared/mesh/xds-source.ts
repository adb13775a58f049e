/**
 * Feeds MeshState (and the policy store) from the control plane over delta xDS: `istio.workload.Address`
 * resources become Workloads and Services, `istio.security.Authorization` resources become policies.
 *
 * Owns: translating decoded xDS resources into the agent's model, and readiness on first sync. The stream, ACKs,
 * NACKs, reconnects and stale-config-keeps-serving are the generic client's (shared/xds/client.ts).
 * Must not know about: sockets, capture, certificates.
 */
import { ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL } from '../xds/protos.ts';
import { XdsClient, controlPlaneIdentity, type XdsClientStatus, type XdsHandler, type XdsRejection, type XdsResourceUpdate } from '../xds/client.ts';
import { enrollmentFromExtensions } from '../xds/enrollment-extension.ts';
import { bytesToIp, type XdsAddress, type XdsPort, type XdsService, type XdsWorkload } from '../xds/types.ts';
import type { MeshState } from './mesh-state.ts';
import { serviceKey, type IpFamilies, type LoadBalancing, type LoadBalancingMode, type LoadBalancingScope, type Service, type ServicePort } from './service.ts';
import type { Workload } from './workload.ts';

export interface XdsSourceOptions {
  address: string;
  rootCertPem: string;
  token: string | (() => string | Promise<string>);
  nodeName: string;
  trustDomain: string;
  state: MeshState;
  /** Policies, keyed by resource name; called with each change. */
  onAuthorization?: (added: XdsResourceUpdate<unknown>[], removed: string[]) => void | { rejected?: XdsRejection[] };
  onStatus?: (status: XdsClientStatus) => void;
  onNack?: (typeUrl: string, message: string) => void;
  /** More resource types on the same stream (the waypoint's routes), by type URL. */
  handlers?: Record<string, XdsHandler>;
}

function portsFromXds(ports: readonly XdsPort[] | undefined): ServicePort[] {
  const result: ServicePort[] = [];
  for (const port of ports ?? []) {
    if (!Number.isInteger(port.servicePort) || port.servicePort <= 0 || port.servicePort > 65535) throw new Error(`service port ${port.servicePort} is not a TCP port`);
    if (!Number.isInteger(port.targetPort) || port.targetPort < 0 || port.targetPort > 65535) throw new Error(`target port ${port.targetPort} is not a TCP port`);
    result.push(port.appProtocol && port.appProtocol !== 'UNKNOWN' ? { servicePort: port.servicePort, targetPort: port.targetPort, appProtocol: port.appProtocol } : { servicePort: port.servicePort, targetPort: port.targetPort });
  }
  return result;
}

const SCOPES: ReadonlySet<string> = new Set<LoadBalancingScope>(['REGION', 'ZONE', 'SUBZONE', 'NODE', 'CLUSTER', 'NETWORK']);
const MODES: ReadonlySet<string> = new Set<LoadBalancingMode>(['UNSPECIFIED_MODE', 'STRICT', 'FAILOVER', 'PASSTHROUGH']);
const IP_FAMILIES: ReadonlySet<string> = new Set<IpFamilies>(['AUTOMATIC', 'IPV4_ONLY', 'IPV6_ONLY', 'DUAL']);

function loadBalancingFromXds(service: XdsService): LoadBalancing | undefined {
  const lb = service.loadBalancing;
  if (!lb) return undefined;
  // An enum value this build does not know arrives as a number: refuse it rather than guess what it meant.
  const scopes = lb.routingPreference.map((scope) => {
    if (!SCOPES.has(String(scope))) throw new Error(`unknown load balancing scope ${String(scope)}`);
    return scope as LoadBalancingScope;
  });
  if (!MODES.has(String(lb.mode))) throw new Error(`unknown load balancing mode ${String(lb.mode)}`);
  return { routingPreference: scopes, mode: lb.mode as LoadBalancingMode, healthPolicy: lb.healthPolicy === 'ALLOW_ALL' ? 'ALLOW_ALL' : 'ONLY_HEALTHY' };
}

export function serviceFromXds(service: XdsService): Service {
  if (!service.hostname) throw new Error('service has no hostname');
  const loadBalancing = loadBalancingFromXds(service);
  const result: Service = {
    name: service.name,
    namespace: service.namespace,
    hostname: service.hostname,
    vips: service.addresses.map((vip) => ({ network: vip.network, address: bytesToIp(vip.address) })),
    ports: portsFromXds(service.ports),
    subjectAltNames: [...service.subjectAltNames],
    ipFamilies: IP_FAMILIES.has(String(service.ipFamilies)) ? (service.ipFamilies as IpFamilies) : 'AUTOMATIC',
    canonical: service.canonical === true,
  };
  if (loadBalancing) result.loadBalancing = loadBalancing;
  // A waypoint named by hostname needs a DNS lookup this agent does not do yet: such a service is reached directly.
  const waypointIp = service.waypoint?.address?.address;
  if (waypointIp && waypointIp.length > 0) {
    const port = service.waypoint!.hboneMtlsPort;
    if (!Number.isInteger(port) || port <= 0 || port > 65535) throw new Error(`waypoint port ${port} is not a TCP port`);
    result.waypoint = { address: bytesToIp(waypointIp), hboneMtlsPort: port };
  }
  return result;
}

function enrollmentReason(enrolled: boolean | undefined, hbone: boolean): string {
  if (enrolled === undefined) return hbone ? 'the control plane says it is captured (HBONE)' : 'the control plane says it is not captured';
  return enrolled ? 'the control plane says it is enrolled (dataplane-mode ambient)' : 'the control plane says it is not enrolled';
}

export function workloadFromXds(workload: XdsWorkload): Workload {
  const services: Record<string, ServicePort[]> = {};
  for (const key in workload.services ?? {}) services[key] = portsFromXds(workload.services[key]?.ports);
  const enrolled = enrollmentFromExtensions(workload.extensions);
  const result: Workload = {
    uid: workload.uid,
    name: workload.name,
    namespace: workload.namespace,
    serviceAccount: workload.serviceAccount || 'default',
    trustDomain: workload.trustDomain || 'cluster.local',
    node: workload.node,
    addresses: workload.addresses.map(bytesToIp),
    tunnelProtocol: workload.tunnelProtocol === 'HBONE' ? 'HBONE' : 'NONE',
    captureReason: enrollmentReason(enrolled, workload.tunnelProtocol === 'HBONE'),
    canonicalName: workload.canonicalName || workload.name,
    canonicalRevision: workload.canonicalRevision || 'latest',
    workloadName: workload.workloadName || workload.name,
    services,
    authorizationPolicies: workload.authorizationPolicies ?? [],
    status: workload.status === 'UNHEALTHY' ? 'UNHEALTHY' : 'HEALTHY',
  };
  if (enrolled !== undefined) result.enrolled = enrolled;
  if (workload.network) result.network = workload.network;
  if (workload.networkMode === 'HOST_NETWORK') result.networkMode = 'HOST_NETWORK';
  if (workload.locality) result.locality = { region: workload.locality.region, zone: workload.locality.zone, subzone: workload.locality.subzone };
  return result;
}

export class XdsSource {
  readonly client: XdsClient;
  /** Resource name -> workload uid, so removals (which carry only names) find the workload. */
  readonly #uidByResourceName = new Map<string, string>();
  /** Resource name -> service key (`<namespace>/<hostname>`, the same as istiod names them, but not trusted to be). */
  readonly #serviceKeyByResourceName = new Map<string, string>();

  constructor(options: XdsSourceOptions) {
    const state = options.state;
    this.client = new XdsClient({
      address: options.address,
      rootCertPem: options.rootCertPem,
      token: options.token,
      serverIdentity: controlPlaneIdentity(options.trustDomain),
      node: { id: `ambit~${options.nodeName}`, cluster: 'Kubernetes', userAgentName: 'ambit-agent', clientFeatures: [] },
      handlers: {
        [ADDRESS_TYPE_URL]: (added: XdsResourceUpdate<XdsAddress>[], removed: string[]) => {
          const rejected: XdsRejection[] = [];
          const workloads: Array<[string, Workload]> = [];
          const services: Array<[string, Service]> = [];
          for (const update of added) {
            const { workload, service } = update.resource;
            try {
              if (workload) workloads.push([update.name, workloadFromXds(workload)]);
              else if (service) services.push([update.name, serviceFromXds(service)]);
            } catch (error) {
              rejected.push({ name: update.name, reason: (error as Error).message });
            }
          }
          // Services first, so a workload's endpoints land on a known service when both arrive together.
          for (const [name, service] of services) {
            const key = serviceKey(service);
            const previousKey = this.#serviceKeyByResourceName.get(name);
            if (previousKey !== undefined && previousKey !== key) state.removeService(previousKey);
            this.#serviceKeyByResourceName.set(name, key);
            state.upsertService(service);
          }
          for (const [name, workload] of workloads) {
            const previousUid = this.#uidByResourceName.get(name);
            if (previousUid !== undefined && previousUid !== workload.uid) state.remove(previousUid);
            this.#uidByResourceName.set(name, workload.uid);
            state.upsert(workload);
          }
          for (const name of removed) {
            const uid = this.#uidByResourceName.get(name);
            if (uid !== undefined) {
              this.#uidByResourceName.delete(name);
              state.remove(uid);
            }
            const key = this.#serviceKeyByResourceName.get(name);
            if (key !== undefined) {
              this.#serviceKeyByResourceName.delete(name);
              state.removeService(key);
            }
          }
          return rejected.length > 0 ? { rejected } : undefined;
        },
        [AUTHORIZATION_TYPE_URL]: (added: XdsResourceUpdate<unknown>[], removed: string[]) => options.onAuthorization?.(added, removed),
        ...options.handlers,
      },
      ...(options.onStatus ? { onStatus: options.onStatus } : {}),
      ...(options.onNack ? { onNack: options.onNack } : {}),
    });
  }

  /** Connects; resolves once the first complete response of every type has arrived. */
  async start(): Promise<void> {
    this.client.start();
    await this.client.synced;
  }

  stop(): void {
    this.client.close();
  }
}
