/**
 * A waypoint in a local mesh, as Istio's deployment controller makes one for a Gateway of class `istio-waypoint`: a
 * pod on a node (label `istio.io/dataplane-mode: none`, so its own traffic is not captured; service account named
 * after the Gateway) running waypoint/main.ts, and the Gateway in the cluster directory with the pod's IP as
 * `status.addresses` (which the control plane hands to agents as the waypoint's GatewayAddress).
 *
 * Owns: that pod, the Gateway object and the waypoint's command line. Must not know about: what the waypoint does.
 * Local mode only (the control plane reads the cluster directory). The waypoint authenticates with its node's
 * bootstrap token, as the node's agent does: the CA signs its identity because a pod with that service account runs
 * on that node.
 */
import { openSync, closeSync } from 'node:fs';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { stringify } from 'yaml';
import { DEFAULT_TRUST_DOMAIN } from '../shared/identity/index.ts';
import { LOCAL_CA_CERT_FILE } from '../shared/ca/certificate-source.ts';
import { WAYPOINT_GLIBC_TUNABLES, WAYPOINT_NODE_OPTIONS, WAYPOINT_READY_MESSAGE } from '../waypoint/config.ts';
import { RuntimeError } from './errors.ts';
import { ipIn } from './netns.ts';
import type { LocalMesh } from './local-mesh.ts';
import type { Pod } from './pod.ts';

export const WAYPOINT_MAIN = path.resolve(import.meta.dirname, '..', 'waypoint', 'main.ts');
const WAYPOINT_READY_TIMEOUT_MS = 30_000;
/**
 * Shared by every local waypoint (Node keys its entries by file and content, so stale ones are never used): a
 * waypoint that starts after the first neither strips its TypeScript again nor loads the type stripper.
 */
const WAYPOINT_COMPILE_CACHE_DIR = path.join(os.tmpdir(), 'ambit-waypoint-compile-cache');

export interface WaypointOptions {
  node: number;
  namespace: string;
  /** The Gateway's name (and its service account's). */
  name: string;
  /** `istio.io/waypoint-for`: service (default), workload, all, none. */
  waypointFor?: 'service' | 'workload' | 'all' | 'none';
  trustDomain?: string;
  env?: Record<string, string>;
  /**
   * Measurement only: runs the waypoint as `[...commandPrefix, node, main]` (e.g. under valgrind) and `main` instead of
   * this tree's waypoint/main.ts (another tree's, for A/B runs).
   */
  commandPrefix?: readonly string[];
  main?: string;
  /** How long the process may take to say it is ready (WAYPOINT_READY_TIMEOUT_MS): longer under valgrind (bench). */
  readyTimeoutMs?: number;
}

export interface LocalWaypoint {
  pod: Pod;
  gatewayFile: string;
  logFile: string;
  /** Stops the waypoint process (SIGTERM, drain) and starts it again in the same pod. */
  restart(): Promise<void>;
  /** Removes the Gateway object and the pod. */
  delete(): Promise<void>;
}

export function gatewayFile(clusterDir: string, namespace: string, name: string): string {
  return path.join(clusterDir, 'gateways', `${namespace}-${name}.yaml`);
}

async function writeAtomically(file: string, text: string): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  const temporary = path.join(path.dirname(file), `.${path.basename(file)}.tmp`);
  await writeFile(temporary, text);
  await rename(temporary, file);
}

/** The Gateway as `kubectl apply` would hold it, with the address the deployment controller writes in status. */
export function waypointGateway(namespace: string, name: string, address: string | undefined, waypointFor?: string): Record<string, unknown> {
  return {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'Gateway',
    metadata: { name, namespace, ...(waypointFor ? { labels: { 'istio.io/waypoint-for': waypointFor } } : {}) },
    spec: { gatewayClassName: 'istio-waypoint', listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }] },
    ...(address ? { status: { addresses: [{ type: 'IPAddress', value: address }] } } : {}),
  };
}

export async function createWaypoint(mesh: LocalMesh, options: WaypointOptions): Promise<LocalWaypoint> {
  if (!mesh.controlPlaneAddress || !mesh.ca) throw new RuntimeError('BAD_OPTIONS', 'a waypoint needs the local mode control plane (its CA and xDS)');
  const cluster = mesh.cluster;
  const node = cluster.node(options.node);
  const pod = await cluster.createPod({
    node: options.node,
    namespace: options.namespace,
    name: `${options.name}-waypoint`,
    serviceAccount: options.name,
    labels: { 'istio.io/dataplane-mode': 'none', 'gateway.networking.k8s.io/gateway-name': options.name },
  });
  // The control plane listens on the fabric, which routes node addresses only: give it the way back to this pod (a
  // pod reaches istiod in a cluster; here only the waypoint's pod needs to).
  await ipIn(cluster.fabricNetns, ['route', 'replace', `${pod.ip}/32`, 'via', node.underlayIp]);
  const file = gatewayFile(cluster.clusterDir, options.namespace, options.name);
  await writeAtomically(file, stringify(waypointGateway(options.namespace, options.name, pod.ip, options.waypointFor)));
  const logFile = path.join(cluster.tmpDir, `waypoint-${options.namespace}-${options.name}.log`);
  const env = {
    ...process.env,
    AMBIT_WAYPOINT_NAMESPACE: options.namespace,
    AMBIT_WAYPOINT_NAME: options.name,
    AMBIT_POD_NAME: pod.name,
    AMBIT_NODE_NAME: node.name,
    AMBIT_TRUST_DOMAIN: options.trustDomain ?? DEFAULT_TRUST_DOMAIN,
    AMBIT_XDS_ADDRESS: mesh.controlPlaneAddress,
    AMBIT_ROOT_CERT_FILE: path.join(mesh.caDir, LOCAL_CA_CERT_FILE),
    AMBIT_TOKEN_FILE: path.join(mesh.caDir, `token-${node.name}`),
    NODE_COMPILE_CACHE: WAYPOINT_COMPILE_CACHE_DIR,
    NODE_OPTIONS: WAYPOINT_NODE_OPTIONS,
    GLIBC_TUNABLES: WAYPOINT_GLIBC_TUNABLES,
    ...options.env,
  };
  const start = async (): Promise<void> => {
    const before = (await readFile(logFile, 'utf8').catch(() => '')).split(WAYPOINT_READY_MESSAGE).length;
    const log = openSync(logFile, 'a');
    let child;
    try {
      const command = [...(options.commandPrefix ?? []), process.execPath, options.main ?? WAYPOINT_MAIN];
      child = pod.spawn(command[0]!, command.slice(1), { stdio: ['ignore', log, log], env });
    } finally {
      closeSync(log);
    }
    const readyTimeoutMs = options.readyTimeoutMs ?? WAYPOINT_READY_TIMEOUT_MS;
    const deadline = Date.now() + readyTimeoutMs;
    for (;;) {
      const text = await readFile(logFile, 'utf8').catch(() => '');
      // The log's end goes into the error: the file goes with the cluster.
      const tail = text.split('\n').slice(-6).join('\n');
      if (child.exitCode !== null || child.signalCode !== null) throw new RuntimeError('COMMAND_FAILED', `the waypoint ${options.namespace}/${options.name} exited (${child.exitCode ?? child.signalCode}): ${tail}`);
      if (text.split(WAYPOINT_READY_MESSAGE).length > before) return;
      if (Date.now() > deadline) throw new RuntimeError('COMMAND_FAILED', `the waypoint ${options.namespace}/${options.name} was not ready in ${readyTimeoutMs} ms: ${tail}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  };
  try {
    await start();
  } catch (error) {
    await rm(file, { force: true });
    await cluster.deletePod(pod).catch(() => undefined);
    throw error;
  }
  return {
    pod,
    gatewayFile: file,
    logFile,
    restart: async () => {
      await pod.stopProcesses();
      await start();
    },
    delete: async () => {
      await rm(file, { force: true });
      await cluster.deletePod(pod);
    },
  };
}
