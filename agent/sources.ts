/**
 * Where the agent learns the mesh and gets certificates: the control plane (delta xDS for workloads and policies,
 * the CA service for certificates), or, with no control plane, a cluster directory and a CA root on disk.
 *
 * Owns: choosing and starting the sources for a config, and one handle over both modes.
 * Must not know about: capture, proxying.
 */
import { readFile } from 'node:fs/promises';
import type { Logger } from 'pino';
import type { AgentConfig } from './config.ts';
import { CaClient } from '../shared/ca/ca-client.ts';
import { LocalCaSource, type CertificateSource } from '../shared/ca/certificate-source.ts';
import { ClusterDirSource } from './state/cluster-dir-source.ts';
import type { MeshState } from '../shared/mesh/mesh-state.ts';
import { XdsSource } from '../shared/mesh/xds-source.ts';
import { controlPlaneIdentity, controlPlaneServerName, type XdsResourceUpdate, type XdsRejection } from '../shared/xds/client.ts';

/**
 * How long a CNI ADD waits for the pod to appear in the mesh state. The runtime writes the Pod before calling CNI,
 * but the control plane's push takes a moment (debounce + one round trip); 5 s is well inside the plugin's 10 s.
 */
export const WORKLOAD_WAIT_MS = 5000;

export interface AgentSources {
  certificates: CertificateSource;
  /** What the workloads come from, for error messages. */
  describe: string;
  /** Re-reads local state now; for xDS (which pushes), reconnects at once if the stream is waiting out a backoff. */
  refresh(): Promise<void>;
  /** Policies pushed by xDS, for the policy store to subscribe to (local mode reads them from the directory). */
  onAuthorization(handler: (added: XdsResourceUpdate<unknown>[], removed: string[]) => void | { rejected?: XdsRejection[] }): void;
  stop(): void;
}

export async function startSources(config: AgentConfig, state: MeshState, log: Logger): Promise<AgentSources> {
  const controlPlane = config.controlPlane;
  if (!controlPlane) {
    const source = new ClusterDirSource({ dir: config.clusterDir, state, trustDomain: config.trustDomain, onProblem: (message) => log.warn(message) });
    await source.start();
    return {
      certificates: await LocalCaSource.open({ dir: config.localCaDir, trustDomain: config.trustDomain }),
      describe: `the cluster directory ${config.clusterDir}`,
      refresh: () => source.refresh(),
      onAuthorization: () => {},
      stop: () => source.stop(),
    };
  }
  const [rootCertPem, token] = await Promise.all([readFile(controlPlane.rootCertFile, 'utf8'), readFile(controlPlane.tokenFile, 'utf8')]);
  let authorizationHandler: ((added: XdsResourceUpdate<unknown>[], removed: string[]) => void | { rejected?: XdsRejection[] }) | undefined;
  // Policies arrive with the first sync, before the policy store subscribes: keep the current set to replay.
  const authorizations = new Map<string, XdsResourceUpdate<unknown>>();
  const xds = new XdsSource({
    address: controlPlane.xdsAddress,
    rootCertPem,
    token: token.trim(),
    nodeName: config.nodeName,
    trustDomain: config.trustDomain,
    state,
    onAuthorization: (added, removed) => {
      const result = authorizationHandler?.(added, removed);
      const rejected = new Set((result && result.rejected ? result.rejected : []).map((entry) => entry.name));
      for (const update of added) if (!rejected.has(update.name)) authorizations.set(update.name, update);
      for (const name of removed) authorizations.delete(name);
      return result;
    },
    onStatus: (status) => (status.state === 'disconnected' ? log.warn({ xds: controlPlane.xdsAddress, ...status }, 'xDS stream down; serving the last config') : log.info({ xds: controlPlane.xdsAddress, state: status.state }, 'xDS')),
    onNack: (typeUrl, message) => log.warn({ typeUrl, reason: message }, 'xDS resource rejected (NACK); keeping the last good one'),
  });
  await xds.start();
  // Addressed by IP (the local runtime), the CA is named as istiod for SNI, as the xDS client does; no Node warning.
  const serverName = controlPlaneServerName(controlPlane.caAddress);
  const certificates = await CaClient.open({ address: controlPlane.caAddress, rootsFile: controlPlane.rootCertFile, tokenFile: controlPlane.tokenFile, node: config.nodeName, serverIdentity: controlPlaneIdentity(config.trustDomain), ...(serverName ? { serverName } : {}) });
  return {
    certificates,
    describe: `the control plane at ${controlPlane.xdsAddress}`,
    // xDS pushes; but while its stream waits out a backoff (a control plane restart), a pod waiting to be captured
    // is a reason to try again now.
    refresh: async () => xds.client.reconnectNow(),
    onAuthorization: (handler) => {
      authorizationHandler = handler;
      if (authorizations.size > 0) handler([...authorizations.values()], []);
    },
    stop: () => {
      xds.stop();
      certificates.close();
    },
  };
}
