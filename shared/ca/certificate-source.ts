/**
 * Where the agent gets workload certificates from.
 *
 * Owns: the CertificateSource interface and the local-mode source, which signs with a CA root kept on disk
 * (local runtime, demo). The control plane's CA service client (a later step) implements the same interface.
 * Must not know about: caching, rotation, pods.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { CertificateAuthority, type SpiffeId, type WorkloadCertificate } from '../identity/index.ts';

export interface CertificateSource {
  /** A fresh key and certificate for `identity`. */
  fetch(identity: SpiffeId): Promise<WorkloadCertificate>;
  /** The trust roots peers must chain to, PEM each. */
  rootsPem(): string[];
}

/** Files in a local CA directory, named as Istio's self-signed CA secret names them. */
export const LOCAL_CA_CERT_FILE = 'root-cert.pem';
export const LOCAL_CA_KEY_FILE = 'ca-key.pem';

export class LocalCaSource implements CertificateSource {
  readonly #ca: CertificateAuthority;
  readonly #ttlMs: number | undefined;

  private constructor(ca: CertificateAuthority, ttlMs?: number) {
    this.#ca = ca;
    this.#ttlMs = ttlMs;
  }

  static async open(options: { dir: string; trustDomain: string; ttlMs?: number }): Promise<LocalCaSource> {
    const [certPem, keyPem] = await Promise.all([
      readFile(path.join(options.dir, LOCAL_CA_CERT_FILE), 'utf8'),
      readFile(path.join(options.dir, LOCAL_CA_KEY_FILE), 'utf8'),
    ]);
    return new LocalCaSource(await CertificateAuthority.load({ trustDomain: options.trustDomain, certPem, keyPem }), options.ttlMs);
  }

  static fromAuthority(ca: CertificateAuthority, ttlMs?: number): LocalCaSource {
    return new LocalCaSource(ca, ttlMs);
  }

  fetch(identity: SpiffeId): Promise<WorkloadCertificate> {
    return this.#ca.issueWorkloadCertificate(identity, this.#ttlMs);
  }

  rootsPem(): string[] {
    return [this.#ca.rootCertPem];
  }
}
