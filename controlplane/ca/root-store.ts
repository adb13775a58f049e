/**
 * Where the mesh root (certificate and key) lives between control plane restarts.
 *
 * Owns: opening the root on start, creating a self-signed one on first start and reusing it afterwards, in a
 * directory (local mode: `root-cert.pem`, `ca-key.pem` with mode 0600) or in the Kubernetes Secret
 * `istio-ca-secret` of the control plane's namespace (keys `ca-cert.pem`, `ca-key.pem`, as istiod's
 * self-signed CA keeps them).
 * Must not know about: signing requests, who may ask, publishing the root to workloads (root-publisher.ts).
 */
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { CoreV1Api, V1Secret } from '@kubernetes/client-node';
import { CertificateAuthority } from '../../shared/identity/index.ts';
import { CA_SECRET_CERT_KEY, CA_SECRET_KEY_KEY, CA_SECRET_NAME, LOCAL_ROOT_CERT_FILE, LOCAL_ROOT_KEY_FILE } from './config.ts';

export interface OpenedRoot {
  ca: CertificateAuthority;
  /** True when this start made the root (first start), false when an existing one was loaded. */
  created: boolean;
}

async function readIfExists(file: string): Promise<string | undefined> {
  try {
    return await readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

/** Writes `text` to `file` through a temporary file and a rename, so a crash never leaves half a PEM. */
async function writeAtomically(file: string, text: string, mode: number): Promise<void> {
  const temporary = `${file}.${process.pid}.tmp`;
  try {
    await writeFile(temporary, text, { mode, flag: 'wx' });
    await rename(temporary, file);
  } finally {
    await rm(temporary, { force: true });
  }
}

/** Local mode: the root in `dir`, created (key 0600) on first start and loaded on every later one. */
export async function openLocalRoot(options: { dir: string; trustDomain: string }): Promise<OpenedRoot> {
  const certFile = path.join(options.dir, LOCAL_ROOT_CERT_FILE);
  const keyFile = path.join(options.dir, LOCAL_ROOT_KEY_FILE);
  const [certPem, keyPem] = await Promise.all([readIfExists(certFile), readIfExists(keyFile)]);
  if (certPem !== undefined && keyPem !== undefined) {
    return { ca: await CertificateAuthority.load({ trustDomain: options.trustDomain, certPem, keyPem }), created: false };
  }
  if (certPem !== undefined || keyPem !== undefined) {
    const [present, missing] = certPem !== undefined ? [certFile, keyFile] : [keyFile, certFile];
    throw new Error(`CA root directory ${options.dir} has ${path.basename(present)} but not ${path.basename(missing)}: restore the missing file, or remove both to start a new root (every workload certificate then changes trust)`);
  }
  await mkdir(options.dir, { recursive: true, mode: 0o700 });
  const ca = await CertificateAuthority.createRoot({ trustDomain: options.trustDomain });
  // Key first: a root certificate on disk without its key would make the next start refuse.
  await writeAtomically(keyFile, ca.rootKeyPem, 0o600);
  await writeAtomically(certFile, ca.rootCertPem, 0o644);
  return { ca, created: true };
}

function statusCode(error: unknown): number | undefined {
  const code = (error as { code?: unknown; statusCode?: unknown }).code ?? (error as { statusCode?: unknown }).statusCode;
  return typeof code === 'number' ? code : undefined;
}

function decodeSecretValue(secret: V1Secret, key: string): string | undefined {
  const base64 = secret.data?.[key];
  return base64 === undefined ? undefined : Buffer.from(base64, 'base64').toString('utf8');
}

async function loadFromSecret(secret: V1Secret, namespace: string, trustDomain: string): Promise<CertificateAuthority> {
  const certPem = decodeSecretValue(secret, CA_SECRET_CERT_KEY);
  const keyPem = decodeSecretValue(secret, CA_SECRET_KEY_KEY);
  if (!certPem || !keyPem) {
    throw new Error(`Secret ${namespace}/${CA_SECRET_NAME} lacks ${!certPem ? CA_SECRET_CERT_KEY : CA_SECRET_KEY_KEY}: fix or delete it (deleting starts a new root)`);
  }
  return CertificateAuthority.load({ trustDomain, certPem, keyPem });
}

/**
 * Kubernetes mode: the root in Secret `istio-ca-secret` of `namespace`; created when absent. When two control
 * plane replicas start together, the one whose create loses (409 Conflict) loads the winner's root.
 */
export async function openKubernetesRoot(options: { core: CoreV1Api; namespace: string; trustDomain: string }): Promise<OpenedRoot> {
  const { core, namespace, trustDomain } = options;
  try {
    const secret = await core.readNamespacedSecret({ name: CA_SECRET_NAME, namespace });
    return { ca: await loadFromSecret(secret, namespace, trustDomain), created: false };
  } catch (error) {
    if (statusCode(error) !== 404) throw error;
  }
  const ca = await CertificateAuthority.createRoot({ trustDomain });
  const body: V1Secret = {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: { name: CA_SECRET_NAME, namespace },
    type: 'istio.io/ca-root',
    data: {
      [CA_SECRET_CERT_KEY]: Buffer.from(ca.rootCertPem).toString('base64'),
      [CA_SECRET_KEY_KEY]: Buffer.from(ca.rootKeyPem).toString('base64'),
    },
  };
  try {
    await core.createNamespacedSecret({ namespace, body });
    return { ca, created: true };
  } catch (error) {
    if (statusCode(error) !== 409) throw error;
    const secret = await core.readNamespacedSecret({ name: CA_SECRET_NAME, namespace });
    return { ca: await loadFromSecret(secret, namespace, trustDomain), created: false };
  }
}
