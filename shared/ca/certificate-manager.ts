/**
 * Keeps a valid certificate for every identity the node's captured pods run as.
 *
 * Owns: the agent's CertificateStore, one fetch per identity at a time, a bounded number of fetches in flight
 * with certificates that traffic waits for ahead of renewals, rotation at half life, keeping a still-valid
 * certificate when renewal fails (retrying with backoff), and forgetting identities no pod uses.
 * Must not know about: sockets, HBONE, where certificates are signed (that is the CertificateSource).
 */
import { CertificateStore, type SpiffeId, type WorkloadCertificate } from '../identity/index.ts';
import type { CertificateSource } from './certificate-source.ts';

/** Renew when half the lifetime has passed, as Istio does: leaves the other half for retries. */
const RENEW_AT_FRACTION = 0.5;
/** First retry delay after a failed fetch; doubles up to the cap. */
const RETRY_INITIAL_MS = 500;
const RETRY_MAX_MS = 30_000;
/**
 * Fetches in flight at once. Each costs a key generation and a CSR here and a signature at the CA; a node that
 * starts a hundred pods at once (or reconnects after an outage with every certificate due) must neither stampede
 * the CA nor stall its own event loop, and a handful in flight already keeps one gRPC channel busy.
 */
export const MAX_CONCURRENT_FETCHES = 8;

export interface CertificateManagerOptions {
  onError?: (identity: SpiffeId, error: Error) => void;
  maxConcurrentFetches?: number;
  retryInitialMs?: number;
  retryMaxMs?: number;
}

/** A fetch that is queued or running; everyone asking for the identity meanwhile shares its promise. */
interface PendingFetch {
  identity: SpiffeId;
  /** Traffic waits for it (no valid certificate held): goes ahead of renewals. */
  urgent: boolean;
  running: boolean;
  promise: Promise<WorkloadCertificate>;
  resolve: (certificate: WorkloadCertificate) => void;
  reject: (error: Error) => void;
}

export class CertificateManager {
  readonly store = new CertificateStore();
  readonly #source: CertificateSource;
  readonly #onError: (identity: SpiffeId, error: Error) => void;
  readonly #maxConcurrent: number;
  readonly #retryInitialMs: number;
  readonly #retryMaxMs: number;
  /** Identities some pod uses: only these are stored and renewed. */
  readonly #wanted = new Set<string>();
  readonly #pending = new Map<string, PendingFetch>();
  readonly #urgentQueue: PendingFetch[] = [];
  readonly #renewalQueue: PendingFetch[] = [];
  readonly #timers = new Map<string, NodeJS.Timeout>();
  readonly #retryMs = new Map<string, number>();
  #running = 0;
  #closed = false;

  constructor(source: CertificateSource, options: CertificateManagerOptions = {}) {
    this.#source = source;
    this.#onError = options.onError ?? (() => {});
    this.#maxConcurrent = Math.max(1, options.maxConcurrentFetches ?? MAX_CONCURRENT_FETCHES);
    this.#retryInitialMs = options.retryInitialMs ?? RETRY_INITIAL_MS;
    this.#retryMaxMs = options.retryMaxMs ?? RETRY_MAX_MS;
  }

  rootsPem(): string[] {
    return this.#source.rootsPem();
  }

  /** The held certificate, if valid now (the hot path: no promise when one is held). */
  current(identity: SpiffeId): WorkloadCertificate | undefined {
    return this.store.get(identity);
  }

  /** A valid certificate for `identity`, fetching one ahead of any renewal if none is held. */
  certificateFor(identity: SpiffeId): WorkloadCertificate | Promise<WorkloadCertificate> {
    this.#wanted.add(identity.uri);
    return this.store.get(identity) ?? this.#request(identity, true);
  }

  /** Stops renewing `identity` and drops its certificate (no captured pod uses it any more). */
  forget(identity: SpiffeId): void {
    this.#wanted.delete(identity.uri);
    clearTimeout(this.#timers.get(identity.uri));
    this.#timers.delete(identity.uri);
    this.#retryMs.delete(identity.uri);
    this.store.delete(identity);
    const pending = this.#pending.get(identity.uri);
    if (pending && !pending.running) {
      this.#dequeue(pending);
      pending.reject(new Error(`certificate for ${identity.uri} no longer wanted`));
    }
  }

  close(): void {
    this.#closed = true;
    for (const timer of this.#timers.values()) clearTimeout(timer);
    this.#timers.clear();
    for (const pending of [...this.#urgentQueue, ...this.#renewalQueue]) {
      this.#pending.delete(pending.identity.uri);
      pending.reject(new Error('certificate manager closed'));
    }
    this.#urgentQueue.length = 0;
    this.#renewalQueue.length = 0;
  }

  /** Fetches running now (never more than the concurrency bound). */
  get fetchesInFlight(): number {
    return this.#running;
  }

  /** Fetches waiting for a slot. */
  get fetchesQueued(): number {
    return this.#urgentQueue.length + this.#renewalQueue.length;
  }

  #request(identity: SpiffeId, urgent: boolean): Promise<WorkloadCertificate> {
    if (this.#closed) return Promise.reject(new Error('certificate manager closed'));
    // Traffic waits whenever no valid certificate is held, whatever asked for the fetch.
    const needed = urgent || this.store.get(identity) === undefined;
    const existing = this.#pending.get(identity.uri);
    if (existing) {
      if (needed && !existing.urgent && !existing.running) {
        this.#dequeue(existing);
        existing.urgent = true;
        this.#urgentQueue.push(existing);
      }
      return existing.promise;
    }
    let resolve!: (certificate: WorkloadCertificate) => void;
    let reject!: (error: Error) => void;
    const promise = new Promise<WorkloadCertificate>((ok, fail) => {
      resolve = ok;
      reject = fail;
    });
    promise.catch(() => {}); // renewals have no waiter; their failures are reported through onError
    const pending: PendingFetch = { identity, urgent: needed, running: false, promise, resolve, reject };
    this.#pending.set(identity.uri, pending);
    (needed ? this.#urgentQueue : this.#renewalQueue).push(pending);
    this.#pump();
    return promise;
  }

  #dequeue(pending: PendingFetch): void {
    const queue = pending.urgent ? this.#urgentQueue : this.#renewalQueue;
    const index = queue.indexOf(pending);
    if (index >= 0) queue.splice(index, 1);
    this.#pending.delete(pending.identity.uri);
  }

  #pump(): void {
    while (!this.#closed && this.#running < this.#maxConcurrent) {
      const next = this.#urgentQueue.shift() ?? this.#renewalQueue.shift();
      if (!next) return;
      this.#start(next);
    }
  }

  #start(pending: PendingFetch): void {
    const { identity } = pending;
    pending.running = true;
    this.#running++;
    let fetched: Promise<WorkloadCertificate>;
    try {
      fetched = this.#source.fetch(identity);
    } catch (error) {
      fetched = Promise.reject(error as Error);
    }
    fetched.then(
      (certificate) => {
        this.#finish(pending);
        if (this.#wanted.has(identity.uri) && !this.#closed) {
          this.store.set(certificate);
          this.#retryMs.delete(identity.uri);
          // Half of the life still ahead, measured from now: a CA that backdates notBefore must not make us
          // renew at once.
          const now = Date.now();
          const from = Math.max(certificate.notBefore.getTime(), now);
          const renewAt = from + (certificate.notAfter.getTime() - from) * RENEW_AT_FRACTION;
          this.#schedule(identity, Math.max(0, renewAt - now));
        }
        pending.resolve(certificate);
        this.#pump();
      },
      (error: Error) => {
        this.#finish(pending);
        this.#onError(identity, error);
        if (this.#wanted.has(identity.uri) && !this.#closed) {
          // A still-valid certificate keeps serving meanwhile; retry with backoff.
          const delay = this.#retryMs.get(identity.uri) ?? this.#retryInitialMs;
          this.#retryMs.set(identity.uri, Math.min(delay * 2, this.#retryMaxMs));
          this.#schedule(identity, delay);
        }
        pending.reject(error);
        this.#pump();
      },
    );
  }

  /** Frees the fetch's slot before its waiters run, so they see the manager's counts settled. */
  #finish(pending: PendingFetch): void {
    this.#running--;
    if (this.#pending.get(pending.identity.uri) === pending) this.#pending.delete(pending.identity.uri);
  }

  #schedule(identity: SpiffeId, delayMs: number): void {
    clearTimeout(this.#timers.get(identity.uri));
    const timer = setTimeout(() => {
      this.#timers.delete(identity.uri);
      void this.#request(identity, false).catch(() => {});
    }, delayMs);
    timer.unref();
    this.#timers.set(identity.uri, timer);
  }
}
