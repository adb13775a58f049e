/**
 * A certificate authority for workload identities.
 *
 * Owns: making a self-signed root (local mode), loading a persisted root, and signing a CSR for exactly one
 * SPIFFE identity with a given lifetime. The control plane's CA service wraps this; tests use it directly.
 * Must not know about: who is allowed to ask for which identity (that is the CA service's authorization).
 */
import { createPrivateKey, randomBytes, X509Certificate, type webcrypto } from 'node:crypto';
import { x509 } from './crypto-provider.ts';
import { IdentityError } from './errors.ts';
import { createCsr, generateKeyPair, importPrivateKeyPem, SIGNING_ALGORITHM, type KeyPair } from './keys.ts';
import { parseSpiffeId, type SpiffeId } from './spiffe.ts';
import type { WorkloadCertificate } from './cert-store.ts';

/** The subjectAltName extension's OID (RFC 5280 4.2.1.6). */
const SUBJECT_ALT_NAME_OID = '2.5.29.17';
/** Istio's default workload certificate lifetime. */
export const DEFAULT_WORKLOAD_TTL_MS = 24 * 60 * 60 * 1000;
/** Istio's self-signed root lives ten years. */
export const DEFAULT_ROOT_TTL_MS = 10 * 365 * 24 * 60 * 60 * 1000;
/** Backdate notBefore so a peer whose clock runs a little behind still accepts a fresh certificate. */
const CLOCK_SKEW_ALLOWANCE_MS = 60 * 1000;

export interface SignOptions {
  /** Lifetime from now. */
  ttlMs?: number;
  /** When set, the CSR's identity must be exactly this one. */
  expectedIdentity?: SpiffeId;
}

function serialNumber(): string {
  const bytes = randomBytes(16);
  bytes[0] = bytes[0]! & 0x7f; // positive INTEGER
  return bytes.toString('hex');
}

function pemToDer(pem: string): Buffer {
  return Buffer.from(pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
}

export class CertificateAuthority {
  readonly trustDomain: string;
  readonly rootCertPem: string;
  readonly rootKeyPem: string;
  readonly #keys: KeyPair;
  readonly #root: x509.X509Certificate;

  private constructor(trustDomain: string, root: x509.X509Certificate, keys: KeyPair) {
    this.trustDomain = trustDomain;
    this.#root = root;
    this.#keys = keys;
    this.rootCertPem = root.toString('pem') + '\n';
    this.rootKeyPem = keys.privateKeyPem;
  }

  /** A new self-signed root for `trustDomain` (local mode, tests). */
  static async createRoot(options: { trustDomain: string; ttlMs?: number; organization?: string }): Promise<CertificateAuthority> {
    const keys = await generateKeyPair();
    const now = Date.now();
    const root = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: serialNumber(),
      name: `O=${options.organization ?? options.trustDomain}`,
      notBefore: new Date(now - CLOCK_SKEW_ALLOWANCE_MS),
      notAfter: new Date(now + (options.ttlMs ?? DEFAULT_ROOT_TTL_MS)),
      signingAlgorithm: SIGNING_ALGORITHM,
      keys: { privateKey: keys.privateKey, publicKey: keys.publicKey },
      extensions: [
        new x509.BasicConstraintsExtension(true, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      ],
    });
    return new CertificateAuthority(options.trustDomain, root, keys);
  }

  /** Loads a persisted root (certificate and key PEM). */
  static async load(options: { trustDomain: string; certPem: string; keyPem: string }): Promise<CertificateAuthority> {
    const root = new x509.X509Certificate(options.certPem);
    const keys = await importPrivateKeyPem(options.keyPem);
    const nodeCert = new X509Certificate(options.certPem);
    if (!nodeCert.ca) throw new IdentityError('AMBIT_IDENTITY_BAD_CERTIFICATE', 'the CA root certificate is not a CA certificate (basicConstraints cA=false)');
    if (!nodeCert.checkPrivateKey(createPrivateKey(options.keyPem))) {
      throw new IdentityError('AMBIT_IDENTITY_BAD_CERTIFICATE', 'the CA root key does not match the CA root certificate');
    }
    return new CertificateAuthority(options.trustDomain, root, keys);
  }

  /**
   * Signs a PEM CSR. The CSR must be self-consistent (its signature verifies), carry an ECDSA P-256 key and
   * exactly one SAN, a SPIFFE URI in this CA's trust domain (and equal to `expectedIdentity` when given).
   * Returns the leaf certificate PEM.
   */
  async signCsr(csrPem: string, options: SignOptions = {}): Promise<{ certPem: string; identity: SpiffeId; notAfter: Date }> {
    let csr: x509.Pkcs10CertificateRequest;
    try {
      csr = new x509.Pkcs10CertificateRequest(csrPem);
    } catch (cause) {
      throw new IdentityError('AMBIT_IDENTITY_BAD_CSR', `the CSR is not a valid PKCS#10 request: ${(cause as Error).message}`, { cause });
    }
    if (!(await csr.verify())) throw new IdentityError('AMBIT_IDENTITY_BAD_CSR', 'the CSR signature does not verify against its own public key');
    const algorithm = csr.publicKey.algorithm as { name: string; namedCurve?: string };
    if (algorithm.name !== 'ECDSA' || algorithm.namedCurve !== 'P-256') {
      throw new IdentityError('AMBIT_IDENTITY_BAD_CSR', `the CSR key must be ECDSA P-256, got ${algorithm.name} ${algorithm.namedCurve ?? ''}`.trim());
    }
    const identity = this.#csrIdentity(csr);
    if (options.expectedIdentity && options.expectedIdentity.uri !== identity.uri) {
      throw new IdentityError('AMBIT_IDENTITY_BAD_CSR', `the CSR asks for ${identity.uri} but the caller may only have ${options.expectedIdentity.uri}`);
    }
    const publicKey = await csr.publicKey.export();
    const certPem = await this.#issue(publicKey, identity, options.ttlMs ?? DEFAULT_WORKLOAD_TTL_MS);
    return { certPem, identity, notAfter: new X509Certificate(certPem).validToDate };
  }

  /** Makes a key and a certificate for `identity` in one step (local mode and tests). */
  async issueWorkloadCertificate(identity: SpiffeId, ttlMs: number = DEFAULT_WORKLOAD_TTL_MS): Promise<WorkloadCertificate> {
    const keys = await generateKeyPair();
    const { certPem } = await this.signCsr(await createCsr(keys, identity), { ttlMs, expectedIdentity: identity });
    const cert = new X509Certificate(certPem);
    return {
      identity,
      certPem,
      keyPem: keys.privateKeyPem,
      chainPem: [],
      rootsPem: [this.rootCertPem],
      notBefore: cert.validFromDate,
      notAfter: cert.validToDate,
    };
  }

  #csrIdentity(csr: x509.Pkcs10CertificateRequest): SpiffeId {
    const sanExtensions = csr.getExtensions(SUBJECT_ALT_NAME_OID);
    if (sanExtensions.length === 0) throw new IdentityError('AMBIT_IDENTITY_BAD_CSR', 'the CSR has no subjectAltName: it must carry exactly one SPIFFE URI');
    if (sanExtensions.length > 1) throw new IdentityError('AMBIT_IDENTITY_BAD_CSR', 'the CSR has more than one subjectAltName extension');
    const names = new x509.SubjectAlternativeNameExtension(sanExtensions[0]!.rawData).names.items;
    if (names.length !== 1) {
      throw new IdentityError('AMBIT_IDENTITY_BAD_CSR', `the CSR carries ${names.length} subjectAltNames; exactly one SPIFFE URI is allowed`);
    }
    const only = names[0]!;
    if (only.type !== 'url') throw new IdentityError('AMBIT_IDENTITY_BAD_CSR', `the CSR's subjectAltName is a ${only.type}, not a SPIFFE URI`);
    let identity: SpiffeId;
    try {
      identity = parseSpiffeId(only.value);
    } catch (cause) {
      throw new IdentityError('AMBIT_IDENTITY_BAD_CSR', `the CSR's URI SAN is not a SPIFFE identity: ${(cause as Error).message}`, { cause });
    }
    if (identity.trustDomain !== this.trustDomain) {
      throw new IdentityError('AMBIT_IDENTITY_WRONG_TRUST_DOMAIN', `the CSR asks for trust domain ${identity.trustDomain}; this CA signs only for ${this.trustDomain}`);
    }
    return identity;
  }

  async #issue(publicKey: webcrypto.CryptoKey, identity: SpiffeId, ttlMs: number): Promise<string> {
    const now = Date.now();
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: serialNumber(),
      subject: '',
      issuer: this.#root.subject,
      notBefore: new Date(now - CLOCK_SKEW_ALLOWANCE_MS),
      notAfter: new Date(now + ttlMs),
      signingAlgorithm: SIGNING_ALGORITHM,
      publicKey,
      signingKey: this.#keys.privateKey,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
        await x509.AuthorityKeyIdentifierExtension.create(this.#keys.publicKey),
        // Istio marks the SAN critical because the subject is empty (RFC 5280 4.2.1.6).
        new x509.SubjectAlternativeNameExtension([{ type: 'url', value: identity.uri }], true),
      ],
    });
    return cert.toString('pem') + '\n';
  }
}

export { pemToDer };
