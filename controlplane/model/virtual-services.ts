/**
 * VirtualServices (networking.istio.io/v1) on waypoints (issue 13 item 4, a first slice): a VirtualService whose
 * `hosts` name a Service (short name, `name.namespace` or FQDN) is compiled into the same
 * `ambit.waypoint.HttpRoutes` resource as HTTPRoutes (controlplane/model/http-routes.ts), its `http` rules kept in
 * the order written (Istio's first-match semantics): `match` on `uri` (exact, prefix), `headers` (exact) and `port`;
 * `route` destinations (`host`, `port.number`) with `weight`; `headers.request` set/add/remove. A Service with an
 * HTTPRoute attached refuses the VirtualService (Istio warns against mixing them; ambit refuses, so one document
 * decides). What is not built yet (regex, timeout, retries, fault, mirror, redirect, rewrite, subsets, response
 * headers, tcp/tls routes, gateways) is refused with the field's path, never approximated.
 *
 * Owns: validation, host resolution and the translation. Must not know about: encoding, how waypoints match.
 */
import { fields, Invalid, isMapping } from './strict-fields.ts';
import type { K8sObject } from '../../shared/k8s/objects.ts';
import type { ObjectStore } from '../store.ts';
import type { CompiledHttpRoutes } from './http-routes.ts';
import { namespaceOf, type ServiceObject } from './kube-types.ts';
import { serviceHostname } from './service.ts';

export interface VirtualServiceProblem {
  /** `<namespace>/<name>` of the VirtualService. */
  virtualService: string;
  path: string;
  message: string;
}

type Entry = CompiledHttpRoutes['resource']['entries'][number];




function list(value: unknown, path: string): unknown[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) throw new Invalid(path, 'must be a list');
  return value;
}

function text(value: unknown, path: string): string {
  if (typeof value !== 'string' || value === '') throw new Invalid(path, value === undefined ? 'required field is missing' : `must be a non-empty string, not ${JSON.stringify(value)}`);
  return value;
}

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

const HTTP_ROUTE_UNSUPPORTED = ['redirect', 'directResponse', 'delegate', 'rewrite', 'timeout', 'retries', 'fault', 'mirror', 'mirrors', 'mirrorPercentage', 'mirror_percent', 'mirrorPercent', 'corsPolicy'];
const MATCH_UNSUPPORTED = ['scheme', 'method', 'authority', 'sourceLabels', 'gateways', 'queryParams', 'ignoreUriCase', 'withoutHeaders', 'sourceNamespace', 'statPrefix'];

function headerOperations(value: unknown, path: string): Entry['requestHeaderModifier'] | undefined {
  if (value === undefined) return undefined;
  const headers = fields(value, path, ['request'], ['response']);
  if (headers.request === undefined) return undefined;
  const request = fields(headers.request, `${path}.request`, ['set', 'add', 'remove']);
  const pairs = (map: unknown, at: string): { name: string; value: string }[] => {
    if (map === undefined) return [];
    if (!isMapping(map)) throw new Invalid(at, 'must be a map of header names to values');
    return Object.entries(map).map(([name, headerValue]) => ({ name: name.toLowerCase(), value: text(headerValue, `${at}.${name}`) }));
  };
  return {
    set: pairs(request.set, `${path}.request.set`),
    add: pairs(request.add, `${path}.request.add`),
    remove: list(request.remove, `${path}.request.remove`).map((name, index) => text(name, `${path}.request.remove[${index}]`).toLowerCase()),
  };
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
      list(spec.http, 'spec.http').forEach((rawRule, ruleIndex) => {
        const at = `spec.http[${ruleIndex}]`;
        const rule = fields(rawRule, at, ['name', 'match', 'route', 'headers'], HTTP_ROUTE_UNSUPPORTED);
        const ruleName = rule.name === undefined ? '' : text(rule.name, `${at}.name`);
        const modifier = headerOperations(rule.headers, `${at}.headers`);
        const backends: Entry['backends'] = [];
        const routes = list(rule.route, `${at}.route`);
        if (routes.length === 0) throw new Invalid(`${at}.route`, 'required field is missing (a destination to route to)');
        routes.forEach((rawRoute, routeIndex) => {
          const routeAt = `${at}.route[${routeIndex}]`;
          const route = fields(rawRoute, routeAt, ['destination', 'weight'], ['headers']);
          const destination = fields(route.destination, `${routeAt}.destination`, ['host', 'port'], ['subset']);
          const target = serviceOf(store, text(destination.host, `${routeAt}.destination.host`), namespace, clusterDomain, `${routeAt}.destination.host`);
          let number: number;
          if (destination.port !== undefined) number = port(fields(destination.port, `${routeAt}.destination.port`, ['number']).number, `${routeAt}.destination.port.number`);
          else if (target.spec?.ports?.length === 1) number = target.spec.ports[0]!.port;
          else throw new Invalid(`${routeAt}.destination.port`, `required: Service ${namespaceOf(target)}/${target.metadata.name} has ${target.spec?.ports?.length ?? 0} ports`);
          const weight = route.weight === undefined ? (routes.length === 1 ? 100 : 0) : route.weight;
          if (typeof weight !== 'number' || !Number.isInteger(weight) || weight < 0) throw new Invalid(`${routeAt}.weight`, `must be a non-negative integer, not ${JSON.stringify(weight)}`);
          if (weight > 0) backends.push({ service: `${namespaceOf(target)}/${serviceHostname(target, clusterDomain)}`, port: number, weight });
        });
        const matches = rule.match === undefined ? [{}] : list(rule.match, `${at}.match`);
        matches.forEach((rawMatch, matchIndex) => {
          const matchAt = `${at}.match[${matchIndex}]`;
          const match = fields(rawMatch, matchAt, ['name', 'uri', 'headers', 'port'], MATCH_UNSUPPORTED);
          let path: Entry['match']['path'] = { type: 'PATH_PREFIX', value: '/' };
          if (match.uri !== undefined) {
            const uri = fields(match.uri, `${matchAt}.uri`, ['exact', 'prefix'], ['regex']);
            const keys = Object.keys(uri);
            if (keys.length !== 1) throw new Invalid(`${matchAt}.uri`, 'set exactly one of exact, prefix');
            const value = text(uri[keys[0]!], `${matchAt}.uri.${keys[0]!}`);
            if (!value.startsWith('/')) throw new Invalid(`${matchAt}.uri.${keys[0]!}`, `must start with /, not ${value}`);
            // Istio's uri prefix is a plain string prefix (`/api` matches `/apix`), unlike HTTPRoute's PathPrefix by
            // segment: sent as an RE2 expression over the whole path.
            path = keys[0] === 'exact' ? { type: 'EXACT', value } : { type: 'REGULAR_EXPRESSION', value: `${value.replace(/[\\^$.*+?()[\]{}|]/g, '\\$&')}.*` };
          }
          const headers: Entry['match']['headers'] = [];
          if (match.headers !== undefined) {
            if (!isMapping(match.headers)) throw new Invalid(`${matchAt}.headers`, 'must be a map of header names to matches');
            for (const [header, raw] of Object.entries(match.headers)) {
              const matcher = fields(raw, `${matchAt}.headers.${header}`, ['exact'], ['prefix', 'regex']);
              headers.push({ name: header.toLowerCase(), exact: text(matcher.exact, `${matchAt}.headers.${header}.exact`), regex: '' });
            }
          }
          const entryPort = match.port === undefined ? 0 : port(match.port, `${matchAt}.port`);
          entries.push({ route: `VirtualService/${name}`, ruleName, port: entryPort, match: { path, headers, queryParams: [], method: '' }, backends, mirrors: [], requestTimeoutMs: 0, backendRequestTimeoutMs: 0, ...(modifier ? { requestHeaderModifier: modifier } : {}) });
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
