/**
 * The answer to "would this connection be allowed, and which policy decides": what `ambitctl authz check` prints,
 * whether it decided from a cluster directory itself or asked an agent's admin endpoint (`GET /authz/check`).
 *
 * Owns: the shape both sides agree on, and the decision from two pods and the policies in scope for the
 * destination. Must not know about: where the pods and policies come from.
 */
import { explain, type Explanation } from './explain.ts';
import type { Authorization } from './model.ts';

export interface PodView {
  namespace: string;
  name: string;
  ip: string;
  serviceAccount: string;
  inMesh: boolean;
  captureReason: string;
  principal?: string;
}

export interface AuthzCheckResult {
  source: PodView;
  destination: PodView;
  port: number;
  allowed: boolean;
  /** `namespace/name` of the deciding policy, absent when none decided. */
  decidingPolicy?: string;
  reason: string;
  lines: string[];
  explanation?: Explanation;
  /** Policies that are not in force (rejected, or compiled with warnings). */
  problems: string[];
  /** Who decided: `cluster directory <dir>` or `agent on <node>`. */
  decidedBy?: string;
}

/** A pod named `namespace/name`, or `name` in `defaultNamespace`, as both checks take their arguments. */
export function podRef(text: string, defaultNamespace: string): { namespace: string; name: string } {
  const slash = text.indexOf('/');
  return slash === -1 ? { namespace: defaultNamespace, name: text } : { namespace: text.slice(0, slash), name: text.slice(slash + 1) };
}

/**
 * Decides a connection as the destination's agent would: nothing applies to a destination outside the mesh;
 * otherwise the peer is its SPIFFE identity over HBONE, or only its address over plaintext.
 */
export function decideConnection(
  source: PodView,
  destination: PodView,
  port: number,
  inScope: readonly Authorization[],
  extra: Pick<AuthzCheckResult, 'problems' | 'decidedBy'>,
): AuthzCheckResult {
  const base = { source, destination, port, ...extra };
  if (!destination.inMesh) {
    const reason = `the destination pod is not in the mesh (${destination.captureReason}): no agent sees its traffic, so no L4 policy applies and the connection is allowed`;
    return { ...base, allowed: true, reason, lines: [`ALLOWED: ${reason}`] };
  }
  const explanation = explain(
    { ...(source.principal ? { sourcePrincipal: source.principal } : {}), sourceIp: source.ip, destinationIp: destination.ip, destinationPort: port },
    inScope,
  );
  const result: AuthzCheckResult = { ...base, allowed: explanation.decision.allowed, reason: explanation.decision.reason, lines: explanation.lines, explanation };
  if (explanation.decision.decidingPolicy) result.decidingPolicy = explanation.decision.decidingPolicy;
  return result;
}
