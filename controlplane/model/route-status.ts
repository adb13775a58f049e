/**
 * The status of HTTPRoutes and GRPCRoutes that waypoints serve, in the Gateway API's shape: one entry per parentRef
 * (`parents[].parentRef`, `controllerName`, conditions `Accepted` and `ResolvedRefs` with reasons). One function for
 * both kinds: they attach to parents the same way; what each compiler could not honour arrives as problems.
 *
 * Why a route attaches to nothing, in words a user can act on: the parent Service does not exist; it exists but is
 * bound to no waypoint (no `istio.io/use-waypoint` on it or its namespace, or `none`); the waypoint it names does not
 * exist, is not of class istio-waypoint, or serves only workloads; the parent Gateway does not exist or is not a
 * waypoint. Backend problems (not found, wrong kind) make ResolvedRefs False; a rule the compiler refuses makes
 * Accepted False (UnsupportedValue) on every parent.
 *
 * Owns: that report. Must not know about: how routes compile, or where the status goes (the API server in
 * Kubernetes, `ambitctl waypoint status` in local mode).
 */
import type { K8sObject, NamespaceObject, ServiceObject } from '../../shared/k8s/objects.ts';
import type { ObjectStore } from '../store.ts';
import { namespaceOf, type GatewayObject } from './kube-types.ts';
import { requestedWaypoint, WAYPOINT_FOR_LABEL, WAYPOINT_GATEWAY_CLASS } from './waypoint.ts';

/** Istio's controller name: tools that read route status (istioctl, Kiali) look for it. */
export const ROUTE_STATUS_CONTROLLER = 'istio.io/gateway-controller';
export const ROUTE_KINDS = ['HTTPRoute', 'GRPCRoute'] as const;
export type RouteKind = (typeof ROUTE_KINDS)[number];

/** What a route compiler reports (controlplane/model/http-routes.ts RouteProblem, and GRPCRoute's). */
export interface RouteProblemInput {
  /** Default HTTPRoute. */
  kind?: string;
  /** `<namespace>/<name>`. */
  route: string;
  condition: 'Accepted' | 'ResolvedRefs';
  reason: string;
  message: string;
}

export interface ParentRef {
  group?: string;
  kind?: string;
  name?: string;
  namespace?: string;
  port?: number;
  sectionName?: string;
}

export interface RouteCondition {
  type: 'Accepted' | 'ResolvedRefs';
  status: 'True' | 'False';
  reason: string;
  message: string;
  observedGeneration?: number;
  lastTransitionTime?: string;
}

export interface RouteParentStatus {
  parentRef: ParentRef;
  controllerName: string;
  conditions: RouteCondition[];
}

export interface RouteStatusReport {
  kind: RouteKind;
  namespace: string;
  name: string;
  parents: RouteParentStatus[];
}

interface RouteObject extends K8sObject {
  metadata: K8sObject['metadata'] & { name: string; generation?: number };
  spec?: { parentRefs?: ParentRef[] };
}

function isCore(ref: ParentRef): boolean {
  return (ref.group ?? '') === '' || ref.group === 'core';
}

/** Why a Service parent does not reach a waypoint, or undefined when it does. */
function serviceParentProblem(store: ObjectStore, namespace: string, name: string): string | undefined {
  const service = store.get<ServiceObject>('Service', `${namespace}/${name}`);
  if (!service) return `parent Service ${namespace}/${name} not found`;
  const gatewayKey = requestedWaypoint(service.metadata.labels, namespace, store.get<NamespaceObject>('Namespace', namespace));
  if (!gatewayKey) return `Service ${namespace}/${name} is not bound to a waypoint: label it (or namespace ${namespace}) istio.io/use-waypoint=<waypoint>`;
  const gateway = store.get<GatewayObject>('Gateway', gatewayKey);
  if (!gateway) return `Service ${namespace}/${name} uses waypoint ${gatewayKey}, which does not exist (ambitctl waypoint apply -n ${gatewayKey.split('/')[0]} --name ${gatewayKey.split('/')[1]})`;
  if (gateway.spec?.gatewayClassName !== WAYPOINT_GATEWAY_CLASS) return `Service ${namespace}/${name} uses Gateway ${gatewayKey}, whose class is ${gateway.spec?.gatewayClassName ?? '(none)'}, not ${WAYPOINT_GATEWAY_CLASS}`;
  const waypointFor = gateway.metadata.labels?.[WAYPOINT_FOR_LABEL] ?? 'service';
  if (waypointFor !== 'service' && waypointFor !== 'all') return `Service ${namespace}/${name} uses waypoint ${gatewayKey}, which serves ${waypointFor} traffic only (${WAYPOINT_FOR_LABEL}: ${waypointFor})`;
  return undefined;
}

function gatewayParentProblem(store: ObjectStore, namespace: string, name: string): string | undefined {
  const gateway = store.get<GatewayObject>('Gateway', `${namespace}/${name}`);
  if (!gateway) return `parent Gateway ${namespace}/${name} not found`;
  if (gateway.spec?.gatewayClassName !== WAYPOINT_GATEWAY_CLASS) return `parent Gateway ${namespace}/${name} is of class ${gateway.spec?.gatewayClassName ?? '(none)'}: only ${WAYPOINT_GATEWAY_CLASS} Gateways are served by ambit`;
  return undefined;
}

/**
 * One report per HTTPRoute and GRPCRoute in the store. `problems` are the compilers' (their NoMatchingParent
 * findings are recomputed here per parent; a compiler's own refusal of a Gateway parent is kept when it names it).
 */
export function routeStatuses(store: ObjectStore, problems: readonly RouteProblemInput[]): RouteStatusReport[] {
  const byRoute = new Map<string, RouteProblemInput[]>();
  for (const problem of problems) {
    const key = `${problem.kind ?? 'HTTPRoute'}/${problem.route}`;
    byRoute.set(key, [...(byRoute.get(key) ?? []), problem]);
  }
  const reports: RouteStatusReport[] = [];
  for (const kind of ROUTE_KINDS) {
    for (const route of store.list<RouteObject>(kind)) {
      const namespace = namespaceOf(route);
      const own = byRoute.get(`${kind}/${namespace}/${route.metadata.name}`) ?? [];
      const generation = route.metadata.generation;
      const observed = generation !== undefined ? { observedGeneration: generation } : {};
      const refused = own.find((problem) => problem.condition === 'Accepted' && problem.reason !== 'NoMatchingParent');
      const unresolved = own.filter((problem) => problem.condition === 'ResolvedRefs');
      const resolvedRefs: RouteCondition = unresolved.length
        ? { type: 'ResolvedRefs', status: 'False', reason: unresolved[0]!.reason, message: unresolved.map((problem) => problem.message).join('; '), ...observed }
        : { type: 'ResolvedRefs', status: 'True', reason: 'ResolvedRefs', message: 'All references resolved', ...observed };
      const parents = (route.spec?.parentRefs ?? []).map((ref): RouteParentStatus => {
        const parentNamespace = ref.namespace ?? namespace;
        const parentKind = ref.kind ?? 'Gateway';
        let problem: { reason: string; message: string } | undefined;
        if (isCore(ref) && parentKind === 'Service') {
          const message = serviceParentProblem(store, parentNamespace, ref.name ?? '');
          if (message) problem = { reason: 'NoMatchingParent', message };
        } else if ((ref.group ?? 'gateway.networking.k8s.io') === 'gateway.networking.k8s.io' && parentKind === 'Gateway') {
          const message = gatewayParentProblem(store, parentNamespace, ref.name ?? '');
          const compilerRefusal = own.find((entry) => entry.reason === 'NoMatchingParent' && entry.message.includes(`Gateway ${ref.name ?? ''}`));
          if (message) problem = { reason: 'NoMatchingParent', message };
          else if (compilerRefusal) problem = { reason: 'NoMatchingParent', message: compilerRefusal.message };
        } else {
          problem = { reason: 'InvalidKind', message: `parentRef kind ${ref.group ? `${ref.group}/` : ''}${parentKind} is not a Service or a waypoint Gateway` };
        }
        if (!problem && refused) problem = { reason: refused.reason, message: refused.message };
        const accepted: RouteCondition = problem
          ? { type: 'Accepted', status: 'False', ...problem, ...observed }
          : { type: 'Accepted', status: 'True', reason: 'Accepted', message: 'Route was valid', ...observed };
        return { parentRef: ref, controllerName: ROUTE_STATUS_CONTROLLER, conditions: [accepted, resolvedRefs] };
      });
      reports.push({ kind, namespace, name: route.metadata.name, parents });
    }
  }
  return reports;
}
