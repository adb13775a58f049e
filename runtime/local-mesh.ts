/**
 * A whole local mesh: a cluster of node namespaces (see cluster.ts) with an ambit agent in every node and, by
 * default, the ambit control plane (delta xDS + CA service) in the fabric namespace reading the cluster directory,
 * as it would read the Kubernetes API. Without the control plane (`controlPlane: false`) the agents read the
 * cluster directory and sign with a CA root on disk themselves. Used by `make demo`, network tests and benchmarks.
 * In Kubernetes mode (`kubernetes`, see kubernetes-mode.ts) an API server takes the directory's place: the objects go
 * there, the control plane watches it and keeps its CA root there, agents authenticate with service account tokens
 * it reviews, and ambit-cni reads pods from it.
 *
 * Owns: the CA directory, node tokens, starting the control plane and the agent command line, in either mode.
 * Must not know about: what runs in the pods.
 */
import { randomBytes } from 'node:crypto';
import { openSync, closeSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { CertificateAuthority, DEFAULT_TRUST_DOMAIN } from '../shared/identity/index.ts';
import { LOCAL_CA_CERT_FILE, LOCAL_CA_KEY_FILE } from '../shared/ca/certificate-source.ts';
import { AGENT_NODE_FLAGS } from '../agent/memory/node-flags.ts';
import { createCluster, releaseRun, reserveRun, type Cluster, type ClusterOptions, type TeardownReport } from './cluster.ts';
import { RuntimeError } from './errors.ts';
import { KubernetesWiring, type KubernetesMode } from './kubernetes-mode.ts';
import { netnsPath } from './netns.ts';

export const AGENT_MAIN = path.resolve(import.meta.dirname, '..', 'agent', 'main.ts');
export const CONTROL_PLANE_MAIN = path.resolve(import.meta.dirname, '..', 'controlplane', 'main.ts');
/** Istio's xDS + CA port. */
export const CONTROL_PLANE_PORT = 15012;
/** The control plane is up once it logs this (after the root, source, model and gRPC port are ready). */
const CONTROL_PLANE_READY_MESSAGE = 'control plane serving delta xDS and the CA';
const CONTROL_PLANE_READY_TIMEOUT_MS = 30_000;

export interface LocalMeshOptions extends Omit<ClusterOptions, 'agentCommand' | 'beforeAgents' | 'objectStore' | 'cniKubeconfig' | 'run'> {
  trustDomain?: string;
  /** Run the control plane (default true). */
  controlPlane?: boolean;
  /** Extra environment for every agent (AMBIT_LOG_LEVEL, ...). */
  agentEnv?: Record<string, string>;
  /**
   * A command every agent runs under, its arguments then the agent's command line appended (e.g. unshare + setpriv
   * to run it with a container's capabilities and a read-only /proc/sys). It must exec the agent: the runtime
   * signals and waits for the process it started.
   */
  agentCommandPrefix?: string[];
  /** Run as in a Kubernetes cluster against this API server instead of the cluster directory (needs the control plane). */
  kubernetes?: KubernetesMode;
  /**
   * Local mode: the control plane's source arguments in place of `--source dir:<cluster dir>`, made once the fabric
   * has its address (ambitctl local: `--source kubernetes` against the local cluster's own API server, with
   * `--identity-from local` so the CA directory and node tokens stay as they are).
   */
  controlPlaneSource?: (cluster: Cluster, fabricAddress: string) => Promise<string[]>;
}

export interface LocalMesh {
  cluster: Cluster;
  /** The mesh root, made by the runtime in local mode; absent in Kubernetes mode (the control plane makes it and keeps it in Secret istio-ca-secret). */
  ca?: CertificateAuthority;
  /**
   * Local mode: the CA root, its private key and node tokens. Kubernetes mode: the kubeconfig and what the kubelet
   * mounts for the agents. Inside the run's temp dir, so it goes with the run: on destroy, on exit, and when the
   * process died, by the next run's reaper.
   */
  caDir: string;
  /** `host:port` of the control plane on the fabric, when it runs. */
  controlPlaneAddress?: string;
  controlPlaneLogFile?: string;
  controlPlaneProcess?: ChildProcess;
  /** Stops the control plane (agents keep serving their last config). */
  stopControlPlane(): Promise<void>;
  /** Starts it again on the same address, CA directory and cluster directory. */
  startControlPlane(): Promise<void>;
  /** Stops everything and removes the namespaces and the run's temp dir (the CA key with it); says what went. */
  destroy(): Promise<TeardownReport>;
}

/** Writes a fresh CA root for the mesh into `dir` (root-cert.pem, ca-key.pem). */
export async function writeLocalCa(dir: string, trustDomain: string): Promise<CertificateAuthority> {
  const ca = await CertificateAuthority.createRoot({ trustDomain });
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await writeFile(path.join(dir, LOCAL_CA_CERT_FILE), ca.rootCertPem);
  await writeFile(path.join(dir, LOCAL_CA_KEY_FILE), ca.rootKeyPem, { mode: 0o600 });
  return ca;
}

function nodeName(clusterName: string, index: number): string {
  return `${clusterName}-node${index}`;
}

/** Waits until `file` holds `text` at least `occurrences` times (a restarted process logs it again). */
async function waitForLine(file: string, text: string, process: ChildProcess, timeoutMs: number, occurrences = 1): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (process.exitCode !== null || process.signalCode !== null) {
      throw new RuntimeError('AGENT_NOT_READY', `the control plane exited (${process.exitCode ?? process.signalCode}); see ${file}`);
    }
    const content = await readFile(file, 'utf8').catch(() => '');
    if (content.split(text).length > occurrences) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new RuntimeError('AGENT_NOT_READY', `the control plane did not become ready in ${timeoutMs} ms; see ${file}`);
}

/** Shared by every local mesh's agents (Node keys its entries by file and content, so stale ones are never used). */
const AGENT_COMPILE_CACHE_DIR = path.join(os.tmpdir(), 'ambit-agent-compile-cache');

export async function createLocalMesh(options: LocalMeshOptions): Promise<LocalMesh> {
  const trustDomain = options.trustDomain ?? DEFAULT_TRUST_DOMAIN;
  const withControlPlane = options.controlPlane ?? true;
  const clusterName = options.name ?? 'ambit';
  const { kubernetes: kubernetesMode, agentCommandPrefix: _prefix, agentEnv: _env, controlPlaneSource, ...clusterOptions } = options;
  if (kubernetesMode !== undefined && !withControlPlane) {
    throw new RuntimeError('BAD_OPTIONS', 'Kubernetes mode needs the control plane: it is what reads the API server for the agents');
  }
  // The run (and its temp dir) first, so the CA's private key is written where the run's cleanup and the next
  // run's reaper remove it, even when this process is killed before the cluster exists.
  const run = await reserveRun();
  const caDir = path.join(run.tmpDir, 'ca');
  const kubernetes = kubernetesMode !== undefined ? new KubernetesWiring(caDir) : undefined;
  const mesh: Partial<LocalMesh> = { caDir };
  const tokenFile = path.join(caDir, 'node-tokens');
  let startControlPlane = async (): Promise<void> => {};
  let stopControlPlane = async (): Promise<void> => {};
  let cluster: Cluster;
  try {
    await mkdir(caDir, { mode: 0o700 });
    if (kubernetes === undefined) mesh.ca = await writeLocalCa(caDir, trustDomain);
    // One bearer token per node agent, as the control plane's bootstrap token file lists them (Kubernetes mode: the
    // API server issues service account tokens instead).
    if (withControlPlane && kubernetes === undefined) {
      const tokens = Array.from({ length: options.nodes }, () => randomBytes(24).toString('hex'));
      await writeFile(tokenFile, tokens.map((token, index) => `${token} ${nodeName(clusterName, index)}`).join('\n') + '\n', { mode: 0o600 });
      await Promise.all(tokens.map((token, index) => writeFile(path.join(caDir, `token-${nodeName(clusterName, index)}`), token, { mode: 0o600 })));
    }
  } catch (error) {
    await releaseRun(run);
    throw error;
  }
  try {
    cluster = await createCluster({
      ...clusterOptions,
      run,
      ...(kubernetes !== undefined ? { objectStore: kubernetes.objectStore, cniKubeconfig: kubernetes.kubeconfigFile } : {}),
      ...(withControlPlane
        ? {
            beforeAgents: async (created: Cluster) => {
              const address = await created.addFabricAddress();
              if (kubernetes !== undefined) {
                await kubernetes.connect(kubernetesMode!, { netnsName: created.fabricNetns, netnsPath: netnsPath(created.fabricNetns), address });
              }
              mesh.controlPlaneAddress = `${address}:${CONTROL_PLANE_PORT}`;
              const localSource = kubernetes === undefined && controlPlaneSource !== undefined ? await controlPlaneSource(created, address) : ['--source', `dir:${created.clusterDir}`];
              mesh.controlPlaneLogFile = path.join(created.tmpDir, 'controlplane.log');
              startControlPlane = async () => {
                const running = mesh.controlPlaneProcess;
                if (running && running.exitCode === null && running.signalCode === null) return;
                const log = openSync(mesh.controlPlaneLogFile!, 'a');
                let child: ChildProcess;
                try {
                  const sourceArgs = kubernetes?.controlPlaneArgs() ?? [...localSource, '--ca-dir', caDir, '--token-file', tokenFile];
                  child = created.spawnInFabric(
                    process.execPath,
                    [CONTROL_PLANE_MAIN, ...sourceArgs, '--listen', mesh.controlPlaneAddress!, '--trust-domain', trustDomain],
                    { stdio: ['ignore', log, log], ...(kubernetes !== undefined ? { env: { ...process.env, ...kubernetes.controlPlaneEnv() } } : {}) },
                  );
                } finally {
                  closeSync(log);
                }
                mesh.controlPlaneProcess = child;
                const readyCount = (await readFile(mesh.controlPlaneLogFile!, 'utf8').catch(() => '')).split(CONTROL_PLANE_READY_MESSAGE).length;
                await waitForLine(mesh.controlPlaneLogFile!, CONTROL_PLANE_READY_MESSAGE, child, CONTROL_PLANE_READY_TIMEOUT_MS, readyCount);
              };
              stopControlPlane = async () => {
                const child = mesh.controlPlaneProcess;
                if (!child || child.exitCode !== null || child.signalCode !== null) return;
                const exited = new Promise((resolve) => child.once('exit', resolve));
                child.kill('SIGTERM');
                await exited;
              };
              await startControlPlane();
              await kubernetes?.mountAgentFiles(created.nodes.map((node) => node.name));
            },
          }
        : {}),
      agentCommand: (node) => ({
        cmd: options.agentCommandPrefix?.[0] ?? process.execPath,
        // The agent's V8 flags (agent/memory/node-flags.ts) go to node, after any prefix (strace, perf, ...).
        args: [...(options.agentCommandPrefix ? [...options.agentCommandPrefix.slice(1), process.execPath] : []), ...AGENT_NODE_FLAGS, AGENT_MAIN],
        env: {
          AMBIT_TRUST_DOMAIN: trustDomain,
          ...(withControlPlane
            ? {
                AMBIT_XDS_ADDRESS: mesh.controlPlaneAddress!,
                AMBIT_ROOT_CERT_FILE: kubernetes?.rootCertFile ?? path.join(caDir, LOCAL_CA_CERT_FILE),
                AMBIT_TOKEN_FILE: kubernetes?.tokenFile(node.name) ?? path.join(caDir, `token-${node.name}`),
              }
            : { AMBIT_LOCAL_CA_DIR: caDir }),
          // Node's compile cache: an agent that starts after the first one neither strips its TypeScript again nor
          // loads the type stripper (a WebAssembly module whose memory is never given back): 15-20 MiB less RSS.
          NODE_COMPILE_CACHE: AGENT_COMPILE_CACHE_DIR,
          ...options.agentEnv,
          AMBIT_NODE_NAME: node.name,
        },
      }),
    });
  } catch (error) {
    // createCluster destroyed what it built, the run's temp dir (and so the CA directory) included.
    await releaseRun(run);
    throw error;
  }
  return {
    ...(mesh as LocalMesh),
    cluster,
    startControlPlane: () => startControlPlane(),
    stopControlPlane: () => stopControlPlane(),
    destroy: () => cluster.destroy(),
  };
}

