/**
 * Proving who a peer is from its certificate.
 *
 * Owns: reading the SPIFFE identity out of a certificate's URI SAN, verifying a chain against trust roots
 * (signature, validity dates, CA flags) outside of a TLS handshake, and checking a peer's identity against the
 * set a caller expects.
 * Must not know about: sockets, pools, policy.
 */
import { X509Certificate } from 'node:crypto';
import { IdentityError } from './errors.ts';
import { parseSpiffeId, type SpiffeId } from './spiffe.ts';

/** The one SPIFFE identity in a certificate's subjectAltName; throws if there is none or more than one. */
export function spiffeIdOfCertificate(certificate: X509Certificate): SpiffeId {
  const san = certificate.subjectAltName ?? '';
  const uris: string[] = [];
  // Node renders SANs as `URI:spiffe://..., DNS:x`; values with commas would be quoted, which SPIFFE IDs never need.
  for (const part of san.split(', ')) {
    if (part.startsWith('URI:')) uris.push(part.slice(4));
  }
  const spiffe = uris.filter((uri) => uri.startsWith('spiffe://'));
  if (spiffe.length !== 1) {
    throw new IdentityError(
      'AMBIT_IDENTITY_BAD_CERTIFICATE',
      spiffe.length === 0 ? 'the peer certificate carries no SPIFFE URI SAN' : `the peer certificate carries ${spiffe.length} SPIFFE URIs; exactly one is allowed`,
    );
  }
  return parseSpiffeId(spiffe[0]!);
}

/**
 * Verifies `leafPem` (with optional intermediates) up to one of `rootsPem` at `now`, and returns its identity,
 * which must be in `trustDomain`.
 */
export function verifyCertificateChain(options: {
  leafPem: string;
  intermediatesPem?: string[];
  rootsPem: string[];
  trustDomain: string;
  now?: Date;
}): SpiffeId {
  const now = options.now ?? new Date();
  const leaf = new X509Certificate(options.leafPem);
  const intermediates = (options.intermediatesPem ?? []).map((pem) => new X509Certificate(pem));
  const roots = options.rootsPem.map((pem) => new X509Certificate(pem));
  const chain = [leaf, ...intermediates];
  for (const cert of chain) {
    if (cert.validFromDate.getTime() > now.getTime()) {
      throw new IdentityError('AMBIT_IDENTITY_EXPIRED', `certificate ${cert.serialNumber} is not valid before ${cert.validFrom}`);
    }
    if (cert.validToDate.getTime() <= now.getTime()) {
      throw new IdentityError('AMBIT_IDENTITY_EXPIRED', `certificate ${cert.serialNumber} expired at ${cert.validTo}`);
    }
  }
  for (let i = 0; i < chain.length; i++) {
    const cert = chain[i]!;
    const next = chain[i + 1];
    if (next) {
      if (!next.ca || !cert.checkIssued(next) || !cert.verify(next.publicKey)) {
        throw new IdentityError('AMBIT_IDENTITY_UNTRUSTED', `certificate ${cert.serialNumber} is not signed by the intermediate that follows it`);
      }
      continue;
    }
    const root = roots.find((candidate) => candidate.ca && cert.checkIssued(candidate) && cert.verify(candidate.publicKey));
    if (!root) throw new IdentityError('AMBIT_IDENTITY_UNTRUSTED', 'the certificate chain does not lead to a trusted mesh root (is the peer using another CA?)');
    if (root.validToDate.getTime() <= now.getTime()) throw new IdentityError('AMBIT_IDENTITY_EXPIRED', `the mesh root expired at ${root.validTo}`);
  }
  const identity = spiffeIdOfCertificate(leaf);
  if (identity.trustDomain !== options.trustDomain) {
    throw new IdentityError('AMBIT_IDENTITY_WRONG_TRUST_DOMAIN', `peer identity ${identity.uri} is outside trust domain ${options.trustDomain}`);
  }
  return identity;
}

/** Checks a verified peer identity against the identities the caller accepts. */
export function checkExpectedIdentity(actual: SpiffeId, expected: readonly string[]): void {
  if (expected.length > 0 && !expected.includes(actual.uri)) {
    throw new IdentityError(
      'AMBIT_IDENTITY_UNEXPECTED_PEER',
      `peer presented ${actual.uri} but one of [${expected.join(', ')}] was expected (wrong destination, or a stale address?)`,
    );
  }
}
