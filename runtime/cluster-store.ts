/**
 * Writes the local runtime's Namespace and Pod objects into the cluster state directory, the mesh's
 * "API server" in local mode: `namespaces/<name>.yaml` and `pods/<namespace>.<name>.yaml`, atomically.
 *
 * Owns: the object shapes the runtime publishes and their file names.
 * Must not know about: how pods get their network, or who reads the directory.
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
