/**
 * Compiles a validated AuthorizationPolicy that uses `targetRefs` (or `targetRef`) into the L7 model the waypoint
 * enforces (l7-model.ts), with Istio's rules for waypoint attachment:
 *   - targets: a Gateway (`gateway.networking.k8s.io`; the waypoint itself), a Service (core group; every request
 *     to it through its waypoint), or the GatewayClass `istio-waypoint` from the root namespace (every waypoint).
 *     A target in another namespace, another kind, or the GatewayClass outside the root namespace is refused.
 *   - selector policies are not for waypoints (the agents enforce them): no result, no warning.
 *   - CUSTOM is refused: ambit has no extension providers. Istio answers an unusable provider by denying what the
 *     policy's rules match, so the compiled policy is a DENY with the same rules (fail closed), with a warning.
 *   - `serviceAccounts: [sa | ns/sa]` get their namespace filled in.
 *
 * Owns: the CRD -> L7 model mapping and the problems a user must see (returned as warnings).
 * Must not know about: encoding, evaluation, HTTP.
 */
import type { AuthorizationPolicyObject, PolicyTargetReference, RuleSpec } from './crd-schema.ts';
import { DEFAULT_ROOT_NAMESPACE } from './model.ts';
import { isDryRun } from './validate.ts';
import { WAYPOINT_GATEWAY_CLASS_NAME, type L7Authorization, type L7Rule, type L7Source, type L7Target } from './l7-model.ts';

export interface L7CompileResult {
  /** Undefined when the policy is not for waypoints (selector or namespace-wide) or every target was refused. */
  authorization: L7Authorization | undefined;
  warnings: string[];
}

const GATEWAY_GROUP = 'gateway.networking.k8s.io';

/** The targets of a policy (targetRef or targetRefs), each checked; refused ones are reported in `warnings`. */
export function compileTargets(refs: readonly PolicyTargetReference[], policyNamespace: string, rootNamespace: string, field: string, warnings: string[]): L7Target[] {
  const targets: L7Target[] = [];
  refs.forEach((ref, index) => {
    const path = `${field}[${index}]`;
    const group = ref.group ?? '';
    const namespace = ref.namespace ?? policyNamespace;
    if (namespace !== policyNamespace) {
      warnings.push(`${path}: targets must be in the policy's own namespace ${policyNamespace}, not ${namespace}; ignored`);
      return;
    }
    if (ref.kind === 'Gateway' && group === GATEWAY_GROUP) targets.push({ kind: 'Gateway', namespace, name: ref.name });
    else if (ref.kind === 'Service' && (group === '' || group === 'core')) targets.push({ kind: 'Service', namespace, name: ref.name });
    else if (ref.kind === 'GatewayClass' && group === GATEWAY_GROUP) {
      if (policyNamespace !== rootNamespace || ref.name !== WAYPOINT_GATEWAY_CLASS_NAME) {
        warnings.push(`${path}: a GatewayClass target must be ${WAYPOINT_GATEWAY_CLASS_NAME} from the root namespace ${rootNamespace}; ignored`);
        return;
      }
      targets.push({ kind: 'GatewayClass', namespace, name: ref.name });
    } else {
      warnings.push(`${path}: waypoints take targetRefs of kind Gateway or GatewayClass (group ${GATEWAY_GROUP}) or Service (core group), not ${group ? `${group}/` : ''}${ref.kind}; ignored`);
    }
  });
  return targets;
}

function withNamespace(values: readonly string[] | undefined, namespace: string): string[] | undefined {
  return values?.map((value) => (value.includes('/') ? value : `${namespace}/${value}`));
}

function compileRule(rule: RuleSpec, namespace: string): L7Rule {
  return {
    from: (rule.from ?? []).map(({ source = {} }) => {
      const out: L7Source = { ...source };
      const accounts = withNamespace(source.serviceAccounts, namespace);
      const notAccounts = withNamespace(source.notServiceAccounts, namespace);
      if (accounts) out.serviceAccounts = accounts;
      if (notAccounts) out.notServiceAccounts = notAccounts;
      return out;
    }),
    to: (rule.to ?? []).map(({ operation = {} }) => ({ ...operation })),
    when: (rule.when ?? []).map((condition) => ({ key: condition.key, ...(condition.values ? { values: [...condition.values] } : {}), ...(condition.notValues ? { notValues: [...condition.notValues] } : {}) })),
  };
}

/** Compiles a validated AuthorizationPolicy (validate.ts) for waypoints. */
export function compileWaypointAuthorization(object: AuthorizationPolicyObject, options: { rootNamespace?: string } = {}): L7CompileResult {
  const rootNamespace = options.rootNamespace ?? DEFAULT_ROOT_NAMESPACE;
  const spec = object.spec ?? {};
  const namespace = object.metadata.namespace ?? 'default';
  const key = `${namespace}/${object.metadata.name}`;
  const refs = spec.targetRefs ?? (spec.targetRef ? [spec.targetRef] : []);
  if (refs.length === 0) return { authorization: undefined, warnings: [] };
  const warnings: string[] = [];
  const targets = compileTargets(refs, namespace, rootNamespace, spec.targetRefs ? 'spec.targetRefs' : 'spec.targetRef', warnings);
  const prefixed = warnings.map((warning) => `AuthorizationPolicy ${key} ${warning}`);
  if (targets.length === 0) return { authorization: undefined, warnings: [...prefixed, `AuthorizationPolicy ${key} has no target a waypoint can enforce: not applied`] };
  let action = spec.action ?? 'ALLOW';
  if (action === 'CUSTOM') {
    prefixed.push(`AuthorizationPolicy ${key}: action CUSTOM (provider ${spec.provider?.name ?? '?'}) is not supported by ambit's waypoint (no extension providers); as Istio does for a provider it cannot use, requests its rules match are denied`);
    action = 'DENY';
  }
  return {
    authorization: { name: object.metadata.name, namespace, action, dryRun: isDryRun(object), targets, rules: (spec.rules ?? []).map((rule) => compileRule(rule, namespace)) },
    warnings: prefixed,
  };
}
