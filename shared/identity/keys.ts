/**
 * ECDSA P-256 key pairs and certificate signing requests for workload identities.
 *
 * Owns: making keys, PEM import/export, building a CSR that carries one SPIFFE URI SAN.
 * Must not know about: CAs, certificate stores, TLS.
 */
import { generateKeyPair as generateNodeKeyPair, createPrivateKey, createPublicKey, type KeyObject, type webcrypto } from 'node:crypto';

type CryptoKey = webcrypto.CryptoKey;
import { promisify } from 'node:util';
import { x509 } from './crypto-provider.ts';
import type { SpiffeId } from './spiffe.ts';

const generateKeyPairAsync = promisify(generateNodeKeyPair);

/** Istio's workload key type: P-256 handshakes cost a fraction of RSA-2048's. */
export const EC_KEY_ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256' } as const;
export const SIGNING_ALGORITHM = { name: 'ECDSA', hash: 'SHA-256' } as const;

export interface KeyPair {
  privateKey: CryptoKey;
  publicKey: CryptoKey;
  /** PKCS#8 PEM, what node:tls takes as `key`. */
  privateKeyPem: string;
}

async function fromKeyObjects(privateKey: KeyObject, publicKey: KeyObject): Promise<KeyPair> {
  return {
    privateKey: privateKey.toCryptoKey(EC_KEY_ALGORITHM, true, ['sign']) as CryptoKey,
    publicKey: publicKey.toCryptoKey(EC_KEY_ALGORITHM, true, ['verify']) as CryptoKey,
    privateKeyPem: privateKey.export({ format: 'pem', type: 'pkcs8' }) as string,
  };
}

/** A fresh P-256 key pair. */
export async function generateKeyPair(): Promise<KeyPair> {
  const { privateKey, publicKey } = await generateKeyPairAsync('ec', { namedCurve: 'P-256' });
  return fromKeyObjects(privateKey, publicKey);
}

/** Loads a P-256 private key from PEM (PKCS#8 or SEC1). */
export async function importPrivateKeyPem(pem: string): Promise<KeyPair> {
  const privateKey = createPrivateKey(pem);
  if (privateKey.asymmetricKeyType !== 'ec' || privateKey.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
    throw new Error(`expected an ECDSA P-256 private key, got ${privateKey.asymmetricKeyType} ${privateKey.asymmetricKeyDetails?.namedCurve ?? ''}`.trim());
  }
  return fromKeyObjects(privateKey, createPublicKey(privateKey));
}

/** A PEM CSR for `identity`: empty subject, one critical URI SAN, as Istio's agents send. */
export async function createCsr(keys: KeyPair, identity: SpiffeId): Promise<string> {
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    keys: { privateKey: keys.privateKey, publicKey: keys.publicKey },
    signingAlgorithm: SIGNING_ALGORITHM,
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: identity.uri }], true)],
  });
  return csr.toString('pem');
}
