/**
 * The keys of one JWKS: inline (from the policy), or fetched from a `jwksUri` by the waypoint itself (through the
 * mesh when the URI's host is a mesh Service: the fetch function main.ts hands in decides), cached, refreshed every
 * `refreshMs`, and served stale when a refresh fails (retried sooner, backing off up to the refresh interval).
 * Until the first fetch succeeds there are no keys: tokens of that issuer are refused (401), as Envoy does when its
 * JWKS fetch failed.
 *
 * Owns: one key set's lifecycle and its generation counter (bumped when the keys change, so cached verifications
 * made with old keys are dropped). Must not know about: tokens, requests, HTTP serving.
 */
import type { JSONWebKeySet, JWTVerifyGetKey } from 'jose';
import { joseModule } from '../optional-modules.ts';

/** Istio's default JWKS refresh interval (PILOT_JWT_PUB_KEY_REFRESH_INTERVAL). */
export const JWKS_REFRESH_MS = 20 * 60_000;
/** First retry after a failed fetch; doubled per failure, at most JWKS_RETRY_MAX_MS (and the refresh interval). */
export const JWKS_RETRY_MS = 1_000;
/** A key set that cannot be fetched is tried again at least this often: a JWKS server back up is noticed soon. */
export const JWKS_RETRY_MAX_MS = 30_000;

export type FetchText = (uri: string) => Promise<string>;

export class JwksError extends Error {
  readonly code = 'WAYPOINT_JWKS_UNAVAILABLE';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'JwksError';
  }
}

function parseKeys(text: string): JSONWebKeySet {
  const parsed = JSON.parse(text) as JSONWebKeySet;
  if (!Array.isArray(parsed?.keys) || parsed.keys.length === 0) throw new Error('not a JWKS (no "keys" list)');
  return parsed;
}

export class JwksSource {
  readonly uri: string;
  #getKey: JWTVerifyGetKey | undefined;
  #text = '';
  #generation = 0;
  #timer: NodeJS.Timeout | undefined;
  #first: Promise<void> | undefined;
  #stopped = false;
  #failures = 0;
  readonly #fetchText: FetchText | undefined;
  readonly #refreshMs: number;
  readonly #onError: (uri: string, error: Error) => void;
  /** The last fetch error while stale or empty; cleared by a successful fetch. */
  lastError: string | undefined;
  fetchedAt = 0;
  fetches = 0;

  private constructor(uri: string, fetchText: FetchText | undefined, refreshMs: number, onError: (uri: string, error: Error) => void) {
    this.uri = uri;
    this.#fetchText = fetchText;
    this.#refreshMs = refreshMs;
    this.#onError = onError;
  }

  static inline(jwks: string): JwksSource {
    const source = new JwksSource('inline', undefined, 0, () => {});
    source.#install(jwks);
    return source;
  }

  /** A source that never has keys (an inline JWKS that could not be read): its issuer's tokens are refused. */
  static unusable(): JwksSource {
    return new JwksSource('unusable', undefined, 0, () => {});
  }

  static remote(uri: string, fetchText: FetchText, options: { refreshMs?: number; onError?: (uri: string, error: Error) => void } = {}): JwksSource {
    const source = new JwksSource(uri, fetchText, options.refreshMs ?? JWKS_REFRESH_MS, options.onError ?? (() => {}));
    source.#first = source.#refresh();
    return source;
  }

  /** The key getter for jose's jwtVerify; undefined while no key set was ever fetched. */
  get getKey(): JWTVerifyGetKey | undefined {
    return this.#getKey;
  }

  get generation(): number {
    return this.#generation;
  }

  /** Resolves once the first fetch finished (either way). */
  ready(): Promise<void> {
    return this.#first ?? Promise.resolve();
  }

  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
  }

  #install(text: string): void {
    if (text === this.#text) return;
    const keys = parseKeys(text);
    this.#getKey = joseModule().createLocalJWKSet(keys);
    this.#text = text;
    this.#generation++;
  }

  async #refresh(): Promise<void> {
    if (this.#stopped || !this.#fetchText) return;
    let delay = this.#refreshMs;
    try {
      this.fetches++;
      this.#install(await this.#fetchText(this.uri));
      this.fetchedAt = Date.now();
      this.lastError = undefined;
      this.#failures = 0;
    } catch (error) {
      this.#failures++;
      this.lastError = (error as Error).message;
      this.#onError(this.uri, error as Error);
      delay = Math.min(this.#refreshMs, JWKS_RETRY_MAX_MS, JWKS_RETRY_MS * 2 ** Math.min(this.#failures - 1, 20));
    }
    if (this.#stopped) return;
    this.#timer = setTimeout(() => void this.#refresh(), delay);
    this.#timer.unref();
  }
}
