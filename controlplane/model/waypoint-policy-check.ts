/**
 * One verdict per L7 policy object a waypoint may enforce (AuthorizationPolicy with targetRefs,
 * RequestAuthentication, ambit's LocalRateLimitPolicy): invalid (every problem with its field path), or valid with
 * the compile step's warnings (targets ignored, CUSTOM enforced as DENY, nothing a waypoint can enforce).
 *
 * Owns: running the same validation and compile steps the control plane runs (shared/policy) on one object and
 * collecting what they say. Used by the status writer (Accepted/Invalid) and `ambitctl analyze`.
 * Must not know about: the store, the API server, how a verdict is shown.
 */
import type { K8sObject } from '../../shared/k8s/objects.ts';
import { PolicyError, type PolicyProblem } from '../../shared/policy/errors.ts';
import { compileWaypointAuthorization } from '../../shared/policy/l7-compile.ts';
import { compileRateLimitPolicy, RATE_LIMIT_KIND, validateRateLimitPolicy } from '../../shared/policy/rate-limit.ts';
import { compileRequestAuthentication, validateRequestAuthentication } from '../../shared/policy/request-authentication.ts';
import { validatePolicy } from '../../shared/policy/validate.ts';

export const WAYPOINT_POLICY_KINDS = ['AuthorizationPolicy', 'RequestAuthentication', RATE_LIMIT_KIND] as const;
export type WaypointPolicyKind = (typeof WAYPOINT_POLICY_KINDS)[number];

export interface WaypointPolicyVerdict {
  /** False when the object breaks its schema or a value rule: `problems` says where. */
  valid: boolean;
  problems: PolicyProblem[];
  /** What the compile step ignored or changed in a valid object. */
  warnings: string[];
  /** The object names targets (targetRef/targetRefs): it is for waypoints, not the agents. */
  targeted: boolean;
  /** Valid and compiled into something waypoints enforce (at least one target kept). */
  applied: boolean;
}

export function isWaypointPolicyKind(kind: string | undefined): kind is WaypointPolicyKind {
  return (WAYPOINT_POLICY_KINDS as readonly string[]).includes(kind ?? '');
}

function hasTargets(object: K8sObject): boolean {
  const spec = (object as { spec?: { targetRef?: unknown; targetRefs?: unknown[] } }).spec;
  return Boolean(spec?.targetRef) || Boolean(spec?.targetRefs?.length);
}

function invalid(error: unknown, targeted: boolean): WaypointPolicyVerdict {
  if (!(error instanceof PolicyError)) throw error;
  return { valid: false, problems: [...error.problems], warnings: [], targeted, applied: false };
}

export function checkWaypointPolicy(object: K8sObject, options: { rootNamespace?: string } = {}): WaypointPolicyVerdict {
  const targeted = hasTargets(object);
  switch (object.kind) {
    case 'AuthorizationPolicy': {
      const result = validatePolicy(object);
      if (!result.ok) return invalid(result.error, targeted);
      if (result.kind !== 'AuthorizationPolicy') return { valid: true, problems: [], warnings: [], targeted, applied: false };
      const compiled = compileWaypointAuthorization(result.object, options);
      return { valid: true, problems: [], warnings: compiled.warnings, targeted, applied: compiled.authorization !== undefined };
    }
    case 'RequestAuthentication':
      try {
        const compiled = compileRequestAuthentication(validateRequestAuthentication(object), options);
        return { valid: true, problems: [], warnings: compiled.warnings, targeted, applied: compiled.requestAuthentication !== undefined };
      } catch (error) {
        return invalid(error, targeted);
      }
    case RATE_LIMIT_KIND:
      try {
        const compiled = compileRateLimitPolicy(validateRateLimitPolicy(object), options);
        return { valid: true, problems: [], warnings: compiled.warnings, targeted, applied: compiled.policy !== undefined };
      } catch (error) {
        return invalid(error, targeted);
      }
    default:
      return { valid: false, problems: [{ path: 'kind', message: `${String(object.kind)} is not an L7 policy kind` }], warnings: [], targeted, applied: false };
  }
}
