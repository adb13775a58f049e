/**
 * What a write must pass before the cluster sees it, as a cluster's API server and Istio's validating webhook would
 * check it: AuthorizationPolicy and PeerAuthentication by ambit's policy validation (always, as the webhook does),
 * and for every kind the control plane knows, fields it does not know rejected (`fieldValidation=Strict`, kubectl's
 * default), warned about (`Warn`) or let through (`Ignore`).
 *
 * Owns: the decision and its messages. Must not know about: HTTP or storage.
 */
import { checkObject, isKnownKind } from '../../controlplane/sources/manifest-schema.ts';
import type { K8sObject } from '../../shared/k8s/objects.ts';
import { validatePolicy } from '../../shared/policy/validate.ts';
import { ApiError } from './errors.ts';

export type FieldValidation = 'Strict' | 'Warn' | 'Ignore';

export function fieldValidation(value: string | null): FieldValidation {
  if (value === null || value === '' || value === 'Strict') return value === null || value === '' ? 'Warn' : 'Strict';
  if (value === 'Warn' || value === 'Ignore') return value;
  throw new ApiError('BadRequest', `fieldValidation must be Strict, Warn or Ignore, not ${value}`);
}

/** Admits `object` or throws 422 Invalid; resolves with warnings to return in `Warning` headers. */
export function admit(object: K8sObject, validation: FieldValidation): string[] {
  const name = `${object.kind} ${object.metadata?.namespace ? `${object.metadata.namespace}/` : ''}${object.metadata?.name}`;
  if (object.kind === 'AuthorizationPolicy' || object.kind === 'PeerAuthentication') {
    const result = validatePolicy(object);
    if (!result.ok) throw new ApiError('Invalid', `admission webhook "validation.istio.io" denied the request: ${name}: ${result.error.message}`);
  }
  if (validation === 'Ignore' || !isKnownKind(object.kind ?? '')) return [];
  const problems = checkObject(object as Record<string, unknown>).map((problem) => `${problem.path.length > 0 ? `.${problem.path.join('.')}` : name}: ${problem.message}`);
  if (problems.length > 0 && validation === 'Strict') throw new ApiError('Invalid', `${name} is invalid: strict decoding error: ${problems.join(', ')}`);
  return problems;
}
