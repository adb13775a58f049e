/**
 * Who is calling the xDS server: the `authorization: Bearer <token>` metadata checked against a bootstrap token
 * file (local mode) or a Kubernetes TokenReview (in a cluster).
 *
 * Owns: turning call metadata into an authenticated caller, and the error for a caller that is not one.
 * Must not know about: xDS, resources, gRPC servers (it sees only metadata).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { Metadata } from '@grpc/grpc-js';

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
 * Local mode: the bootstrap token file, the same one the CA service reads (controlplane/ca/node-authenticator.ts):
 * one `<token> <node-name>` per line (`#` comments), so an agent's token also says which node it is on. A line
 * with a token alone is accepted too, as a token shared by tools that are no node. The file is read on every
 * call, so adding a node or rotating a token needs no restart; tokens are compared as SHA-256 digests.
 */
export class TokenFileAuthenticator implements XdsAuthenticator {
  readonly #tokenFile: string;

  constructor(tokenFile: string) {
    this.#tokenFile = tokenFile;
  }

  async authenticate(metadata: Metadata): Promise<AuthenticatedCaller> {
    const presented = digest(bearerToken(metadata));
    let text: string;
    try {
      text = await readFile(this.#tokenFile, 'utf8');
    } catch (error) {
      throw new Error(`cannot read the bootstrap token file ${this.#tokenFile}: ${(error as Error).message}`, { cause: error });
    }
    for (const rawLine of text.split('\n')) {
      const fields = rawLine.replace(/#.*/, '').trim().split(/\s+/).filter(Boolean);
      if (fields.length === 0 || fields.length > 2) continue;
      if (!timingSafeEqual(digest(fields[0]!), presented)) continue;
      return fields[1] ? { identity: `node:${fields[1]}`, node: fields[1] } : { identity: 'bootstrap-token' };
    }
    throw new AuthenticationError(`the bearer token is not in the bootstrap token file ${this.#tokenFile}`);
  }
}

function digest(token: string): Buffer {
  return createHash('sha256').update(token).digest();
}

