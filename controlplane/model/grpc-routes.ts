/**
 * GRPCRoutes (gateway.networking.k8s.io/v1) attached to Services (GAMMA: parentRefs kind Service), compiled into the
 * same route entries as HTTPRoutes (`ambit.waypoint.HttpRoutes`, one resource per Service): a gRPC call is an HTTP/2
 * POST to `/<package.Service>/<Method>`, so a method match is a path match. Exact service and method: the Exact path;
 * either one alone, or RegularExpression: an RE2 expression over the whole path (`/(?:service)/(?:method)`, the
 * missing part `[^/]+`); no method match: every path. Header matches (Exact, RegularExpression), weighted
 * backendRefs, RequestHeaderModifier and ResponseHeaderModifier are kept.
 *
 * Precedence, as the GRPCRoute spec orders matches: the most characters of a matching service, then of a matching
 * method (Exact ones; a RegularExpression counts none), then any method match before none, then the most header matches, then the oldest route, then
 * namespace/name, then rule and match order. On a
 * Service that has HTTPRoutes too, the GRPCRoute entries come first (they only match gRPC paths).
 *
 * Owns: GRPCRoute validation with the Gateway API's condition reasons, precedence, and the merge with the HTTPRoute
 * entries. Must not know about: encoding, the xDS server, how waypoints apply the entries.
 */
import { RE2JS } from 're2js';
import type { K8sObject } from '../../shared/k8s/objects.ts';
import type { ObjectStore } from '../store.ts';
import type { CompiledHttpRoutes, RouteProblem } from './http-routes.ts';
import { namespaceOf, type ServiceObject } from './kube-types.ts';
import { serviceHostname } from './service.ts';

interface HeaderValue {
  name: string;
  value: string;
}

interface HeaderModifierMessage {
  set: HeaderValue[];
  add: HeaderValue[];
  remove: string[];
}

/** protobufjs `fromObject` input for one ambit.waypoint.RouteEntry. */
export interface GrpcRouteEntryMessage {
  route: string;
  ruleName: string;
  port: number;
  match: { path: { type: 'PATH_PREFIX' | 'EXACT' | 'REGULAR_EXPRESSION'; value: string }; headers: { name: string; exact: string; regex?: string }[] };
  backends: { service: string; port: number; weight: number }[];
  requestHeaderModifier?: HeaderModifierMessage;
  responseHeaderModifier?: HeaderModifierMessage;
}

interface ModifierSpec {
  set?: HeaderValue[];
  add?: HeaderValue[];
  remove?: string[];
}

interface GrpcRouteObject extends K8sObject {
  metadata: K8sObject['metadata'] & { name: string; creationTimestamp?: string };
  spec?: {
    parentRefs?: { group?: string; kind?: string; name?: string; namespace?: string; port?: number; sectionName?: string }[];
    hostnames?: string[];
    rules?: {
      name?: string;
      matches?: { method?: { type?: string; service?: string; method?: string }; headers?: { type?: string; name?: string; value?: string }[] }[];
      filters?: { type?: string; requestHeaderModifier?: ModifierSpec; responseHeaderModifier?: ModifierSpec }[];
      backendRefs?: { group?: string; kind?: string; name?: string; namespace?: string; port?: number; weight?: number; filters?: unknown[] }[];
      sessionPersistence?: unknown;
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
  entry: GrpcRouteEntryMessage;
  serviceChars: number;
  methodChars: number;
  /** 1 with a method match (Exact or RegularExpression), 0 without: a rule with one beats a catch-all at equal characters. */
  hasMethodMatch: number;
  created: string;
  routeKey: string;
  ruleIndex: number;
  matchIndex: number;
}

/** One match of one rule, before it is attached to a parent (which gives it the port). */
type CompiledMatch = Omit<SortableEntry, 'entry' | 'created' | 'routeKey'> & { entry: Omit<GrpcRouteEntryMessage, 'port'> };

function byPrecedence(a: SortableEntry, b: SortableEntry): number {
  return (
    b.serviceChars - a.serviceChars ||
    b.methodChars - a.methodChars ||
    b.hasMethodMatch - a.hasMethodMatch ||
    b.entry.match.headers.length - a.entry.match.headers.length ||
    (a.created !== b.created ? (a.created < b.created ? -1 : 1) : 0) ||
    (a.routeKey !== b.routeKey ? (a.routeKey < b.routeKey ? -1 : 1) : 0) ||
    a.ruleIndex - b.ruleIndex ||
    a.matchIndex - b.matchIndex
  );
}

function isServiceRef(ref: { group?: string; kind?: string }): boolean {
  return (ref.group ?? '') === '' && (ref.kind ?? 'Service') === 'Service';
}

/** RE2 with every metacharacter escaped (RE2's QuoteMeta). */
function quoteMeta(text: string): string {
  return text.replace(/[\\.+*?()|[\]{}^$]/gu, '\\$&');
}

function checkRe2(expression: string, where: string): void {
  try {
    RE2JS.compile(expression);
  } catch (error) {
    throw new RouteRejected('UnsupportedValue', `${where}: ${expression} is no RE2 expression (${(error as Error).message})`);
  }
}

/** The GRPCRoute spec's service and method syntax (Exact): a service may have dots, neither has '/'. */
const SERVICE_NAME = /^(?:[^\s/.]+\.)*[^\s/.]+$/u;
const METHOD_NAME = /^[^\s/]+$/u;

function pathMatchOf(method: { type?: string; service?: string; method?: string } | undefined, where: string): GrpcRouteEntryMessage['match']['path'] {
  if (!method) return { type: 'PATH_PREFIX', value: '/' };
  const type = method.type ?? 'Exact';
  const service = method.service ?? '';
  const name = method.method ?? '';
  if (service === '' && name === '') throw new RouteRejected('UnsupportedValue', `${where}: a method match needs a service or a method`);
  if (type === 'Exact') {
    if (service !== '' && !SERVICE_NAME.test(service)) throw new RouteRejected('UnsupportedValue', `${where}: service ${service} is not a gRPC service name`);
    if (name !== '' && !METHOD_NAME.test(name)) throw new RouteRejected('UnsupportedValue', `${where}: method ${name} is not a gRPC method name`);
    if (service !== '' && name !== '') return { type: 'EXACT', value: `/${service}/${name}` };
    return { type: 'REGULAR_EXPRESSION', value: `/${service ? quoteMeta(service) : '[^/]+'}/${name ? quoteMeta(name) : '[^/]+'}` };
  }
  if (type === 'RegularExpression') {
    if (service !== '') checkRe2(service, `${where}: service`);
    if (name !== '') checkRe2(name, `${where}: method`);
    return { type: 'REGULAR_EXPRESSION', value: `/${service ? `(?:${service})` : '[^/]+'}/${name ? `(?:${name})` : '[^/]+'}` };
  }
  throw new RouteRejected('UnsupportedValue', `${where}: method match type ${type} is not supported`);
}

function modifierOf(spec: ModifierSpec): HeaderModifierMessage {
  return { set: spec.set ?? [], add: spec.add ?? [], remove: spec.remove ?? [] };
}

/** Compiles every GRPCRoute in the store into entries per Service key; problems go to `onProblem` (as HTTPRoute's). */
export function compileGrpcRoutes(store: ObjectStore, clusterDomain: string, onProblem: (problem: RouteProblem) => void): Map<string, GrpcRouteEntryMessage[]> {
  const entriesByService = new Map<string, SortableEntry[]>();
  const serviceKey = (namespace: string, name: string): string | undefined => {
    const service = store.get<ServiceObject>('Service', `${namespace}/${name}`);
    return service ? `${namespace}/${serviceHostname(service, clusterDomain)}` : undefined;
  };
  for (const route of store.list<GrpcRouteObject>('GRPCRoute')) {
    const namespace = namespaceOf(route);
    const routeKey = `${namespace}/${route.metadata.name}`;
    const created = route.metadata.creationTimestamp ?? '';
    const problem = (condition: RouteProblem['condition'], reason: string, message: string): void => onProblem({ route: routeKey, condition, reason, message });
    try {
      const rules = route.spec?.rules?.length ? route.spec.rules : [{}];
      const compiled: CompiledMatch[] = [];
      rules.forEach((rule, ruleIndex) => {
        const where = `rule ${ruleIndex}`;
        if (rule.sessionPersistence !== undefined) throw new RouteRejected('UnsupportedValue', `${where}: sessionPersistence is not supported`);
        let requestHeaderModifier: HeaderModifierMessage | undefined;
        let responseHeaderModifier: HeaderModifierMessage | undefined;
        for (const filter of rule.filters ?? []) {
          if (filter.type === 'RequestHeaderModifier' && filter.requestHeaderModifier) requestHeaderModifier = modifierOf(filter.requestHeaderModifier);
          else if (filter.type === 'ResponseHeaderModifier' && filter.responseHeaderModifier) responseHeaderModifier = modifierOf(filter.responseHeaderModifier);
          else throw new RouteRejected('UnsupportedValue', `${where}: filter ${filter.type ?? '(no type)'} is not supported (RequestHeaderModifier and ResponseHeaderModifier are)`);
        }
        const backends: GrpcRouteEntryMessage['backends'] = [];
        for (const ref of rule.backendRefs ?? []) {
          if (ref.filters?.length) throw new RouteRejected('UnsupportedValue', `${where}: filters on a backendRef are not supported`);
          if (!isServiceRef(ref)) {
            problem('ResolvedRefs', 'InvalidKind', `${where}: backendRef kind ${ref.kind ?? ''} is not a Service`);
            continue;
          }
          const key = ref.name ? serviceKey(ref.namespace ?? namespace, ref.name) : undefined;
          if (!key || ref.port === undefined) {
            problem('ResolvedRefs', 'BackendNotFound', `${where}: backend Service ${ref.namespace ?? namespace}/${ref.name ?? ''}${ref.port === undefined ? ' has no port' : ' does not exist'}`);
            continue;
          }
          const weight = ref.weight ?? 1;
          if (weight > 0) backends.push({ service: key, port: ref.port, weight });
        }
        const matches = rule.matches?.length ? rule.matches : [{}];
        matches.forEach((match, matchIndex) => {
          const path = pathMatchOf(match.method, `${where} match ${matchIndex}`);
          const headers: GrpcRouteEntryMessage['match']['headers'] = [];
          for (const header of match.headers ?? []) {
            const type = header.type ?? 'Exact';
            const name = (header.name ?? '').toLowerCase();
            if (type === 'Exact') headers.push({ name, exact: header.value ?? '' });
            else if (type === 'RegularExpression') {
              checkRe2(header.value ?? '', `${where}: header ${name}`);
              headers.push({ name, exact: '', regex: header.value ?? '' });
            } else throw new RouteRejected('UnsupportedValue', `${where}: header match type ${type} is not supported`);
          }
          compiled.push({
            ruleIndex,
            matchIndex,
            // Characters of an Exact service or method count; a RegularExpression's text says nothing about how
            // specific it is, so it ranks below every Exact one (then by header count and age).
            serviceChars: (match.method?.type ?? 'Exact') === 'Exact' ? (match.method?.service?.length ?? 0) : 0,
            methodChars: (match.method?.type ?? 'Exact') === 'Exact' ? (match.method?.method?.length ?? 0) : 0,
            hasMethodMatch: match.method ? 1 : 0,
            entry: {
              route: routeKey, ruleName: rule.name ?? '', match: { path, headers }, backends,
              ...(requestHeaderModifier ? { requestHeaderModifier } : {}),
              ...(responseHeaderModifier ? { responseHeaderModifier } : {}),
            },
          });
        });
      });
      const parents = route.spec?.parentRefs ?? [];
      if (parents.length === 0) problem('Accepted', 'NoMatchingParent', 'the route has no parentRefs');
      for (const parent of parents) {
        if (!isServiceRef(parent) || (parent.kind ?? '') !== 'Service') {
          problem('Accepted', 'NoMatchingParent', `parentRef ${parent.kind ?? 'Gateway'} ${parent.name ?? ''}: only Service parents (GAMMA) are served by waypoints`);
          continue;
        }
        const key = parent.name ? serviceKey(parent.namespace ?? namespace, parent.name) : undefined;
        if (!key) {
          problem('Accepted', 'NoMatchingParent', `parent Service ${parent.namespace ?? namespace}/${parent.name ?? ''} does not exist`);
          continue;
        }
        const list = entriesByService.get(key) ?? [];
        for (const item of compiled) list.push({ ...item, created, routeKey, entry: { ...item.entry, port: parent.port ?? 0 } });
        entriesByService.set(key, list);
      }
    } catch (error) {
      if (!(error instanceof RouteRejected)) throw error;
      problem('Accepted', error.reason, error.message);
    }
  }
  return new Map([...entriesByService].map(([key, entries]) => [key, entries.sort(byPrecedence).map((sortable) => sortable.entry)]));
}

/** One route resource per Service: its GRPCRoute entries first, then its HTTPRoute entries. */
export function mergeRouteEntries(httpRoutes: readonly CompiledHttpRoutes[], grpcRoutes: ReadonlyMap<string, GrpcRouteEntryMessage[]>): { name: string; resource: { service: string; entries: object[] } }[] {
  const merged = new Map<string, object[]>();
  for (const [service, entries] of grpcRoutes) merged.set(service, [...entries]);
  for (const compiled of httpRoutes) merged.set(compiled.name, [...(merged.get(compiled.name) ?? []), ...compiled.resource.entries]);
  return [...merged].map(([service, entries]) => ({ name: service, resource: { service, entries } }));
}
