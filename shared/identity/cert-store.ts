/**
 * The certificates a process holds for its workload identities, each with its expiry.
 *
 * Owns: storing, replacing and looking up certificates by identity; saying which expire soon; caching one TLS
 * secure context per certificate so handshakes never rebuild it.
 * Must not know about: where certificates come from (local CA, CA service) or when to renew them.
 */
import tls from 'node:tls';
import type { SpiffeId } from './spiffe.ts';

export interface WorkloadCertificate {
  identity: SpiffeId;
  /** Leaf certificate, PEM. */
  certPem: string;
  /** PKCS#8 private key, PEM. */
  keyPem: string;
  /** Intermediates between the leaf and the root, PEM each (empty when the root signed the leaf). */
  chainPem: string[];
  /** Trust roots the peer's certificates must chain to, PEM each. */
  rootsPem: string[];
  notBefore: Date;
  notAfter: Date;
}

interface Entry {
  certificate: WorkloadCertificate;
  secureContext?: tls.SecureContext;
}

export class CertificateStore {
  readonly #byIdentity = new Map<string, Entry>();

  /** Stores (or replaces) the certificate for its identity. */
  set(certificate: WorkloadCertificate): void {
    this.#byIdentity.set(certificate.identity.uri, { certificate });
  }

  /** The certificate for `identity` if one is held and still valid at `now`. */
  get(identity: SpiffeId | string, now: number = Date.now()): WorkloadCertificate | undefined {
    const entry = this.#byIdentity.get(typeof identity === 'string' ? identity : identity.uri);
    if (!entry || entry.certificate.notAfter.getTime() <= now) return undefined;
    return entry.certificate;
  }

  delete(identity: SpiffeId | string): boolean {
    return this.#byIdentity.delete(typeof identity === 'string' ? identity : identity.uri);
  }

  /** Identities whose certificate expires before `deadline` (renewal candidates). */
  expiringBefore(deadline: Date): WorkloadCertificate[] {
    const result: WorkloadCertificate[] = [];
    for (const { certificate } of this.#byIdentity.values()) {
      if (certificate.notAfter.getTime() < deadline.getTime()) result.push(certificate);
    }
    return result;
  }

  all(): WorkloadCertificate[] {
    return [...this.#byIdentity.values()].map((entry) => entry.certificate);
  }

  /** A TLS secure context for `identity`, built once per certificate and reused for every handshake. */
  secureContext(identity: SpiffeId | string, now: number = Date.now()): tls.SecureContext | undefined {
    const entry = this.#byIdentity.get(typeof identity === 'string' ? identity : identity.uri);
    if (!entry || entry.certificate.notAfter.getTime() <= now) return undefined;
    entry.secureContext ??= createWorkloadSecureContext(entry.certificate);
    return entry.secureContext;
  }
}

/** TLS 1.3 only, P-256 key, the leaf plus its chain, trusting only the mesh roots. */
export function createWorkloadSecureContext(certificate: WorkloadCertificate): tls.SecureContext {
  return tls.createSecureContext({
    cert: [certificate.certPem, ...certificate.chainPem].join(''),
    key: certificate.keyPem,
    ca: certificate.rootsPem,
    minVersion: 'TLSv1.3',
    maxVersion: 'TLSv1.3',
  });
}
