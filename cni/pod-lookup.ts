/**
 * Finds the pod being added and its namespace, from wherever the config says pods live.
 *
 * Owns: choosing the source; local mode (a cluster directory of YAML) here, Kubernetes mode (the API server) in
 * api-server-lookup.ts.
 * Must not know about: enrollment rules, the agent, or CNI output.
 */
import type { ClusterDirParseCache, ClusterDirProblem } from '../shared/k8s/cluster-dir.ts';
import type { NamespaceObject, PodObject } from '../shared/k8s/objects.ts';
import type { PodSource } from './config.ts';
import { CniError, CniErrorCode } from './errors.ts';

export interface PodLookup {
  pod: PodObject;
  namespace: NamespaceObject | undefined;
  /** Documents in the source that could not be read (logged by the caller, never fatal). */
  problems: ClusterDirProblem[];
}

/**
 * Parsed cluster directories by path, kept by a caller that looks pods up many times (the node agent runs every CNI
 * call of its node): each lookup then stats the directory's files and parses only those that changed, instead of
 * parsing every manifest for every pod.
 */
export type PodLookupCache = Map<string, ClusterDirParseCache>;

/** More distinct cluster directories than any node's configs name: beyond it, lookups parse without a cache. */
const MAX_CACHED_DIRS = 8;

/**
 * `deadline` (epoch ms, optional): the caller's whole budget; API server retries stop there. `cache`: see
 * PodLookupCache (a one-shot plugin process passes none).
 */
export async function lookupPod(source: PodSource, podNamespace: string, podName: string, deadline?: number, cache?: PodLookupCache): Promise<PodLookup> {
  if (source.mode === 'kubernetes') {
    // Loaded only in Kubernetes mode: local mode never pays for the HTTPS client.
    const { lookupPodInApiServer } = await import('./api-server-lookup.ts');
    return { ...(await lookupPodInApiServer(source.kubeconfig, podNamespace, podName, deadline)), problems: [] };
  }
  // Loaded only in local mode: the YAML reader costs a pod start in Kubernetes mode about 30 ms for nothing.
  const { ClusterDirError, readClusterDir } = await import('../shared/k8s/cluster-dir.ts');
  let snapshot;
  try {
    snapshot = await readClusterDir(source.clusterDir, parseCacheFor(cache, source.clusterDir));
  } catch (error) {
    if (error instanceof ClusterDirError) {
      throw new CniError(CniErrorCode.IO_FAILURE, `${error.message}: check "clusterDir" in the ambit-cni config`);
    }
    throw error;
  }
  const pod = snapshot.findPod(podNamespace, podName);
  if (pod === undefined) {
    // Fail rather than guess: the pod could be enrolled, and an enrolled pod must never start uncaptured.
    throw new CniError(
      CniErrorCode.TRY_AGAIN_LATER,
      `pod ${podNamespace}/${podName} not found in cluster directory ${source.clusterDir}: the Pod object must be written before its sandbox is created`,
    );
  }
  return { pod, namespace: snapshot.findNamespace(podNamespace), problems: snapshot.errors };
}

function parseCacheFor(cache: PodLookupCache | undefined, dir: string): ClusterDirParseCache | undefined {
  if (cache === undefined) return undefined;
  let parsed = cache.get(dir);
  if (parsed === undefined && cache.size < MAX_CACHED_DIRS) {
    parsed = new Map();
    cache.set(dir, parsed);
  }
  return parsed;
}
