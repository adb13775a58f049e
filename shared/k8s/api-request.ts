/**
 * One request to the Kubernetes API server over `node:https`, for the two programs that make a few calls and must
 * not load @kubernetes/client-node (about 0.95 s to import and 70-90 MB of memory): the CNI plugin (a process per
 * pod start: GET pod and namespace) and the agent (PATCH a captured pod's annotation). The control plane, which
 * lists and watches everything, uses client-node.
 *
 * Owns: the credentials' shape (server, CA, bearer token or token file, client certificate), in-cluster
 * credentials (a pod's service account), the request itself and its timeout, and telling a failure that may pass
 * (no connection, timeout) from one that will not (TLS verification, an unreadable token file).
 * Must not know about: which objects, retries, or how the caller reports errors.
 */
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import { readFileSync } from 'node:fs';

export interface ApiCredentials {
  /** https://host:port of the API server, possibly with a path (an API server behind a proxy). */
  server: string;
  /** PEM CA bundle that signs the API server's certificate; the system roots when absent. */
  ca?: Buffer;
  insecureSkipTlsVerify: boolean;
  /** Bearer token given inline. */
  token?: string;
  /** Bearer token read from this file for each request (projected tokens rotate). */
  tokenFile?: string;
  clientCertificate?: Buffer;
  clientKey?: Buffer;
}

/** Where the kubelet mounts a pod's service account credentials. */
export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';
export const DEFAULT_API_TIMEOUT_MS = 5_000;

export class ApiRequestError extends Error {
  /** True when the same request may succeed a moment later (no connection, timeout). */
  readonly transient: boolean;
  constructor(message: string, transient: boolean, options?: ErrorOptions) {
    super(message, options);
    this.name = 'ApiRequestError';
    this.transient = transient;
  }
}

export interface ApiAnswer {
  status: number;
  /** Parsed JSON, or the text when the answer is not JSON (a proxy's error page). */
  body: unknown;
}

/** The credentials of the pod this process runs in (KUBERNETES_SERVICE_HOST/PORT and the service account mount). */
export function inClusterCredentials(env: NodeJS.ProcessEnv = process.env, serviceAccountDir = SERVICE_ACCOUNT_DIR): ApiCredentials | undefined {
  const host = env.KUBERNETES_SERVICE_HOST;
  if (!host) return undefined;
  const port = env.KUBERNETES_SERVICE_PORT || '443';
  let ca: Buffer | undefined;
  try {
    ca = readFileSync(`${serviceAccountDir}/ca.crt`);
  } catch {
    return undefined;
  }
  return { server: `https://${host.includes(':') ? `[${host}]` : host}:${port}`, ca, insecureSkipTlsVerify: false, tokenFile: `${serviceAccountDir}/token` };
}

async function bearerToken(credentials: ApiCredentials): Promise<string | undefined> {
  if (credentials.tokenFile === undefined) return credentials.token;
  try {
    return (await readFile(credentials.tokenFile, 'utf8')).trim();
  } catch (error) {
    throw new ApiRequestError(`cannot read the API server token file ${credentials.tokenFile}: ${(error as Error).message}`, false, { cause: error });
  }
}

/** The Status message of an error answer, or the start of a text one. */
export function statusMessage(body: unknown): string {
  if (body !== null && typeof body === 'object' && typeof (body as { message?: unknown }).message === 'string') return (body as { message: string }).message;
  return typeof body === 'string' ? body.slice(0, 200) : '';
}

export interface ApiRequest {
  method: 'GET' | 'PATCH' | 'POST';
  path: string;
  /** JSON body and its content type (a merge patch: application/merge-patch+json). */
  body?: unknown;
  contentType?: string;
  timeoutMs?: number;
}

/** Sends one request; resolves with any HTTP answer, rejects with ApiRequestError when there is none. */
export async function apiRequest(credentials: ApiCredentials, request: ApiRequest): Promise<ApiAnswer> {
  const token = await bearerToken(credentials);
  // Appended, not resolved: a server URL may carry a path (an API server behind a proxy, e.g. Rancher's
  // /k8s/clusters/<id>), which `new URL('/api/...', server)` would drop.
  const url = new URL(`${credentials.server}${request.path}`);
  const secure = url.protocol === 'https:';
  const payload = request.body === undefined ? undefined : Buffer.from(JSON.stringify(request.body));
  const timeoutMs = request.timeoutMs ?? DEFAULT_API_TIMEOUT_MS;
  const options: https.RequestOptions = {
    method: request.method,
    headers: {
      accept: 'application/json',
      'user-agent': 'ambit',
      ...(token ? { authorization: `Bearer ${token}` } : {}),
      ...(payload ? { 'content-type': request.contentType ?? 'application/json', 'content-length': payload.length } : {}),
    },
    timeout: timeoutMs,
    ...(secure
      ? {
          rejectUnauthorized: !credentials.insecureSkipTlsVerify,
          ...(credentials.ca ? { ca: credentials.ca } : {}),
          ...(credentials.clientCertificate ? { cert: credentials.clientCertificate, key: credentials.clientKey } : {}),
        }
      : {}),
  };
  const what = `${request.method} ${request.path} on ${credentials.server}`;
  return new Promise((resolve, reject) => {
    const outgoing = (secure ? https : http).request(url, options, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('error', (error) => reject(new ApiRequestError(`${what}: ${error.message}`, true, { cause: error })));
      response.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let body: unknown = text;
        try {
          body = JSON.parse(text);
        } catch {
          // Not JSON: kept as text for the message.
        }
        resolve({ status: response.statusCode ?? 0, body });
      });
    });
    outgoing.on('timeout', () => outgoing.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    outgoing.on('error', (error: NodeJS.ErrnoException) => {
      // A TLS verification failure will not go away by retrying: say which setting decides it.
      if (error.code?.startsWith('ERR_TLS') || /certificate|self.signed/i.test(error.message)) {
        reject(new ApiRequestError(`the API server ${credentials.server} failed TLS verification (${error.message}): check the certificate authority it is verified against`, false, { cause: error }));
        return;
      }
      reject(new ApiRequestError(`${what}: ${error.message}`, true, { cause: error }));
    });
    outgoing.end(payload);
  });
}
