/**
 * The compiled L4 authorization model: Istio's `istio.security.Authorization` as plain TypeScript data.
 *
 * Owns: the shape every other part agrees on. The control plane compiles AuthorizationPolicy and
 * PeerAuthentication objects into it (compile.ts, peer-authentication.ts), ships it over xDS (wire.ts and
 * shared/xds/proto/istio/security/authorization.proto), and the agent evaluates it (evaluate.ts).
 * Must not know about: YAML, protobuf encoding, or how a decision is enforced.
 *
 * Field names are the proto's in camelCase, so a config dump reads like Istio's. Addresses are kept as text
 * (`{ address: '10.0.0.0', length: 8 }`) rather than bytes, for the same reason.
 */

export type AuthorizationScope = 'GLOBAL' | 'NAMESPACE' | 'WORKLOAD_SELECTOR';
export type AuthorizationAction = 'ALLOW' | 'DENY';

/** Istio's StringMatch: exactly one member set. `presence` matches any non-empty value. */
export type StringMatch = { exact: string } | { prefix: string } | { suffix: string } | { presence: true };

export interface ServiceAccountMatch {
  namespace: string;
  serviceAccount: string;
}

/** An IP block: `address` is the network address in text form, `length` the prefix length in bits. */
export interface AddressMatch {
  address: string;
  length: number;
}

/**
 * One alternative of a rule. Every field that is set must match; values within one field are OR-ed; a `not*`
 * field matches when none of its values does. Istio never sends a Match with no field set; ztunnel skips one.
 */
export interface Match {
  namespaces?: StringMatch[];
  notNamespaces?: StringMatch[];
  serviceAccounts?: ServiceAccountMatch[];
  notServiceAccounts?: ServiceAccountMatch[];
  /** Matched against the peer identity without `spiffe://`, e.g. `cluster.local/ns/default/sa/web`. */
  principals?: StringMatch[];
  notPrincipals?: StringMatch[];
  sourceIps?: AddressMatch[];
  notSourceIps?: AddressMatch[];
  destinationIps?: AddressMatch[];
  notDestinationIps?: AddressMatch[];
  destinationPorts?: number[];
  notDestinationPorts?: number[];
}

/** A clause: the `from`, the `to`, or one `when` condition of a policy rule. Matches are OR-ed. */
export interface Rules {
  matches: Match[];
}

/** One rule of an AuthorizationPolicy: its clauses are AND-ed. A group with no clauses matches everything. */
export interface Group {
  rules: Rules[];
}

export interface Authorization {
  name: string;
  namespace: string;
  scope: AuthorizationScope;
  action: AuthorizationAction;
  /** OR-ed. An ALLOW policy with no groups matches nothing but still counts as an ALLOW policy. */
  groups: Group[];
  /** `istio.io/dry-run: "true"`: evaluated and reported, never enforced. */
  dryRun: boolean;
  /**
   * Not on the wire: the policy's `selector.matchLabels` when scope is WORKLOAD_SELECTOR. Istio resolves
   * selectors in the control plane and sends each workload the keys of its policies; keeping the labels lets
   * either side resolve (see scope.ts).
   */
  selector?: Record<string, string>;
}

/** The key Istio uses for a policy in a workload's `authorization_policies` list and in logs: `namespace/name`. */
export function authorizationKey(policy: Pick<Authorization, 'namespace' | 'name'>): string {
  return `${policy.namespace}/${policy.name}`;
}

/** What the compiler hands back: the policy (absent when ztunnel has nothing to enforce) and why. */
export interface CompileResult {
  /** Undefined when the policy is not for the node agent (targetRef, AUDIT or CUSTOM action). */
  authorization: Authorization | undefined;
  /** Accepted-with-warning conditions, in words: HTTP-only fields that need a waypoint, ignored actions. */
  warnings: string[];
}

/** The root namespace Istio uses by default for mesh-wide policy. */
export const DEFAULT_ROOT_NAMESPACE = 'istio-system';
