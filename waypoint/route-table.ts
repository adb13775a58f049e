/**
 * The HTTPRoutes the control plane compiled for each Service (`ambit.waypoint.HttpRoutes` over delta xDS), checked
 * and kept by service key (`<namespace>/<hostname>`), with regular expressions compiled once (RE2, re2js).
 *
 * Owns: turning decoded resources into typed route entries (a malformed one is NACKed, the last good kept: the
 * bookkeeping is service-resource-table.ts).
 * Must not know about: HTTP, sockets, how entries are matched. The entry type is open to more kinds of entry
 * (gRPC-derived ones add their own optional fields).
 */
import { RE2JS } from 're2js';
import { ServiceResourceTable } from './service-resource-table.ts';

export interface HeaderValue {
  name: string;
  value: string;
}

export interface HeaderModifier {
  set: readonly HeaderValue[];
  add: readonly HeaderValue[];
  /** Lower-case names. */
  remove: readonly string[];
}

/** A header (lower-case name) or query parameter match: the exact value, or the whole value against `regex`. */
export interface ValueMatch {
  name: string;
  exact: string;
  regex?: RE2JS;
}

export interface PathModifier {
  type: 'REPLACE_FULL_PATH' | 'REPLACE_PREFIX_MATCH';
  value: string;
}

export interface RouteBackend {
  service: string;
  port: number;
  weight: number;
  requestHeaderModifier?: HeaderModifier;
  responseHeaderModifier?: HeaderModifier;
}

export interface RequestRedirect {
  scheme: string;
  hostname: string;
  port: number;
  path?: PathModifier;
  statusCode: number;
}

export interface RetryPolicy {
  codes: ReadonlySet<number>;
  attempts: number;
  backoffMs: number;
  /** gRPC statuses of a trailers-only answer that are retried (Envoy's gRPC retryOn conditions); absent: none. */
  grpcStatuses?: ReadonlySet<number>;
}

export interface RouteEntry {
  route: string;
  ruleName: string;
  /** The Service port it applies to; 0: every port. */
  port: number;
  pathType: 'EXACT' | 'PATH_PREFIX' | 'REGULAR_EXPRESSION';
  path: string;
  pathRegex?: RE2JS;
  /** Empty: any method. */
  method: string;
  headers: readonly ValueMatch[];
  queryParams: readonly ValueMatch[];
  backends: readonly RouteBackend[];
  totalWeight: number;
  requestHeaderModifier?: HeaderModifier;
  responseHeaderModifier?: HeaderModifier;
  redirect?: RequestRedirect;
  urlRewrite?: { hostname: string; path?: PathModifier };
  mirrors: readonly { service: string; port: number; fraction: number }[];
  /** 0: none. */
  requestTimeoutMs: number;
  backendRequestTimeoutMs: number;
  retry?: RetryPolicy;
}

type DecodedModifier = { set?: HeaderValue[]; add?: HeaderValue[]; remove?: string[] } | null | undefined;
type DecodedPathModifier = { type?: string; value?: string } | null | undefined;
type DecodedValueMatch = { name?: string; exact?: string; regex?: string };

interface DecodedEntry {
  route?: string;
  ruleName?: string;
  port?: number;
  match?: { path?: { type?: string; value?: string } | null; headers?: DecodedValueMatch[]; queryParams?: DecodedValueMatch[]; method?: string } | null;
  backends?: { service?: string; port?: number; weight?: number; requestHeaderModifier?: DecodedModifier; responseHeaderModifier?: DecodedModifier }[];
  requestHeaderModifier?: DecodedModifier;
  responseHeaderModifier?: DecodedModifier;
  redirect?: { scheme?: string; hostname?: string; port?: number; path?: DecodedPathModifier; statusCode?: number } | null;
  urlRewrite?: { hostname?: string; path?: DecodedPathModifier } | null;
  mirrors?: { service?: string; port?: number; fraction?: number }[];
  requestTimeoutMs?: number;
  backendRequestTimeoutMs?: number;
  retry?: { codes?: number[]; attempts?: number; backoffMs?: number } | null;
}

interface DecodedRoutes {
  service?: string;
  entries?: DecodedEntry[];
}

function regex(pattern: string, what: string): RE2JS {
  try {
    return RE2JS.compile(pattern);
  } catch (error) {
    throw new Error(`${what}: invalid RE2 pattern ${JSON.stringify(pattern)}: ${(error as Error).message}`, { cause: error });
  }
}

function modifier(decoded: DecodedModifier): HeaderModifier | undefined {
  if (!decoded || !(decoded.set?.length || decoded.add?.length || decoded.remove?.length)) return undefined;
  const lower = (header: HeaderValue): HeaderValue => ({ name: header.name.toLowerCase(), value: header.value });
  return { set: (decoded.set ?? []).map(lower), add: (decoded.add ?? []).map(lower), remove: (decoded.remove ?? []).map((name) => name.toLowerCase()) };
}

function pathModifier(decoded: DecodedPathModifier): PathModifier | undefined {
  if (!decoded) return undefined;
  const type = decoded.type ?? 'REPLACE_FULL_PATH';
  if (type !== 'REPLACE_FULL_PATH' && type !== 'REPLACE_PREFIX_MATCH') throw new Error(`unknown path modifier ${type}`);
  return { type, value: decoded.value ?? '' };
}

function servicePort(port: number | undefined, service: string | undefined, what: string): number {
  if (!service || !port || port > 65535) throw new Error(`${what} ${service ?? ''}:${port ?? ''} is not a service port`);
  return port;
}

function valueMatches(decoded: DecodedValueMatch[] | undefined, lowerCase: boolean): ValueMatch[] {
  return (decoded ?? []).map((match) => {
    const name = lowerCase ? (match.name ?? '').toLowerCase() : (match.name ?? '');
    return match.regex ? { name, exact: '', regex: regex(match.regex, `match on ${name}`) } : { name, exact: match.exact ?? '' };
  });
}

function entryFromXds(entry: DecodedEntry): RouteEntry {
  const pathType = entry.match?.path?.type ?? 'PATH_PREFIX';
  if (pathType !== 'EXACT' && pathType !== 'PATH_PREFIX' && pathType !== 'REGULAR_EXPRESSION') throw new Error(`unknown path match type ${String(pathType)}`);
  const path = entry.match?.path?.value || '/';
  if (pathType !== 'REGULAR_EXPRESSION' && !path.startsWith('/')) throw new Error(`path ${path} does not start with /`);
  const backends: RouteBackend[] = (entry.backends ?? []).map((backend) => {
    const result: RouteBackend = { service: backend.service!, port: servicePort(backend.port, backend.service, 'backend'), weight: backend.weight ?? 0 };
    const request = modifier(backend.requestHeaderModifier);
    const response = modifier(backend.responseHeaderModifier);
    if (request) result.requestHeaderModifier = request;
    if (response) result.responseHeaderModifier = response;
    return result;
  });
  const result: RouteEntry = {
    route: entry.route ?? '',
    ruleName: entry.ruleName ?? '',
    port: entry.port ?? 0,
    pathType,
    path,
    method: entry.match?.method ?? '',
    headers: valueMatches(entry.match?.headers, true),
    queryParams: valueMatches(entry.match?.queryParams, false),
    backends,
    totalWeight: backends.reduce((sum, backend) => sum + backend.weight, 0),
    mirrors: (entry.mirrors ?? []).map((mirror) => ({ service: mirror.service!, port: servicePort(mirror.port, mirror.service, 'mirror'), fraction: mirror.fraction ?? 1 })),
    requestTimeoutMs: entry.requestTimeoutMs ?? 0,
    backendRequestTimeoutMs: entry.backendRequestTimeoutMs ?? 0,
  };
  if (pathType === 'REGULAR_EXPRESSION') result.pathRegex = regex(path, 'path');
  const request = modifier(entry.requestHeaderModifier);
  const response = modifier(entry.responseHeaderModifier);
  if (request) result.requestHeaderModifier = request;
  if (response) result.responseHeaderModifier = response;
  if (entry.redirect) {
    const path = pathModifier(entry.redirect.path);
    result.redirect = { scheme: entry.redirect.scheme ?? '', hostname: entry.redirect.hostname ?? '', port: entry.redirect.port ?? 0, statusCode: entry.redirect.statusCode || 302, ...(path ? { path } : {}) };
  }
  if (entry.urlRewrite) {
    const path = pathModifier(entry.urlRewrite.path);
    result.urlRewrite = { hostname: entry.urlRewrite.hostname ?? '', ...(path ? { path } : {}) };
  }
  if (entry.retry) result.retry = { codes: new Set(entry.retry.codes ?? []), attempts: entry.retry.attempts ?? 0, backoffMs: entry.retry.backoffMs ?? 0 };
  return result;
}

/** An entry as the admin config dump shows it (regular expressions as their pattern). */
function entryView(entry: RouteEntry): object {
  const values = (matches: readonly ValueMatch[]): object[] => matches.map((match) => (match.regex ? { name: match.name, regex: match.regex.pattern() } : { name: match.name, exact: match.exact }));
  const { pathRegex: _pathRegex, headers, queryParams, retry, ...rest } = entry;
  return { ...rest, headers: values(headers), queryParams: values(queryParams), ...(retry ? { retry: { ...retry, codes: [...retry.codes] } } : {}) };
}

function routesFromXds(resource: unknown): { service: string; value: readonly RouteEntry[] } {
  const decoded = resource as DecodedRoutes;
  if (!decoded.service) throw new Error('no service');
  return { service: decoded.service, value: (decoded.entries ?? []).map(entryFromXds) };
}

export class RouteTable {
  readonly #table = new ServiceResourceTable(routesFromXds);

  /** Route entries of a service, in precedence order; undefined when it has no HTTPRoute. */
  entriesFor(serviceKey: string): readonly RouteEntry[] | undefined {
    return this.#table.get(serviceKey);
  }

  /** The delta xDS handler for HTTP_ROUTES_TYPE_URL. */
  readonly apply = this.#table.apply;

  view(): object {
    return Object.fromEntries([...this.#table.entries()].map(([service, entries]) => [service, entries.map(entryView)]));
  }
}
