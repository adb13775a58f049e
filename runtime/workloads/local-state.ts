/**
 * The run directory of `ambitctl local up`: where the supervisor that owns a local mesh keeps its state file (what
 * `get`, `logs`, `exec`, `status` and `down` read), its own log, and the logs of the agents, the control plane and
 * every container. Default /run/ambit-local (tmpfs: it goes on reboot, as the namespaces do); AMBIT_LOCAL_RUN_DIR
 * or --run-dir choose another.
 *
 * Owns: the state file's shape, its atomic write and read, and the run directory's file names.
 * Must not know about: how the mesh is built or what the commands print.
 */
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';

export const DEFAULT_RUN_DIR = '/run/ambit-local';

export interface LocalPodState {
  namespace: string;
  name: string;
  node: string;
  ip: string;
  netns: string;
  /** Pending (being created), Running, Waiting (restart back-off), Succeeded, Failed. */
  phase: string;
  ready: boolean;
  restarts: number;
  images: string[];
  containers: string[];
  /** `file:line` of the document it came from. */
  source: string;
  /** Start-up timings (epoch ms, ms): when its creation began, how long creating it took and the CNI ADD in it, first Ready. */
  createStartedAt?: number;
  createMs?: number;
  cniMs?: number;
  readyAt?: number;
}

export interface LocalState {
  /** The supervisor's pid and its /proc start time (a reused pid is not taken for it). */
  pid: number;
  pidStartTime: string;
  /** When the supervisor started and when nodes, control plane and agents were up (epoch ms). */
  startedAt: number;
  meshUpAt?: number;
  /** starting, running, failed (see error), stopping. */
  phase: 'starting' | 'running' | 'failed' | 'stopping';
  error?: string;
  /** The user's manifest directory. */
  dir: string;
  runDir: string;
  logDir: string;
  /** The runtime's own temp dir of this run: cluster directory, node dirs, CA (removed on down). */
  tmpDir?: string;
  caDir?: string;
  clusterDir?: string;
  /**
   * What the control plane reads: `kubernetes` (the default: its Kubernetes source against the local cluster's API,
   * as in a cluster) or `dir` (the cluster state directory).
   */
  controlPlaneSource?: 'kubernetes' | 'dir';
  controlPlaneLog?: string;
  /** The local cluster's Kubernetes API (runtime/workloads/cluster-api.ts) and the kubeconfig for it (0600: it holds the token). */
  apiServer?: string;
  kubeconfig?: string;
  nodeCount: number;
  nodes: { name: string; netns: string; agentLog: string }[];
  pods: LocalPodState[];
  services: { namespace: string; name: string; clusterIP: string; ports: string; selector: string; endpoints?: number }[];
  /** `file:line: reason` for every document not run. */
  problems: string[];
  /** What the runtime did on the user's behalf (objects it wrote because the directory had none). */
  notes: string[];
}

export function resolveRunDir(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  return path.resolve(flag ?? env.AMBIT_LOCAL_RUN_DIR ?? DEFAULT_RUN_DIR);
}

export function stateFile(runDir: string): string {
  return path.join(runDir, 'state.json');
}

export function supervisorLogFile(runDir: string): string {
  return path.join(runDir, 'supervisor.log');
}

export function logDir(runDir: string): string {
  return path.join(runDir, 'logs');
}

/** The teardown report the supervisor leaves for `down`. */
export function teardownFile(runDir: string): string {
  return path.join(runDir, 'teardown.json');
}

let writes = 0;

/** Writes the state file atomically (readers never see half of it); concurrent writes each use their own temp file. */
export async function writeState(state: LocalState): Promise<void> {
  await mkdir(state.runDir, { recursive: true });
  const temp = path.join(state.runDir, `.state.${process.pid}.${writes++}.tmp`);
  await writeFile(temp, JSON.stringify(state, null, 1));
  await rename(temp, stateFile(state.runDir));
}

export async function readState(runDir: string): Promise<LocalState | undefined> {
  try {
    return JSON.parse(await readFile(stateFile(runDir), 'utf8')) as LocalState;
  } catch {
    return undefined;
  }
}
