/**
 * Marks captured pods as Istio's CNI node agent does: annotation `ambient.istio.io/redirection: enabled` on the Pod
 * while its traffic is redirected, removed when it no longer is, so Istio's tools (istioctl, Kiali) and people see
 * which pods are in the mesh.
 *
 * Owns: where the mark goes (the API server in a cluster: a JSON merge patch with the agent's service account; the
 * Pod's file in a local cluster directory), and that a failure to mark is reported, never a failed capture (the
 * traffic is captured either way; the mark only describes it).
 * Must not know about: capture itself (main.ts marks while the capture's rules go in, and unmarks a capture that failed).
 */
import { readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';
import { apiRequest, statusMessage, type ApiCredentials } from '../shared/k8s/api-request.ts';
import { objectSource, readClusterDir, type ClusterDirParseCache } from '../shared/k8s/cluster-dir.ts';

export { REDIRECTION_ANNOTATION, REDIRECTION_ENABLED } from '../shared/k8s/enrollment.ts';
import { REDIRECTION_ANNOTATION, REDIRECTION_ENABLED } from '../shared/k8s/enrollment.ts';

export interface PodRef {
  namespace: string;
  name: string;
}

export interface PodAnnotator {
  /** Sets (captured) or removes (released) the annotation; rejects with a message when it could not. */
  mark(pod: PodRef, captured: boolean): Promise<void>;
}

/** In a cluster: PATCH the Pod (merge patch; null removes the key). A pod already gone is nothing to do. */
export function apiServerAnnotator(credentials: ApiCredentials): PodAnnotator {
  return {
    async mark(pod, captured) {
      const answer = await apiRequest(credentials, {
        method: 'PATCH',
        path: `/api/v1/namespaces/${encodeURIComponent(pod.namespace)}/pods/${encodeURIComponent(pod.name)}`,
        contentType: 'application/merge-patch+json',
        body: { metadata: { annotations: { [REDIRECTION_ANNOTATION]: captured ? REDIRECTION_ENABLED : null } } },
      });
      if (answer.status === 404) return;
      if (answer.status !== 200) {
        throw new Error(`the API server answered ${answer.status} to the annotation patch of pod ${pod.namespace}/${pod.name}${answer.status === 403 ? ' (the agent needs "patch" on pods)' : ''}: ${statusMessage(answer.body)}`);
      }
    },
  };
}

/**
 * Local mode: the cluster directory stands in for the API server, so the mark goes into the Pod's own file
 * (replaced atomically; a file holding other documents too is left alone, with an error saying so).
 */
export function clusterDirAnnotator(clusterDir: string): PodAnnotator {
  // Files unchanged since the last mark are not parsed again (every enrolled ADD marks a pod: re-parsing the whole
  // directory each time cost an ADD milliseconds that grow with the cluster).
  const parseCache: ClusterDirParseCache = new Map();
  return {
    async mark(pod, captured) {
      const snapshot = await readClusterDir(clusterDir, parseCache);
      const object = snapshot.findPod(pod.namespace, pod.name);
      if (!object) return;
      const source = objectSource(object);
      if (!source) throw new Error(`cannot tell which file of ${clusterDir} holds pod ${pod.namespace}/${pod.name}`);
      const documents = parseAllDocuments(await readFile(source.file, 'utf8'));
      if (documents.length !== 1) throw new Error(`pod ${pod.namespace}/${pod.name} is in ${source.file} with other documents: not annotated there`);
      const document = documents[0]!;
      if (captured) document.setIn(['metadata', 'annotations', REDIRECTION_ANNOTATION], REDIRECTION_ENABLED);
      else if (document.hasIn(['metadata', 'annotations', REDIRECTION_ANNOTATION])) document.deleteIn(['metadata', 'annotations', REDIRECTION_ANNOTATION]);
      else return;
      // A dot-name first (readers skip those), then one rename: a reader never sees half a file.
      const temporary = path.join(path.dirname(source.file), `.${path.basename(source.file)}.${process.pid}.annotate.tmp`);
      await writeFile(temporary, document.toString());
      await rename(temporary, source.file);
    },
  };
}
