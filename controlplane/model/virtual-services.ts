/**
 * VirtualServices (networking.istio.io/v1) on waypoints (issue 13 item 4): a VirtualService whose `hosts` name a
 * Service (short name, `name.namespace` or FQDN) is compiled into the same `ambit.waypoint.HttpRoutes` resource as
 * HTTPRoutes (controlplane/model/http-routes.ts), its `http` rules kept in the order written (Istio's first-match
 * semantics). Matches: `uri` (exact, prefix as a plain string prefix, regex; `ignoreUriCase` for exact and prefix),
 * `headers` and `withoutHeaders` (exact, prefix, regex, `{}` for presence), `queryParams` (exact, regex), `method`
 * (exact), `port`. Destinations: `host`, `port.number`, `subset` (a DestinationRule subset, resolved by the waypoint),
 * `weight`, `headers`. What the rule does (virtual-service-actions.ts): timeout, retries, fault, headers, mirrors,
 * redirect, rewrite. A Service with an HTTPRoute attached refuses the VirtualService (Istio warns against mixing
 * them; ambit refuses, so one document decides). What is not built (sourceLabels, authority and scheme matches,
 * corsPolicy, delegate, directResponse, tcp/tls routes, gateways other than mesh, ...) is refused with the field's
 * path, never approximated.
 *
 * Owns: validation of hosts, matches and destinations, host resolution and the assembly of entries.
 * Must not know about: encoding, how waypoints match.
 */
import { RE2JS } from 're2js';
import { fields, Invalid, isMapping } from './strict-fields.ts';
import type { K8sObject } from '../../shared/k8s/objects.ts';
import type { ObjectStore } from '../store.ts';
import type { CompiledHttpRoutes, RouteEntryMessage, ValueMatchMessage } from './http-routes.ts';
import { namespaceOf, type ServiceObject } from './kube-types.ts';
import { serviceHostname } from './service.ts';
import { headerOperations, list, rewritePath, ruleActions, text, type ResolveDestination } from './virtual-service-actions.ts';

export interface VirtualServiceProblem {
  /** `<namespace>/<name>` of the VirtualService. */
  virtualService: string;
  path: string;
  message: string;
}

type Entry = RouteEntryMessage;

function port(value: unknown, path: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > 65535) throw new Invalid(path, `must be a port from 1 to 65535, not ${JSON.stringify(value)}`);
  return value;
}

/** The Service a host names, from the VirtualService's namespace. */
function serviceOf(store: ObjectStore, host: string, namespace: string, clusterDomain: string, path: string): ServiceObject {
  if (host.includes('*')) throw new Invalid(path, `wildcard hosts are not supported by ambit waypoints yet (got ${host})`);
  const suffix = `.svc.${clusterDomain}`;
  const parts = (host.endsWith(suffix) ? host.slice(0, -suffix.length) : host).split('.');
  if (parts.length > 2) throw new Invalid(path, `${host} is not a Service name (short name, name.namespace, or name.namespace.svc.${clusterDomain})`);
  const key = `${parts[1] ?? namespace}/${parts[0]}`;
  const service = store.get<ServiceObject>('Service', key);
  if (!service) throw new Invalid(path, `no Service ${key} for host ${host}`);
  return service;
}

const HTTP_ROUTE_FIELDS = ['name', 'match', 'route', 'headers', 'timeout', 'retries', 'fault', 'mirror', 'mirrors', 'mirrorPercentage', 'redirect', 'rewrite'];
const HTTP_ROUTE_UNSUPPORTED = ['directResponse', 'delegate', 'corsPolicy', 'mirror_percent', 'mirrorPercent'];
const MATCH_FIELDS = ['name', 'uri', 'headers', 'withoutHeaders', 'queryParams', 'method', 'port', 'ignoreUriCase'];
const MATCH_UNSUPPORTED = ['scheme', 'authority', 'sourceLabels', 'gateways', 'sourceNamespace', 'statPrefix'];

/** RE2 syntax escaped, for a literal inside an expression. */
function literal(value: string): string {
  return value.replace(/[\\^$.*+?()[\]{}|]/g, '\\$&');
}

function checkRegex(pattern: string, path: string): string {
  try {
    RE2JS.compile(pattern);
  } catch (error) {
    throw new Invalid(path, `${JSON.stringify(pattern)} is not a valid RE2 regular expression (${(error as Error).message})`);
  }
  return pattern;
}

/** An Istio StringMatch (one of exact, prefix, regex; `allowed` says which) as its kind and value. */
function stringMatch(value: unknown, path: string, allowed: readonly ('exact' | 'prefix' | 'regex')[]): { kind: 'exact' | 'prefix' | 'regex'; value: string } {
  const spec = fields(value, path, allowed, ['exact', 'prefix', 'regex'].filter((kind) => !allowed.includes(kind as never)));
  const keys = Object.keys(spec) as ('exact' | 'prefix' | 'regex')[];
  if (keys.length !== 1) throw new Invalid(path, `set exactly one of ${allowed.join(', ')}`);
  const kind = keys[0]!;
  const matchValue = spec[kind];
  if (typeof matchValue !== 'string') throw new Invalid(`${path}.${kind}`, `must be a string, not ${JSON.stringify(matchValue)}`);
  if (kind === 'regex') checkRegex(matchValue, `${path}.regex`);
  return { kind, value: matchValue };
}

/** Header (names lower-cased) or query parameter matches; an empty StringMatch on a header is a presence match. */
function valueMatches(value: unknown, path: string, what: 'header' | 'query'): ValueMatchMessage[] {
  if (value === undefined) return [];
  if (!isMapping(value)) throw new Invalid(path, `must be a map of ${what === 'header' ? 'header' : 'query parameter'} names to matches`);
  return Object.entries(value).map(([name, raw]) => {
    const at = `${path}.${name}`;
    const key = what === 'header' ? name.toLowerCase() : name;
    if (what === 'header' && isMapping(raw) && Object.keys(raw).length === 0) return { name: key, exact: '', regex: '.*' };
    const match = stringMatch(raw, at, what === 'header' ? ['exact', 'prefix', 'regex'] : ['exact', 'regex']);
    if (match.kind === 'exact') return { name: key, exact: match.value, regex: '' };
    return { name: key, exact: '', regex: match.kind === 'prefix' ? `${literal(match.value)}.*` : match.value };
  });
}

/** The uri match as a route path match, and what a `rewrite.uri` replaces. */
function uriMatch(value: unknown, ignoreCase: boolean, path: string): { path: Entry['match']['path']; matched: Parameters<typeof rewritePath>[1] } {
  if (value === undefined) return { path: { type: 'PATH_PREFIX', value: '/' }, matched: { kind: 'none', value: '/' } };
  const match = stringMatch(value, path, ['exact', 'prefix', 'regex']);
  if (match.kind === 'regex') return { path: { type: 'REGULAR_EXPRESSION', value: match.value }, matched: match };
  if (!match.value.startsWith('/')) throw new Invalid(`${path}.${match.kind}`, `must start with /, not ${match.value}`);
  // ignoreUriCase (exact and prefix only, as Istio) and Istio's plain string prefix (`/api` matches `/apix`, unlike
  // HTTPRoute's PathPrefix by segment) are sent as RE2 expressions over the whole path.
  const flags = ignoreCase ? '(?i)' : '';
  if (match.kind === 'exact') return { path: ignoreCase ? { type: 'REGULAR_EXPRESSION', value: `${flags}${literal(match.value)}` } : { type: 'EXACT', value: match.value }, matched: match };
  return { path: { type: 'REGULAR_EXPRESSION', value: `${flags}${literal(match.value)}.*` }, matched: match };
}

/** Compiles every VirtualService; `routed` are the service keys HTTPRoutes already route (mixing is refused). */
export function compileVirtualServices(store: ObjectStore, clusterDomain: string, routed: ReadonlySet<string>, onProblem: (problem: VirtualServiceProblem) => void): CompiledHttpRoutes[] {
  const objects = store.list<K8sObject & { metadata: { name: string; creationTimestamp?: string }; spec?: unknown }>('VirtualService').sort((a, b) => {
    const created = (a.metadata.creationTimestamp ?? '').localeCompare(b.metadata.creationTimestamp ?? '');
    return created || `${namespaceOf(a)}/${a.metadata.name}`.localeCompare(`${namespaceOf(b)}/${b.metadata.name}`);
  });
  const byService = new Map<string, { owner: string; entries: Entry[] }>();
  for (const object of objects) {
    const namespace = namespaceOf(object);
    const name = `${namespace}/${object.metadata.name}`;
    try {
      const spec = fields(object.spec, 'spec', ['hosts', 'http', 'exportTo', 'gateways'], ['tcp', 'tls']);
      for (const [index, gateway] of list(spec.gateways, 'spec.gateways').entries()) if (gateway !== 'mesh') throw new Invalid(`spec.gateways[${index}]`, `only "mesh" (waypoints) is supported, not ${JSON.stringify(gateway)}`);
      const hosts = list(spec.hosts, 'spec.hosts');
      if (hosts.length === 0) throw new Invalid('spec.hosts', 'required field is missing');
      const services = hosts.map((host, index) => serviceOf(store, text(host, `spec.hosts[${index}]`), namespace, clusterDomain, `spec.hosts[${index}]`));
      const entries: Entry[] = [];
      const resolve: ResolveDestination = (value, path) => {
        const destination = fields(value, path, ['host', 'port', 'subset']);
        const target = serviceOf(store, text(destination.host, `${path}.host`), namespace, clusterDomain, `${path}.host`);
        let number: number;
        if (destination.port !== undefined) number = port(fields(destination.port, `${path}.port`, ['number']).number, `${path}.port.number`);
        else if (target.spec?.ports?.length === 1) number = target.spec.ports[0]!.port;
        else throw new Invalid(`${path}.port`, `required: Service ${namespaceOf(target)}/${target.metadata.name} has ${target.spec?.ports?.length ?? 0} ports`);
        return { service: `${namespaceOf(target)}/${serviceHostname(target, clusterDomain)}`, port: number, subset: destination.subset === undefined ? '' : text(destination.subset, `${path}.subset`) };
      };
      list(spec.http, 'spec.http').forEach((rawRule, ruleIndex) => {
        const at = `spec.http[${ruleIndex}]`;
        const rule = fields(rawRule, at, HTTP_ROUTE_FIELDS, HTTP_ROUTE_UNSUPPORTED);
        const ruleName = rule.name === undefined ? '' : text(rule.name, `${at}.name`);
        const actions = ruleActions(rule, at, resolve);
        const backends: Entry['backends'] = [];
        const routes = list(rule.route, `${at}.route`);
        if (routes.length === 0 && !actions.fields.redirect) throw new Invalid(`${at}.route`, 'required field is missing (a destination to route to, or a redirect)');
        routes.forEach((rawRoute, routeIndex) => {
          const routeAt = `${at}.route[${routeIndex}]`;
          const route = fields(rawRoute, routeAt, ['destination', 'weight', 'headers']);
          const destination = resolve(route.destination, `${routeAt}.destination`);
          const weight = route.weight === undefined ? (routes.length === 1 ? 100 : 0) : route.weight;
          if (typeof weight !== 'number' || !Number.isInteger(weight) || weight < 0) throw new Invalid(`${routeAt}.weight`, `must be a non-negative integer, not ${JSON.stringify(weight)}`);
          const headers = headerOperations(route.headers, `${routeAt}.headers`);
          if (weight > 0) {
            backends.push({
              service: destination.service, port: destination.port, weight,
              ...(destination.subset !== '' ? { subset: destination.subset } : {}),
              ...(headers.request ? { requestHeaderModifier: headers.request } : {}),
              ...(headers.response ? { responseHeaderModifier: headers.response } : {}),
            });
          }
        });
        const matches = rule.match === undefined ? [{}] : list(rule.match, `${at}.match`);
        matches.forEach((rawMatch, matchIndex) => {
          const matchAt = `${at}.match[${matchIndex}]`;
          const match = fields(rawMatch, matchAt, MATCH_FIELDS, MATCH_UNSUPPORTED);
          if (match.ignoreUriCase !== undefined && typeof match.ignoreUriCase !== 'boolean') throw new Invalid(`${matchAt}.ignoreUriCase`, `must be true or false, not ${JSON.stringify(match.ignoreUriCase)}`);
          const uri = uriMatch(match.uri, match.ignoreUriCase === true, `${matchAt}.uri`);
          const method = match.method === undefined ? '' : stringMatch(match.method, `${matchAt}.method`, ['exact']).value;
          const entryPort = match.port === undefined ? 0 : port(match.port, `${matchAt}.port`);
          const withoutHeaders = valueMatches(match.withoutHeaders, `${matchAt}.withoutHeaders`, 'header');
          const entry: Entry = {
            route: `VirtualService/${name}`, ruleName, port: entryPort,
            match: { path: uri.path, headers: valueMatches(match.headers, `${matchAt}.headers`, 'header'), queryParams: valueMatches(match.queryParams, `${matchAt}.queryParams`, 'query'), method, ...(withoutHeaders.length > 0 ? { withoutHeaders } : {}) },
            backends,
            ...actions.fields,
          };
          if (actions.rewrite) entry.urlRewrite = { hostname: actions.rewrite.authority, ...(actions.rewrite.uri !== undefined ? { path: rewritePath(actions.rewrite.uri, uri.matched) } : {}) };
          entries.push(entry);
        });
      });
      for (const [index, service] of services.entries()) {
        const key = `${namespaceOf(service)}/${serviceHostname(service, clusterDomain)}`;
        if (routed.has(key)) throw new Invalid(`spec.hosts[${index}]`, `${key} already has an HTTPRoute attached; mixing a VirtualService with an HTTPRoute for one Service is refused`);
        const earlier = byService.get(key);
        if (earlier) throw new Invalid(`spec.hosts[${index}]`, `VirtualService ${earlier.owner} (older) already routes ${key}; only the oldest is served`);
      }
      for (const service of services) byService.set(`${namespaceOf(service)}/${serviceHostname(service, clusterDomain)}`, { owner: name, entries });
    } catch (error) {
      if (!(error instanceof Invalid)) throw error;
      onProblem({ virtualService: name, path: error.path, message: error.message });
    }
  }
  return [...byService].map(([key, value]) => ({ name: key, resource: { service: key, entries: value.entries } }));
}
