/**
 * The HTTPRoutes the control plane compiled for each Service (`ambit.waypoint.HttpRoutes` over delta xDS), checked
 * and kept by service key (`<namespace>/<hostname>`), with regular expressions compiled once (RE2, re2js).
 *
 * Owns: turning decoded resources into typed route entries (a malformed one is NACKed, the last good kept: the
 * bookkeeping is service-resource-table.ts).
 * Must not know about: HTTP, sockets, how entries are matched. The entry type is open to more kinds of entry
 * (gRPC-derived ones add their own optional fields).
 */
import type { RE2JS } from 're2js';
import { re2Module } from './optional-modules.ts';
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
  /** REPLACE_LITERAL_PREFIX (VirtualService rewrite.uri): `prefix`, a plain string prefix, becomes `value`. */
  type: 'REPLACE_FULL_PATH' | 'REPLACE_PREFIX_MATCH' | 'REPLACE_LITERAL_PREFIX';
  value: string;
  prefix?: string;
}

export interface RouteBackend {
  service: string;
  port: number;
  weight: number;
  /** A DestinationRule subset of the service (VirtualService): only its pods take the request. */
  subset?: string;
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

/** Envoy's retry_on conditions the waypoint implements (routes.proto RetryPolicy.retry_on). */
export type RetryCondition = '5xx' | 'gateway-error' | 'reset' | 'connect-failure' | 'retriable-4xx' | 'refused-stream' | 'retriable-status-codes' | 'cancelled' | 'deadline-exceeded' | 'internal' | 'resource-exhausted' | 'unavailable';
const RETRY_CONDITIONS: ReadonlySet<string> = new Set<RetryCondition>(['5xx', 'gateway-error', 'reset', 'connect-failure', 'retriable-4xx', 'refused-stream', 'retriable-status-codes', 'cancelled', 'deadline-exceeded', 'internal', 'resource-exhausted', 'unavailable']);

export interface RetryPolicy {
  codes: ReadonlySet<number>;
  attempts: number;
  backoffMs: number;
  /** Envoy's conditions (VirtualService retryOn); absent: `codes`, connection failures and `grpcStatuses` (HTTPRoute). */
  retryOn?: ReadonlySet<RetryCondition>;
  /** gRPC statuses of a trailers-only answer that are retried (Envoy's gRPC retryOn conditions); absent: none. */
  grpcStatuses?: ReadonlySet<number>;
}

/** VirtualService `fault` (Envoy's fault filter): percentages 0..100. */
export interface FaultInjection {
  delay?: { fixedDelayMs: number; percentage: number };
  /** httpStatus 0: a gRPC abort with grpcStatus. */
  abort?: { httpStatus: number; grpcStatus: number; percentage: number };
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
  /** VirtualService withoutHeaders: none may match (absent: no such condition). */
  withoutHeaders?: readonly ValueMatch[];
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
  fault?: FaultInjection;
}

type DecodedModifier = { set?: HeaderValue[]; add?: HeaderValue[]; remove?: string[] } | null | undefined;
type DecodedPathModifier = { type?: string; value?: string; prefix?: string } | null | undefined;
type DecodedValueMatch = { name?: string; exact?: string; regex?: string };

interface DecodedEntry {
  route?: string;
  ruleName?: string;
  port?: number;
  match?: { path?: { type?: string; value?: string } | null; headers?: DecodedValueMatch[]; queryParams?: DecodedValueMatch[]; method?: string; withoutHeaders?: DecodedValueMatch[] } | null;
  backends?: { service?: string; port?: number; weight?: number; subset?: string; requestHeaderModifier?: DecodedModifier; responseHeaderModifier?: DecodedModifier }[];
  requestHeaderModifier?: DecodedModifier;
  responseHeaderModifier?: DecodedModifier;
  redirect?: { scheme?: string; hostname?: string; port?: number; path?: DecodedPathModifier; statusCode?: number } | null;
  urlRewrite?: { hostname?: string; path?: DecodedPathModifier } | null;
  mirrors?: { service?: string; port?: number; fraction?: number }[];
  requestTimeoutMs?: number;
  backendRequestTimeoutMs?: number;
  retry?: { codes?: number[]; attempts?: number; backoffMs?: number; retryOn?: string[] } | null;
  fault?: { delay?: { fixedDelayMs?: number; percentage?: number } | null; abort?: { httpStatus?: number; grpcStatus?: number; percentage?: number } | null } | null;
}

interface DecodedRoutes {
  service?: string;
  entries?: DecodedEntry[];
}

function regex(pattern: string, what: string): RE2JS {
  try {
    return re2Module().compile(pattern);
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
  if (type === 'REPLACE_LITERAL_PREFIX') return { type, value: decoded.value ?? '', prefix: decoded.prefix || '/' };
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

function share(percentage: number | undefined, what: string): number {
  const value = percentage ?? 0;
  if (!(value >= 0 && value <= 100)) throw new Error(`${what} percentage ${value} is not from 0 to 100`);
  return value;
}

function faultFromXds(decoded: NonNullable<DecodedEntry['fault']>): FaultInjection {
  const fault: FaultInjection = {};
  if (decoded.delay) fault.delay = { fixedDelayMs: decoded.delay.fixedDelayMs ?? 0, percentage: share(decoded.delay.percentage, 'fault delay') };
  if (decoded.abort) {
    const { httpStatus = 0, grpcStatus = 0 } = decoded.abort;
    if (httpStatus === 0 ? grpcStatus < 1 || grpcStatus > 16 : httpStatus < 200 || httpStatus > 599) throw new Error(`fault abort with HTTP status ${httpStatus} and gRPC status ${grpcStatus}`);
    fault.abort = { httpStatus, grpcStatus, percentage: share(decoded.abort.percentage, 'fault abort') };
  }
  return fault;
}

function entryFromXds(entry: DecodedEntry): RouteEntry {
  const pathType = entry.match?.path?.type ?? 'PATH_PREFIX';
  if (pathType !== 'EXACT' && pathType !== 'PATH_PREFIX' && pathType !== 'REGULAR_EXPRESSION') throw new Error(`unknown path match type ${String(pathType)}`);
  const path = entry.match?.path?.value || '/';
  if (pathType !== 'REGULAR_EXPRESSION' && !path.startsWith('/')) throw new Error(`path ${path} does not start with /`);
  const backends: RouteBackend[] = (entry.backends ?? []).map((backend) => {
    const result: RouteBackend = { service: backend.service!, port: servicePort(backend.port, backend.service, 'backend'), weight: backend.weight ?? 0 };
    if (backend.subset) result.subset = backend.subset;
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
  if (entry.match?.withoutHeaders?.length) result.withoutHeaders = valueMatches(entry.match.withoutHeaders, true);
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
  if (entry.retry) {
    result.retry = { codes: new Set(entry.retry.codes ?? []), attempts: entry.retry.attempts ?? 0, backoffMs: entry.retry.backoffMs ?? 0 };
    if (entry.retry.retryOn?.length) {
      for (const condition of entry.retry.retryOn) if (!RETRY_CONDITIONS.has(condition)) throw new Error(`unknown retry condition ${condition}`);
      result.retry.retryOn = new Set(entry.retry.retryOn as RetryCondition[]);
    }
  }
  if (entry.fault) result.fault = faultFromXds(entry.fault);
  return result;
}

/** An entry as the admin config dump shows it (regular expressions as their pattern). */
function entryView(entry: RouteEntry): object {
  const values = (matches: readonly ValueMatch[]): object[] => matches.map((match) => (match.regex ? { name: match.name, regex: match.regex.pattern() } : { name: match.name, exact: match.exact }));
  const { pathRegex: _pathRegex, headers, withoutHeaders, queryParams, retry, ...rest } = entry;
  return {
    ...rest, headers: values(headers), queryParams: values(queryParams), ...(withoutHeaders ? { withoutHeaders: values(withoutHeaders) } : {}),
    ...(retry ? { retry: { ...retry, codes: [...retry.codes], ...(retry.retryOn ? { retryOn: [...retry.retryOn] } : {}) } } : {}),
  };
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
