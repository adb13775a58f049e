/**
 * Kubernetes callers: a TokenReview asks the API server whether a bearer token is valid and whose it is.
 *
 * Owns: the TokenReview call. Kept apart from auth.ts so that local mode never loads @kubernetes/client-node
 * (it costs 70-90 MB of RSS).
 * Must not know about: xDS, the CA.
 */
import type { Metadata } from '@grpc/grpc-js';
import { AuthenticationV1Api, type KubeConfig } from '@kubernetes/client-node';
import { AuthenticationError, bearerToken, NODE_NAME_EXTRA, type AuthenticatedCaller, type XdsAuthenticator } from './auth.ts';

/** In a cluster: a TokenReview asks the API server whether the token is valid and whose it is. */
export class TokenReviewAuthenticator implements XdsAuthenticator {
  readonly #api: AuthenticationV1Api;
  readonly #audiences: string[] | undefined;

  constructor(kubeConfig: KubeConfig, options: { audiences?: string[] } = {}) {
    this.#api = kubeConfig.makeApiClient(AuthenticationV1Api);
    this.#audiences = options.audiences;
  }

  async authenticate(metadata: Metadata): Promise<AuthenticatedCaller> {
    const token = bearerToken(metadata);
    const review = await this.#api.createTokenReview({
      body: { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token, ...(this.#audiences ? { audiences: this.#audiences } : {}) } },
    });
    const status = review.status;
    if (!status?.authenticated || !status.user?.username) {
      throw new AuthenticationError(`the token review rejected the token${status?.error ? `: ${status.error}` : ''}`);
    }
    const node = status.user.extra?.[NODE_NAME_EXTRA]?.[0];
    return node ? { identity: status.user.username, node } : { identity: status.user.username };
  }
}
