/**
 * The `status` the control plane writes on an L7 policy (AuthorizationPolicy with targetRefs,
 * RequestAuthentication, LocalRateLimitPolicy) in Kubernetes mode: one condition `Accepted`, as `kubectl describe`
 * and `kubectl wait --for=condition=Accepted` read it:
 *
 *   True,  reason Accepted:   valid and sent to waypoints (the message names what was ignored, if anything)
 *   False, reason Invalid:    the schema or a value rule refused it; the message lists every field path
 *   False, reason NotApplied: valid, but no target a waypoint can enforce (the message says why)
 *
 * with `observedGeneration` (the spec generation it describes) and `lastTransitionTime` (kept while the status
 * stays the same, as the Kubernetes API conventions ask).
 *
 * Owns: the verdict -> condition mapping and deciding when a written condition is still current.
 * Must not know about: the API server, the store.
 */
import type { K8sObject } from '../../shared/k8s/objects.ts';
import type { WaypointPolicyVerdict } from '../model/waypoint-policy-check.ts';

export const ACCEPTED_CONDITION = 'Accepted';
export type AcceptedReason = 'Accepted' | 'Invalid' | 'NotApplied';

export interface PolicyCondition {
  type: typeof ACCEPTED_CONDITION;
  status: 'True' | 'False';
  reason: AcceptedReason;
  message: string;
  observedGeneration?: number;
  lastTransitionTime: string;
}

/** The API server caps condition messages at 32 KiB; ours stay far below, cut at this length. */
const MAX_MESSAGE = 4096;

function cut(message: string): string {
  return message.length > MAX_MESSAGE ? `${message.slice(0, MAX_MESSAGE - 3)}...` : message;
}

function currentCondition(object: K8sObject): Partial<PolicyCondition> | undefined {
  const conditions = (object.status as { conditions?: Partial<PolicyCondition>[] } | undefined)?.conditions;
  return Array.isArray(conditions) ? conditions.find((condition) => condition?.type === ACCEPTED_CONDITION) : undefined;
}

export function acceptedCondition(object: K8sObject, verdict: WaypointPolicyVerdict, now: Date): PolicyCondition {
  const generation = (object.metadata as { generation?: number } | undefined)?.generation;
  let status: PolicyCondition['status'];
  let reason: AcceptedReason;
  let message: string;
  if (!verdict.valid) {
    status = 'False';
    reason = 'Invalid';
    message = verdict.problems.map((problem) => (problem.path ? `${problem.path}: ${problem.message}` : problem.message)).join('; ');
  } else if (!verdict.applied) {
    status = 'False';
    reason = 'NotApplied';
    message = verdict.warnings.join('; ') || 'no target a waypoint can enforce';
  } else {
    status = 'True';
    reason = 'Accepted';
    message = verdict.warnings.length > 0 ? `accepted, with parts ignored: ${verdict.warnings.join('; ')}` : 'accepted: sent to the waypoints of its targets';
  }
  const previous = currentCondition(object);
  const lastTransitionTime = previous?.status === status && previous.lastTransitionTime ? previous.lastTransitionTime : now.toISOString().replace(/\.\d{3}Z$/, 'Z');
  return { type: ACCEPTED_CONDITION, status, reason, message: cut(message), ...(generation !== undefined ? { observedGeneration: generation } : {}), lastTransitionTime };
}

/** True when the object already carries this condition (time aside): nothing to write. */
export function isCurrent(object: K8sObject, condition: PolicyCondition): boolean {
  const previous = currentCondition(object);
  return previous?.status === condition.status && previous.reason === condition.reason && previous.message === condition.message && previous.observedGeneration === condition.observedGeneration;
}
