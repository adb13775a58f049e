/**
 * Reading a PKCS#10 certificate signing request (RFC 2986) straight from its DER.
 *
 * Owns: decoding the request, checking its self-signature, that its key is ECDSA P-256, and listing the
 * names in its subjectAltName extension request.
 * Must not know about: trust domains, who may ask for what, issuing (that is `ca.ts`).
 */
import { createPublicKey, verify } from 'node:crypto';
import { children, DerError, expectTlv, fromPem, readTlv, TAG, toPem, type Tlv } from './der.ts';
import { IdentityError } from './errors.ts';

/** One GeneralName (RFC 5280 4.2.1.6), named the way people say them. */
export interface GeneralName {
  type: 'otherName' | 'email' | 'dns' | 'x400Address' | 'directoryName' | 'ediPartyName' | 'uri' | 'ip' | 'registeredID';
  /** Text for email, dns and uri; hex for the others. */
  value: string;
}

export interface ParsedCsr {
  /** The SubjectPublicKeyInfo exactly as the CSR carries it (ECDSA P-256), to copy into the certificate. */
  spki: Buffer;
  /** How many subjectAltName extensions the request carries (more than one is malformed). */
  subjectAltNameExtensions: number;
  /** The names of the first subjectAltName extension. */
  subjectAltNames: GeneralName[];
}

const GENERAL_NAME_TYPES: readonly GeneralName['type'][] = [
  'otherName', 'email', 'dns', 'x400Address', 'directoryName', 'ediPartyName', 'uri', 'ip', 'registeredID',
];
/** AlgorithmIdentifier { id-ecPublicKey, prime256v1 } (RFC 5480 2.1.1), compared as bytes: no key parsing. */
const P256_ALGORITHM_IDENTIFIER = Buffer.from('301306072a8648ce3d020106082a8648ce3d030107', 'hex');
const OID_EXTENSION_REQUEST = Buffer.from('2a864886f70d01090e', 'hex'); // 1.2.840.113549.1.9.14
const OID_SUBJECT_ALT_NAME = Buffer.from('551d11', 'hex'); // 2.5.29.17
/** Signature algorithms a P-256 CSR may be signed with, by OID value bytes, to node:crypto's hash name. */
const ECDSA_HASH_BY_OID = new Map<string, string>([
  ['2a8648ce3d040302', 'sha256'], // ecdsa-with-SHA256
  ['2a8648ce3d040303', 'sha384'], // ecdsa-with-SHA384
]);

function bad(message: string, cause?: unknown): IdentityError {
  return new IdentityError('AMBIT_IDENTITY_BAD_CSR', message, cause === undefined ? undefined : { cause });
}

function value(der: Buffer, item: Tlv): Buffer {
  return der.subarray(item.valueStart, item.end);
}

function readGeneralNames(der: Buffer, extnValue: Tlv): GeneralName[] {
  const names = expectTlv(der, extnValue.valueStart, TAG.SEQUENCE, 'GeneralNames', extnValue.end);
  return children(der, names).map((name) => {
    const type = GENERAL_NAME_TYPES[name.tag & 0x1f] ?? 'otherName';
    const bytes = value(der, name);
    const text = type === 'uri' || type === 'dns' || type === 'email';
    return { type, value: text ? bytes.toString('latin1') : bytes.toString('hex') };
  });
}

/** Parses and verifies a PEM CSR; throws IdentityError AMBIT_IDENTITY_BAD_CSR with the reason. */
export function parseCsr(csrPem: string): ParsedCsr {
  let der: Buffer;
  let info: Tlv;
  let spkiTlv: Tlv;
  let attributes: Tlv | undefined;
  let hash: string | undefined;
  let signature: Buffer;
  try {
    der = fromPem(csrPem, ['CERTIFICATE REQUEST', 'NEW CERTIFICATE REQUEST']);
    const outer = expectTlv(der, 0, TAG.SEQUENCE, 'CertificationRequest');
    if (outer.end !== der.length) throw new DerError('trailing bytes after the request');
    const [infoTlv, algorithm, signatureTlv, ...extra] = children(der, outer);
    if (!infoTlv || !algorithm || !signatureTlv || extra.length > 0) throw new DerError('a request has exactly three parts');
    if (infoTlv.tag !== TAG.SEQUENCE || algorithm.tag !== TAG.SEQUENCE || signatureTlv.tag !== TAG.BIT_STRING) {
      throw new DerError('the request parts have the wrong types');
    }
    info = infoTlv;
    const [version, subject, spki, attrs] = children(der, info);
    if (!version || version.tag !== TAG.INTEGER || !subject || subject.tag !== TAG.SEQUENCE || !spki || spki.tag !== TAG.SEQUENCE) {
      throw new DerError('the request info lacks version, subject or public key');
    }
    spkiTlv = spki;
    if (attrs && attrs.tag !== 0xa0) throw new DerError('the request attributes are not [0] IMPLICIT SET');
    attributes = attrs;
    const algorithmOid = expectTlv(der, algorithm.valueStart, TAG.OID, 'signature algorithm', algorithm.end);
    hash = ECDSA_HASH_BY_OID.get(value(der, algorithmOid).toString('hex'));
    const bits = value(der, signatureTlv);
    if (bits.length < 2 || bits[0] !== 0) throw new DerError('the signature BIT STRING is malformed');
    signature = bits.subarray(1);
  } catch (cause) {
    throw bad(`the CSR is not a valid PKCS#10 request: ${(cause as Error).message}`, cause);
  }
  if (!hash) throw bad('the CSR must be signed with ECDSA (SHA-256 or SHA-384) by its P-256 key');

  const spki = der.subarray(spkiTlv.start, spkiTlv.end);
  const algorithm = readTlv(der, spkiTlv.valueStart, spkiTlv.end);
  if (!der.subarray(algorithm.start, algorithm.end).equals(P256_ALGORITHM_IDENTIFIER)) throw bad(`the CSR key must be ECDSA P-256, got ${describeKey(spki)}`);
  // The key goes in as a PEM string and then as a KeyObject: Node's checks of an options object ({ key, format,
  // type }) cost more than the parse itself here (measured: half the time of verifying).
  let verified: boolean;
  try {
    verified = verify(hash, der.subarray(info.start, info.end), createPublicKey(toPem('PUBLIC KEY', spki)), signature);
  } catch (cause) {
    throw bad(`the CSR's public key cannot be read: ${(cause as Error).message}`, cause);
  }
  if (!verified) throw bad('the CSR signature does not verify against its own public key');

  let subjectAltNameExtensions = 0;
  let subjectAltNames: GeneralName[] = [];
  try {
    for (const attribute of attributes ? children(der, attributes) : []) {
      const [type, values] = children(der, attribute);
      if (!type || type.tag !== TAG.OID || !values || values.tag !== TAG.SET) throw new DerError('an attribute is not (OID, SET)');
      if (!value(der, type).equals(OID_EXTENSION_REQUEST)) continue;
      for (const extensions of children(der, values)) {
        for (const extension of children(der, extensions)) {
          const parts = children(der, extension);
          const id = parts[0];
          const extnValue = parts[parts.length - 1];
          if (!id || id.tag !== TAG.OID || !extnValue || extnValue.tag !== TAG.OCTET_STRING) throw new DerError('an extension is malformed');
          if (!value(der, id).equals(OID_SUBJECT_ALT_NAME)) continue;
          subjectAltNameExtensions++;
          if (subjectAltNameExtensions === 1) subjectAltNames = readGeneralNames(der, extnValue);
        }
      }
    }
  } catch (cause) {
    throw bad(`the CSR's extension request is malformed: ${(cause as Error).message}`, cause);
  }
  return { spki: Buffer.from(spki), subjectAltNameExtensions, subjectAltNames };
}

/** What a non-P-256 key is, for the refusal message (slow path: only on refusal). */
function describeKey(spki: Buffer): string {
  try {
    const key = createPublicKey({ key: spki, format: 'der', type: 'spki' });
    return `${key.asymmetricKeyType ?? 'unknown'} ${key.asymmetricKeyDetails?.namedCurve ?? key.asymmetricKeyDetails?.modulusLength ?? ''}`.trim();
  } catch {
    return 'an unreadable key';
  }
}
