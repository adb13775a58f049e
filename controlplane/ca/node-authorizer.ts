/**
 * Which identities a node agent may have: those of pods running on its node.
 *
 * Owns: the PodsOnNode seam (the control plane's store answers it; tests pass a function over a list) and the
 * decision, with a refusal message that names the node, the identity and the reason.
 * Must not know about: tokens, CSRs, signing.
 */
import type { SpiffeId } from '../../shared/identity/index.ts';
import { CaServiceError } from './errors.ts';

export interface PodServiceAccount {
  namespace: string;
  serviceAccount: string;
}

/** The namespace and service account of every pod scheduled on `node`. */
export type PodsOnNode = (node: string) => Iterable<PodServiceAccount> | Promise<Iterable<PodServiceAccount>>;

/** Throws CaServiceError('permissionDenied') unless a pod with `identity`'s service account runs on `node`. */
export async function authorizeIdentityForNode(node: string, identity: SpiffeId, podsOnNode: PodsOnNode): Promise<void> {
  for (const pod of await podsOnNode(node)) {
    if (pod.namespace === identity.namespace && pod.serviceAccount === identity.serviceAccount) return;
  }
  throw new CaServiceError('permissionDenied', `node ${node} may not get ${identity.uri}: no pod with that service account runs on ${node}`);
}
