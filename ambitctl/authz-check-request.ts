/**
 * `ambitctl authz check <source pod> <service> <port> --method M --path P [--header name:value ...]`: would this HTTP
 * request through the Service's waypoint be allowed, and which L7 policy and rule decide it. Decided from the
 * cluster directory exactly as the waypoint decides (shared/policy/l7-compile.ts then l7-evaluate.ts): the policies
 * whose targetRefs name the Service, the waypoint's Gateway, or the GatewayClass from the root namespace. A bearer
 * token in `--header authorization:Bearer ...` is decoded for `request.auth.*` but not verified (the waypoint checks
 * it against the RequestAuthentication's keys; the output says so).
 *
 * Owns: turning a pod, a Service and a request into the waypoint's request attributes, and the explanation lines
 * (every policy in scope and whether each rule matched). Must not know about: how the waypoint serves requests.
 */
import { decodeJwt } from 'jose';
import { requestedWaypoint } from '../controlplane/model/waypoint.ts';
import type { ClusterSnapshot } from '../shared/k8s/cluster-dir.ts';
import { podNamespace } from '../shared/k8s/objects.ts';
import { spiffeId } from '../shared/identity/index.ts';
import { compileWaypointAuthorization } from '../shared/policy/l7-compile.ts';
import { L7PolicyIndex, type L7Decision, type RequestAuth } from '../shared/policy/l7-evaluate.ts';
import { targetsApply, type L7Authorization } from '../shared/policy/l7-model.ts';
import { validatePolicy } from '../shared/policy/validate.ts';
import { normalizePath, prepareStream, requestAttributes, splitTarget } from '../waypoint/authz/request-attributes.ts';
import { AmbitctlError } from './admin-client.ts';

export interface HttpRequestSpec {
  method: string;
  path: string;
  /** `name:value` as given on the command line. */
  headers: string[];
}

export interface RequestCheckResult {
  allowed: boolean;
  reason: string;
  decidingPolicy?: string;
  rule?: number;
  waypoint: string;
  source: string;
  service: string;
  request: { method: string; path: string; headers: Record<string, string> };
  policies: { policy: string; action: string; dryRun: boolean; matchedRule: number }[];
  decision: L7Decision;
  lines: string[];
  problems: string[];
}

function headerMap(headers: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const header of headers) {
    const colon = header.indexOf(':');
    if (colon <= 0) throw new AmbitctlError('USAGE', `--header ${JSON.stringify(header)} is not name:value`);
    const name = header.slice(0, colon).trim().toLowerCase();
    const value = header.slice(colon + 1).trim();
    out[name] = out[name] === undefined ? value : `${out[name]},${value}`;
  }
  return out;
}

function unverifiedAuth(headers: Record<string, string>): RequestAuth | undefined {
  const authorization = headers.authorization;
  if (!authorization?.toLowerCase().startsWith('bearer ')) return undefined;
  try {
    const payload = decodeJwt(authorization.slice(7).trim());
    const audiences = typeof payload.aud === 'string' ? [payload.aud] : (payload.aud ?? []);
    return { principal: `${String(payload.iss)}/${String(payload.sub ?? '')}`, audiences, presenter: typeof payload.azp === 'string' ? payload.azp : '', claims: payload };
  } catch {
    throw new AmbitctlError('USAGE', 'the Authorization header carries no decodable JWT (the waypoint would answer 401)');
  }
}

export function authzCheckRequest(
  snapshot: ClusterSnapshot,
  request: { source: string; service: string; port: number; namespace: string; rootNamespace: string; trustDomain: string; http: HttpRequestSpec },
): RequestCheckResult {
  const [sourceNamespace, sourceName] = request.source.includes('/') ? request.source.split('/', 2) : [request.namespace, request.source];
  const pod = snapshot.findPod(sourceNamespace!, sourceName!);
  if (!pod) throw new AmbitctlError('USAGE', `no pod ${sourceNamespace}/${sourceName} in the cluster directory`);
  const [serviceNamespace, serviceName] = request.service.includes('/') ? request.service.split('/', 2) : [request.namespace, request.service];
  const service = snapshot.objects.find((object) => object.kind === 'Service' && object.metadata?.name === serviceName && (object.metadata?.namespace ?? 'default') === serviceNamespace);
  if (!service) throw new AmbitctlError('USAGE', `no Service ${serviceNamespace}/${serviceName} in the cluster directory (an HTTP request check is for a Service behind a waypoint)`);
  const waypoint = requestedWaypoint(service.metadata?.labels, serviceNamespace!, snapshot.findNamespace(serviceNamespace!));
  if (!waypoint) throw new AmbitctlError('USAGE', `Service ${serviceNamespace}/${serviceName} uses no waypoint (label istio.io/use-waypoint on it or its namespace): its requests meet only L4 policy; check without --method/--path/--header`);
  const problems: string[] = [];
  const policies: L7Authorization[] = [];
  for (const object of snapshot.objects) {
    if (object.kind !== 'AuthorizationPolicy') continue;
    const validated = validatePolicy(object);
    if (!validated.ok || validated.kind !== 'AuthorizationPolicy') continue;
    const compiled = compileWaypointAuthorization(validated.object, { rootNamespace: request.rootNamespace });
    if (!compiled.authorization) continue;
    problems.push(...compiled.warnings);
    if (targetsApply(compiled.authorization.targets, waypoint, `${serviceNamespace}/${serviceName}`)) policies.push(compiled.authorization);
  }
  const headers = headerMap(request.http.headers);
  headers.host ??= `${serviceName}.${serviceNamespace}.svc.cluster.local`;
  const target = splitTarget(request.http.path);
  const path = normalizePath(target.path);
  const serviceAccount = pod.spec?.serviceAccountName || 'default';
  const stream = prepareStream({
    peer: spiffeId(request.trustDomain, podNamespace(pod), serviceAccount),
    peerAddress: pod.status?.podIP ?? '',
    destinationHost: String((service as { spec?: { clusterIP?: string } }).spec?.clusterIP ?? ''),
    destinationPort: request.port,
  });
  const auth = unverifiedAuth(headers);
  const attributes = requestAttributes(request.http.method, path, headers, stream, auth, 0);
  const decision = new L7PolicyIndex(policies).decide(attributes);
  const perPolicy = policies.map((policy) => {
    const alone = new L7PolicyIndex([{ ...policy, dryRun: false }]).decide(attributes);
    return { policy: `${policy.namespace}/${policy.name}`, action: policy.action, dryRun: policy.dryRun, matchedRule: alone.policy ? alone.rule : -1 };
  });
  const lines = [
    `${decision.allowed ? 'ALLOWED' : 'DENIED'} (${decision.allowed ? 'forwarded' : '403 RBAC: access denied'}): ${decision.reason}`,
    `request ${request.http.method} ${path}${target.rest} from ${podNamespace(pod)}/${pod.metadata.name} (${stream.sourcePrincipal}) to ${serviceNamespace}/${serviceName}:${request.port} through waypoint ${waypoint}`,
    ...(auth ? [`JWT ${auth.principal} (decoded, not verified: the waypoint verifies it against the RequestAuthentication's keys)`] : []),
    ...(perPolicy.length === 0 ? ['no L7 AuthorizationPolicy targets this Service, its waypoint or the waypoint class'] : ['L7 policies in scope (Envoy order: DENY, then ALLOW; AUDIT and dry-run never decide):']),
    ...perPolicy.map((entry) => `  ${entry.action}${entry.dryRun ? ' (dry-run)' : ''} ${entry.policy}: ${entry.matchedRule >= 0 ? `rule ${entry.matchedRule} matches` : 'no rule matches'}`),
    ...(decision.audit ? [`audited by ${decision.audit}`] : []),
    ...(decision.dryRun ? [`dry-run: with the dry-run policies enforced the request would be ${decision.dryRun.allowedIfEnforced ? 'allowed' : 'denied'}${decision.dryRun.policy ? ` (${decision.dryRun.policy} rule ${decision.dryRun.rule})` : ''}`] : []),
  ];
  const result: RequestCheckResult = {
    allowed: decision.allowed, reason: decision.reason, waypoint, source: `${podNamespace(pod)}/${pod.metadata.name}`, service: `${serviceNamespace}/${serviceName}`,
    request: { method: request.http.method, path, headers }, policies: perPolicy, decision, lines, problems,
  };
  if (decision.policy) {
    result.decidingPolicy = decision.policy;
    result.rule = decision.rule;
  }
  return result;
}
