/**
 * The detached process `ambitctl local up` starts, which owns one local mesh for as long as it runs: it builds the
 * nodes, the control plane and one agent per node (local-mesh.ts), publishes the user's objects (their Namespaces
 * first, so user files win over the runtime's own), makes every pod through the real CNI chain, runs its
 * containers, writes pod status back (IPs, phase, Ready) and keeps the run directory's state file current. On
 * SIGTERM (`ambitctl local down`) or SIGINT it tears everything down and leaves a teardown report. It watches the
 * directory (directory-watch.ts): on a change it re-reads it and applies the difference (pods added, replaced or
 * deleted by plan key, a file's Pod whose labels or annotations changed updated in place, Namespace labels, other
 * objects rewritten); a re-read with a problem the previous one did not have is rejected whole and reported, so a
 * bad edit changes nothing.
 *
 *   node runtime/workloads/supervisor.ts --dir DIR --run-dir RUNDIR [--nodes N] [--image-map FILE]
 *                                        [--control-plane-source kubernetes|dir]
 *
 * Owns: the order of start-up and teardown, scheduling (spec.nodeName, else the node with the fewest pods), the
 * status loop.
 * Must not know about: the command line users type (ambitctl/local.ts) or how containers run (containers.ts).
 */
import { cp, lstat, mkdir, readlink, rm, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { stringify } from 'yaml';
import type { K8sObject } from '../../shared/k8s/objects.ts';
import type { Pod } from '../pod.ts';
import { createLocalMesh, type LocalMesh } from '../local-mesh.ts';
import { netnsPath } from '../netns.ts';
import { processStartTime } from '../run-registry.ts';
import { ClusterApi, controlPlaneKubeconfigFile } from './cluster-api.ts';
import { PodContainers } from './containers.ts';
import { serveControl, type DeletedPod } from './control-socket.ts';
import { watchDirectory } from './directory-watch.ts';
import { WorkloadError } from './errors.ts';
import { DEFAULT_IMAGE_MAP, readImageMap } from './image-map.ts';
import { logDir, teardownFile, writeState, type LocalPodState, type LocalState } from './local-state.ts';
import { planWorkloads, replacementReplica, type PodPlan, type WorkloadPlan } from './manifests.ts';
import { createWaypoint, type LocalWaypoint } from '../waypoint.ts';

const STATUS_INTERVAL_MS = 500;
/** Pods made at once: the CNI chain is a handful of processes per pod; two cores do not gain from more. */
const CREATE_CONCURRENCY = 4;

interface RunningPod {
  plan: PodPlan;
  state: LocalPodState;
  pod?: Pod;
  containers?: PodContainers;
  /** When its readiness was last checked (a Ready pod is checked again after its probe period). */
  probedAt?: number;
}

const { values } = parseArgs({
  options: {
    dir: { type: 'string' },
    'run-dir': { type: 'string' },
    nodes: { type: 'string', default: '2' },
    'image-map': { type: 'string' },
    'control-plane-source': { type: 'string', default: 'kubernetes' },
  },
});
const controlPlaneSource = values['control-plane-source'];
if (values.dir === undefined || values['run-dir'] === undefined || (controlPlaneSource !== 'kubernetes' && controlPlaneSource !== 'dir')) {
  console.error('usage: supervisor.ts --dir DIR --run-dir RUNDIR [--nodes N] [--image-map FILE] [--control-plane-source kubernetes|dir]');
  process.exit(2);
}
const runDir = values['run-dir'];
const logs = logDir(runDir);
const state: LocalState = {
  pid: process.pid,
  pidStartTime: processStartTime(process.pid) ?? '',
  startedAt: Date.now(),
  phase: 'starting',
  dir: path.resolve(values.dir),
  runDir,
  logDir: logs,
  nodeCount: Number(values.nodes),
  controlPlaneSource,
  nodes: [],
  pods: [],
  services: [],
  problems: [],
  notes: [],
};
const pods: RunningPod[] = [];
let mesh: LocalMesh | undefined;
let stopping: Promise<void> | undefined;
let statusTimer: NodeJS.Timeout | undefined;
let control: { close(): Promise<void> } | undefined;

function log(message: string): void {
  console.log(`${new Date().toISOString()} ${message}`);
}

let publishing: Promise<void> = Promise.resolve();

/** Writes the state file; writes are queued, so the last one written is the newest state. */
function publishState(): Promise<void> {
  publishing = publishing.catch(() => undefined).then(() => {
    state.pods = pods.map((entry) => entry.state);
    return writeState(state);
  });
  return publishing;
}

function describeService(object: K8sObject): LocalState['services'][number] {
  const spec = (object.spec ?? {}) as { clusterIP?: string; ports?: { port?: number; targetPort?: unknown; protocol?: string }[]; selector?: Record<string, string> };
  const namespace = object.metadata?.namespace || 'default';
  // What the runtime's Services gave it (an allocated cluster IP, its ready endpoints), once they have read it.
  const view = mesh?.cluster.services?.table.services.find((candidate) => candidate.namespace === namespace && candidate.name === object.metadata!.name);
  return {
    namespace,
    name: object.metadata!.name!,
    clusterIP: view?.clusterIPs[0] ?? spec.clusterIP ?? '<pending>',
    ...(view !== undefined ? { endpoints: view.endpointIps.length } : {}),
    ports: (spec.ports ?? []).map((port) => `${port.port}${port.targetPort !== undefined ? `->${String(port.targetPort)}` : ''}/${port.protocol ?? 'TCP'}`).join(','),
    selector: Object.entries(spec.selector ?? {}).map(([key, value]) => `${key}=${value}`).join(','),
  };
}

/** Replaces a log symlink (into the run's temp dir, which goes on teardown) by a copy of the file. */
async function keepLog(link: string): Promise<void> {
  try {
    if (!(await lstat(link)).isSymbolicLink()) return;
    const target = await readlink(link);
    await rm(link);
    await cp(target, link).catch(() => undefined);
  } catch {
    // nothing to keep
  }
}

async function stop(signal: string): Promise<void> {
  stopping ??= (async () => {
    log(`${signal}: tearing down`);
    if (statusTimer !== undefined) clearInterval(statusTimer);
    await control?.close().catch(() => undefined);
    if (state.phase !== 'failed') state.phase = 'stopping';
    await publishState().catch(() => undefined);
    await clusterApi?.close().catch(() => undefined);
    await Promise.all(pods.map((entry) => entry.containers?.stop()));
    await Promise.all([...state.nodes.map((node) => path.join(logs, `agent-${node.name}.log`)), path.join(logs, 'controlplane.log')].map(keepLog));
    const report = mesh ? await mesh.destroy() : undefined;
    await writeFile(teardownFile(runDir), JSON.stringify(report ?? {}, null, 1));
    log(`torn down: ${report?.pods.length ?? 0} pods, ${report?.processes ?? 0} processes, ${report?.namespaces.length ?? 0} namespaces, ${report?.tmpDir ?? 'no temp dir'}`);
  })();
  await stopping;
  process.exit(state.phase === 'failed' ? 1 : 0);
}

process.on('SIGTERM', () => void stop('SIGTERM'));
process.on('SIGINT', () => void stop('SIGINT'));

async function createPods(target: LocalMesh, entries: RunningPod[]): Promise<void> {
  const cluster = target.cluster;
  const load = new Map(cluster.nodes.map((node) => [node.name, pods.filter((entry) => entry.state.node === node.name && !entries.includes(entry)).length]));
  for (const entry of entries) {
    const wanted = entry.plan.object.spec?.nodeName;
    if (wanted !== undefined && !load.has(wanted)) {
      state.problems.push(`${entry.plan.source}: pod ${entry.state.namespace}/${entry.state.name}: spec.nodeName ${wanted} is not a node (${[...load.keys()].join(', ')})`);
      entry.state.phase = 'Failed';
      continue;
    }
    const node = wanted ?? [...load.entries()].sort((a, b) => a[1] - b[1])[0]![0];
    load.set(node, load.get(node)! + 1);
    entry.state.node = node;
  }
  const queue = entries.filter((entry) => entry.state.node !== '');
  const worker = async (): Promise<void> => {
    for (let entry = queue.shift(); entry !== undefined; entry = queue.shift()) {
      if (stopping) return;
      const { object } = entry.plan;
      entry.state.createStartedAt = Date.now();
      try {
        const pod = await cluster.createPod({
          ready: false,
          node: entry.state.node,
          name: object.metadata.name,
          namespace: object.metadata.namespace,
          serviceAccount: object.spec?.serviceAccountName ?? 'default',
          labels: object.metadata.labels ?? {},
          annotations: object.metadata.annotations ?? {},
          object,
        });
        entry.pod = pod;
        entry.state.createMs = Date.now() - entry.state.createStartedAt;
        entry.state.cniMs = Math.round(pod.cniAddMs);
        entry.state.ip = pod.ip;
        entry.state.netns = pod.netnsName;
        entry.containers = new PodContainers(pod, entry.plan, logs);
        entry.containers.start();
        entry.state.phase = 'Running';
        log(`pod ${pod.namespace}/${pod.name} on ${pod.node.name} at ${pod.ip}`);
      } catch (error) {
        entry.state.phase = 'Failed';
        state.problems.push(`${entry.plan.source}: pod ${entry.state.namespace}/${entry.state.name}: ${(error as Error).message}`);
      }
      await publishState();
    }
  };
  await Promise.all(Array.from({ length: CREATE_CONCURRENCY }, worker));
}

/**
 * One pass of the kubelet's status loop: phase, restarts and Ready, published when they change. A pod not yet Ready
 * is probed on every pass (so `up` sees it Ready soon); a Ready one after its probe period, as the kubelet does
 * (probes are processes in the pod's namespace: a hundred pods probed twice a second would keep two cores busy).
 */
async function updateStatus(): Promise<void> {
  let changed = false;
  const now = Date.now();
  await Promise.all(
    pods.map(async (entry) => {
      if (entry.pod === undefined || entry.containers === undefined) return;
      const phase = entry.containers.phase;
      const probeDue = !entry.state.ready || entry.probedAt === undefined || now - entry.probedAt >= entry.containers.probePeriodMs;
      let ready = entry.state.ready;
      if (phase !== 'Running') ready = false;
      else if (probeDue) {
        entry.probedAt = now;
        ready = await entry.containers.ready().catch(() => false);
      }
      const restarts = entry.containers.restarts;
      if (phase === entry.state.phase && ready === entry.state.ready && restarts === entry.state.restarts) return;
      changed = true;
      if (ready && entry.state.readyAt === undefined) entry.state.readyAt = Date.now();
      Object.assign(entry.state, { phase, ready, restarts });
      const podIPs = [entry.pod.ip, ...(entry.pod.ip6 ? [entry.pod.ip6] : [])].map((ip) => ({ ip }));
      await mesh?.cluster.updatePodStatus(entry.pod, { phase, podIP: entry.pod.ip, podIPs, conditions: [{ type: 'Ready', status: ready ? 'True' : 'False' }] });
    }),
  );
  const services = (accepted?.objects ?? []).filter((object) => object.kind === 'Service').map(describeService);
  if (accepted !== undefined && JSON.stringify(services) !== JSON.stringify(state.services)) {
    state.services = services;
    changed = true;
  }
  // A Service the runtime refused (a cluster IP out of range or taken, a bad spec) is a problem like a bad document.
  const refused = (mesh?.cluster.services?.problems ?? []).map((problem) => problem.message);
  if (JSON.stringify(refused) !== JSON.stringify(serviceProblems)) {
    state.problems = [...state.problems.filter((problem) => !serviceProblems.includes(problem)), ...refused];
    for (const problem of refused) if (!serviceProblems.includes(problem)) log(`refused: ${problem}`);
    serviceProblems = refused;
    changed = true;
  }
  if (changed && !stopping) await publishState();
}

let statusPass: Promise<void> | undefined;
/** The runtime's Services' problems last copied into state.problems. */
let serviceProblems: string[] = [];

/** Starts a status pass unless the last one is still probing (a loaded machine makes probes slow). */
function statusTick(): void {
  statusPass ??= updateStatus()
    .catch((error: unknown) => log(`status: ${(error as Error).message}`))
    .finally(() => {
      statusPass = undefined;
    });
}

async function main(): Promise<void> {
  await mkdir(path.join(logs, 'pods'), { recursive: true });
  await publishState();
  images = await readImageMap(DEFAULT_IMAGE_MAP);
  if (values['image-map'] !== undefined) await readImageMap(path.resolve(values['image-map']), images);
  const plan = await planWorkloads(state.dir, images);
  state.problems.push(...plan.problems);
  for (const problem of plan.problems) log(`not run: ${problem}`);
  state.services = plan.objects.filter((object) => object.kind === 'Service').map(describeService);
  pods.push(...plan.pods.map(entryFor));
  await publishState();
  log(`building ${state.nodeCount} nodes, the control plane and the agents`);
  mesh = await createLocalMesh({ nodes: state.nodeCount, ...(controlPlaneSource === 'kubernetes' ? { controlPlaneSource: kubernetesControlPlaneSource } : {}) });
  state.meshUpAt = Date.now();
  const cluster = mesh.cluster;
  Object.assign(state, { tmpDir: cluster.tmpDir, caDir: mesh.caDir, clusterDir: cluster.clusterDir });
  for (const node of cluster.nodes) {
    const link = path.join(logs, `agent-${node.name}.log`);
    await rm(link, { force: true });
    await symlink(node.agentLogFile, link);
    state.nodes.push({ name: node.name, netns: node.netnsName, agentLog: link });
  }
  if (mesh.controlPlaneLogFile !== undefined) {
    state.controlPlaneLog = path.join(logs, 'controlplane.log');
    await rm(state.controlPlaneLog, { force: true });
    await symlink(mesh.controlPlaneLogFile, state.controlPlaneLog);
  }
  await publishState();
  // The user's Namespaces first: the runtime writes its own only for namespaces the directory does not define.
  const userNamespaces = new Set<string>();
  for (const namespace of plan.namespaces) {
    userNamespaces.add(namespace.metadata.name);
    await cluster.setNamespaceLabels(namespace.metadata.name, namespace.metadata.labels ?? {});
  }
  for (const namespace of new Set(pods.map((entry) => entry.state.namespace))) {
    if (userNamespaces.has(namespace)) continue;
    await cluster.setNamespaceLabels(namespace, {});
    state.notes.push(`namespace ${namespace} is not in ${state.dir}: created with no labels (not enrolled)`);
  }
  await writeUserObjects(plan);
  control = await serveControl(runDir, { deletePod: (namespace, name) => serialized(() => deletePod(namespace, name)) });
  if (clusterApi === undefined) await startKubernetesApi(mesh.cluster.clusterDir);
  state.phase = 'running';
  await publishState();
  log(`mesh up (run ${cluster.runId}); making ${pods.length} pods`);
  statusTimer = setInterval(statusTick, STATUS_INTERVAL_MS);
  accepted = plan;
  // Watching from now: a change made while the first pods start is applied after them.
  await watchDirectory(state.dir, () => {
    void reloadNow().catch((error: unknown) => log(`reload failed: ${(error as Error).message}`));
  });
  const target = mesh;
  await serialized(() => createPods(target, [...pods]));
  log('every pod created');
  await serialized(() => reconcileWaypoints(plan));
  await publishState();
}

let accepted: WorkloadPlan | undefined;
/** Re-reads of the directory and requests (pod deletions) run one at a time, in order. */
let changing: Promise<unknown> = Promise.resolve();

function serialized<T>(change: () => Promise<T>): Promise<T> {
  const result = changing.catch(() => undefined).then(change);
  changing = result;
  return result;
}

/**
 * Deletes a pod as `kubectl delete pod` does, and makes the pod that replaces it as its controller would: a
 * Deployment's replica is replaced by a new pod with a new name (the ReplicaSet keeps its replica count); a Pod
 * from a file is made again under its own name (the file is its desired state, as a kubelet's static pod manifest
 * is: delete the file to remove it for good).
 */
async function deletePod(namespace: string, name: string): Promise<DeletedPod> {
  const entry = pods.find((candidate) => candidate.state.namespace === namespace && candidate.state.name === name);
  if (entry === undefined || mesh === undefined) throw new WorkloadError('NO_SUCH_POD', `no pod ${namespace}/${name}`);
  pods.splice(pods.indexOf(entry), 1);
  await entry.containers?.stop();
  if (entry.pod !== undefined) await mesh.cluster.deletePod(entry.pod);
  log(`pod ${namespace}/${name} deleted on request`);
  const replacement = entryFor(entry.plan.key.startsWith('deployment/') ? replacementReplica(entry.plan) : entry.plan);
  pods.push(replacement);
  await publishState();
  await createPods(mesh, [replacement]);
  log(`pod ${namespace}/${name} replaced by ${replacement.state.namespace}/${replacement.state.name}`);
  return { deleted: `${namespace}/${name}`, replacement: `${replacement.state.namespace}/${replacement.state.name}` };
}

let clusterApi: ClusterApi | undefined;

/** Re-reads the directory after any change under way; resolves with the problems that made it refuse the change. */
function reloadNow(): Promise<string[]> {
  return serialized(reload);
}

/**
 * The Kubernetes API for kubectl (cluster-api.ts): what it shows is read from the cluster, what it writes is an
 * edit of the user's directory applied by reloadNow(). The kubeconfig goes into the run directory.
 */
async function startKubernetesApi(clusterDir: string, controlPlaneIn?: { netns: string; address: string }): Promise<void> {
  clusterApi = await ClusterApi.start({
    ...(controlPlaneIn !== undefined ? { controlPlaneIn } : {}),
    userDir: state.dir,
    clusterDir,
    runDir,
    logDir: logs,
    pods: () => pods.map((entry) => entry.state),
    nodes: () => state.nodes,
    apply: reloadNow,
    deleteReplica: (namespace, name) => serialized(() => deletePod(namespace, name)),
  });
  Object.assign(state, { kubeconfig: clusterApi.kubeconfigFile, apiServer: clusterApi.url });
  log(`Kubernetes API at ${clusterApi.url}; kubeconfig ${clusterApi.kubeconfigFile}`);
}

/**
 * `--control-plane-source kubernetes` (the default): the control plane reads the cluster through this API (its
 * Kubernetes source, the code path of a cluster) and writes status through it, served inside the fabric namespace
 * where it runs; the CA directory and node tokens stay the local mode's (`--identity-from local`: this API serves no
 * TokenReviews or Secrets). With `dir` it reads the cluster state directory.
 */
async function kubernetesControlPlaneSource(cluster: LocalMesh['cluster'], fabricAddress: string): Promise<string[]> {
  await startKubernetesApi(cluster.clusterDir, { netns: netnsPath(cluster.fabricNetns), address: fabricAddress });
  return ['--source', 'kubernetes', '--kubeconfig', controlPlaneKubeconfigFile(runDir), '--identity-from', 'local'];
}

let images: Awaited<ReturnType<typeof readImageMap>>;


function entryFor(podPlan: PodPlan): RunningPod {
  const { metadata } = podPlan.object;
  return {
    plan: podPlan,
    state: { namespace: metadata.namespace, name: metadata.name, node: '', ip: '', netns: '', phase: 'Pending', ready: false, restarts: 0, images: podPlan.containers.map((c) => c.image), containers: podPlan.containers.map((c) => c.name), source: podPlan.source },
  };
}

/** A Gateway of class istio-waypoint: the runtime deploys it (as Istio's deployment controller would) instead of copying it. */
function isWaypointGateway(object: K8sObject): boolean {
  return object.kind === 'Gateway' && (object.spec as { gatewayClassName?: string } | undefined)?.gatewayClassName === 'istio-waypoint';
}

/** Running waypoints by `<namespace>/<name>`, with the Gateway they were made from. */
const waypoints = new Map<string, { waypoint: LocalWaypoint; spec: string }>();

/** Makes a waypoint pod for every waypoint Gateway in the plan, and removes those whose Gateway went (or changed). */
async function reconcileWaypoints(plan: WorkloadPlan): Promise<void> {
  if (mesh === undefined) return;
  const wanted = new Map(plan.objects.filter(isWaypointGateway).map((object) => [`${object.metadata?.namespace || 'default'}/${object.metadata?.name}`, object]));
  for (const [key, running] of waypoints) {
    const object = wanted.get(key);
    if (object && JSON.stringify(object.metadata?.labels ?? {}) === running.spec) continue;
    waypoints.delete(key);
    await running.waypoint.delete().catch((error: unknown) => log(`waypoint ${key}: ${(error as Error).message}`));
    log(`waypoint ${key} removed`);
  }
  let index = 0;
  for (const [key, object] of wanted) {
    if (waypoints.has(key)) continue;
    const [namespace = 'default', name = ''] = key.split('/');
    const waypointFor = object.metadata?.labels?.['istio.io/waypoint-for'] as 'service' | 'workload' | 'all' | 'none' | undefined;
    try {
      const waypoint = await createWaypoint(mesh, { node: index++ % mesh.cluster.nodes.length, namespace, name, ...(waypointFor ? { waypointFor } : {}) });
      waypoints.set(key, { waypoint, spec: JSON.stringify(object.metadata?.labels ?? {}) });
      log(`waypoint ${key} on ${waypoint.pod.node.name} at ${waypoint.pod.ip}`);
    } catch (error) {
      state.problems.push(`${where(object)}: waypoint ${key}: ${(error as Error).message}`);
    }
  }
}

function where(object: K8sObject): string {
  return `Gateway ${object.metadata?.namespace || 'default'}/${object.metadata?.name}`;
}

async function writeUserObjects(plan: WorkloadPlan): Promise<void> {
  const userDir = path.join(mesh!.cluster.clusterDir, 'user');
  // Retried: the Services controller may be writing a cluster IP into a file here (ENOTEMPTY).
  await rm(userDir, { recursive: true, force: true, maxRetries: 5 });
  await mkdir(userDir, { recursive: true });
  for (const [index, object] of plan.objects.entries()) {
    // Waypoint Gateways are written by the waypoint they make (with its address in status): runtime/waypoint.ts.
    if (isWaypointGateway(object)) continue;
    const file = `${String(index).padStart(4, '0')}-${object.kind}.${object.metadata?.namespace || 'default'}.${object.metadata?.name}.yaml`;
    await writeFile(path.join(userDir, file.replace(/[^A-Za-z0-9._-]/g, '_')), stringify(object));
  }
  state.services = plan.objects.filter((object) => object.kind === 'Service').map(describeService);
}

/** Re-reads the directory and applies what changed; a new problem rejects the whole re-read (and is returned). */
async function reload(): Promise<string[]> {
  if (stopping || mesh === undefined || accepted === undefined) return ['the local mesh is starting or stopping: try again'];
  const plan = await planWorkloads(state.dir, images);
  const fresh = plan.problems.filter((problem) => !accepted!.problems.includes(problem));
  if (fresh.length > 0) {
    for (const problem of fresh) {
      log(`change rejected, nothing applied: ${problem}`);
      if (!state.problems.includes(problem)) state.problems.push(problem);
    }
    await publishState();
    return fresh;
  }
  state.problems = [...plan.problems, ...serviceProblems];
  const cluster = mesh.cluster;
  const oldLabels = new Map(accepted.namespaces.map((namespace) => [namespace.metadata.name, JSON.stringify(namespace.metadata.labels ?? {})]));
  for (const namespace of plan.namespaces) {
    if (oldLabels.get(namespace.metadata.name) === JSON.stringify(namespace.metadata.labels ?? {})) continue;
    log(`namespace ${namespace.metadata.name}: labels ${JSON.stringify(namespace.metadata.labels ?? {})}`);
    await cluster.setNamespaceLabels(namespace.metadata.name, namespace.metadata.labels ?? {});
  }
  await writeUserObjects(plan);
  const wanted = new Map(plan.pods.map((podPlan) => [podPlan.key, podPlan]));
  const gone = pods.filter((entry) => !wanted.has(entry.plan.key));
  for (const entry of gone) pods.splice(pods.indexOf(entry), 1);
  const updated = await updatePodsInPlace(wanted);
  const have = new Set(pods.map((entry) => entry.plan.key));
  const added = plan.pods.filter((podPlan) => !have.has(podPlan.key)).map(entryFor);
  await Promise.all(
    gone.map(async (entry) => {
      await entry.containers?.stop();
      if (entry.pod !== undefined) await cluster.deletePod(entry.pod).catch((error: unknown) => log(`deleting ${entry.state.namespace}/${entry.state.name}: ${(error as Error).message}`));
      // A file's Pod edited beyond its labels and annotations: Kubernetes refuses that update on a running pod; an
      // edited file is the user's new desired pod, so it is made again under its name.
      const again = added.some((next) => next.plan.key.startsWith('pod/') && next.state.namespace === entry.state.namespace && next.state.name === entry.state.name);
      log(`pod ${entry.state.namespace}/${entry.state.name} deleted${again ? `: its spec changed in ${entry.plan.source.replace(/:\d+$/, '')} (Kubernetes cannot change it on a running pod), so it is made again` : ''}`);
    }),
  );
  for (const namespace of new Set(added.map((entry) => entry.state.namespace))) {
    if (plan.namespaces.some((candidate) => candidate.metadata.name === namespace) || pods.some((entry) => entry.state.namespace === namespace)) continue;
    await cluster.setNamespaceLabels(namespace, {});
  }
  pods.push(...added);
  accepted = plan;
  await publishState();
  await createPods(mesh, added);
  await reconcileWaypoints(plan);
  await publishState();
  log(`change applied: ${added.length} pods added, ${gone.length} deleted, ${updated} updated in place`);
  return [];
}

/**
 * A file's Pod whose labels or annotations changed (same key: nothing else did) is updated in place, as Kubernetes
 * updates a running pod: its Pod object gets the new metadata (the agent's own annotation kept), so enrollment and
 * the policies that select it follow, and it keeps its network namespace, IP and processes. Returns how many.
 */
async function updatePodsInPlace(wanted: Map<string, PodPlan>): Promise<number> {
  let count = 0;
  for (const entry of pods) {
    const next = wanted.get(entry.plan.key);
    // A Deployment's replicas: their key covers the template's labels, and the plan's names are new each read.
    if (next === undefined || !entry.plan.key.startsWith('pod/')) continue;
    const before = entry.plan.object.metadata;
    const after = next.object.metadata;
    entry.plan = next;
    entry.state.source = next.source;
    if (JSON.stringify(before.labels ?? {}) === JSON.stringify(after.labels ?? {}) && JSON.stringify(before.annotations ?? {}) === JSON.stringify(after.annotations ?? {})) continue;
    count++;
    if (entry.pod === undefined || mesh === undefined) continue; // not made yet: it is made with the new metadata
    await mesh.cluster.updatePodMetadata(entry.pod, { labels: after.labels ?? {}, annotations: after.annotations ?? {}, previousAnnotations: before.annotations ?? {} });
    log(`pod ${entry.state.namespace}/${entry.state.name}: labels ${JSON.stringify(after.labels ?? {})}, annotations ${JSON.stringify(after.annotations ?? {})}: updated in place (same IP, network namespace and processes)`);
  }
  return count;
}

main().catch(async (error: unknown) => {
  log(`failed: ${(error as Error).stack ?? String(error)}`);
  state.phase = 'failed';
  state.error = (error as Error).message;
  await publishState().catch(() => undefined);
  await stop('failure');
});
