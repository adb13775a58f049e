/**
 * Kubernetes mode: reads the pod being added and its namespace from the API server (two GETs, side by side),
 * with the credentials of the plugin's kubeconfig.
 *
 * Owns: the HTTPS requests, their deadline and retries, and turning API server answers into CNI errors a person
 * can act on (which credentials, which RBAC verb). Transient failures (no connection, a timeout, 429, 5xx) are
 * retried until RETRY_DEADLINE_MS; anything else fails at once. The plugin fails closed on every error, so an
 * enrolled pod never starts uncaptured because the API server was briefly away: the runtime retries the sandbox.
 * Must not know about: enrollment rules, the agent, or CNI output.
 */
import https from 'node:https';
import http from 'node:http';
import { readFile } from 'node:fs/promises';
import type { NamespaceObject, PodObject } from '../shared/k8s/objects.ts';
import { CniError, CniErrorCode } from './errors.ts';
import { KubeconfigError, readKubeconfig, type KubeconfigCredentials } from './kubeconfig.ts';

/** One request's limit. */
export const REQUEST_TIMEOUT_MS = 5_000;
/** How long transient failures are retried before ADD gives up (the runtime retries the whole sandbox later). */
export const RETRY_DEADLINE_MS = 10_000;
const FIRST_BACKOFF_MS = 100;
const MAX_BACKOFF_MS = 1_000;

interface ApiAnswer {
  status: number;
  body: unknown;
}

/** A failure worth retrying: the request may succeed a moment later. */
class TransientError extends Error {}

async function bearerToken(credentials: KubeconfigCredentials): Promise<string | undefined> {
  if (credentials.tokenFile !== undefined) {
    try {
      return (await readFile(credentials.tokenFile, 'utf8')).trim();
    } catch (error) {
      throw new CniError(CniErrorCode.IO_FAILURE, `cannot read the API server token file ${credentials.tokenFile}: ${(error as Error).message}`);
    }
  }
  return credentials.token;
}

function get(credentials: KubeconfigCredentials, token: string | undefined, apiPath: string): Promise<ApiAnswer> {
  // Appended, not resolved: a server URL may carry a path (an API server behind a proxy, e.g. Rancher's
  // /k8s/clusters/<id>), which `new URL('/api/...', server)` would drop.
  const url = new URL(`${credentials.server}${apiPath}`);
  const secure = url.protocol === 'https:';
  const options: https.RequestOptions = {
    method: 'GET',
    headers: { accept: 'application/json', 'user-agent': 'ambit-cni', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    timeout: REQUEST_TIMEOUT_MS,
    ...(secure
      ? {
          rejectUnauthorized: !credentials.insecureSkipTlsVerify,
          ...(credentials.ca ? { ca: credentials.ca } : {}),
          ...(credentials.clientCertificate ? { cert: credentials.clientCertificate, key: credentials.clientKey } : {}),
        }
      : {}),
  };
  return new Promise((resolve, reject) => {
    const request = (secure ? https : http).request(url, options, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('error', (error) => reject(new TransientError(`reading ${apiPath} from ${credentials.server}: ${error.message}`)));
      response.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let body: unknown = text;
        try {
          body = JSON.parse(text);
        } catch {
          // Not JSON (a proxy's error page): kept as text for the message.
        }
        resolve({ status: response.statusCode ?? 0, body });
      });
    });
    request.on('timeout', () => request.destroy(new Error(`no answer within ${REQUEST_TIMEOUT_MS} ms`)));
    request.on('error', (error: NodeJS.ErrnoException) => {
      // A TLS verification failure will not go away by retrying: say which setting decides it.
      if (error.code?.startsWith('ERR_TLS') || /certificate|self.signed/i.test(error.message)) {
        reject(new CniError(CniErrorCode.IO_FAILURE, `the API server ${credentials.server} failed TLS verification (${error.message}): check the kubeconfig's certificate-authority`));
        return;
      }
      reject(new TransientError(`GET ${apiPath} from ${credentials.server}: ${error.message}`));
    });
    request.end();
  });
}

function statusMessage(body: unknown): string {
  if (body !== null && typeof body === 'object' && typeof (body as { message?: unknown }).message === 'string') return (body as { message: string }).message;
  return typeof body === 'string' ? body.slice(0, 200) : '';
}

/** GETs one object; undefined when the API server says 404. Retries transient failures until `deadline`. */
async function getObject(credentials: KubeconfigCredentials, apiPath: string, what: string, deadline: number): Promise<unknown> {
  let backoff = FIRST_BACKOFF_MS;
  for (;;) {
    let answer: ApiAnswer | undefined;
    let transient: string;
    try {
      answer = await get(credentials, await bearerToken(credentials), apiPath);
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
      if (!(error instanceof TransientError)) throw error;
      transient = error.message;
    }
    if (Date.now() + backoff > deadline) {
      throw new CniError(CniErrorCode.TRY_AGAIN_LATER, `cannot read ${what} from the API server ${credentials.server} (retried for ${RETRY_DEADLINE_MS / 1000} s): ${transient}`);
    }
    await new Promise((resolve) => setTimeout(resolve, backoff));
    backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
  }
}

export interface ApiServerLookup {
  pod: PodObject;
  namespace: NamespaceObject | undefined;
}

export async function lookupPodInApiServer(kubeconfig: string, podNamespace: string, podName: string): Promise<ApiServerLookup> {
  let credentials: KubeconfigCredentials;
  try {
    credentials = await readKubeconfig(kubeconfig);
  } catch (error) {
    if (error instanceof KubeconfigError) throw new CniError(CniErrorCode.INVALID_NETWORK_CONFIG, `${error.message} (the "kubeconfig" of the ambit-cni config)`);
    throw error;
  }
  const deadline = Date.now() + RETRY_DEADLINE_MS;
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
function asObject(body: unknown, what: string, credentials: KubeconfigCredentials): Record<string, unknown> {
  const metadata = (body as { metadata?: unknown } | null)?.metadata;
  if (body === null || typeof body !== 'object' || metadata === null || typeof metadata !== 'object') {
    throw new CniError(CniErrorCode.IO_FAILURE, `the API server ${credentials.server} answered 200 for ${what} without a Kubernetes object: ${JSON.stringify(body).slice(0, 120)}`);
  }
  return body as Record<string, unknown>;
}
