/**
 * Turns a directory of a user's Kubernetes YAML into what the local runtime runs: the Namespaces, the pods (a
 * Deployment's replicas expanded into `<name>-<hash>-<suffix>` pods with the pod-template-hash label and an owner
 * reference) with the argv, env and readiness check of every container, and every other object (Services,
 * ServiceAccounts, mesh resources) to publish as is. A bad document, or a pod that cannot run, is a problem naming
 * the file, line and reason; everything else still comes up.
 *
 * Owns: reading the user's directory, validation of what runs, Deployment expansion.
 * Must not know about: nodes, network namespaces, processes.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readClusterDir, objectSource } from '../../shared/k8s/cluster-dir.ts';
import type { K8sObject, NamespaceObject, PodObject } from '../../shared/k8s/objects.ts';
import { isValidPodName } from '../topology.ts';
import { WorkloadError } from './errors.ts';
import { containerArgv, type ImageMap } from './image-map.ts';

/** The downward API fields a container's env may name (`valueFrom.fieldRef.fieldPath`). */
export const DOWNWARD_FIELDS = ['metadata.name', 'metadata.namespace', 'status.podIP', 'spec.nodeName', 'spec.serviceAccountName'] as const;
export type DownwardField = (typeof DOWNWARD_FIELDS)[number];

export type EnvValue = { value: string } | { field: DownwardField };

/** How Ready is decided: a readinessProbe, or (none) started and listening on every declared port. */
export type Readiness =
  | { kind: 'tcpSocket'; port: number }
  | { kind: 'httpGet'; port: number; path: string }
  | { kind: 'exec'; command: string[] }
  | { kind: 'listening'; ports: number[] };

export interface ContainerPlan {
  name: string;
  image: string;
  argv: string[];
  env: [string, EnvValue][];
  workingDir?: string;
  readiness: Readiness;
  /** How often a Ready container is probed again (readinessProbe.periodSeconds, Kubernetes' default 10 s). */
  probePeriodMs: number;
}

export interface PodPlan {
  /**
   * What the pod is, for a re-read of the directory: the same key means the same pod (kept running), a new key a
   * new pod. A Pod's key covers its whole object but its labels and annotations (an edit of those updates the pod in
   * place, as Kubernetes does; any other edit replaces it); a Deployment's replica i of template hash h is
   * `deployment/<ns>/<name>/<h>/<i>` (scaling adds or removes indices, a template edit replaces them all).
   */
  key: string;
  /** The Pod object to publish (metadata and spec as the user gave them, Deployment fields added). */
  object: PodObject & { metadata: { namespace: string } };
  containers: ContainerPlan[];
  restartPolicy: 'Always' | 'OnFailure' | 'Never';
  /** `file:line` of the document the pod came from. */
  source: string;
}

export interface WorkloadPlan {
  namespaces: NamespaceObject[];
  pods: PodPlan[];
  /** Everything else, published for the control plane as written (Services, mesh resources, ...). */
  objects: K8sObject[];
  /** `file:line: reason`, one per document that is not run. */
  problems: string[];
}

/** Kubernetes' default readinessProbe.periodSeconds. */
const DEFAULT_PROBE_PERIOD_S = 10;

/** Kubernetes' alphabet for generated name parts (no vowels, no look-alikes). */
const NAME_ALPHABET = 'bcdfghjklmnpqrstvwxz2456789';

function encode(bytes: Buffer, length: number): string {
  let out = '';
  for (let index = 0; index < length; index++) out += NAME_ALPHABET[bytes[index]! % NAME_ALPHABET.length];
  return out;
}

/** The pod-template-hash of a Deployment's template (stable for one template, changes when it changes). */
export function podTemplateHash(template: unknown): string {
  return encode(createHash('sha256').update(JSON.stringify(template)).digest(), 10);
}

function where(object: K8sObject): string {
  const source = objectSource(object);
  return source ? `${source.file}:${source.line}` : '(unknown file)';
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function probePort(value: unknown, container: Record<string, unknown>): number | undefined {
  if (typeof value === 'number') return value;
  if (typeof value === 'string') {
    const ports = Array.isArray(container.ports) ? (container.ports as Record<string, unknown>[]) : [];
    const named = ports.find((port) => port.name === value)?.containerPort;
    return typeof named === 'number' ? named : Number.isInteger(Number(value)) ? Number(value) : undefined;
  }
  return undefined;
}

/** Builds one container's plan, or says why it cannot run. */
function planContainer(images: ImageMap, container: unknown, podName: string): ContainerPlan | string {
  if (!isRecord(container) || typeof container.name !== 'string') return `pod ${podName}: a container has no name`;
  const label = `pod ${podName}, container ${container.name}`;
  for (const field of ['command', 'args'] as const) {
    const value = container[field];
    if (value !== undefined && (!Array.isArray(value) || !value.every((word) => typeof word === 'string'))) return `${label}: ${field} must be a list of strings`;
  }
  const image = typeof container.image === 'string' ? container.image : '';
  const argv = containerArgv(images, { image, command: container.command as string[] | undefined, args: container.args as string[] | undefined });
  if (argv === undefined) {
    return `${label}: image "${image}" has no command: give the container a command, or add the image to the image map (runtime/workloads/images.yaml)`;
  }
  const env: [string, EnvValue][] = [];
  for (const entry of Array.isArray(container.env) ? container.env : []) {
    if (!isRecord(entry) || typeof entry.name !== 'string') return `${label}: an env entry has no name`;
    if (entry.valueFrom !== undefined) {
      const fieldPath = isRecord(entry.valueFrom) && isRecord(entry.valueFrom.fieldRef) ? entry.valueFrom.fieldRef.fieldPath : undefined;
      if (!(DOWNWARD_FIELDS as readonly unknown[]).includes(fieldPath)) {
        return `${label}: env ${entry.name}: only valueFrom.fieldRef with ${DOWNWARD_FIELDS.join(', ')} is supported`;
      }
      env.push([entry.name, { field: fieldPath as DownwardField }]);
    } else {
      env.push([entry.name, { value: entry.value === undefined ? '' : String(entry.value) }]);
    }
  }
  const probe = isRecord(container.readinessProbe) ? container.readinessProbe : undefined;
  let readiness: Readiness;
  if (probe === undefined) {
    const ports = (Array.isArray(container.ports) ? container.ports : []).map((port) => (isRecord(port) ? port.containerPort : undefined));
    readiness = { kind: 'listening', ports: ports.filter((port): port is number => typeof port === 'number') };
  } else if (isRecord(probe.tcpSocket)) {
    const port = probePort(probe.tcpSocket.port, container);
    if (port === undefined) return `${label}: readinessProbe.tcpSocket.port is not a port`;
    readiness = { kind: 'tcpSocket', port };
  } else if (isRecord(probe.httpGet)) {
    const port = probePort(probe.httpGet.port, container);
    if (port === undefined) return `${label}: readinessProbe.httpGet.port is not a port`;
    readiness = { kind: 'httpGet', port, path: typeof probe.httpGet.path === 'string' ? probe.httpGet.path : '/' };
  } else if (isRecord(probe.exec) && Array.isArray(probe.exec.command) && probe.exec.command.length > 0) {
    readiness = { kind: 'exec', command: probe.exec.command.map(String) };
  } else {
    return `${label}: readinessProbe needs tcpSocket, httpGet or exec`;
  }
  const period = probe?.periodSeconds ?? DEFAULT_PROBE_PERIOD_S;
  if (typeof period !== 'number' || !(period >= 1)) return `${label}: readinessProbe.periodSeconds must be a number of at least 1`;
  return {
    name: container.name,
    image,
    argv,
    env,
    ...(typeof container.workingDir === 'string' ? { workingDir: container.workingDir } : {}),
    readiness,
    probePeriodMs: period * 1000,
  };
}

function planPod(images: ImageMap, object: PodObject & { metadata: { namespace: string } }, source: string): PodPlan | string {
  const name = `${object.metadata.namespace}/${object.metadata.name}`;
  if (!isValidPodName(object.metadata.name)) return `pod ${name}: the name must be a DNS label (lowercase letters, digits, '-')`;
  const containers = object.spec?.containers;
  if (!Array.isArray(containers) || containers.length === 0) return `pod ${name}: spec.containers is empty`;
  const plans: ContainerPlan[] = [];
  for (const container of containers) {
    const plan = planContainer(images, container, name);
    if (typeof plan === 'string') return plan;
    plans.push(plan);
  }
  const restartPolicy = object.spec?.restartPolicy ?? 'Always';
  if (restartPolicy !== 'Always' && restartPolicy !== 'OnFailure' && restartPolicy !== 'Never') return `pod ${name}: restartPolicy must be Always, OnFailure or Never`;
  return { key: `pod/${name}/${podTemplateHash(immutablePart(object))}`, object, containers: plans, restartPolicy, source };
}

/**
 * A Pod without what Kubernetes lets change on a running pod (labels, annotations): two versions of a Pod with the
 * same immutable part are the same pod, updated in place.
 */
function immutablePart(object: PodObject): PodObject {
  const { labels: _labels, annotations: _annotations, ...metadata } = object.metadata;
  return { ...object, metadata: metadata as PodObject['metadata'] };
}

/** A new name for a replica of a Deployment's template: `<deployment>-<pod-template-hash>-<5 random letters>`. */
function replicaName(deployment: string, hash: string): string {
  return `${deployment}-${hash}-${encode(randomBytes(5), 5)}`;
}

/**
 * The pod that replaces a deleted replica, as the ReplicaSet controller makes it: the same template, owner and
 * plan key, a new name.
 */
export function replacementReplica(plan: PodPlan): PodPlan {
  // The key is `deployment/<namespace>/<name>/<hash>/<index>` (see PodPlan.key).
  const [kind, , deployment, hash] = plan.key.split('/');
  if (kind !== 'deployment' || deployment === undefined || hash === undefined) {
    throw new WorkloadError('NOT_A_REPLICA', `pod ${plan.object.metadata.namespace}/${plan.object.metadata.name} is not a Deployment's replica`);
  }
  return { ...plan, object: { ...plan.object, metadata: { ...plan.object.metadata, name: replicaName(deployment, hash) } } };
}

/** A Deployment's replicas as pods (`<name>-<hash>-<suffix>`), or why it cannot run. */
function expandDeployment(images: ImageMap, deployment: K8sObject, namespace: string, source: string): PodPlan[] | string {
  const name = deployment.metadata!.name!;
  const spec = isRecord(deployment.spec) ? deployment.spec : {};
  const template = isRecord(spec.template) ? spec.template : undefined;
  if (template === undefined || !isRecord(template.spec)) return `deployment ${namespace}/${name}: spec.template.spec is missing`;
  const replicas = spec.replicas ?? 1;
  if (typeof replicas !== 'number' || !Number.isInteger(replicas) || replicas < 0) return `deployment ${namespace}/${name}: replicas must be a whole number`;
  const restartPolicy = template.spec.restartPolicy;
  if (restartPolicy !== undefined && restartPolicy !== 'Always') return `deployment ${namespace}/${name}: spec.template.spec.restartPolicy must be Always (a Deployment's pods always run), not ${String(restartPolicy)}`;
  const templateMeta = isRecord(template.metadata) ? (template.metadata as unknown as PodObject['metadata']) : { name: '' };
  const selector = isRecord(spec.selector) && isRecord(spec.selector.matchLabels) ? spec.selector.matchLabels : undefined;
  if (selector === undefined || Object.keys(selector).length === 0) return `deployment ${namespace}/${name}: spec.selector.matchLabels is missing`;
  const mismatch = Object.entries(selector).find(([key, value]) => templateMeta.labels?.[key] !== value);
  if (mismatch !== undefined) return `deployment ${namespace}/${name}: spec.selector.matchLabels ${mismatch[0]}=${String(mismatch[1])} does not match the template's labels`;
  const hash = podTemplateHash(template);
  const pods: PodPlan[] = [];
  for (let index = 0; index < replicas; index++) {
    const object: PodObject & { metadata: { namespace: string } } = {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {
        ...templateMeta,
        name: replicaName(name, hash),
        namespace,
        labels: { ...templateMeta.labels, 'pod-template-hash': hash },
        ownerReferences: [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: `${name}-${hash}`, controller: true, blockOwnerDeletion: true }],
      } as PodObject['metadata'] & { namespace: string },
      spec: template.spec as PodObject['spec'],
    };
    const plan = planPod(images, object, source);
    if (typeof plan === 'string') return plan;
    pods.push({ ...plan, key: `deployment/${namespace}/${name}/${hash}/${index}` });
  }
  return pods;
}

/** Reads the user's directory into a plan. Never throws for a bad document: it becomes a problem. */
export async function planWorkloads(dir: string, images: ImageMap): Promise<WorkloadPlan> {
  const snapshot = await readClusterDir(dir);
  const plan: WorkloadPlan = {
    namespaces: [],
    pods: [],
    objects: [],
    problems: snapshot.errors.map((problem) => `${problem.file}${problem.line !== undefined ? `:${problem.line}` : ''}: ${problem.message}`),
  };
  const podKeys = new Set<string>();
  const addPod = (pod: PodPlan, source: string): void => {
    const key = `${pod.object.metadata.namespace}/${pod.object.metadata.name}`;
    if (podKeys.has(key)) {
      plan.problems.push(`${source}: pod ${key} is defined twice`);
      return;
    }
    podKeys.add(key);
    plan.pods.push(pod);
  };
  for (const object of snapshot.objects) {
    const source = where(object);
    const namespace = object.metadata?.namespace || 'default';
    if (object.kind === 'Namespace') {
      plan.namespaces.push(object as NamespaceObject);
    } else if (object.kind === 'Pod') {
      const pod = planPod(images, { ...(object as PodObject), metadata: { ...(object as PodObject).metadata, namespace } }, source);
      if (typeof pod === 'string') plan.problems.push(`${source}: ${pod}`);
      else addPod(pod, source);
    } else if (object.kind === 'Deployment') {
      const pods = expandDeployment(images, object, namespace, source);
      if (typeof pods === 'string') plan.problems.push(`${source}: ${pods}`);
      else for (const pod of pods) addPod(pod, source);
    } else {
      plan.objects.push(object);
    }
  }
  return plan;
}
