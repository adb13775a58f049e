/**
 * In a cluster, the plugin runs on the host (the container runtime execs it), where the installer's pod files are
 * out of reach. So the installer writes a kubeconfig for it into the CNI conf dir, as istio-cni writes
 * ZZZ-istio-cni-kubeconfig: the API server from KUBERNETES_SERVICE_HOST/PORT, the cluster CA and the installer's
 * own service account token (inline: the host cannot read the pod's projected token file), and writes it again
 * when the token rotates (the kubelet refreshes projected tokens well before they expire).
 *
 * Owns: rendering that kubeconfig from a service account directory and keeping it current (write only on change,
 * atomically, mode 0600: it holds a credential).
 * Must not know about: conflists or the plugin binary (install.ts), or how the plugin reads it (kubeconfig.ts).
 */
import { readFile } from 'node:fs/promises';

/** Where the kubelet mounts a pod's service account credentials. */
export const DEFAULT_SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';
/** The file the installer writes in the CNI conf dir (not a *.conf/*.conflist: runtimes ignore it). */
export const PLUGIN_KUBECONFIG_NAME = 'ambit-cni-kubeconfig';

export class ServiceAccountError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ServiceAccountError';
  }
}

async function readRequired(file: string, what: string): Promise<string> {
  try {
    const text = (await readFile(file, 'utf8')).trim();
    if (text === '') throw new Error('the file is empty');
    return text;
  } catch (error) {
    throw new ServiceAccountError(`cannot read the service account's ${what} at ${file}: ${(error as Error).message} (is automountServiceAccountToken off?)`);
  }
}

/** The plugin's kubeconfig, from the installer pod's service account and environment. */
export async function renderServiceAccountKubeconfig(env: NodeJS.ProcessEnv, serviceAccountDir = DEFAULT_SERVICE_ACCOUNT_DIR): Promise<string> {
  const host = env.KUBERNETES_SERVICE_HOST;
  const port = env.KUBERNETES_SERVICE_PORT || '443';
  if (!host) throw new ServiceAccountError('KUBERNETES_SERVICE_HOST is not set: --kubeconfig-from-service-account only works inside a Kubernetes pod');
  if (!/^\d+$/.test(port)) throw new ServiceAccountError(`KUBERNETES_SERVICE_PORT=${port} is not a port number`);
  const token = await readRequired(`${serviceAccountDir}/token`, 'token');
  const ca = await readRequired(`${serviceAccountDir}/ca.crt`, 'CA certificate');
  // An IPv6 service host needs brackets in a URL.
  const server = `https://${host.includes(':') ? `[${host}]` : host}:${port}`;
  // JSON, which is YAML too: the plugin reads it without loading a YAML parser.
  const kubeconfig = {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'local', cluster: { server, 'certificate-authority-data': Buffer.from(`${ca}\n`).toString('base64') } }],
    users: [{ name: 'ambit-cni', user: { token } }],
    contexts: [{ name: 'ambit-cni', context: { cluster: 'local', user: 'ambit-cni' } }],
    'current-context': 'ambit-cni',
  };
  return `${JSON.stringify(kubeconfig, null, 2)}\n`;
}
