/**
 * `ambitctl analyze`'s findings over a whole configuration (the objects of a cluster directory or an API
 * server): policies that target nothing, routes attached to nothing, DestinationRule subsets no route uses,
 * waypoints nothing is bound to, objects bound to a waypoint that does not exist, CUSTOM actions, and every L7
 * policy's validation problems with their field paths.
 *
 * Owns: the rules that relate objects to each other (the same rules the control plane applies: use-waypoint
 * labels via controlplane/model/waypoint.ts, policy validation and compile via waypoint-policy-check.ts).
 * Must not know about: where the objects come from, how findings are printed, exit codes.
 */
import type { K8sObject } from '../../shared/k8s/objects.ts';
import type { NamespaceObject } from '../../shared/k8s/objects.ts';
import { DEFAULT_ROOT_NAMESPACE } from '../../shared/policy/model.ts';
import { validatePolicy } from '../../shared/policy/validate.ts';
import { checkObject, isKnownKind } from '../sources/manifest-schema.ts';
import { checkWaypointPolicy, WAYPOINT_POLICY_KINDS } from '../model/waypoint-policy-check.ts';
import { namespaceOf } from '../model/kube-types.ts';
import { requestedWaypoint, USE_WAYPOINT_LABEL, WAYPOINT_GATEWAY_CLASS } from '../model/waypoint.ts';
import { DEFAULT_CLUSTER_DOMAIN } from '../model/workload.ts';
import { LEVEL_ORDER, MESSAGES, type AnalysisLevel, type MessageType } from './messages.ts';

export interface AnalysisResource {
  kind: string;
  namespace: string | undefined;
  name: string;
}

export interface AnalysisMessage {
  code: string;
  level: AnalysisLevel;
  name: string;
  resource: AnalysisResource;
  message: string;
  /** The object itself (callers look up where it was read from). */
  object: K8sObject;
}

export interface AnalyzeOptions {
  rootNamespace?: string;
  clusterDomain?: string;
}

const GATEWAY_GROUP = 'gateway.networking.k8s.io';
const ROUTE_KINDS = ['HTTPRoute', 'GRPCRoute'];

interface Ref {
  group?: string;
  kind?: string;
  name?: string;
  namespace?: string;
}

interface DestinationRef {
  host?: string;
  subset?: string;
}

class Index {
  readonly #byKind = new Map<string, Map<string, K8sObject>>();

  constructor(objects: readonly K8sObject[]) {
    for (const object of objects) {
      const kind = object.kind ?? '';
      const key = kind === 'Namespace' ? (object.metadata?.name ?? '') : `${namespaceOf(object)}/${object.metadata?.name ?? ''}`;
      const map = this.#byKind.get(kind) ?? new Map<string, K8sObject>();
      map.set(key, object);
      this.#byKind.set(kind, map);
    }
  }

  list(kind: string): K8sObject[] {
    return [...(this.#byKind.get(kind)?.values() ?? [])];
  }

  get(kind: string, key: string): K8sObject | undefined {
    return this.#byKind.get(kind)?.get(key);
  }

  namespace(name: string): NamespaceObject | undefined {
    return this.get('Namespace', name) as NamespaceObject | undefined;
  }
}

function isCoreService(ref: Ref): boolean {
  return (ref.group ?? '') === '' || ref.group === 'core';
}

/** A host as written in an Istio resource of `namespace`, made a FQDN (`reviews` -> reviews.ns.svc.cluster.local). */
function fqdn(host: string, namespace: string, clusterDomain: string): string {
  const parts = host.split('.');
  if (parts.length === 1) return `${host}.${namespace}.svc.${clusterDomain}`;
  if (parts.length === 2) return `${host}.svc.${clusterDomain}`;
  return host;
}

export function analyze(objects: readonly K8sObject[], options: AnalyzeOptions = {}): AnalysisMessage[] {
  const rootNamespace = options.rootNamespace ?? DEFAULT_ROOT_NAMESPACE;
  const clusterDomain = options.clusterDomain ?? DEFAULT_CLUSTER_DOMAIN;
  const index = new Index(objects);
  const messages: AnalysisMessage[] = [];
  const report = (type: MessageType, object: K8sObject, message: string): void => {
    const resource = { kind: object.kind ?? '?', namespace: object.kind === 'Namespace' ? undefined : namespaceOf(object), name: object.metadata?.name ?? '?' };
    messages.push({ code: type.code, level: type.level, name: type.name, resource, message, object });
  };
  const isWaypoint = (key: string): boolean => (index.get('Gateway', key)?.spec as { gatewayClassName?: string } | undefined)?.gatewayClassName === WAYPOINT_GATEWAY_CLASS;

  // Waypoint bindings: every Namespace, Service and Pod asking for a waypoint (pods and Services inherit their
  // namespace's label); only objects carrying the label themselves are told about a missing waypoint.
  const bound = new Set<string>();
  const checkBinding = (object: K8sObject, key: string): void => {
    if (!index.get('Gateway', key)) report(MESSAGES.ReferencedResourceNotFound, object, `Referenced waypoint not found: "${key}" (label ${USE_WAYPOINT_LABEL})`);
    else if (!isWaypoint(key)) report(MESSAGES.NotAWaypoint, object, `${USE_WAYPOINT_LABEL} names Gateway ${key}, whose gatewayClassName is not ${WAYPOINT_GATEWAY_CLASS}: no waypoint is used`);
  };
  for (const namespace of index.list('Namespace')) {
    const name = namespace.metadata?.name ?? '';
    const key = requestedWaypoint(namespace.metadata?.labels, name, undefined);
    if (key === undefined) continue;
    bound.add(key);
    checkBinding(namespace, key);
  }
  const serviceWaypoint = new Map<string, string>();
  for (const kind of ['Service', 'Pod']) {
    for (const object of index.list(kind)) {
      const namespace = namespaceOf(object);
      const key = requestedWaypoint(object.metadata?.labels, namespace, index.namespace(namespace));
      if (key === undefined) continue;
      bound.add(key);
      if (kind === 'Service') serviceWaypoint.set(`${namespace}/${object.metadata?.name}`, key);
      if (object.metadata?.labels?.[USE_WAYPOINT_LABEL] !== undefined) checkBinding(object, key);
    }
  }
  for (const gateway of index.list('Gateway')) {
    const key = `${namespaceOf(gateway)}/${gateway.metadata?.name}`;
    if (!isWaypoint(key) || bound.has(key)) continue;
    report(MESSAGES.UnusedWaypoint, gateway, `waypoint ${key} is used by nothing: no Namespace, Service or Pod has ${USE_WAYPOINT_LABEL}: ${gateway.metadata?.name}${namespaceOf(gateway) === 'default' ? '' : ` (in ${namespaceOf(gateway)}, or with istio.io/use-waypoint-namespace: ${namespaceOf(gateway)})`}`);
  }

  // A Service that exists but is bound to no working waypoint: its policies are not enforced, its routes not served.
  const checkService = (object: K8sObject, key: string, what: string): void => {
    if (!index.get('Service', key)) {
      report(MESSAGES.ReferencedResourceNotFound, object, `Referenced Service not found: "${key}"`);
      return;
    }
    const waypoint = serviceWaypoint.get(key);
    if (waypoint === undefined || !isWaypoint(waypoint)) report(MESSAGES.ServiceHasNoWaypoint, object, `Service ${key} is bound to no waypoint (label it ${USE_WAYPOINT_LABEL}): ${what}`);
  };

  // Fields the control plane does not understand (a misspelt field would be silently ignored), on every kind it reads;
  // the policy kinds are checked in full below.
  const policyKinds = new Set<string>([...WAYPOINT_POLICY_KINDS, 'PeerAuthentication']);
  for (const object of objects) {
    if (!object.kind || !isKnownKind(object.kind) || policyKinds.has(object.kind)) continue;
    const problems = checkObject(object);
    if (problems.length > 0) report(MESSAGES.SchemaValidationError, object, `Schema validation error: ${problems.map((problem) => problem.message).join('; ')}`);
  }
  for (const object of index.list('PeerAuthentication')) {
    const result = validatePolicy(object);
    if (!result.ok) report(MESSAGES.SchemaValidationError, object, `Schema validation error: ${result.error.problems.map((problem) => (problem.path ? `${problem.path}: ${problem.message}` : problem.message)).join('; ')}`);
  }

  // L7 policies: validity, CUSTOM, ignored parts, targets.
  for (const kind of WAYPOINT_POLICY_KINDS) {
    for (const object of index.list(kind)) {
      const verdict = checkWaypointPolicy(object, { rootNamespace });
      if (!verdict.valid) {
        report(MESSAGES.SchemaValidationError, object, `Schema validation error: ${verdict.problems.map((problem) => (problem.path ? `${problem.path}: ${problem.message}` : problem.message)).join('; ')}`);
        continue;
      }
      const spec = (object.spec ?? {}) as { action?: string; provider?: { name?: string }; targetRef?: Ref; targetRefs?: Ref[] };
      if (kind === 'AuthorizationPolicy' && spec.action === 'CUSTOM') {
        report(
          MESSAGES.CustomActionNotSupported,
          object,
          verdict.targeted
            ? `action CUSTOM (provider ${spec.provider?.name ?? '?'}) is not supported: ambit has no extension providers, so the waypoint denies every request its rules match`
            : `action CUSTOM (provider ${spec.provider?.name ?? '?'}) is not supported: ambit has no extension providers, and the node agents do not enforce it at all`,
        );
      }
      for (const warning of verdict.warnings) if (!warning.includes('action CUSTOM')) report(MESSAGES.PolicyPartIgnored, object, warning);
      const policyNamespace = namespaceOf(object);
      for (const ref of spec.targetRefs ?? (spec.targetRef ? [spec.targetRef] : [])) {
        const namespace = ref.namespace ?? policyNamespace;
        if (namespace !== policyNamespace) continue; // reported by the compile step as ignored
        const key = `${namespace}/${ref.name ?? ''}`;
        if (ref.kind === 'Gateway' && (ref.group ?? '') === GATEWAY_GROUP) {
          if (!index.get('Gateway', key)) report(MESSAGES.ReferencedResourceNotFound, object, `Referenced Gateway not found: "${key}"`);
        } else if (ref.kind === 'Service' && isCoreService(ref)) {
          checkService(object, key, `the ${kind} is not enforced`);
        }
      }
    }
  }

  // Routes: parents that exist, on a Service with a waypoint.
  for (const kind of ROUTE_KINDS) {
    for (const route of index.list(kind)) {
      const namespace = namespaceOf(route);
      const parents = ((route.spec as { parentRefs?: Ref[] } | undefined)?.parentRefs ?? []) as Ref[];
      if (parents.length === 0) {
        report(MESSAGES.RouteNotAttached, route, 'the route has no parentRefs: it is attached to nothing');
        continue;
      }
      parents.forEach((parent, position) => {
        const key = `${parent.namespace ?? namespace}/${parent.name ?? ''}`;
        if (parent.kind === 'Service' && isCoreService(parent)) checkService(route, key, `spec.parentRefs[${position}] is not served`);
        else if ((parent.kind ?? 'Gateway') === 'Gateway' && (parent.group ?? GATEWAY_GROUP) === GATEWAY_GROUP) {
          if (!index.get('Gateway', key)) report(MESSAGES.ReferencedResourceNotFound, route, `Referenced Gateway not found: "${key}" (spec.parentRefs[${position}])`);
        }
      });
    }
  }

  // DestinationRule subsets: used when a VirtualService route or mirror names the host and the subset; a route to a
  // subset no rule defines is Istio's IST0101 (the waypoint answers it 503 NC).
  const definedSubsets = new Set<string>();
  for (const rule of index.list('DestinationRule')) {
    const spec = (rule.spec ?? {}) as { host?: string; subsets?: { name?: string }[] };
    if (spec.host) for (const subset of spec.subsets ?? []) definedSubsets.add(`${fqdn(spec.host, namespaceOf(rule), clusterDomain)} ${subset.name}`);
  }
  const usedSubsets = new Set<string>();
  for (const service of index.list('VirtualService')) {
    const namespace = namespaceOf(service);
    const spec = (service.spec ?? {}) as Record<string, { route?: { destination?: DestinationRef }[]; mirror?: DestinationRef }[] | undefined>;
    for (const section of ['http', 'tcp', 'tls']) {
      for (const rule of spec[section] ?? []) {
        const destinations = [...(rule.route ?? []).map((route) => route.destination), rule.mirror];
        for (const destination of destinations) {
          if (!destination?.host || !destination.subset) continue;
          const hostSubset = `${fqdn(destination.host, namespace, clusterDomain)} ${destination.subset}`;
          usedSubsets.add(hostSubset);
          if (!definedSubsets.has(hostSubset)) report(MESSAGES.ReferencedResourceNotFound, service, `Referenced host+subset in destinationrule not found: "${hostSubset.replace(' ', '+')}"`);
        }
      }
    }
  }
  for (const rule of index.list('DestinationRule')) {
    const spec = (rule.spec ?? {}) as { host?: string; subsets?: { name?: string }[] };
    if (!spec.host) continue;
    const host = fqdn(spec.host, namespaceOf(rule), clusterDomain);
    (spec.subsets ?? []).forEach((subset, position) => {
      if (subset.name && !usedSubsets.has(`${host} ${subset.name}`)) report(MESSAGES.UnusedDestinationRuleSubset, rule, `subset "${subset.name}" (spec.subsets[${position}]) of host ${host} is used by no route`);
    });
  }

  return messages.sort(
    (a, b) =>
      LEVEL_ORDER[a.level] - LEVEL_ORDER[b.level] ||
      a.resource.kind.localeCompare(b.resource.kind) ||
      (a.resource.namespace ?? '').localeCompare(b.resource.namespace ?? '') ||
      a.resource.name.localeCompare(b.resource.name) ||
      a.code.localeCompare(b.code) ||
      a.message.localeCompare(b.message),
  );
}
