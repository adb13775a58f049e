/**
 * What a client needs to reach the local cluster's API and what proves it may: a self-signed serving certificate
 * (ECDSA P-256, SANs 127.0.0.1 and localhost, valid for the life of a run and a margin), a random bearer token,
 * and the kubeconfig that carries both, written 0600 because the token is a credential.
 *
 * Owns: the serving key pair, the token, the kubeconfig's text.
 * Must not know about: what the server serves.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { chmod, writeFile } from 'node:fs/promises';
import { stringify } from 'yaml';
import { x509 } from '../../shared/identity/crypto-provider.ts';
import { generateKeyPair, SIGNING_ALGORITHM } from '../../shared/identity/keys.ts';

/** A run lasts hours at most; a week leaves margin for a machine whose clock moves. */
const SERVING_CERT_VALIDITY_MS = 7 * 24 * 3600_000;
/** The cluster, user and context name in the kubeconfig. */
export const KUBECONFIG_NAME = 'ambit-local';

export interface ServingCredentials {
  keyPem: string;
  /** The certificate, which is also the CA the kubeconfig trusts (self-signed). */
  certPem: string;
  token: string;
}

export async function makeServingCredentials(hosts: string[]): Promise<ServingCredentials> {
  const keys = await generateKeyPair();
  const now = Date.now();
  const certificate = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomBytes(8).toString('hex'),
    name: 'CN=ambit-local-apiserver',
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + SERVING_CERT_VALIDITY_MS),
    signingAlgorithm: SIGNING_ALGORITHM,
    keys: { privateKey: keys.privateKey, publicKey: keys.publicKey },
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension([...hosts.map((host) => ({ type: 'ip' as const, value: host })), { type: 'dns', value: 'localhost' }]),
    ],
  });
  return { keyPem: keys.privateKeyPem, certPem: `${certificate.toString('pem')}\n`, token: randomBytes(32).toString('hex') };
}

/** Whether an Authorization header carries the token (compared in constant time). */
export function bearerMatches(header: string | undefined, token: string): boolean {
  if (header === undefined || !header.startsWith('Bearer ')) return false;
  const given = Buffer.from(header.slice('Bearer '.length));
  const wanted = Buffer.from(token);
  return given.length === wanted.length && timingSafeEqual(given, wanted);
}

export function kubeconfigYaml(server: string, credentials: ServingCredentials): string {
  return stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: KUBECONFIG_NAME, cluster: { server, 'certificate-authority-data': Buffer.from(credentials.certPem).toString('base64') } }],
    users: [{ name: KUBECONFIG_NAME, user: { token: credentials.token } }],
    contexts: [{ name: KUBECONFIG_NAME, context: { cluster: KUBECONFIG_NAME, user: KUBECONFIG_NAME } }],
    'current-context': KUBECONFIG_NAME,
    preferences: {},
  });
}

/** Writes the kubeconfig readable by its owner only (it holds the token). */
export async function writeKubeconfig(file: string, server: string, credentials: ServingCredentials): Promise<void> {
  await writeFile(file, kubeconfigYaml(server, credentials), { mode: 0o600 });
  await chmod(file, 0o600);
}
