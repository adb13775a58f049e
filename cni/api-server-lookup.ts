/**
 * Kubernetes mode: reads the pod being added and its namespace from the API server (two GETs, side by side),
 * with the credentials of the plugin's kubeconfig.
 *
 * Owns: the two GETs (shared/k8s/api-request.ts), their deadline and retries, and turning API server answers into CNI errors a person
 * can act on (which credentials, which RBAC verb). Transient failures (no connection, a timeout, 429, 5xx) are
 * retried until RETRY_DEADLINE_MS; anything else fails at once. The plugin fails closed on every error, so an
 * enrolled pod never starts uncaptured because the API server was briefly away: the runtime retries the sandbox.
 * Must not know about: enrollment rules, the agent, or CNI output.
 */
import type { NamespaceObject, PodObject } from '../shared/k8s/objects.ts';
import { apiRequest, ApiRequestError, statusMessage, type ApiAnswer, type ApiCredentials } from '../shared/k8s/api-request.ts';
import { CniError, CniErrorCode } from './errors.ts';
import { KubeconfigError, readKubeconfig } from './kubeconfig.ts';

/** One request's limit. */
export const REQUEST_TIMEOUT_MS = 5_000;
/** How long transient failures are retried before ADD gives up (the runtime retries the whole sandbox later). */
export const RETRY_DEADLINE_MS = 10_000;
const FIRST_BACKOFF_MS = 100;
const MAX_BACKOFF_MS = 1_000;

/** GETs one object; undefined when the API server says 404. Retries transient failures until `deadline`. */
async function getObject(credentials: ApiCredentials, apiPath: string, what: string, deadline: number): Promise<unknown> {
  const started = Date.now();
  let backoff = FIRST_BACKOFF_MS;
  for (;;) {
    let answer: ApiAnswer | undefined;
    let transient: string;
    try {
      answer = await apiRequest(credentials, { method: 'GET', path: apiPath, timeoutMs: Math.max(1, Math.min(REQUEST_TIMEOUT_MS, deadline - Date.now())) });
      if (answer.status === 200) return answer.body;
      if (answer.status === 404) return undefined;
      if (answer.status === 401) {
        throw new CniError(CniErrorCode.IO_FAILURE, `the API server ${credentials.server} refused the kubeconfig's credentials (401 Unauthorized) reading ${what}: ${statusMessage(answer.body)}`);
      }
      if (answer.status === 403) {
        throw new CniError(CniErrorCode.IO_FAILURE, `the API server ${credentials.server} forbids reading ${what} (403): the plugin's service account needs "get" on pods and namespaces: ${statusMessage(answer.body)}`);
      }
      if (answer.status !== 429 && answer.status < 500) {
        throw new CniError(CniErrorCode.IO_FAILURE, `the API server ${credentials.server} answered ${answer.status} reading ${what}: ${statusMessage(answer.body)}`);
      }
      transient = `answered ${answer.status}: ${statusMessage(answer.body)}`;
    } catch (error) {
      // No answer at all: worth another try when it may pass (no connection, timeout), a CNI error when not.
      if (!(error instanceof ApiRequestError)) throw error;
      if (!error.transient) throw new CniError(CniErrorCode.IO_FAILURE, error.message);
      transient = error.message;
    }
    if (Date.now() + backoff > deadline) {
      throw new CniError(CniErrorCode.TRY_AGAIN_LATER, `cannot read ${what} from the API server ${credentials.server} (retried for ${((Date.now() - started) / 1000).toFixed(1)} s): ${transient}`);
    }
    await new Promise((resolve) => setTimeout(resolve, backoff));
    backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
  }
}

export interface ApiServerLookup {
  pod: PodObject;
  namespace: NamespaceObject | undefined;
}

/** `deadline` (epoch ms): the ADD's own, when sooner than RETRY_DEADLINE_MS from now (one budget per ADD). */
export async function lookupPodInApiServer(kubeconfig: string, podNamespace: string, podName: string, deadline = Date.now() + RETRY_DEADLINE_MS): Promise<ApiServerLookup> {
  let credentials: ApiCredentials;
  try {
    credentials = await readKubeconfig(kubeconfig);
  } catch (error) {
    if (error instanceof KubeconfigError) throw new CniError(CniErrorCode.INVALID_NETWORK_CONFIG, `${error.message} (the "kubeconfig" of the ambit-cni config)`);
    throw error;
  }
  deadline = Math.min(deadline, Date.now() + RETRY_DEADLINE_MS);
  const ns = encodeURIComponent(podNamespace);
  // Both settle before the plugin answers, so no retry is left running behind a failure.
  const [podAnswer, namespaceAnswer] = await Promise.allSettled([
    getObject(credentials, `/api/v1/namespaces/${ns}/pods/${encodeURIComponent(podName)}`, `pod ${podNamespace}/${podName}`, deadline),
    getObject(credentials, `/api/v1/namespaces/${ns}`, `namespace ${podNamespace}`, deadline),
  ]);
  if (podAnswer.status === 'rejected') throw podAnswer.reason;
  if (namespaceAnswer.status === 'rejected') throw namespaceAnswer.reason;
  const pod = podAnswer.value;
  const namespace = namespaceAnswer.value;
  if (pod === undefined) {
    // Fail rather than guess: the pod could be enrolled, and an enrolled pod must never start uncaptured.
    throw new CniError(CniErrorCode.TRY_AGAIN_LATER, `pod ${podNamespace}/${podName} not found in the API server ${credentials.server}`);
  }
  return { pod: { ...asObject(pod, `pod ${podNamespace}/${podName}`, credentials), kind: 'Pod' } as PodObject, namespace: namespace === undefined ? undefined : ({ ...asObject(namespace, `namespace ${podNamespace}`, credentials), kind: 'Namespace' } as NamespaceObject) };
}

/** An answer that is not a Kubernetes object (a proxy's page, a truncated body) is an error, never a pod without labels. */
function asObject(body: unknown, what: string, credentials: ApiCredentials): Record<string, unknown> {
  const metadata = (body as { metadata?: unknown } | null)?.metadata;
  if (body === null || typeof body !== 'object' || metadata === null || typeof metadata !== 'object') {
    throw new CniError(CniErrorCode.IO_FAILURE, `the API server ${credentials.server} answered 200 for ${what} without a Kubernetes object: ${JSON.stringify(body).slice(0, 120)}`);
  }
  return body as Record<string, unknown>;
}
