/**
 * Which policies apply to a workload: Istio's scoping of AuthorizationPolicy.
 *
 *   GLOBAL            (root namespace, no selector)  every workload in the mesh
 *   NAMESPACE         (no selector)                  every workload in the policy's namespace
 *   WORKLOAD_SELECTOR (selector.matchLabels)         workloads in the policy's namespace whose labels match; a
 *                                                     selector policy in the root namespace selects across all
 *                                                     namespaces
 *
 * Istio resolves selectors in the control plane and sends each workload the `namespace/name` keys of its
 * selector policies (`Workload.authorization_policies`); ztunnel adds the GLOBAL and NAMESPACE policies itself.
 * Both ways are here, so the control plane can compute the keys and the agent can resolve them.
 *
 * Owns: scope resolution. Must not know about: how policies match connections.
 */
import { authorizationKey, DEFAULT_ROOT_NAMESPACE, type Authorization } from './model.ts';

/** Whether every `matchLabels` entry is present with the same value in `labels` (an empty selector matches all). */
export function selectorMatches(matchLabels: Readonly<Record<string, string>> | undefined, labels: Readonly<Record<string, string>>): boolean {
  if (!matchLabels) return true;
  for (const key in matchLabels) if (labels[key] !== matchLabels[key]) return false;
  return true;
}

/** Whether a WORKLOAD_SELECTOR policy selects this workload. */
export function policySelectsWorkload(policy: Authorization, workloadLabels: Readonly<Record<string, string>>, workloadNamespace: string, rootNamespace: string): boolean {
  if (policy.namespace !== workloadNamespace && policy.namespace !== rootNamespace) return false;
  return selectorMatches(policy.selector, workloadLabels);
}

/**
 * The policies that apply to a workload, in the order given: GLOBAL ones, NAMESPACE ones of its namespace, and
 * WORKLOAD_SELECTOR ones whose selector matches its labels.
 */
export function policiesForWorkload(
  workloadLabels: Readonly<Record<string, string>>,
  namespace: string,
  rootNamespace: string = DEFAULT_ROOT_NAMESPACE,
  policies: readonly Authorization[] = [],
): Authorization[] {
  return policies.filter((policy) => {
    switch (policy.scope) {
      case 'GLOBAL':
        return true;
      case 'NAMESPACE':
        return policy.namespace === namespace;
      case 'WORKLOAD_SELECTOR':
        return policySelectsWorkload(policy, workloadLabels, namespace, rootNamespace);
    }
  });
}

/** The keys Istio puts in a workload's `authorization_policies`: its WORKLOAD_SELECTOR policies, sorted. */
export function selectorPolicyKeysForWorkload(
  workloadLabels: Readonly<Record<string, string>>,
  namespace: string,
  rootNamespace: string,
  policies: readonly Authorization[],
): string[] {
  return policies
    .filter((policy) => policy.scope === 'WORKLOAD_SELECTOR' && policySelectsWorkload(policy, workloadLabels, namespace, rootNamespace))
    .map(authorizationKey)
    .sort();
}

/**
 * The agent's side, as ztunnel does it: GLOBAL policies, NAMESPACE policies of the workload's namespace, and the
 * policies named in the workload's `authorization_policies` keys.
 */
export function policiesForWorkloadKeys(namespace: string, keys: readonly string[], policiesByKey: ReadonlyMap<string, Authorization>): Authorization[] {
  const out: Authorization[] = [];
  const named = new Set(keys);
  for (const policy of policiesByKey.values()) {
    if (policy.scope === 'GLOBAL' || (policy.scope === 'NAMESPACE' && policy.namespace === namespace)) out.push(policy);
    else if (named.has(authorizationKey(policy))) out.push(policy);
  }
  return out;
}
