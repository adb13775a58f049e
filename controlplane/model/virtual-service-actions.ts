/**
 * What a VirtualService `http` route does once it matched (networking.istio.io/v1 HTTPRoute, Istio's field names),
 * checked strictly and turned into the fields of `ambit.waypoint.RouteEntry` (routes.proto): `timeout`, `retries`
 * (with Istio's default policy when absent), `fault` (delay, abort), `headers` operations (rule and destination),
 * `mirror` + `mirrorPercentage` and `mirrors`, `redirect` and `rewrite`. Fields Istio has that are not built are
 * refused with their path, never approximated.
 *
 * Owns: these fields' validation, Istio's defaults and the message shapes. Must not know about: matches, hosts,
 * Services (destinations are resolved by the caller), encoding, how waypoints apply the result.
 */
import { durationMs } from './destination-rules.ts';
import type { FaultMessage, HeaderModifierMessage, PathModifierMessage, RuleFilterFields } from './http-route-filters.ts';
import { fields, Invalid, isMapping } from './strict-fields.ts';

/**
 * Istio's retry policy for a route without `retries` (pilot's retry.DefaultPolicy): 2 retries on
 * connect-failure, refused-stream, unavailable, cancelled and retriable-status-codes 503, Envoy's 25 ms back-off.
 */
export const ISTIO_DEFAULT_RETRY_ON = ['connect-failure', 'refused-stream', 'unavailable', 'cancelled', 'retriable-status-codes'];
const ISTIO_DEFAULT_RETRY_ATTEMPTS = 2;
const ISTIO_DEFAULT_RETRIABLE_CODES = [503];
/** Envoy's base retry back-off (VirtualService has no field for it). */
const RETRY_BACKOFF_MS = 25;
/** Envoy's retry_on conditions the waypoint implements (HTTP and gRPC). */
const RETRY_ON = new Set(['5xx', 'gateway-error', 'reset', 'connect-failure', 'retriable-4xx', 'refused-stream', 'retriable-status-codes', 'cancelled', 'deadline-exceeded', 'internal', 'resource-exhausted', 'unavailable']);
/** Envoy conditions that exist but are not built; refused by name. */
const RETRY_ON_UNSUPPORTED = new Set(['reset-before-request', 'envoy-ratelimited', 'retriable-headers', 'http3-post-connect-failure']);
/** gRPC status codes by Istio's `grpcStatus` names (OK is no abort). */
const GRPC_STATUS: Record<string, number> = {
  CANCELLED: 1, UNKNOWN: 2, INVALID_ARGUMENT: 3, DEADLINE_EXCEEDED: 4, NOT_FOUND: 5, ALREADY_EXISTS: 6, PERMISSION_DENIED: 7, RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9, ABORTED: 10, OUT_OF_RANGE: 11, UNIMPLEMENTED: 12, INTERNAL: 13, UNAVAILABLE: 14, DATA_LOSS: 15, UNAUTHENTICATED: 16,
};
/** Istio's redirectCode default (301, MOVED_PERMANENTLY) and the codes Envoy's redirect action can send. */
const DEFAULT_REDIRECT_CODE = 301;
const REDIRECT_CODES = new Set([301, 302, 303, 307, 308]);

/** A destination (`host`, `port`, `subset`) resolved by the caller to `<namespace>/<hostname>` and port. */
export type ResolveDestination = (value: unknown, path: string) => { service: string; port: number; subset: string };

export function text(value: unknown, path: string): string {
  if (typeof value !== 'string' || value === '') throw new Invalid(path, value === undefined ? 'required field is missing' : `must be a non-empty string, not ${JSON.stringify(value)}`);
  return value;
}

export function list(value: unknown, path: string): unknown[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) throw new Invalid(path, 'must be a list');
  return value;
}

/** Istio's `percentage.value` (0..100, a double); absent: 100, as Istio. */
function percentage(value: unknown, path: string): number {
  if (value === undefined) return 100;
  const share = fields(value, path, ['value']).value;
  if (typeof share !== 'number' || !(share >= 0 && share <= 100)) throw new Invalid(`${path}.value`, `must be a number from 0 to 100, not ${JSON.stringify(share)}`);
  return share;
}

/** A Duration where `0s` means none (timeout, perTryTimeout). */
function optionalDurationMs(value: unknown, path: string): number {
  if (value === '0s' || value === '0') return 0;
  return durationMs(value, path) ?? 0;
}

/** `headers.request` / `headers.response` with set, add, remove (names lower-cased). */
export function headerOperations(value: unknown, path: string): { request?: HeaderModifierMessage; response?: HeaderModifierMessage } {
  if (value === undefined) return {};
  const headers = fields(value, path, ['request', 'response']);
  const one = (raw: unknown, at: string): HeaderModifierMessage | undefined => {
    if (raw === undefined) return undefined;
    const operations = fields(raw, at, ['set', 'add', 'remove']);
    const pairs = (map: unknown, mapAt: string): { name: string; value: string }[] => {
      if (map === undefined) return [];
      if (!isMapping(map)) throw new Invalid(mapAt, 'must be a map of header names to values');
      return Object.entries(map).map(([name, headerValue]) => {
        if (typeof headerValue !== 'string') throw new Invalid(`${mapAt}.${name}`, `must be a string, not ${JSON.stringify(headerValue)}`);
        return { name: name.toLowerCase(), value: headerValue };
      });
    };
    return {
      set: pairs(operations.set, `${at}.set`),
      add: pairs(operations.add, `${at}.add`),
      remove: list(operations.remove, `${at}.remove`).map((name, index) => text(name, `${at}.remove[${index}]`).toLowerCase()),
    };
  };
  const request = one(headers.request, `${path}.request`);
  const response = one(headers.response, `${path}.response`);
  return { ...(request ? { request } : {}), ...(response ? { response } : {}) };
}

function retries(value: unknown, path: string): { retry: NonNullable<RuleFilterFields['retry']>; perTryTimeoutMs: number } {
  if (value === undefined) return { retry: { codes: ISTIO_DEFAULT_RETRIABLE_CODES, attempts: ISTIO_DEFAULT_RETRY_ATTEMPTS, backoffMs: RETRY_BACKOFF_MS, retryOn: ISTIO_DEFAULT_RETRY_ON }, perTryTimeoutMs: 0 };
  const spec = fields(value, path, ['attempts', 'perTryTimeout', 'retryOn'], ['retryRemoteLocalities', 'retryIgnorePreviousHosts', 'backoff']);
  const attempts = spec.attempts ?? 0;
  if (typeof attempts !== 'number' || !Number.isInteger(attempts) || attempts < 0) throw new Invalid(`${path}.attempts`, `must be a non-negative integer, not ${JSON.stringify(attempts)}`);
  const perTryTimeoutMs = optionalDurationMs(spec.perTryTimeout, `${path}.perTryTimeout`);
  // As istiod: attempts 0 (or left out) turns retries off, whatever else is set.
  if (attempts === 0) return { retry: { codes: [], attempts: 0, backoffMs: RETRY_BACKOFF_MS, retryOn: [] }, perTryTimeoutMs };
  if (spec.retryOn === undefined) return { retry: { codes: ISTIO_DEFAULT_RETRIABLE_CODES, attempts, backoffMs: RETRY_BACKOFF_MS, retryOn: ISTIO_DEFAULT_RETRY_ON }, perTryTimeoutMs };
  const retryOnPath = `${path}.retryOn`;
  const conditions: string[] = [];
  const codes: number[] = [];
  for (const raw of text(spec.retryOn, retryOnPath).split(',')) {
    const part = raw.trim();
    if (part === '') continue;
    if (/^\d+$/.test(part)) {
      const code = Number(part);
      if (code < 100 || code > 599) throw new Invalid(retryOnPath, `${part} is not an HTTP status code`);
      codes.push(code);
    } else if (RETRY_ON.has(part)) {
      if (!conditions.includes(part)) conditions.push(part);
    } else if (RETRY_ON_UNSUPPORTED.has(part)) {
      throw new Invalid(retryOnPath, `retry condition ${part} is not supported by ambit waypoints yet (refused rather than ignored)`);
    } else {
      throw new Invalid(retryOnPath, `${part} is not a retry condition (${[...RETRY_ON].join(', ')}, or an HTTP status code)`);
    }
  }
  // As istiod: status codes in retryOn are Envoy's retriable_status_codes, which need that condition.
  if (codes.length > 0 && !conditions.includes('retriable-status-codes')) conditions.push('retriable-status-codes');
  if (conditions.length === 0) throw new Invalid(retryOnPath, 'names no retry condition');
  return { retry: { codes, attempts, backoffMs: RETRY_BACKOFF_MS, retryOn: conditions }, perTryTimeoutMs };
}

function fault(value: unknown, path: string): FaultMessage {
  const spec = fields(value, path, ['delay', 'abort']);
  const result: FaultMessage = {};
  if (spec.delay !== undefined) {
    const at = `${path}.delay`;
    const delay = fields(spec.delay, at, ['fixedDelay', 'percentage'], ['exponentialDelay', 'percent']);
    if (delay.fixedDelay === undefined) throw new Invalid(`${at}.fixedDelay`, 'required field is missing');
    result.delay = { fixedDelayMs: durationMs(delay.fixedDelay, `${at}.fixedDelay`)!, percentage: percentage(delay.percentage, `${at}.percentage`) };
  }
  if (spec.abort !== undefined) {
    const at = `${path}.abort`;
    const abort = fields(spec.abort, at, ['httpStatus', 'grpcStatus', 'percentage'], ['http2Error', 'percent']);
    if ((abort.httpStatus === undefined) === (abort.grpcStatus === undefined)) throw new Invalid(at, 'set exactly one of httpStatus, grpcStatus');
    let httpStatus = 0;
    let grpcStatus = 0;
    if (abort.httpStatus !== undefined) {
      httpStatus = abort.httpStatus as number;
      if (typeof httpStatus !== 'number' || !Number.isInteger(httpStatus) || httpStatus < 200 || httpStatus > 599) throw new Invalid(`${at}.httpStatus`, `must be an HTTP status from 200 to 599, not ${JSON.stringify(abort.httpStatus)}`);
    } else {
      const code = GRPC_STATUS[String(abort.grpcStatus)];
      if (code === undefined) throw new Invalid(`${at}.grpcStatus`, `must be a gRPC status name other than OK (${Object.keys(GRPC_STATUS).join(', ')}), not ${JSON.stringify(abort.grpcStatus)}`);
      grpcStatus = code;
    }
    result.abort = { httpStatus, grpcStatus, percentage: percentage(abort.percentage, `${at}.percentage`) };
  }
  if (!result.delay && !result.abort) throw new Invalid(path, 'set delay, abort or both');
  return result;
}

function mirrors(rule: Record<string, unknown>, path: string, resolve: ResolveDestination): RuleFilterFields['mirrors'] {
  if (rule.mirror !== undefined && rule.mirrors !== undefined) throw new Invalid(`${path}.mirrors`, 'set mirror or mirrors, not both');
  if (rule.mirrorPercentage !== undefined && rule.mirror === undefined) throw new Invalid(`${path}.mirrorPercentage`, 'needs mirror');
  const one = (destination: unknown, share: number, at: string): { service: string; port: number; fraction: number } => {
    const resolved = resolve(destination, at);
    if (resolved.subset !== '') throw new Invalid(`${at}.subset`, 'a mirror to a subset is not supported by ambit waypoints yet (refused rather than ignored)');
    return { service: resolved.service, port: resolved.port, fraction: share / 100 };
  };
  if (rule.mirror !== undefined) return [one(rule.mirror, percentage(rule.mirrorPercentage, `${path}.mirrorPercentage`), `${path}.mirror`)];
  return list(rule.mirrors, `${path}.mirrors`).map((raw, index) => {
    const at = `${path}.mirrors[${index}]`;
    const mirror = fields(raw, at, ['destination', 'percentage']);
    return one(mirror.destination, percentage(mirror.percentage, `${at}.percentage`), `${at}.destination`);
  });
}

function redirect(value: unknown, path: string): NonNullable<RuleFilterFields['redirect']> {
  const spec = fields(value, path, ['uri', 'authority', 'port', 'scheme', 'redirectCode'], ['derivePort']);
  const scheme = spec.scheme === undefined ? '' : text(spec.scheme, `${path}.scheme`);
  if (scheme !== '' && scheme !== 'http' && scheme !== 'https') throw new Invalid(`${path}.scheme`, `must be http or https, not ${scheme}`);
  const statusCode = spec.redirectCode ?? DEFAULT_REDIRECT_CODE;
  if (typeof statusCode !== 'number' || !REDIRECT_CODES.has(statusCode)) throw new Invalid(`${path}.redirectCode`, `must be 301, 302, 303, 307 or 308, not ${JSON.stringify(statusCode)}`);
  const port = spec.port ?? 0;
  if (spec.port !== undefined && (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535)) throw new Invalid(`${path}.port`, `must be a port from 1 to 65535, not ${JSON.stringify(port)}`);
  const uri = spec.uri === undefined ? undefined : text(spec.uri, `${path}.uri`);
  if (uri !== undefined && !uri.startsWith('/')) throw new Invalid(`${path}.uri`, `must start with /, not ${uri}`);
  return { scheme, hostname: spec.authority === undefined ? '' : text(spec.authority, `${path}.authority`), port: port as number, statusCode, ...(uri !== undefined ? { path: { type: 'REPLACE_FULL_PATH', value: uri } } : {}) };
}

/** The rule-level fields of one `http` route, the same for each of its matches except the rewrite's prefix. */
export interface RuleActions {
  fields: Omit<RuleFilterFields, 'urlRewrite'>;
  /** `rewrite`, with the path part still to be fitted to each match (rewritePath). */
  rewrite?: { authority: string; uri?: string };
}

export function ruleActions(rule: Record<string, unknown>, path: string, resolve: ResolveDestination): RuleActions {
  const headers = headerOperations(rule.headers, `${path}.headers`);
  const retry = retries(rule.retries, `${path}.retries`);
  const requestTimeoutMs = optionalDurationMs(rule.timeout, `${path}.timeout`);
  const result: RuleActions = {
    fields: {
      mirrors: mirrors(rule, path, resolve),
      requestTimeoutMs,
      backendRequestTimeoutMs: retry.perTryTimeoutMs,
      retry: retry.retry,
      ...(headers.request ? { requestHeaderModifier: headers.request } : {}),
      ...(headers.response ? { responseHeaderModifier: headers.response } : {}),
    },
  };
  if (rule.fault !== undefined) result.fields.fault = fault(rule.fault, `${path}.fault`);
  if (rule.redirect !== undefined) {
    if (rule.route !== undefined) throw new Invalid(`${path}.redirect`, 'a rule has route or redirect, not both');
    if (rule.rewrite !== undefined) throw new Invalid(`${path}.rewrite`, 'a rule with a redirect cannot rewrite');
    result.fields.redirect = redirect(rule.redirect, `${path}.redirect`);
  }
  if (rule.rewrite !== undefined) {
    const at = `${path}.rewrite`;
    const rewrite = fields(rule.rewrite, at, ['uri', 'authority'], ['uriRegexRewrite']);
    if (rewrite.uri === undefined && rewrite.authority === undefined) throw new Invalid(at, 'set uri, authority or both');
    result.rewrite = { authority: rewrite.authority === undefined ? '' : text(rewrite.authority, `${at}.authority`), ...(rewrite.uri !== undefined ? { uri: text(rewrite.uri, `${at}.uri`) } : {}) };
  }
  return result;
}

/**
 * Istio's `rewrite.uri` for one match, as Envoy's prefix_rewrite: the matched plain prefix replaced (a `uri.prefix`
 * match), the whole path for `exact` and `regex` matches, `/` for a rule without a uri match.
 */
export function rewritePath(uri: string, matched: { kind: 'exact' | 'prefix' | 'regex' | 'none'; value: string }): PathModifierMessage {
  if (matched.kind === 'exact' || matched.kind === 'regex') return { type: 'REPLACE_FULL_PATH', value: uri };
  return { type: 'REPLACE_LITERAL_PREFIX', value: uri, prefix: matched.kind === 'prefix' ? matched.value : '/' };
}
