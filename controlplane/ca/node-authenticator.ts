/**
 * Who is calling: turns a request's `authorization: Bearer <token>` metadata into a node name.
 *
 * Owns: the NodeAuthenticator seam, the local-mode implementation (a bootstrap token file that maps each
 * node's token to its node name), and an adapter over a caller authentication that may name the node itself
 * (a Kubernetes TokenReview of a bound service account token) or leave it to an `x-ambit-node` header.
 * Must not know about: certificates, pods, which identities a node may have (that is node-authorizer.ts).
 *
 * Why one token per node, not one shared token plus a node header: the CA's whole check is "does a pod with
 * this service account run on the caller's node". If every agent held the same token and named its node in a
 * header, any node could claim to be any other and the check would protect nothing. With a token per node, a
 * stolen token yields only the identities of pods on that one node, as in Istio (where the node comes from the
 * agent's bound service account token).
 *
 * Token file format (local mode), one node per line, `#` starts a comment:
 *     <token> <node-name>
 */
import { createHash } from 'node:crypto';
import type { Metadata } from '@grpc/grpc-js';
import type { BootstrapTokenFile } from '../bootstrap-tokens.ts';
import { AUTHORIZATION_METADATA_KEY, NODE_METADATA_KEY } from '../../shared/ca/ca-proto.ts';
import { CaServiceError } from './errors.ts';

export interface NodeIdentity {
  node: string;
  /**
   * Set for a caller that is not a node agent but a workload with its own token (a waypoint): the CA signs only this
   * identity for it, and still only if a pod with that service account runs on `node`.
   */
  onlyIdentity?: { namespace: string; serviceAccount: string };
}

/** Authenticates a call from its metadata; throws CaServiceError('unauthenticated', ...) when it cannot. */
export type NodeAuthenticator = (metadata: Metadata) => NodeIdentity | Promise<NodeIdentity>;

/** The bearer token in `authorization` metadata, or a CaServiceError saying what is wrong with it. */
export function bearerToken(metadata: Metadata): string {
  const values = metadata.get(AUTHORIZATION_METADATA_KEY);
  if (values.length === 0) throw new CaServiceError('unauthenticated', 'no authorization metadata: send "authorization: Bearer <node token>"');
  if (values.length > 1) throw new CaServiceError('unauthenticated', 'more than one authorization metadata value');
  const match = /^Bearer\s+(\S+)\s*$/i.exec(String(values[0]));
  if (!match) throw new CaServiceError('unauthenticated', 'the authorization metadata is not "Bearer <token>"');
  return match[1]!;
}

function digest(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

/** A NodeAuthenticator over a token -> node table (tokens are kept only as SHA-256 digests). */
export function bootstrapTokenAuthenticator(tokens: Map<string, string> | Record<string, string>): NodeAuthenticator {
  const nodeByTokenDigest = new Map<string, string>();
  for (const [token, node] of tokens instanceof Map ? tokens : Object.entries(tokens)) nodeByTokenDigest.set(digest(token), node);
  return authenticatorOverDigests(nodeByTokenDigest);
}

/**
 * A NodeAuthenticator over the local-mode bootstrap token file, through the reader xDS shares
 * (controlplane/bootstrap-tokens.ts): a rotated or added token counts for the CA as soon as for xDS.
 */
export function bootstrapTokenFileAuthenticator(tokens: BootstrapTokenFile): NodeAuthenticator {
  return async (metadata) => {
    const match = await tokens.lookup(bearerToken(metadata));
    if (!match) throw new CaServiceError('unauthenticated', 'the bearer token is not a known node token (check the bootstrap token file)');
    if (!match.node) throw new CaServiceError('unauthenticated', 'this bootstrap token names no node: the CA signs only for a node agent');
    return { node: match.node };
  };
}

function authenticatorOverDigests(nodeByTokenDigest: Map<string, string>): NodeAuthenticator {
  return (metadata) => {
    const node = nodeByTokenDigest.get(digest(bearerToken(metadata)));
    if (node === undefined) throw new CaServiceError('unauthenticated', 'the bearer token is not a known node token (check the bootstrap token file)');
    return { node };
  };
}

/**
 * A NodeAuthenticator over a caller authentication shared with xDS (`{ identity, node? }`).
 *   - The node comes from the credential when it names one: a TokenReview of a bound service account token
 *     carries `authentication.kubernetes.io/node-name`. The `x-ambit-node` header is then ignored.
 *   - Otherwise from `x-ambit-node` only when `nodeFromHeader` (one shared bootstrap token on a single-machine
 *     local mesh, where the token proves only "an agent of this mesh"); otherwise the call is refused.
 *   - `trustedNodeAgents` (Istio's CA_TRUSTED_NODE_ACCOUNTS): caller identities allowed to ask on behalf of pods.
 *     In a cluster every pod's bound token names its node, so without this list any workload could ask for
 *     its neighbours' identities; set it to the agent DaemonSet's service account
 *     (`system:serviceaccount:<namespace>:<agent-sa>`).
 */
export function nodeAuthenticatorFromCaller(
  authenticate: (metadata: Metadata) => Promise<{ identity: string; node?: string }>,
  options: { nodeFromHeader: boolean; trustedNodeAgents?: readonly string[] },
): NodeAuthenticator {
  return async (metadata) => {
    let caller: { identity: string; node?: string };
    try {
      caller = await authenticate(metadata);
    } catch (error) {
      if (error instanceof CaServiceError) throw error;
      throw new CaServiceError('unauthenticated', (error as Error).message, { cause: error });
    }
    if (options.trustedNodeAgents && !options.trustedNodeAgents.includes(caller.identity)) {
      throw new CaServiceError('permissionDenied', `caller ${caller.identity} is not a node agent (trusted: ${options.trustedNodeAgents.join(', ')})`);
    }
    if (caller.node) return { node: caller.node };
    if (options.nodeFromHeader) {
      const values = metadata.get(NODE_METADATA_KEY);
      const node = typeof values[0] === 'string' ? values[0].trim() : '';
      if (values.length === 1 && node !== '') return { node };
      throw new CaServiceError('unauthenticated', `caller ${caller.identity} must name its node in one ${NODE_METADATA_KEY} metadata value`);
    }
    throw new CaServiceError('unauthenticated', `the credential of ${caller.identity} does not say which node it runs on (use the agent's bound service account token)`);
  };
}
