/**
 * Kubernetes callers: a TokenReview asks the API server whether a bearer token is valid and whose it is.
 *
 * Owns: the TokenReview call and a short cache of its positive answers. An agent presents the same token on its
 * xDS stream and on every certificate request (a restart asks for one certificate per service account on the node
 * at once): without the cache each is a round trip to the API server. Accepted tokens are remembered for
 * REVIEW_CACHE_TTL_MS (the API server's own webhook token cache keeps them 2 minutes), never past the token's own
 * expiry; concurrent reviews of one token share one request; refusals are not cached (a token that becomes valid,
 * or a review that failed because the API server was away, is asked again). Tokens are keyed by SHA-256 digest.
 * Kept apart from auth.ts so that local mode never loads @kubernetes/client-node (it costs 70-90 MB of RSS).
 * Must not know about: xDS, the CA.
 */
import { createHash } from 'node:crypto';
import type { Metadata } from '@grpc/grpc-js';
import { AuthenticationV1Api, type KubeConfig } from '@kubernetes/client-node';
import { AuthenticationError, bearerToken, NODE_NAME_EXTRA, type AuthenticatedCaller, type XdsAuthenticator } from './auth.ts';

/** How long an accepted token is taken on trust without asking again. */
export const REVIEW_CACHE_TTL_MS = 60_000;
/** Bound on remembered tokens (a few per node); the oldest go first. */
const REVIEW_CACHE_MAX_ENTRIES = 10_000;

interface CachedReview {
  caller: Promise<AuthenticatedCaller>;
  /** When the answer stops being trusted (ms since epoch); Infinity while the review is in flight. */
  expiresAt: number;
}

export interface TokenReviewOptions {
  /** The audiences the token must be for (the API server checks; its own audience when absent). */
  audiences?: string[];
  /** Default REVIEW_CACHE_TTL_MS; 0 asks the API server every time. */
  cacheTtlMs?: number;
  now?: () => number;
}

/** In a cluster: a TokenReview asks the API server whether the token is valid and whose it is. */
export class TokenReviewAuthenticator implements XdsAuthenticator {
  readonly #api: AuthenticationV1Api;
  readonly #audiences: string[] | undefined;
  readonly #ttlMs: number;
  readonly #now: () => number;
  readonly #cache = new Map<string, CachedReview>();
  /** TokenReviews sent (for tests and the admin view). */
  reviews = 0;

  constructor(kubeConfig: KubeConfig, options: TokenReviewOptions = {}) {
    this.#api = kubeConfig.makeApiClient(AuthenticationV1Api);
    this.#audiences = options.audiences;
    this.#ttlMs = options.cacheTtlMs ?? REVIEW_CACHE_TTL_MS;
    this.#now = options.now ?? Date.now;
  }

  authenticate(metadata: Metadata): Promise<AuthenticatedCaller> {
    const token = bearerToken(metadata);
    if (this.#ttlMs === 0) return this.#review(token);
    const key = createHash('sha256').update(token).digest('base64');
    const cached = this.#cache.get(key);
    if (cached && cached.expiresAt > this.#now()) return cached.caller;
    if (cached) this.#cache.delete(key);
    const entry: CachedReview = { caller: this.#review(token), expiresAt: Infinity };
    this.#cache.set(key, entry);
    if (this.#cache.size > REVIEW_CACHE_MAX_ENTRIES) this.#cache.delete(this.#cache.keys().next().value!);
    entry.caller.then(
      () => {
        entry.expiresAt = Math.min(this.#now() + this.#ttlMs, tokenExpiry(token) ?? Infinity);
      },
      () => {
        if (this.#cache.get(key) === entry) this.#cache.delete(key);
      },
    );
    return entry.caller;
  }

  async #review(token: string): Promise<AuthenticatedCaller> {
    this.reviews++;
    const review = await this.#api.createTokenReview({
      body: { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token, ...(this.#audiences ? { audiences: this.#audiences } : {}) } },
    });
    const status = review.status;
    if (!status?.authenticated || !status.user?.username) {
      throw new AuthenticationError(`the token review rejected the token${status?.error ? `: ${status.error}` : ''}${this.#audiences ? ` (audiences asked: ${this.#audiences.join(', ')})` : ''}`);
    }
    // An API server that ignored the audiences would answer for its own: accept only an answer for ours.
    if (this.#audiences && !(status.audiences ?? []).some((audience) => this.#audiences!.includes(audience))) {
      throw new AuthenticationError(`the token is not for the control plane's audiences (${this.#audiences.join(', ')}); it is for ${(status.audiences ?? []).join(', ') || 'the API server'}`);
    }
    const node = status.user.extra?.[NODE_NAME_EXTRA]?.[0];
    return node ? { identity: status.user.username, node } : { identity: status.user.username };
  }
}

/** A JWT's `exp` in ms since epoch, when the token is a JWT that says; the cache never outlives the token. */
function tokenExpiry(token: string): number | undefined {
  const payload = token.split('.')[1];
  if (payload === undefined) return undefined;
  try {
    const exp = (JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as { exp?: unknown }).exp;
    return typeof exp === 'number' ? exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}
