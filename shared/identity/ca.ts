/**
 * A certificate authority for workload identities.
 *
 * Owns: making a self-signed root (local mode), loading a persisted root, and signing a CSR for exactly one
 * SPIFFE identity with a given lifetime. The control plane's CA service wraps this; tests use it directly.
 * Must not know about: who is allowed to ask for which identity (that is the CA service's authorization).
 *
 * Speed: roots are made with @peculiar/x509 (rare), but leaves take a fast path, because the CA must sign
 * thousands per second: the CSR is read from its DER (csr.ts), the leaf's fixed parts are encoded once per root
 * (IssueTemplate), and each TBSCertificate is signed with node:crypto on the DER (about 100/s through
 * @peculiar/x509 here, over 2,000/s this way).
 */
import { createHash, createPrivateKey, randomBytes, sign, X509Certificate, type KeyObject } from 'node:crypto';
import type { x509 } from './crypto-provider.ts';
import { parseCsr, type ParsedCsr } from './csr.ts';
import { bitString, children, expectTlv, oid, TAG, tlv, toPem, unsignedInteger, x509Time } from './der.ts';
import { IdentityError } from './errors.ts';
import { createCsr, generateKeyPair, importPrivateKeyPem, SIGNING_ALGORITHM, type KeyPair } from './keys.ts';
import { parseSpiffeId, type SpiffeId } from './spiffe.ts';
import type { WorkloadCertificate } from './cert-store.ts';

/** Extension and algorithm OIDs (RFC 5280 4.2.1, RFC 5758 3.2). */
const SUBJECT_ALT_NAME_OID = '2.5.29.17';
const SUBJECT_KEY_IDENTIFIER_OID = '2.5.29.14';
const AUTHORITY_KEY_IDENTIFIER_OID = '2.5.29.35';
const BASIC_CONSTRAINTS_OID = '2.5.29.19';
const KEY_USAGE_OID = '2.5.29.15';
const EXTENDED_KEY_USAGE_OID = '2.5.29.37';
const SERVER_AUTH_OID = '1.3.6.1.5.5.7.3.1';
const CLIENT_AUTH_OID = '1.3.6.1.5.5.7.3.2';
const ECDSA_WITH_SHA256_OID = '1.2.840.10045.4.3.2';
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
  readonly #template: IssueTemplate;
  /** No leaf outlives the root that signed it. */
  readonly #rootNotAfter: number;

  private constructor(trustDomain: string, root: x509.X509Certificate, keys: KeyPair) {
    this.trustDomain = trustDomain;
    this.rootCertPem = root.toString('pem') + '\n';
    this.rootKeyPem = keys.privateKeyPem;
    const { template, rootNotAfter } = buildTemplate(this.rootCertPem, this.rootKeyPem);
    this.#template = template;
    this.#rootNotAfter = rootNotAfter;
  }

  /** A new self-signed root for `trustDomain` (local mode, tests). */
  static async createRoot(options: { trustDomain: string; ttlMs?: number; organization?: string }): Promise<CertificateAuthority> {
    const keys = await generateKeyPair();
    const now = Date.now();
    // Loaded here, not at import: a process that only asks for certificates (agent, waypoint) never loads it.
    const { x509 } = await import('./crypto-provider.ts');
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
    const { x509 } = await import('./crypto-provider.ts');
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
   * Reads and checks a PEM CSR without signing it: its signature verifies, its key is ECDSA P-256, and it carries
   * exactly one SAN, a SPIFFE URI in this CA's trust domain. The CA service uses this to learn the requested
   * identity before deciding whether the caller may have it. Throws IdentityError with the reason.
   */
  readCsr(csrPem: string): VerifiedCsr {
    const parsed = parseCsr(csrPem);
    return { identity: this.#csrIdentity(parsed), spki: parsed.spki };
  }

  /**
   * Signs a PEM CSR (or one already read with `readCsr`). The CSR must be self-consistent (its signature
   * verifies), carry an ECDSA P-256 key and exactly one SAN, a SPIFFE URI in this CA's trust domain (and equal
   * to `expectedIdentity` when given). Returns the leaf certificate PEM.
   */
  async signCsr(csr: string | VerifiedCsr, options: SignOptions = {}): Promise<{ certPem: string; identity: SpiffeId; notAfter: Date }> {
    const { identity, spki } = typeof csr === 'string' ? this.readCsr(csr) : csr;
    if (options.expectedIdentity && options.expectedIdentity.uri !== identity.uri) {
      throw new IdentityError('AMBIT_IDENTITY_BAD_CSR', `the CSR asks for ${identity.uri} but the caller may only have ${options.expectedIdentity.uri}`);
    }
    const { certPem, notAfter } = this.#issue(spki, identity, options.ttlMs ?? DEFAULT_WORKLOAD_TTL_MS);
    return { certPem, identity, notAfter };
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

  /**
   * A serving certificate for a server that clients verify by DNS name as well as by SPIFFE identity (the control
   * plane on 15012: ztunnel checks `istiod.istio-system.svc`): the SPIFFE URI plus `dnsNames` in its SAN. Never
   * issued from a CSR: only the CA's own process asks for it.
   */
  async issueServingCertificate(identity: SpiffeId, dnsNames: readonly string[], ttlMs: number = DEFAULT_WORKLOAD_TTL_MS): Promise<WorkloadCertificate> {
    for (const name of dnsNames) {
      if (!/^[a-z0-9*]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/i.test(name)) throw new IdentityError('AMBIT_IDENTITY_BAD_CSR', `not a DNS name for a serving certificate: ${JSON.stringify(name)}`);
    }
    const keys = await generateKeyPair();
    const { spki } = this.readCsr(await createCsr(keys, identity));
    const { certPem } = this.#issue(spki, identity, ttlMs, dnsNames);
    const cert = new X509Certificate(certPem);
    return { identity, certPem, keyPem: keys.privateKeyPem, chainPem: [], rootsPem: [this.rootCertPem], notBefore: cert.validFromDate, notAfter: cert.validToDate };
  }

  #csrIdentity(csr: ParsedCsr): SpiffeId {
    if (csr.subjectAltNameExtensions === 0) throw new IdentityError('AMBIT_IDENTITY_BAD_CSR', 'the CSR has no subjectAltName: it must carry exactly one SPIFFE URI');
    if (csr.subjectAltNameExtensions > 1) throw new IdentityError('AMBIT_IDENTITY_BAD_CSR', 'the CSR has more than one subjectAltName extension');
    const names = csr.subjectAltNames;
    if (names.length !== 1) {
      throw new IdentityError('AMBIT_IDENTITY_BAD_CSR', `the CSR carries ${names.length} subjectAltNames; exactly one SPIFFE URI is allowed`);
    }
    const only = names[0]!;
    if (only.type !== 'uri') throw new IdentityError('AMBIT_IDENTITY_BAD_CSR', `the CSR's subjectAltName is a ${only.type} name, not a SPIFFE URI`);
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

  /**
   * The fast path: the TBSCertificate is the template's fixed parts around this certificate's serial, validity,
   * key and SAN, signed with node:crypto on the DER directly (no ASN.1 object model, no WebCrypto round trip).
   */
  #issue(spki: Buffer, identity: SpiffeId, ttlMs: number, dnsNames: readonly string[] = []): { certPem: string; notAfter: Date } {
    const now = Date.now();
    // Whole seconds: X.509 Time has no fraction, so the returned notAfter is exactly what the certificate says.
    const notBefore = new Date(Math.floor((now - CLOCK_SKEW_ALLOWANCE_MS) / 1000) * 1000);
    const notAfter = new Date(Math.floor(Math.min(now + ttlMs, this.#rootNotAfter) / 1000) * 1000);
    const template = this.#template;
    const tbs = tlv(
      TAG.SEQUENCE,
      template.versionDer,
      unsignedInteger(serialNumberBytes()),
      template.signatureAlgorithmDer,
      template.issuerDer,
      tlv(TAG.SEQUENCE, x509Time(notBefore), x509Time(notAfter)),
      EMPTY_SUBJECT_DER,
      spki,
      tlv(0xa3, tlv(TAG.SEQUENCE, ...template.fixedExtensionsDer, subjectAltNameExtension(identity.uri, dnsNames))),
    );
    const signature = sign('sha256', tbs, template.signingKey);
    const der = tlv(TAG.SEQUENCE, tbs, template.signatureAlgorithmDer, bitString(signature));
    return { certPem: toPem('CERTIFICATE', der), notAfter };
  }
}

/** A CSR that `readCsr` checked: the identity it asks for and the key to certify. */
export interface VerifiedCsr {
  identity: SpiffeId;
  spki: Buffer;
}

/** The parts of every leaf this CA issues that do not change from one certificate to the next. */
interface IssueTemplate {
  signingKey: KeyObject;
  versionDer: Buffer;
  signatureAlgorithmDer: Buffer;
  issuerDer: Buffer;
  fixedExtensionsDer: Buffer[];
}

const EMPTY_SUBJECT_DER = tlv(TAG.SEQUENCE);
const CRITICAL = tlv(TAG.BOOLEAN, Buffer.from([0xff]));

function extension(oidDotted: string, critical: boolean, valueDer: Buffer): Buffer {
  return critical ? tlv(TAG.SEQUENCE, oid(oidDotted), CRITICAL, tlv(TAG.OCTET_STRING, valueDer)) : tlv(TAG.SEQUENCE, oid(oidDotted), tlv(TAG.OCTET_STRING, valueDer));
}

/** Istio marks the SAN critical because the subject is empty (RFC 5280 4.2.1.6). URI is GeneralName [6], dNSName [2]. */
function subjectAltNameExtension(uri: string, dnsNames: readonly string[] = []): Buffer {
  return extension(SUBJECT_ALT_NAME_OID, true, tlv(TAG.SEQUENCE, tlv(0x86, Buffer.from(uri, 'latin1')), ...dnsNames.map((name) => tlv(0x82, Buffer.from(name, 'latin1')))));
}

function serialNumberBytes(): Buffer {
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0]! & 0x7f) | 0x40; // positive, and never a leading zero byte (DER minimal INTEGER)
  return bytes;
}

/** Reads the issuer-side facts a leaf needs from the root certificate: its subject and key identifier. */
function buildTemplate(rootCertPem: string, rootKeyPem: string): { template: IssueTemplate; rootNotAfter: number } {
  const der = pemToDer(rootCertPem);
  const cert = expectTlv(der, 0, TAG.SEQUENCE, 'Certificate');
  const tbs = expectTlv(der, cert.valueStart, TAG.SEQUENCE, 'TBSCertificate', cert.end);
  const fields = children(der, tbs);
  const offset = fields[0]?.tag === 0xa0 ? 1 : 0; // explicit version present
  const subject = fields[offset + 4];
  const spki = fields[offset + 5];
  if (!subject || !spki) throw new IdentityError('AMBIT_IDENTITY_BAD_CERTIFICATE', 'the CA root certificate is truncated');
  let keyIdentifier: Buffer | undefined;
  const extensionsWrapper = fields.find((field) => field.tag === 0xa3);
  if (extensionsWrapper) {
    const list = expectTlv(der, extensionsWrapper.valueStart, TAG.SEQUENCE, 'Extensions', extensionsWrapper.end);
    for (const item of children(der, list)) {
      const parts = children(der, item);
      const id = parts[0]!;
      const extnValue = parts[parts.length - 1]!;
      if (der.subarray(id.start, id.end).equals(oid(SUBJECT_KEY_IDENTIFIER_OID))) {
        const inner = expectTlv(der, extnValue.valueStart, TAG.OCTET_STRING, 'SubjectKeyIdentifier', extnValue.end);
        keyIdentifier = der.subarray(inner.valueStart, inner.end);
      }
    }
  }
  if (!keyIdentifier) {
    // RFC 5280 4.2.1.2 method 1: SHA-1 of the subjectPublicKey bits.
    const [, bits] = children(der, spki);
    keyIdentifier = createHash('sha1').update(der.subarray(bits!.valueStart + 1, bits!.end)).digest();
  }
  const keyUsage = Buffer.from([0x05, 0xa0]); // digitalSignature | keyEncipherment, 5 unused bits
  const template: IssueTemplate = {
    signingKey: createPrivateKey(rootKeyPem),
    versionDer: tlv(0xa0, unsignedInteger(Buffer.from([2]))),
    signatureAlgorithmDer: tlv(TAG.SEQUENCE, oid(ECDSA_WITH_SHA256_OID)),
    issuerDer: Buffer.from(der.subarray(subject.start, subject.end)),
    fixedExtensionsDer: [
      extension(BASIC_CONSTRAINTS_OID, true, tlv(TAG.SEQUENCE)),
      extension(KEY_USAGE_OID, true, tlv(TAG.BIT_STRING, keyUsage)),
      extension(EXTENDED_KEY_USAGE_OID, false, tlv(TAG.SEQUENCE, oid(SERVER_AUTH_OID), oid(CLIENT_AUTH_OID))),
      extension(AUTHORITY_KEY_IDENTIFIER_OID, false, tlv(TAG.SEQUENCE, tlv(0x80, keyIdentifier))),
    ],
  };
  return { template, rootNotAfter: new X509Certificate(rootCertPem).validToDate.getTime() };
}

export { pemToDer };
