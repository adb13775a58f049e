/**
 * The compiled L7 policy model the waypoint enforces: AuthorizationPolicy and RequestAuthentication objects whose
 * `targetRefs` name a waypoint (its Gateway, a Service bound to it, or the GatewayClass `istio-waypoint` from the
 * root namespace), as plain TypeScript data. The control plane builds it (l7-compile.ts, request-authentication.ts),
 * ships it as `ambit.waypoint.HttpAuthorization` / `ambit.waypoint.RequestAuthentication`
 * (shared/xds/proto/ambit/waypoint/policies.proto), and the waypoint and `ambitctl authz check` evaluate it
 * (l7-evaluate.ts).
 *
 * Owns: the shape both sides agree on. Must not know about: YAML, protobuf, HTTP servers, JOSE.
 *
 * Values are kept as Istio's users write them (`*` wildcards, CIDR text, port numbers as text): the evaluator
 * precompiles them once per policy set, so the wire format stays a readable mirror of the CRD.
 */
import type { SourceSpec } from './crd-schema.ts';

/** CUSTOM is not on this list: ambit has no extension providers; such a policy is refused (see l7-compile.ts). */
export type L7Action = 'ALLOW' | 'DENY' | 'AUDIT';

/** What a policy is attached to, as its `targetRefs` entry named it (kind normalised, namespace filled in). */
export interface L7Target {
  kind: 'Gateway' | 'Service' | 'GatewayClass';
  namespace: string;
  name: string;
}

/** istio.security.v1.Source, every list optional (serviceAccounts as `ns/sa`, the namespace filled in by the compiler). */
export type L7Source = SourceSpec;

/** istio.security.v1.Operation. */
export interface L7Operation {
  hosts?: string[];
  notHosts?: string[];
  ports?: string[];
  notPorts?: string[];
  methods?: string[];
  notMethods?: string[];
  paths?: string[];
  notPaths?: string[];
}

/** istio.security.v1.Condition. */
export interface L7Condition {
  key: string;
  values?: string[];
  notValues?: string[];
}

/** One rule: `from` (any source), `to` (any operation) and every `when` must match; an empty list does not constrain. */
export interface L7Rule {
  from: L7Source[];
  to: L7Operation[];
  when: L7Condition[];
}

export interface L7Authorization {
  name: string;
  namespace: string;
  action: L7Action;
  /** `istio.io/dry-run: "true"`: evaluated and reported, never enforced. */
  dryRun: boolean;
  targets: L7Target[];
  /** No rules: never matches (an ALLOW policy with none still makes the target deny-by-default, as in Istio). */
  rules: L7Rule[];
}

/** Where a JWT may be: a header (value after `prefix`), a query parameter or a cookie. */
export interface JwtHeaderLocation {
  name: string;
  prefix: string;
}

export interface JwtClaimToHeader {
  header: string;
  claim: string;
}

/** istio.security.v1.JWTRule. */
export interface JwtRule {
  issuer: string;
  /** Empty: any audience is accepted (Istio's rule). */
  audiences: string[];
  /** One of the two; `jwks` wins when both are set, as in Istio. */
  jwksUri: string;
  jwks: string;
  /** Empty with fromParams and fromCookies empty too: `Authorization: Bearer` and `?access_token=` (Istio's default). */
  fromHeaders: JwtHeaderLocation[];
  fromParams: string[];
  fromCookies: string[];
  forwardOriginalToken: boolean;
  outputPayloadToHeader: string;
  outputClaimToHeaders: JwtClaimToHeader[];
}

export interface L7RequestAuthentication {
  name: string;
  namespace: string;
  targets: L7Target[];
  jwtRules: JwtRule[];
}

export const WAYPOINT_GATEWAY_CLASS_NAME = 'istio-waypoint';

/** Whether a policy with `targets` applies at the waypoint `gateway` (`ns/name`) to a request for `service` (`ns/name`). */
export function targetsApply(targets: readonly L7Target[], gateway: string, service: string): boolean {
  for (const target of targets) {
    if (target.kind === 'GatewayClass') return true;
    const key = `${target.namespace}/${target.name}`;
    if (target.kind === 'Gateway' ? key === gateway : key === service) return true;
  }
  return false;
}
