/**
 * Reads the kubeconfig the plugin uses in Kubernetes mode: the current context's API server, its CA and the
 * credentials (a bearer token, a token file, or a client certificate).
 *
 * Owns: choosing the current context, resolving file references relative to the kubeconfig, and saying which
 * field is wrong. Must not know about: pods, HTTP, or CNI output.
 *
 * Why not @kubernetes/client-node's KubeConfig (used by the control plane): the plugin is a process per pod start,
 * and importing client-node costs about 0.95 s here (its config module pulls in the generated API), three times the
 * plugin's whole run. The subset read here is what the installer writes (`cni/service-account-kubeconfig.ts`) and
 * what a person writes by hand; `exec` and `auth-provider` plugins are refused with a message saying so.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { ApiCredentials } from '../shared/k8s/api-request.ts';

export class KubeconfigError extends Error {
  constructor(file: string, message: string) {
    super(`kubeconfig ${file}: ${message}`);
    this.name = 'KubeconfigError';
  }
}

type Entry = Record<string, unknown>;

function isEntry(value: unknown): value is Entry {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/** The named entry's inner object (`clusters[].cluster`, `users[].user`, `contexts[].context`). */
function named(file: string, root: Entry, list: string, field: string, name: string): Entry {
  const entries = root[list];
  if (entries !== undefined && !Array.isArray(entries)) throw new KubeconfigError(file, `"${list}" must be a list`);
  const found = (entries ?? []).find((entry: unknown) => isEntry(entry) && entry.name === name) as Entry | undefined;
  if (found === undefined) throw new KubeconfigError(file, `no ${list.slice(0, -1)} named "${name}" in "${list}"`);
  const inner = found[field];
  if (!isEntry(inner)) throw new KubeconfigError(file, `${list.slice(0, -1)} "${name}" has no "${field}" object`);
  return inner;
}

function optionalString(file: string, entry: Entry, field: string, where: string): string | undefined {
  const value = entry[field];
  if (value === undefined || value === null || value === '') return undefined;
  if (typeof value !== 'string') throw new KubeconfigError(file, `${where} "${field}" must be a string`);
  return value;
}

/** `<field>-data` (base64, inline) or `<field>` (a file, relative to the kubeconfig's directory). */
async function dataOrFile(file: string, entry: Entry, field: string, where: string): Promise<Buffer | undefined> {
  const data = optionalString(file, entry, `${field}-data`, where);
  if (data !== undefined) return Buffer.from(data, 'base64');
  const reference = optionalString(file, entry, field, where);
  if (reference === undefined) return undefined;
  const resolved = path.resolve(path.dirname(file), reference);
  try {
    return await readFile(resolved);
  } catch (error) {
    throw new KubeconfigError(file, `${where} "${field}" names ${resolved}, which cannot be read: ${(error as Error).message}`);
  }
}

/** The current context's credentials, in the shape shared/k8s/api-request.ts sends requests with. */
export async function readKubeconfig(file: string): Promise<ApiCredentials> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    throw new KubeconfigError(file, `cannot be read: ${(error as Error).message}`);
  }
  let root: unknown;
  try {
    // JSON first (what the installer writes and client-node exports; JSON is YAML too): the YAML parser costs a pod
    // start about 30 ms to load, so it is loaded only for a kubeconfig a person wrote in YAML.
    root = JSON.parse(text);
  } catch {
    try {
      const { parse } = await import('yaml');
      root = parse(text);
    } catch (error) {
      throw new KubeconfigError(file, `is not valid YAML: ${(error as Error).message}`);
    }
  }
  if (!isEntry(root)) throw new KubeconfigError(file, 'is not a kubeconfig (expected a mapping with clusters, users and contexts)');
  const contextName = root['current-context'];
  if (typeof contextName !== 'string' || contextName === '') throw new KubeconfigError(file, 'has no "current-context"');
  const context = named(file, root, 'contexts', 'context', contextName);
  const clusterName = optionalString(file, context, 'cluster', `context "${contextName}"`);
  if (clusterName === undefined) throw new KubeconfigError(file, `context "${contextName}" names no cluster`);
  const cluster = named(file, root, 'clusters', 'cluster', clusterName);
  const server = optionalString(file, cluster, 'server', `cluster "${clusterName}"`);
  if (server === undefined || !/^https?:\/\//.test(server)) throw new KubeconfigError(file, `cluster "${clusterName}" needs "server": https://host:port`);
  const credentials: ApiCredentials = { server: server.replace(/\/+$/, ''), insecureSkipTlsVerify: cluster['insecure-skip-tls-verify'] === true };
  const ca = await dataOrFile(file, cluster, 'certificate-authority', `cluster "${clusterName}"`);
  if (ca) credentials.ca = ca;

  const userName = optionalString(file, context, 'user', `context "${contextName}"`);
  if (userName === undefined) return credentials;
  const user = named(file, root, 'users', 'user', userName);
  for (const unsupported of ['exec', 'auth-provider', 'username', 'password']) {
    if (user[unsupported] !== undefined) {
      throw new KubeconfigError(file, `user "${userName}" uses "${unsupported}", which ambit-cni does not support: use "token", "tokenFile" or a client certificate (the installer writes such a kubeconfig)`);
    }
  }
  const token = optionalString(file, user, 'token', `user "${userName}"`);
  if (token !== undefined) credentials.token = token;
  const tokenFile = optionalString(file, user, 'tokenFile', `user "${userName}"`);
  if (tokenFile !== undefined) credentials.tokenFile = path.resolve(path.dirname(file), tokenFile);
  const clientCertificate = await dataOrFile(file, user, 'client-certificate', `user "${userName}"`);
  const clientKey = await dataOrFile(file, user, 'client-key', `user "${userName}"`);
  if ((clientCertificate === undefined) !== (clientKey === undefined)) {
    throw new KubeconfigError(file, `user "${userName}" needs both a client certificate and a client key, or neither`);
  }
  if (clientCertificate && clientKey) {
    credentials.clientCertificate = clientCertificate;
    credentials.clientKey = clientKey;
  }
  return credentials;
}
