/**
 * Who is calling the xDS server: the `authorization: Bearer <token>` metadata checked against a bootstrap token
 * file (local mode) or a Kubernetes TokenReview (in a cluster).
 *
 * Owns: turning call metadata into an authenticated caller, and the error for a caller that is not one.
 * Must not know about: xDS, resources, gRPC servers (it sees only metadata).
 */
import type { Metadata } from '@grpc/grpc-js';
import { BootstrapTokenFile } from '../bootstrap-tokens.ts';

export interface AuthenticatedCaller {
  /** Who the caller is, e.g. `system:serviceaccount:istio-system:ztunnel` or `bootstrap-token`. */
  identity: string;
  /** The node the caller runs on, when the credential says so (a bound service account token does). */
  node?: string;
}

export interface XdsAuthenticator {
  authenticate(metadata: Metadata): Promise<AuthenticatedCaller>;
}

export class AuthenticationError extends Error {
  readonly code = 'AMBIT_XDS_UNAUTHENTICATED';
  constructor(message: string) {
    super(message);
    this.name = 'AuthenticationError';
  }
}

/** An authenticated caller that may not read the mesh's configuration (answered PERMISSION_DENIED). */
export class AuthorizationError extends Error {
  readonly code = 'AMBIT_XDS_PERMISSION_DENIED';
  constructor(message: string) {
    super(message);
    this.name = 'AuthorizationError';
  }
}

/**
 * Only these identities may open an xDS stream (in a cluster: the node agents' service account, the one the CA
 * trusts too). Any pod has a valid service account token; without this, any pod could read every workload,
 * address and policy of the mesh.
 */
export function onlyCallers(authenticator: XdsAuthenticator, allowed: readonly string[]): XdsAuthenticator {
  return {
    async authenticate(metadata) {
      const caller = await authenticator.authenticate(metadata);
      if (!allowed.includes(caller.identity)) {
        throw new AuthorizationError(`${caller.identity} may not read the mesh configuration (allowed: ${allowed.join(', ')})`);
      }
      return caller;
    },
  };
}

/**
 * Only callers `allowed` says yes to may open an xDS stream: the node agents' account, and in Kubernetes the
 * service accounts of waypoints (controlplane/model/waypoint-accounts.ts), which need the same configuration.
 * `describe` says who is allowed, for the refusal.
 */
export function callersAllowedBy(authenticator: XdsAuthenticator, allowed: (caller: AuthenticatedCaller) => boolean, describe: string): XdsAuthenticator {
  return {
    async authenticate(metadata) {
      const caller = await authenticator.authenticate(metadata);
      if (!allowed(caller)) throw new AuthorizationError(`${caller.identity} may not read the mesh configuration (allowed: ${describe})`);
      return caller;
    },
  };
}

/** The extra field a Kubernetes bound service account token review carries with the pod's node name. */
export const NODE_NAME_EXTRA = 'authentication.kubernetes.io/node-name';

export function bearerToken(metadata: Metadata): string {
  const value = metadata.get('authorization')[0];
  if (typeof value !== 'string') throw new AuthenticationError('no `authorization: Bearer <token>` metadata on the call');
  const match = /^Bearer\s+(.+)$/i.exec(value.trim());
  if (!match) throw new AuthenticationError('the authorization metadata is not a Bearer token');
  return match[1]!;
}

/**
 * Local mode: the bootstrap token file (controlplane/bootstrap-tokens.ts), the same reader the CA service uses:
 * an agent's token also says which node it is on; a token alone on a line is a tool's, of no node. The file is
 * reloaded when it changes, so adding a node or rotating a token needs no restart.
 */
export class TokenFileAuthenticator implements XdsAuthenticator {
  readonly #tokens: Promise<BootstrapTokenFile>;

  constructor(tokens: string | BootstrapTokenFile) {
    this.#tokens = typeof tokens === 'string' ? BootstrapTokenFile.open(tokens) : Promise.resolve(tokens);
    // A missing file is reported on each call; never an unhandled rejection.
    this.#tokens.catch(() => undefined);
  }

  async authenticate(metadata: Metadata): Promise<AuthenticatedCaller> {
    const presented = bearerToken(metadata);
    let tokens: BootstrapTokenFile;
    try {
      tokens = await this.#tokens;
    } catch (error) {
      throw new Error(`cannot read the bootstrap token file: ${(error as Error).message}`, { cause: error });
    }
    const match = await tokens.lookup(presented);
    if (!match) throw new AuthenticationError(`the bearer token is not in the bootstrap token file ${tokens.file}`);
    return match.node ? { identity: `node:${match.node}`, node: match.node } : { identity: 'bootstrap-token' };
  }
}
