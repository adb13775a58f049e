/**
 * HTTPRoutes (gateway.networking.k8s.io/v1) attached to Services (GAMMA: parentRefs kind Service) compiled into one
 * `ambit.waypoint.HttpRoutes` per Service (shared/xds/proto/ambit/waypoint/routes.proto) for waypoints: every rule's
 * matches (path Exact / PathPrefix / RegularExpression, headers and query parameters Exact / RegularExpression,
 * method) flattened and sorted by the spec's precedence, backendRefs resolved to `<namespace>/<hostname>` and port,
 * filters, timeouts and retry as http-route-filters.ts compiles them, the rule's name kept.
 *
 * Owns: validation with the Gateway API's condition reasons (a route or a part of it this build cannot honour is
 * reported, never silently widened), precedence, and the resource shape.
 * Must not know about: encoding, the xDS server, how waypoints apply the routes.
 */
import type { K8sObject } from '../../shared/k8s/objects.ts';
import type { ObjectStore } from '../store.ts';
import { checkRegex, compileBackendFilters, compileRuleFilters, RouteRejected, type BackendFilterFields, type FilterSpec, type RuleFilterFields, type RuleSpec } from './http-route-filters.ts';
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

type PathType = 'PATH_PREFIX' | 'EXACT' | 'REGULAR_EXPRESSION';
/** A header or query parameter match: `exact`, or `regex` when set. */
export interface ValueMatchMessage {
  name: string;
  exact: string;
  regex: string;
}

export type RouteEntryMessage = {
  route: string;
  ruleName: string;
  port: number;
  /** withoutHeaders: VirtualService only. */
  match: { path: { type: PathType; value: string }; headers: ValueMatchMessage[]; queryParams: ValueMatchMessage[]; method: string; withoutHeaders?: ValueMatchMessage[] };
  /** subset: VirtualService only (a DestinationRule subset of the backend). */
  backends: ({ service: string; port: number; weight: number; subset?: string } & BackendFilterFields)[];
} & RuleFilterFields;

type MatchSpec = {
  path?: { type?: string; value?: string };
  headers?: { type?: string; name?: string; value?: string }[];
  queryParams?: { type?: string; name?: string; value?: string }[];
  method?: string;
};

interface HttpRouteObject extends K8sObject {
  metadata: K8sObject['metadata'] & { name: string; creationTimestamp?: string };
  spec?: {
    parentRefs?: { group?: string; kind?: string; name?: string; namespace?: string; port?: number }[];
    rules?: (RuleSpec & {
      name?: string;
      matches?: MatchSpec[];
      backendRefs?: { group?: string; kind?: string; name?: string; namespace?: string; port?: number; weight?: number; filters?: FilterSpec[] }[];
    })[];
  };
}

/** The fields of a rule and of a match this build serves; any other is reported, never silently ignored. */
const RULE_FIELDS = new Set(['name', 'matches', 'filters', 'backendRefs', 'timeouts', 'retry']);
const MATCH_FIELDS = new Set(['path', 'headers', 'queryParams', 'method']);

function checkFields(object: object, known: ReadonlySet<string>, where: string): void {
  for (const field of Object.keys(object)) if (!known.has(field)) throw new RouteRejected('UnsupportedValue', `${where}: field ${field} is not supported`);
}

const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH']);

interface SortableEntry {
  entry: RouteEntryMessage;
  created: string;
  routeKey: string;
  ruleIndex: number;
  matchIndex: number;
}

/** Istio's rank of a path match (pilot's getURIRank): Exact over PathPrefix over RegularExpression. */
const PATH_RANK: Record<PathType, number> = { EXACT: 3, PATH_PREFIX: 2, REGULAR_EXPRESSION: 1 };

/**
 * The Gateway API's precedence between two matches (negative: `a` first): an Exact path, then the PathPrefix with
 * the most characters, then a method match, then the most header matches, then the most query parameter matches;
 * across routes the oldest, then `<namespace>/<name>` alphabetically; within a route the first rule and match.
 * RegularExpression paths are implementation-specific: as Istio, below every PathPrefix, longer pattern first.
 */
export function byPrecedence(a: SortableEntry, b: SortableEntry): number {
  const am = a.entry.match;
  const bm = b.entry.match;
  const rank = PATH_RANK[bm.path.type] - PATH_RANK[am.path.type];
  if (rank !== 0) return rank;
  const length = bm.path.value.length - am.path.value.length;
  if (length !== 0) return length;
  const method = Number(bm.method !== '') - Number(am.method !== '');
  if (method !== 0) return method;
  const headers = bm.headers.length - am.headers.length;
  if (headers !== 0) return headers;
  const query = bm.queryParams.length - am.queryParams.length;
  if (query !== 0) return query;
  if (a.created !== b.created) return a.created < b.created ? -1 : 1;
  if (a.routeKey !== b.routeKey) return a.routeKey < b.routeKey ? -1 : 1;
  return a.ruleIndex - b.ruleIndex || a.matchIndex - b.matchIndex;
}

function isServiceRef(ref: { group?: string; kind?: string }): boolean {
  return (ref.group ?? '') === '' && (ref.kind ?? 'Service') === 'Service';
}

/** Header (names case-insensitive) or query parameter (case-sensitive) matches; only the first of equal names counts. */
function valueMatches(specs: MatchSpec['headers'], what: 'header' | 'query parameter', where: string): ValueMatchMessage[] {
  const result: ValueMatchMessage[] = [];
  const names = new Set<string>();
  for (const spec of specs ?? []) {
    const name = what === 'header' ? (spec.name ?? '').toLowerCase() : (spec.name ?? '');
    if (name === '') throw new RouteRejected('UnsupportedValue', `${where}: ${what} match without a name`);
    if (names.has(name)) continue;
    names.add(name);
    const type = spec.type ?? 'Exact';
    const value = spec.value ?? '';
    if (type === 'Exact') result.push({ name, exact: value, regex: '' });
    else if (type === 'RegularExpression') result.push({ name, exact: '', regex: checkRegex(value, `${where}: ${what} ${name}`) });
    else throw new RouteRejected('UnsupportedValue', `${where}: ${what} match type ${type} is not supported`);
  }
  return result;
}

function compileMatch(match: MatchSpec, where: string): RouteEntryMessage['match'] {
  checkFields(match, MATCH_FIELDS, `${where} match`);
  const pathType = match.path?.type ?? 'PathPrefix';
  const value = match.path?.value ?? '/';
  let type: PathType;
  if (pathType === 'PathPrefix' || pathType === 'Exact') {
    if (!value.startsWith('/')) throw new RouteRejected('UnsupportedValue', `${where}: path ${value} does not start with /`);
    type = pathType === 'Exact' ? 'EXACT' : 'PATH_PREFIX';
  } else if (pathType === 'RegularExpression') {
    checkRegex(value, `${where}: path`);
    type = 'REGULAR_EXPRESSION';
  } else {
    throw new RouteRejected('UnsupportedValue', `${where}: path match type ${pathType} is not supported`);
  }
  const method = match.method ?? '';
  if (method !== '' && !METHODS.has(method)) throw new RouteRejected('UnsupportedValue', `${where}: method ${method} is not an HTTP method the Gateway API names`);
  return { path: { type, value }, headers: valueMatches(match.headers, 'header', where), queryParams: valueMatches(match.queryParams, 'query parameter', where), method };
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
    const created = route.metadata.creationTimestamp ?? '';
    const problem = (condition: RouteProblem['condition'], reason: string, message: string): void => onProblem({ route: routeKey, condition, reason, message });
    /** A backendRef (or a mirror's) as `<namespace>/<hostname>`; reported and undefined when it resolves to nothing. */
    const resolveBackend = (ref: { group?: string; kind?: string; name?: string; namespace?: string; port?: number }, what: string): string | undefined => {
      if (!isServiceRef(ref)) {
        problem('ResolvedRefs', 'InvalidKind', `${what}: backendRef kind ${ref.kind ?? ''} is not a Service`);
        return undefined;
      }
      const key = ref.name ? serviceKey(ref.namespace ?? namespace, ref.name) : undefined;
      if (!key || ref.port === undefined) {
        problem('ResolvedRefs', 'BackendNotFound', `${what}: backend Service ${ref.namespace ?? namespace}/${ref.name ?? ''}${ref.port === undefined ? ' has no port' : ' does not exist'}`);
        return undefined;
      }
      return key;
    };
    try {
      const rules = route.spec?.rules?.length ? route.spec.rules : [{}];
      const perRule: { ruleIndex: number; matchIndex: number; entry: Omit<RouteEntryMessage, 'port'> }[] = [];
      rules.forEach((rule: NonNullable<NonNullable<HttpRouteObject['spec']>['rules']>[number], ruleIndex) => {
        const where = rule.name ? `rule ${ruleIndex} (${rule.name})` : `rule ${ruleIndex}`;
        checkFields(rule, RULE_FIELDS, where);
        const matches = rule.matches?.length ? rule.matches : [{}];
        const compiledMatches = matches.map((match) => compileMatch(match, where));
        const filters = compileRuleFilters(rule, where, compiledMatches.every((match) => match.path.type === 'PATH_PREFIX'), resolveBackend);
        const backends: RouteEntryMessage['backends'] = [];
        for (const ref of rule.backendRefs ?? []) {
          const backendFilters = compileBackendFilters(ref.filters, `${where} backendRef ${ref.name ?? ''}`);
          const key = resolveBackend(ref, where);
          if (key === undefined) continue;
          const weight = ref.weight ?? 1;
          if (weight > 0) backends.push({ service: key, port: ref.port!, weight, ...backendFilters });
        }
        compiledMatches.forEach((match, matchIndex) => {
          perRule.push({ ruleIndex, matchIndex, entry: { route: routeKey, ruleName: rule.name ?? '', match, backends, ...filters } });
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
        for (const { ruleIndex, matchIndex, entry } of perRule) list.push({ entry: { ...entry, port: parent.port ?? 0 }, created, routeKey, ruleIndex, matchIndex });
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
