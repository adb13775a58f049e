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

/** A Service named as a destination: `svc/<namespace>/<name>`, `svc/<name>` (in `defaultNamespace`), or `service/...`. */
export function serviceRefOf(text: string, defaultNamespace: string): { namespace: string; name: string } | undefined {
  const prefix = text.startsWith('svc/') ? 'svc/' : text.startsWith('service/') ? 'service/' : undefined;
  if (prefix === undefined) return undefined;
  const ref = podRef(text.slice(prefix.length), defaultNamespace);
  return ref.name ? ref : undefined;
}

/** The Service a check was addressed to. */
export interface ServiceCheckView {
  namespace: string;
  name: string;
  hostname: string;
  /** Its cluster IPs (none for a headless Service). */
  vips: string[];
  /** `address:port` of its waypoint, when it has one (istio.io/use-waypoint). */
  waypoint?: string;
}

/** One endpoint of the Service, the decision its agent would make for the connection on the endpoint's target port. */
export interface EndpointDecision {
  endpoint: PodView;
  /** The port the connection arrives on at the endpoint (the service port mapped). */
  targetPort: number;
  /** Unhealthy endpoints are never chosen: listed, not decided. */
  healthy: boolean;
  allowed: boolean;
  decidingPolicy?: string;
  reason: string;
  lines: string[];
}

/** The answer for a connection addressed to a Service: one decision per endpoint it could reach. */
export interface ServiceAuthzCheckResult {
  source: PodView;
  service: ServiceCheckView;
  /** The service port the client connects to. */
  port: number;
  /** True when every endpoint the connection could go to would allow it (and there is at least one). */
  allowed: boolean;
  reason: string;
  lines: string[];
  endpoints: EndpointDecision[];
  problems: string[];
  decidedBy?: string;
}

export type AnyAuthzCheckResult = AuthzCheckResult | ServiceAuthzCheckResult;

export function isServiceResult(result: AnyAuthzCheckResult): result is ServiceAuthzCheckResult {
  return (result as ServiceAuthzCheckResult).service !== undefined;
}

/** An endpoint of the service as the check sees it: the pod (or bare address), its target port, its health, the policies in scope. */
export interface EndpointCandidate {
  view: PodView;
  /** Undefined when the endpoint does not serve the port (a named target port it lacks). */
  targetPort: number | undefined;
  healthy: boolean;
  inScope: readonly Authorization[];
}

/**
 * Decides a connection to `port` of a Service as the mesh would carry it: the client's agent picks one healthy
 * endpoint that serves the port and the connection arrives there on the target port, so each such endpoint's
 * agent decides as for a connection addressed to the pod. Allowed only if every candidate allows (which one the
 * client gets is chosen per connection); no candidate at all: refused by the client's agent (no healthy upstream).
 */
export function decideServiceConnection(
  source: PodView,
  service: ServiceCheckView,
  port: number,
  candidates: readonly EndpointCandidate[],
  extra: Pick<ServiceAuthzCheckResult, 'problems' | 'decidedBy'>,
): ServiceAuthzCheckResult {
  const endpoints: EndpointDecision[] = [];
  let usable = 0;
  let denied = 0;
  for (const candidate of candidates) {
    if (candidate.targetPort === undefined) continue;
    if (!candidate.healthy) {
      endpoints.push({ endpoint: candidate.view, targetPort: candidate.targetPort, healthy: false, allowed: false, reason: 'unhealthy: never chosen', lines: [] });
      continue;
    }
    usable++;
    const decided = decideConnection(source, candidate.view, candidate.targetPort, candidate.inScope, { problems: [] });
    if (!decided.allowed) denied++;
    const decision: EndpointDecision = { endpoint: candidate.view, targetPort: candidate.targetPort, healthy: true, allowed: decided.allowed, reason: decided.reason, lines: decided.lines };
    if (decided.decidingPolicy) decision.decidingPolicy = decided.decidingPolicy;
    endpoints.push(decision);
  }
  const base = { source, service, port, endpoints, ...extra };
  const lines: string[] = [];
  if (service.waypoint) {
    lines.push(
      `NOTE: ${service.hostname} uses the waypoint at ${service.waypoint}: the endpoints' agents see the waypoint's identity, not the client's, and policies attached to the Service (targetRefs) are enforced by the waypoint; the decisions below are for the client's identity`,
    );
  }
  let allowed: boolean;
  let reason: string;
  if (usable === 0) {
    allowed = false;
    reason = `no healthy endpoint of ${service.hostname} serves port ${port}: the client's agent refuses the connection (no healthy upstream)`;
  } else if (denied === 0) {
    allowed = true;
    reason = `every endpoint that could be chosen (${usable}) allows it`;
  } else {
    allowed = false;
    reason = `${denied} of ${usable} endpoints that could be chosen deny it: connections that land there are refused`;
  }
  lines.push(`${allowed ? 'ALLOWED' : 'DENIED'}: ${reason}`);
  for (const decision of endpoints) {
    const where = `${decision.endpoint.namespace}/${decision.endpoint.name} (${decision.endpoint.ip || 'no IP'}:${decision.targetPort})`;
    if (!decision.healthy) {
      lines.push(`  endpoint ${where}: ${decision.reason}`);
      continue;
    }
    lines.push(`  endpoint ${where}:`);
    for (const line of decision.lines) lines.push(`    ${line}`);
  }
  return { ...base, allowed, reason, lines };
}
