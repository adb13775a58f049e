/**
 * ambit's L4 policy library: Istio's AuthorizationPolicy and PeerAuthentication, validated, compiled to
 * `istio.security.Authorization`, and evaluated per connection. Used by the control plane (validate, compile,
 * resolve scope, encode) and by the agent (decode, index, evaluate, explain).
 *
 * Owns: the public surface of shared/policy. Must not know about: either program.
 */
export { PolicyError, type PolicyErrorCode, type PolicyProblem } from './errors.ts';
export type * from './crd-schema.ts';
export { authorizationPolicySchema, peerAuthenticationSchema } from './crd-schema.ts';
export { validatePolicy, assertValidPolicy, parsePolicyYaml, isDryRun, principalProblem, DRY_RUN_ANNOTATION, type ValidatedPolicy, type ValidationResult, type ParsedDocument } from './validate.ts';
export * from './model.ts';
export { compileAuthorizationPolicy, compilePolicyObject, toStringMatch, type CompileOptions } from './compile.ts';
export { policiesForWorkload, policiesForWorkloadKeys, selectorPolicyKeysForWorkload, selectorMatches } from './scope.ts';
export { AuthorizationIndex, buildAuthorizationIndex, evaluate, principalParts, type Connection, type Decision, type DryRunReport, type PrincipalParts } from './evaluate.ts';
export { explain, type Explanation, type PolicyTrace, type RuleTrace, type ClauseTrace } from './explain.ts';
export {
  mtlsModeFor,
  peerAuthenticationLevels,
  peerAuthenticationToAuthorization,
  convertPeerAuthentication,
  staticStrictAuthorization,
  STATIC_STRICT_POLICY_NAME,
  CONVERTED_PEER_AUTHENTICATION_PREFIX,
  type EffectiveMtlsMode,
  type WorkloadRef,
} from './peer-authentication.ts';
export { encodeAuthorization, decodeAuthorization, authorizationToWireObject, authorizationFromWireObject, AUTHORIZATION_MESSAGE } from './wire.ts';
