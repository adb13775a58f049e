/**
 * ECDSA P-256 key pairs and certificate signing requests for workload identities.
 *
 * Owns: making keys, PEM import/export, building a CSR that carries one SPIFFE URI SAN.
 * Must not know about: CAs, certificate stores, TLS.
 */
import { generateKeyPair as generateNodeKeyPair, createPrivateKey, createPublicKey, KeyObject, sign, type webcrypto } from 'node:crypto';

type CryptoKey = webcrypto.CryptoKey;
import { promisify } from 'node:util';
import { bitString, oid, TAG, tlv, toPem } from './der.ts';
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

const EXTENSION_REQUEST_OID = '1.2.840.113549.1.9.14';
const SUBJECT_ALT_NAME_OID = '2.5.29.17';
const ECDSA_WITH_SHA256_OID = '1.2.840.10045.4.3.2';

/**
 * A PEM CSR for `identity`: empty subject, one critical URI SAN, as Istio's agents send. Built in DER here and signed
 * with node:crypto (PKCS#10, RFC 2986), so an agent or waypoint, which only asks for certificates, does not load
 * @peculiar/x509 and its ASN.1 packages (about 18 MB of a waypoint's RSS).
 */
export async function createCsr(keys: KeyPair, identity: SpiffeId): Promise<string> {
  const spki = KeyObject.from(keys.publicKey).export({ type: 'spki', format: 'der' });
  const san = tlv(TAG.SEQUENCE, oid(SUBJECT_ALT_NAME_OID), tlv(TAG.BOOLEAN, Buffer.from([0xff])), tlv(TAG.OCTET_STRING, tlv(TAG.SEQUENCE, tlv(0x86, Buffer.from(identity.uri, 'latin1')))));
  const extensionRequest = tlv(TAG.SEQUENCE, oid(EXTENSION_REQUEST_OID), tlv(TAG.SET, tlv(TAG.SEQUENCE, san)));
  const info = tlv(TAG.SEQUENCE, tlv(TAG.INTEGER, Buffer.from([0])), tlv(TAG.SEQUENCE), spki, tlv(0xa0, extensionRequest));
  const signature = sign('sha256', info, { key: KeyObject.from(keys.privateKey), dsaEncoding: 'der' });
  return toPem('CERTIFICATE REQUEST', tlv(TAG.SEQUENCE, info, tlv(TAG.SEQUENCE, oid(ECDSA_WITH_SHA256_OID)), bitString(signature)));
}
