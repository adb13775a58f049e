/**
 * HTTPRoutes (gateway.networking.k8s.io/v1) attached to Services (GAMMA: parentRefs kind Service) compiled into one
 * `ambit.waypoint.HttpRoutes` per Service (shared/xds/proto/ambit/waypoint/routes.proto) for waypoints: every rule's
 * matches flattened and sorted by the spec's precedence, backendRefs resolved to `<namespace>/<hostname>` and port,
 * RequestHeaderModifier kept.
 *
 * Owns: validation with the Gateway API's condition reasons (a route or a part of it this build cannot honour is
 * reported, never silently widened), precedence, and the resource shape.
 * Must not know about: encoding, the xDS server, how waypoints apply the routes.
 */
import type { K8sObject } from '../../shared/k8s/objects.ts';
import type { ObjectStore } from '../store.ts';
import { namespaceOf, type ServiceObject } from './kube-types.ts';
import { serviceHostname } from './service.ts';

/** One reason a route (or part of it) is not served as written, with the Gateway API condition it maps to. */
export interface RouteProblem {
  /** `<namespace>/<name>` of the HTTPRoute. */
  route: string;
  condition: 'Accepted' | 'ResolvedRefs';
  /** Gateway API reasons: NoMatchingParent, UnsupportedValue, BackendNotFound, InvalidKind. */
  reason: string;
  message: string;
}

export interface CompiledHttpRoutes {
  /** `<namespace>/<hostname>` of the Service. */
  name: string;
  /** protobufjs `fromObject` input for ambit.waypoint.HttpRoutes. */
  resource: { service: string; entries: RouteEntryMessage[] };
}

interface RouteEntryMessage {
  route: string;
  ruleName: string;
  port: number;
  match: { path: { type: 'PATH_PREFIX' | 'EXACT'; value: string }; headers: { name: string; exact: string }[] };
  backends: { service: string; port: number; weight: number }[];
  requestHeaderModifier?: { set: { name: string; value: string }[]; add: { name: string; value: string }[]; remove: string[] };
}

interface HttpRouteObject extends K8sObject {
  metadata: K8sObject['metadata'] & { name: string; creationTimestamp?: string };
  spec?: {
    parentRefs?: { group?: string; kind?: string; name?: string; namespace?: string; port?: number }[];
    rules?: {
      name?: string;
      matches?: { path?: { type?: string; value?: string }; headers?: { type?: string; name?: string; value?: string }[]; queryParams?: unknown[]; method?: string }[];
      filters?: { type?: string; requestHeaderModifier?: { set?: { name: string; value: string }[]; add?: { name: string; value: string }[]; remove?: string[] } }[];
      backendRefs?: { group?: string; kind?: string; name?: string; namespace?: string; port?: number; weight?: number; filters?: unknown[] }[];
      timeouts?: unknown;
      retry?: unknown;
    }[];
  };
}

class RouteRejected extends Error {
  readonly reason: string;
  constructor(reason: string, message: string) {
    super(message);
    this.reason = reason;
  }
}

interface SortableEntry {
  entry: RouteEntryMessage;
  created: string;
  routeKey: string;
  ruleIndex: number;
  matchIndex: number;
}

/** The Gateway API's precedence between two matches (negative: `a` first). */
function byPrecedence(a: SortableEntry, b: SortableEntry): number {
  const exact = Number(b.entry.match.path.type === 'EXACT') - Number(a.entry.match.path.type === 'EXACT');
  if (exact !== 0) return exact;
  const length = b.entry.match.path.value.length - a.entry.match.path.value.length;
  if (length !== 0) return length;
  const headers = b.entry.match.headers.length - a.entry.match.headers.length;
  if (headers !== 0) return headers;
  if (a.created !== b.created) return a.created < b.created ? -1 : 1;
  if (a.routeKey !== b.routeKey) return a.routeKey < b.routeKey ? -1 : 1;
  return a.ruleIndex - b.ruleIndex || a.matchIndex - b.matchIndex;
}

function isServiceRef(ref: { group?: string; kind?: string }): boolean {
  return (ref.group ?? '') === '' && (ref.kind ?? 'Service') === 'Service';
}

/** Compiles every HTTPRoute in the store; problems are handed to `onProblem` (the route's other parts still apply). */
export function compileHttpRoutes(store: ObjectStore, clusterDomain: string, onProblem: (problem: RouteProblem) => void): CompiledHttpRoutes[] {
  const entriesByService = new Map<string, SortableEntry[]>();
  const serviceKey = (namespace: string, name: string): string | undefined => {
    const service = store.get<ServiceObject>('Service', `${namespace}/${name}`);
    return service ? `${namespace}/${serviceHostname(service, clusterDomain)}` : undefined;
  };
  for (const route of store.list<HttpRouteObject>('HTTPRoute')) {
    const namespace = namespaceOf(route);
    const routeKey = `${namespace}/${route.metadata.name}`;
    const problem = (condition: RouteProblem['condition'], reason: string, message: string): void => onProblem({ route: routeKey, condition, reason, message });
    let compiled: Omit<SortableEntry, 'entry'> & { entries: RouteEntryMessage[] };
    try {
      compiled = { created: route.metadata.creationTimestamp ?? '', routeKey, ruleIndex: 0, matchIndex: 0, entries: [] };
      const rules = route.spec?.rules?.length ? route.spec.rules : [{}];
      const perRule: { ruleIndex: number; matchIndex: number; entry: Omit<RouteEntryMessage, 'port'> }[] = [];
      rules.forEach((rule, ruleIndex) => {
        if (rule.timeouts !== undefined || rule.retry !== undefined) throw new RouteRejected('UnsupportedValue', `rule ${ruleIndex}: timeouts and retry are not supported yet`);
        let modifier: RouteEntryMessage['requestHeaderModifier'];
        for (const filter of rule.filters ?? []) {
          if (filter.type !== 'RequestHeaderModifier' || !filter.requestHeaderModifier) throw new RouteRejected('UnsupportedValue', `rule ${ruleIndex}: filter ${filter.type ?? '(no type)'} is not supported yet (only RequestHeaderModifier)`);
          const m = filter.requestHeaderModifier;
          modifier = { set: m.set ?? [], add: m.add ?? [], remove: m.remove ?? [] };
        }
        const backends: RouteEntryMessage['backends'] = [];
        for (const ref of rule.backendRefs ?? []) {
          if (ref.filters?.length) throw new RouteRejected('UnsupportedValue', `rule ${ruleIndex}: filters on a backendRef are not supported yet`);
          if (!isServiceRef(ref)) {
            problem('ResolvedRefs', 'InvalidKind', `rule ${ruleIndex}: backendRef kind ${ref.kind ?? ''} is not a Service`);
            continue;
          }
          const key = ref.name ? serviceKey(ref.namespace ?? namespace, ref.name) : undefined;
          if (!key || ref.port === undefined) {
            problem('ResolvedRefs', 'BackendNotFound', `rule ${ruleIndex}: backend Service ${ref.namespace ?? namespace}/${ref.name ?? ''}${ref.port === undefined ? ' has no port' : ' does not exist'}`);
            continue;
          }
          const weight = ref.weight ?? 1;
          if (weight > 0) backends.push({ service: key, port: ref.port, weight });
        }
        const matches = rule.matches?.length ? rule.matches : [{}];
        matches.forEach((match, matchIndex) => {
          if (match.queryParams?.length || match.method) throw new RouteRejected('UnsupportedValue', `rule ${ruleIndex}: query parameter and method matches are not supported yet`);
          const pathType = match.path?.type ?? 'PathPrefix';
          if (pathType !== 'PathPrefix' && pathType !== 'Exact') throw new RouteRejected('UnsupportedValue', `rule ${ruleIndex}: path match type ${pathType} is not supported yet`);
          const value = match.path?.value ?? '/';
          if (!value.startsWith('/')) throw new RouteRejected('UnsupportedValue', `rule ${ruleIndex}: path ${value} does not start with /`);
          const headers: { name: string; exact: string }[] = [];
          for (const header of match.headers ?? []) {
            if ((header.type ?? 'Exact') !== 'Exact') throw new RouteRejected('UnsupportedValue', `rule ${ruleIndex}: header match type ${header.type} is not supported yet`);
            headers.push({ name: (header.name ?? '').toLowerCase(), exact: header.value ?? '' });
          }
          perRule.push({
            ruleIndex,
            matchIndex,
            entry: { route: routeKey, ruleName: rule.name ?? '', match: { path: { type: pathType === 'Exact' ? 'EXACT' : 'PATH_PREFIX', value }, headers }, backends, ...(modifier ? { requestHeaderModifier: modifier } : {}) },
          });
        });
      });
      let attached = 0;
      for (const parent of route.spec?.parentRefs ?? []) {
        if (!isServiceRef(parent) || (parent.kind ?? '') !== 'Service') {
          problem('Accepted', 'NoMatchingParent', `parentRef ${parent.kind ?? 'Gateway'} ${parent.name ?? ''}: only Service parents (GAMMA) are served by waypoints yet`);
          continue;
        }
        const key = parent.name ? serviceKey(parent.namespace ?? namespace, parent.name) : undefined;
        if (!key) {
          problem('Accepted', 'NoMatchingParent', `parent Service ${parent.namespace ?? namespace}/${parent.name ?? ''} does not exist`);
          continue;
        }
        attached++;
        const list = entriesByService.get(key) ?? [];
        for (const { ruleIndex, matchIndex, entry } of perRule) list.push({ entry: { ...entry, port: parent.port ?? 0 }, created: compiled.created, routeKey, ruleIndex, matchIndex });
        entriesByService.set(key, list);
      }
      if (attached === 0 && (route.spec?.parentRefs ?? []).length === 0) problem('Accepted', 'NoMatchingParent', 'the route has no parentRefs');
    } catch (error) {
      if (!(error instanceof RouteRejected)) throw error;
      problem('Accepted', error.reason, error.message);
    }
  }
  return [...entriesByService].map(([name, entries]) => ({ name, resource: { service: name, entries: entries.sort(byPrecedence).map((sortable) => sortable.entry) } }));
}
