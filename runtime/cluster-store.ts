/**
 * Where the local runtime publishes its Namespace and Pod objects: the `ClusterObjectStore` seam (the four things
 * `kubectl apply` and the kubelet do to an API server), and its default, the cluster state directory, the mesh's
 * "API server" in local mode: `namespaces/<name>.yaml` and `pods/<namespace>.<name>.yaml`, atomically.
 *
 * Owns: the object shapes the runtime publishes, the store interface, the directory's file names, and how a pod's
 * metadata changes in place.
 * Must not know about: how pods get their network, who reads the objects, or which API server (if any) a
 * non-directory store talks to.
 */
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parse, stringify } from 'yaml';
import type { NamespaceObject, PodObject } from '../shared/k8s/objects.ts';

export function namespaceFile(clusterDir: string, name: string): string {
  return path.join(clusterDir, 'namespaces', `${name}.yaml`);
}

export function podFile(clusterDir: string, namespace: string, name: string): string {
  return path.join(clusterDir, 'pods', `${namespace}.${name}.yaml`);
}

/** Readers never see a half-written file: write a dot-file (readers skip those) and rename over the target. */
async function writeAtomically(file: string, text: string): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  const temp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${Date.now()}.tmp`);
  await writeFile(temp, text);
  await rename(temp, file);
}

export function namespaceObject(name: string, labels: Record<string, string>): NamespaceObject {
  return { apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels } };
}

export async function writeNamespace(clusterDir: string, namespace: NamespaceObject): Promise<void> {
  await writeAtomically(namespaceFile(clusterDir, namespace.metadata.name), stringify(namespace));
}

export async function writePod(clusterDir: string, pod: PodObject): Promise<void> {
  await writeAtomically(podFile(clusterDir, pod.metadata.namespace ?? 'default', pod.metadata.name), stringify(pod));
}

export async function removePod(clusterDir: string, namespace: string, name: string): Promise<void> {
  await rm(podFile(clusterDir, namespace, name), { force: true });
}

/**
 * Sets a published pod's status, keeping whatever else is in the file now (the agent may have annotated the
 * pod while CNI ADD ran; a blind rewrite would drop that).
 */
export async function updatePodStatus(clusterDir: string, pod: PodObject, status: NonNullable<PodObject['status']>): Promise<void> {
  const file = podFile(clusterDir, pod.metadata.namespace ?? 'default', pod.metadata.name);
  let current: PodObject = pod;
  try {
    const parsed = parse(await readFile(file, 'utf8')) as PodObject | null;
    if (parsed?.kind === 'Pod') current = parsed;
  } catch {
    // missing or unreadable: publish ours
  }
  await writePod(clusterDir, { ...current, status });
}

/** A pod's new labels and annotations, as its owner now writes them, and the annotations its owner wrote before. */
export interface PodMetadataChange {
  labels: Record<string, string>;
  annotations: Record<string, string>;
  /** The owner's annotations before: one it dropped is removed; one another writer added (the agent's mark) stays. */
  previousAnnotations: Record<string, string>;
}

/** The annotations after a change: others' kept, the owner's as it now says (kubectl apply's three-way merge). */
export function mergedAnnotations(current: Record<string, string>, change: PodMetadataChange): Record<string, string> {
  const merged: Record<string, string> = {};
  for (const [key, value] of Object.entries(current)) if (!(key in change.previousAnnotations)) merged[key] = value;
  return { ...merged, ...change.annotations };
}

/**
 * Changes a published pod's labels and annotations in place (Kubernetes lets them change on a running pod), keeping
 * the rest of the file as it is now (status, the agent's annotation).
 */
export async function updatePodMetadata(clusterDir: string, pod: PodObject, change: PodMetadataChange): Promise<PodObject> {
  const file = podFile(clusterDir, pod.metadata.namespace ?? 'default', pod.metadata.name);
  let current: PodObject = pod;
  try {
    const parsed = parse(await readFile(file, 'utf8')) as PodObject | null;
    if (parsed?.kind === 'Pod') current = parsed;
  } catch {
    // missing or unreadable: publish ours
  }
  const next: PodObject = { ...current, metadata: { ...current.metadata, labels: { ...change.labels }, annotations: mergedAnnotations(current.metadata.annotations ?? {}, change) } };
  await writePod(clusterDir, next);
  return next;
}

/**
 * Where a cluster publishes its objects. The directory below is the default (local mode); Kubernetes mode hands the
 * cluster one that writes to an API server instead.
 */
export interface ClusterObjectStore {
  /** Creates or replaces a Namespace (labels included). */
  writeNamespace(namespace: NamespaceObject): Promise<void>;
  /** Creates or replaces a Pod, before its sandbox exists (as the scheduler's binding does). */
  writePod(pod: PodObject): Promise<void>;
  /** Sets a published pod's status (the kubelet's report once the CNI chain gave it an IP), keeping the rest. */
  updatePodStatus(pod: PodObject, status: NonNullable<PodObject['status']>): Promise<void>;
  /** Removes a Pod; absent is fine. */
  removePod(namespace: string, name: string): Promise<void>;
  /** Changes a published pod's labels and annotations in place (a store without it cannot: the pod is replaced). */
  updatePodMetadata?(pod: PodObject, change: PodMetadataChange): Promise<void>;
}

/** The cluster directory as a ClusterObjectStore. */
export function directoryObjectStore(clusterDir: string): ClusterObjectStore {
  return {
    writeNamespace: (namespace) => writeNamespace(clusterDir, namespace),
    writePod: (pod) => writePod(clusterDir, pod),
    updatePodStatus: (pod, status) => updatePodStatus(clusterDir, pod, status),
    removePod: (namespace, name) => removePod(clusterDir, namespace, name),
    updatePodMetadata: async (pod, change) => {
      await updatePodMetadata(clusterDir, pod, change);
    },
  };
}
