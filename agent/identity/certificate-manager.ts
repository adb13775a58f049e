/**
 * Keeps a valid certificate for every identity the node's captured pods run as.
 *
 * Owns: the agent's CertificateStore, one fetch in flight per identity, rotation at half life, keeping a
 * still-valid certificate when renewal fails (with backoff), and forgetting identities no pod uses.
 * Must not know about: sockets, HBONE, where certificates are signed (that is the CertificateSource).
 */
import { CertificateStore, type SpiffeId, type WorkloadCertificate } from '../../shared/identity/index.ts';
import type { CertificateSource } from './certificate-source.ts';

/** Renew when half the lifetime has passed, as Istio does: leaves the other half for retries. */
const RENEW_AT_FRACTION = 0.5;
/** First retry delay after a failed fetch; doubles up to the cap. */
const RETRY_INITIAL_MS = 500;
const RETRY_MAX_MS = 30_000;

export class CertificateManager {
  readonly store = new CertificateStore();
  readonly #source: CertificateSource;
  readonly #inFlight = new Map<string, Promise<WorkloadCertificate>>();
  readonly #timers = new Map<string, NodeJS.Timeout>();
  readonly #onError: (identity: SpiffeId, error: Error) => void;

  constructor(source: CertificateSource, options: { onError?: (identity: SpiffeId, error: Error) => void } = {}) {
    this.#source = source;
    this.#onError = options.onError ?? (() => {});
  }

  rootsPem(): string[] {
    return this.#source.rootsPem();
  }

  /** The held certificate, if valid now (the hot path: no promise when one is held). */
  current(identity: SpiffeId): WorkloadCertificate | undefined {
    return this.store.get(identity);
  }

  /** A valid certificate for `identity`, fetching one if none is held. */
  certificateFor(identity: SpiffeId): WorkloadCertificate | Promise<WorkloadCertificate> {
    return this.store.get(identity) ?? this.#fetch(identity, RETRY_INITIAL_MS);
  }

  /** Stops renewing `identity` and drops its certificate (no captured pod uses it any more). */
  forget(identity: SpiffeId): void {
    clearTimeout(this.#timers.get(identity.uri));
    this.#timers.delete(identity.uri);
    this.store.delete(identity);
  }

  close(): void {
    for (const timer of this.#timers.values()) clearTimeout(timer);
    this.#timers.clear();
  }

  #fetch(identity: SpiffeId, retryMs: number): Promise<WorkloadCertificate> {
    let pending = this.#inFlight.get(identity.uri);
    if (pending) return pending;
    pending = this.#source
      .fetch(identity)
      .then((certificate) => {
        this.store.set(certificate);
        const lifetime = certificate.notAfter.getTime() - certificate.notBefore.getTime();
        const renewAt = certificate.notBefore.getTime() + lifetime * RENEW_AT_FRACTION;
        this.#schedule(identity, Math.max(0, renewAt - Date.now()), RETRY_INITIAL_MS);
        return certificate;
      })
      .catch((error: Error) => {
        this.#onError(identity, error);
        // A still-valid certificate keeps serving; retry with backoff.
        this.#schedule(identity, retryMs, Math.min(retryMs * 2, RETRY_MAX_MS));
        throw error;
      })
      .finally(() => this.#inFlight.delete(identity.uri));
    this.#inFlight.set(identity.uri, pending);
    return pending;
  }

  #schedule(identity: SpiffeId, delayMs: number, nextRetryMs: number): void {
    clearTimeout(this.#timers.get(identity.uri));
    const timer = setTimeout(() => void this.#fetch(identity, nextRetryMs).catch(() => {}), delayMs);
    timer.unref();
    this.#timers.set(identity.uri, timer);
  }
}
