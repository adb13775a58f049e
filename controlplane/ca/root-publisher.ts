/**
 * Telling workloads which root to trust.
 *
 * Owns: writing the root certificate where agents and workloads read it: ConfigMap `istio-ca-root-cert`
 * (key `root-cert.pem`) in every namespace in Kubernetes, or a file in local mode. (Keeping the ConfigMaps as
 * published is root-configmap-guard.ts.)
 * Must not know about: the root's key, signing, which namespaces exist beyond listing them.
 */
import { rename, rm, writeFile } from 'node:fs/promises';
import type { CoreV1Api, V1ConfigMap } from '@kubernetes/client-node';
import { ROOT_CONFIGMAP_KEY, ROOT_CONFIGMAP_NAME } from './config.ts';

/** Local mode: the root certificate at `file` (world-readable; it is public), replaced atomically. */
export async function publishRootFile(file: string, rootCertPem: string): Promise<void> {
  const temporary = `${file}.${process.pid}.tmp`;
  try {
    await writeFile(temporary, rootCertPem, { mode: 0o644 });
    await rename(temporary, file);
  } finally {
    await rm(temporary, { force: true });
  }
}

function statusCode(error: unknown): number | undefined {
  const code = (error as { code?: unknown }).code;
  return typeof code === 'number' ? code : undefined;
}

/** Creates or updates `istio-ca-root-cert` in `namespace`; returns whether anything was written. */
export async function publishRootConfigMap(core: CoreV1Api, namespace: string, rootCertPem: string): Promise<boolean> {
  let existing: V1ConfigMap | undefined;
  try {
    existing = await core.readNamespacedConfigMap({ name: ROOT_CONFIGMAP_NAME, namespace });
  } catch (error) {
    if (statusCode(error) !== 404) throw error;
  }
  if (existing?.data?.[ROOT_CONFIGMAP_KEY] === rootCertPem) return false;
  const body: V1ConfigMap = {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: { ...(existing?.metadata ?? {}), name: ROOT_CONFIGMAP_NAME, namespace, labels: { ...existing?.metadata?.labels, 'istio.io/config': 'true' } },
    data: { ...existing?.data, [ROOT_CONFIGMAP_KEY]: rootCertPem },
  };
  if (existing) await core.replaceNamespacedConfigMap({ name: ROOT_CONFIGMAP_NAME, namespace, body });
  else await core.createNamespacedConfigMap({ namespace, body });
  return true;
}

/**
 * Publishes the root in every namespace that exists now; returns the namespaces written. The control plane
 * calls `publishRootConfigMap` again for each namespace its watch sees created later.
 */
export async function publishRootToAllNamespaces(core: CoreV1Api, rootCertPem: string): Promise<string[]> {
  const written: string[] = [];
  const namespaces = await core.listNamespace();
  for (const item of namespaces.items) {
    const name = item.metadata?.name;
    if (name && !item.metadata?.deletionTimestamp && (await publishRootConfigMap(core, name, rootCertPem))) written.push(name);
  }
  return written;
}

