/**
 * The mesh suite's topology on the local runtime (runtime/local-mesh.ts): two nodes, each a network namespace
 * with a real ambit agent, and four pods made by the real CNI chain:
 *
 *   node 1 (index 0)                               node 2 (index 1)
 *   mesh-client   (namespace "bench-mesh", enrolled)  -> mesh-server   (enrolled): captured, HBONE between agents
 *   plain-client  (namespace "bench-plain", not)      -> plain-server  (not):      direct pod-to-pod TCP,
 *        stunnel client in plain-client's namespace ══TLS══> stunnel server in plain-server's namespace
 *
 * The direct and stunnel baselines use pods of an un-enrolled namespace in the same cluster: same nodes, same
 * bridges and routes, only the capture differs.
 *
 * Owns: building and destroying that topology, running bench tools inside pods through the run's ProcessGroup
 * (so the harness's cleanup covers them too), the stunnel pair's placement, and finding the agents' real pids.
 * Must not know about: what is measured.
 */
import { readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { createLocalMesh, type LocalMesh } from '../../runtime/local-mesh.ts';
import type { Pod } from '../../runtime/index.ts';
import type { BenchCertificates } from './certs.ts';
import type { ManagedProcess, ProcessGroup } from './processes.ts';
import { STUNNEL_BINARY } from './stunnel.ts';
import { nodeTool } from './tools.ts';

export const APP_PORT = 8080;
/** stunnel's ports inside the pods (client end on the client pod's loopback, server end on the server pod's IP). */
const STUNNEL_CLIENT_PORT = 16001;
const STUNNEL_SERVER_PORT = 16443;
const ENROLLED = { 'istio.io/dataplane-mode': 'ambient' };
/** The mesh-server pod's labels: what a Service selects it by (the services suite). */
export const MESH_SERVER_LABELS: Readonly<Record<string, string>> = { app: 'bench-server' };

/**
 * Per pod namespace: a wide ephemeral port range and TIME_WAIT reuse, so several tens of thousands of short
 * connections in a minute do not run the client pods out of ports (every path gets the same settings).
 */
const POD_SYSCTLS = ['net.ipv4.ip_local_port_range=10000 65000', 'net.ipv4.tcp_tw_reuse=1'];

export interface MeshTopology {
  mesh: LocalMesh;
  meshClient: Pod;
  meshServer: Pod;
  plainClient: Pod;
  plainServer: Pod;
  /** Real pids of the node agents (node 1 = client side, node 2 = server side). */
  agentPids: { node1: number; node2: number };
  destroy(): Promise<void>;
}

export interface MeshOptions {
  /** pino level for the agents: "warn" leaves out the access log's per-connection info lines. */
  logLevel: string;
  /** When set, the agents run with --cpu-prof into this directory (renamed mesh-agent-node<N>.cpuprofile). */
  profileDir?: string;
  /** Extra environment for both agents (the telemetry suite sets AMBIT_TELEMETRY=off on one mesh). */
  agentEnv?: Record<string, string>;
  /** A command the agents' node runs under (e.g. a wrapper adding V8 flags NODE_OPTIONS refuses): bench/connection-counts.ts. */
  agentCommandPrefix?: string[];
  /** How long each agent may take to become ready (an agent under valgrind starts slowly). */
  agentReadyTimeoutMs?: number;
  log(message: string): void;
}

export async function buildMeshTopology(options: MeshOptions): Promise<MeshTopology> {
  const agentEnv: Record<string, string> = { AMBIT_LOG_LEVEL: options.logLevel, AMBIT_DRAIN_MS: '500', ...options.agentEnv };
  if (options.profileDir) agentEnv.NODE_OPTIONS = `--cpu-prof --cpu-prof-dir=${options.profileDir}`;
  // The agents read workloads from the cluster directory and sign with the CA root on disk (no control plane):
  // the data path measured here is the same either way, and the suite does not depend on the control plane.
  // (A variable, not a literal, so the option is simply ignored by a runtime that predates it.)
  const meshOptions = { nodes: 2, name: 'bench', agentEnv, controlPlane: false, ...(options.agentCommandPrefix ? { agentCommandPrefix: options.agentCommandPrefix } : {}), ...(options.agentReadyTimeoutMs ? { agentReadyTimeoutMs: options.agentReadyTimeoutMs } : {}) };
  const mesh = await createLocalMesh(meshOptions);
  try {
    const { cluster } = mesh;
    const meshServer = await cluster.createPod({ node: 1, namespace: 'bench-mesh', name: 'mesh-server', serviceAccount: 'bench-server', labels: { ...MESH_SERVER_LABELS }, namespaceLabels: ENROLLED });
    const meshClient = await cluster.createPod({ node: 0, namespace: 'bench-mesh', name: 'mesh-client', serviceAccount: 'bench-client' });
    const plainServer = await cluster.createPod({ node: 1, namespace: 'bench-plain', name: 'plain-server', serviceAccount: 'bench-server' });
    const plainClient = await cluster.createPod({ node: 0, namespace: 'bench-plain', name: 'plain-client', serviceAccount: 'bench-client' });
    for (const pod of [meshServer, meshClient, plainServer, plainClient]) {
      for (const setting of POD_SYSCTLS) {
        const result = await pod.exec('sysctl', ['-qw', setting]);
        if (result.code !== 0) throw new Error(`sysctl ${setting} in pod ${pod.name}: ${result.stderr.trim()}`);
      }
    }
    const agentPids = { node1: agentPid(mesh, 0), node2: agentPid(mesh, 1) };
    const profiledPids = { ...agentPids };
    return {
      mesh,
      meshClient,
      meshServer,
      plainClient,
      plainServer,
      agentPids,
      destroy: async () => {
        await mesh.destroy();
        if (options.profileDir) nameAgentProfiles(options.profileDir, profiledPids, options.log);
      },
    };
  } catch (error) {
    await mesh.destroy();
    throw error;
  }
}

/** The agent's ChildProcess is `ip netns exec ... node agent/main.ts`: the node process is it or its child. */
export function agentPid(mesh: LocalMesh, nodeIndex: number): number {
  const wrapper = mesh.cluster.node(nodeIndex).agent?.pid;
  if (wrapper === undefined) throw new Error(`node ${nodeIndex + 1} has no agent`);
  let pid = wrapper;
  for (let depth = 0; depth < 3; depth++) {
    if (readFileSync(`/proc/${pid}/comm`, 'utf8').trim() !== 'ip') return pid;
    const children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean);
    if (children.length !== 1) throw new Error(`agent wrapper ${pid} has ${children.length} children, expected the node process`);
    pid = Number(children[0]);
  }
  return pid;
}

/** `--cpu-prof` names files CPU.<date>.<time>.<pid>.<tid>.<seq>.cpuprofile; give the agents' profiles their roles. */
function nameAgentProfiles(dir: string, pids: { node1: number; node2: number }, log: (message: string) => void): void {
  for (const file of readdirSync(dir)) {
    const match = /^CPU\.\d+\.\d+\.(\d+)\.\d+\.\d+\.cpuprofile$/.exec(file);
    if (!match) continue;
    const role = Number(match[1]) === pids.node1 ? 'node1' : Number(match[1]) === pids.node2 ? 'node2' : undefined;
    if (role) renameSync(path.join(dir, file), path.join(dir, `mesh-agent-${role}.cpuprofile`));
  }
  const written = readdirSync(dir).filter((file) => file.startsWith('mesh-agent-'));
  if (written.length < 2) log(`only ${written.length} agent profile(s) written (an agent killed before it exited writes none)`);
}

/** The command line that runs `tool` (a bench/tools file) inside the pod's network namespace. */
export function inPod(pod: Pod, tool: string, args: readonly string[]): { command: string; args: string[] } {
  const node = nodeTool(tool, args);
  return { command: 'ip', args: ['netns', 'exec', pod.netnsName, node.command, ...node.args] };
}

/** The sink/echo target on 0.0.0.0:APP_PORT inside the pod. */
export async function startTarget(processes: ProcessGroup, pod: Pod): Promise<ManagedProcess> {
  const command = inPod(pod, 'target.ts', ['--host', '0.0.0.0', '--port', String(APP_PORT)]);
  return processes.start(`target in ${pod.name}`, command.command, command.args);
}

export interface PodStunnelPair {
  /** Where load enters: the stunnel client on the client pod's loopback. */
  entry: { host: string; port: number };
  clientPid: number;
  serverPid: number;
}

/**
 * A stunnel mutual-TLS pair on the pod-to-pod path: the server end in the server pod (accepting on the pod's IP,
 * delivering to the target on the pod's loopback), the client end in the client pod. Same settings as the hbone
 * suite's pair (bench/lib/stunnel.ts): TLS 1.3 only, the run's P-256 certificates, client certificate required
 * and chain-verified, TCP_NODELAY both sides, warnings-only logging, no TCP wrappers, session resumption on.
 */
export async function startPodStunnelPair(
  processes: ProcessGroup,
  runDir: string,
  certs: BenchCertificates,
  clientPod: Pod,
  serverPod: Pod,
): Promise<PodStunnelPair> {
  const common = [
    'sslVersionMin = TLSv1.3',
    'sslVersionMax = TLSv1.3',
    'verifyChain = yes',
    'libwrap = no',
    'socket = l:TCP_NODELAY=1',
    'socket = r:TCP_NODELAY=1',
    `CAfile = ${certs.caPem}`,
  ];
  const global = ['foreground = yes', 'pid =', 'debug = 4', 'syslog = no'];
  const serverConfig = path.join(runDir, 'mesh-stunnel-server.conf');
  writeFileSync(serverConfig, [...global, '', '[bench]', `accept = ${serverPod.ip}:${STUNNEL_SERVER_PORT}`, `connect = 127.0.0.1:${APP_PORT}`,
    `cert = ${certs.server.certPem}`, `key = ${certs.server.keyPem}`, 'requireCert = yes', ...common, ''].join('\n'));
  const clientConfig = path.join(runDir, 'mesh-stunnel-client.conf');
  writeFileSync(clientConfig, [...global, '', '[bench]', 'client = yes', `accept = 127.0.0.1:${STUNNEL_CLIENT_PORT}`,
    `connect = ${serverPod.ip}:${STUNNEL_SERVER_PORT}`, `cert = ${certs.client.certPem}`, `key = ${certs.client.keyPem}`, ...common, ''].join('\n'));
  const start = async (name: string, pod: Pod, port: number, config: string): Promise<number> => {
    // setpriv: the kernel kills stunnel when its wrapper goes, even on SIGKILL.
    const command = inPod(pod, 'ready-on-listen.ts', ['--port', String(port), '--', '/usr/bin/setpriv', '--pdeathsig', 'KILL', STUNNEL_BINARY, config]);
    const started = await processes.start(name, command.command, command.args);
    return Number(started.ready.pid);
  };
  const serverPid = await start('stunnel server in pod', serverPod, STUNNEL_SERVER_PORT, serverConfig);
  const clientPid = await start('stunnel client in pod', clientPod, STUNNEL_CLIENT_PORT, clientConfig);
  return { entry: { host: '127.0.0.1', port: STUNNEL_CLIENT_PORT }, clientPid, serverPid };
}

/** Sets a node agent's log level through its admin endpoint (127.0.0.1:15000 in the node's namespace). */
/** GET `path` on a node's agent admin endpoint (127.0.0.1:15000 in the node's namespace) and returns its JSON. */
export async function agentAdminJson(mesh: LocalMesh, nodeIndex: number, path: string): Promise<unknown> {
  const script = `fetch('http://127.0.0.1:15000${path}').then(async (r) => { const text = await r.text(); if (!r.ok) throw new Error(text); process.stdout.write(text); })`;
  const result = await mesh.cluster.node(nodeIndex).exec(process.execPath, ['-e', script]);
  if (result.code !== 0) throw new Error(`GET ${path} on node ${nodeIndex + 1}'s agent: ${result.stderr.trim()}`);
  return JSON.parse(result.stdout) as unknown;
}

export async function setAgentLogLevel(mesh: LocalMesh, nodeIndex: number, level: string): Promise<void> {
  const script = `fetch('http://127.0.0.1:15000/logging?level=${level}', { method: 'POST' }).then(async (r) => { if (!r.ok) throw new Error(await r.text()); })`;
  const result = await mesh.cluster.node(nodeIndex).exec(process.execPath, ['-e', script]);
  if (result.code !== 0) throw new Error(`setting node ${nodeIndex + 1}'s agent log level to ${level}: ${result.stderr.trim()}`);
}
