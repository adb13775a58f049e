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
import type { XdsAddress, XdsWorkload } from '../../shared/xds/types.ts';
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

/** Istio sends addresses as raw bytes (4 for IPv4, 16 for IPv6). */
export function ipFromBytes(bytes: Uint8Array): string {
  if (bytes.length === 4) return `${bytes[0]}.${bytes[1]}.${bytes[2]}.${bytes[3]}`;
  if (bytes.length === 16) {
    const groups: number[] = [];
    for (let i = 0; i < 16; i += 2) groups.push((bytes[i]! << 8) | bytes[i + 1]!);
    // RFC 5952: compress the longest run (length >= 2) of zero groups with "::".
    let bestStart = -1;
    let bestLength = 1;
    for (let i = 0; i < 8; ) {
      if (groups[i] !== 0) {
        i++;
        continue;
      }
      let j = i;
      while (j < 8 && groups[j] === 0) j++;
      if (j - i > bestLength) {
        bestStart = i;
        bestLength = j - i;
      }
      i = j;
    }
    const hex = groups.map((group) => group.toString(16));
    if (bestStart < 0) return hex.join(':');
    return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLength).join(':')}`;
  }
  throw new Error(`an address of ${bytes.length} bytes is neither IPv4 nor IPv6`);
}

export function workloadFromXds(workload: XdsWorkload): Workload {
  return {
    uid: workload.uid,
    name: workload.name,
    namespace: workload.namespace,
    serviceAccount: workload.serviceAccount || 'default',
    trustDomain: workload.trustDomain || 'cluster.local',
    node: workload.node,
    addresses: workload.addresses.map(ipFromBytes),
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
