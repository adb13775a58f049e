/**
 * Feeds MeshState (and the policy store) from the control plane over delta xDS: `istio.workload.Address`
 * resources become Workloads, `istio.security.Authorization` resources become policies.
 *
 * Owns: translating decoded xDS resources into the agent's model, and readiness on first sync. The stream, ACKs,
 * NACKs, reconnects and stale-config-keeps-serving are the generic client's (shared/xds/client.ts).
 * Must not know about: sockets, capture, certificates.
 */
import { ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL } from '../../shared/xds/protos.ts';
import { XdsClient, controlPlaneIdentity, type XdsClientStatus, type XdsRejection, type XdsResourceUpdate } from '../../shared/xds/client.ts';
import { bytesToIp, type XdsAddress, type XdsWorkload } from '../../shared/xds/types.ts';
import type { MeshState } from './mesh-state.ts';
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
}

export function workloadFromXds(workload: XdsWorkload): Workload {
  return {
    uid: workload.uid,
    name: workload.name,
    namespace: workload.namespace,
    serviceAccount: workload.serviceAccount || 'default',
    trustDomain: workload.trustDomain || 'cluster.local',
    node: workload.node,
    addresses: workload.addresses.map(bytesToIp),
    tunnelProtocol: workload.tunnelProtocol === 'HBONE' ? 'HBONE' : 'NONE',
    captureReason: workload.tunnelProtocol === 'HBONE' ? 'the control plane says it is captured (HBONE)' : 'the control plane says it is not captured',
    canonicalName: workload.canonicalName || workload.name,
    canonicalRevision: workload.canonicalRevision || 'latest',
    workloadName: workload.workloadName || workload.name,
    services: Object.keys(workload.services ?? {}),
    authorizationPolicies: workload.authorizationPolicies ?? [],
  };
}

export class XdsSource {
  readonly client: XdsClient;
  /** Resource name -> workload uid, so removals (which carry only names) find the workload. */
  readonly #uidByResourceName = new Map<string, string>();

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
          for (const update of added) {
            const workload = update.resource.workload;
            if (!workload) continue; // Services: used by waypoints and VIP routing (later).
            try {
              workloads.push([update.name, workloadFromXds(workload)]);
            } catch (error) {
              rejected.push({ name: update.name, reason: (error as Error).message });
            }
          }
          for (const [name, workload] of workloads) {
            this.#uidByResourceName.set(name, workload.uid);
            state.upsert(workload);
          }
          for (const name of removed) {
            const uid = this.#uidByResourceName.get(name);
            if (uid === undefined) continue;
            this.#uidByResourceName.delete(name);
            state.remove(uid);
          }
          return rejected.length > 0 ? { rejected } : undefined;
        },
        [AUTHORIZATION_TYPE_URL]: (added: XdsResourceUpdate<unknown>[], removed: string[]) => options.onAuthorization?.(added, removed),
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
