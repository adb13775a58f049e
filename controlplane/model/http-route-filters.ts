/**
 * The per-rule parts of an HTTPRoute (gateway.networking.k8s.io/v1) that are not matches: filters (on the rule and
 * on a backendRef), `timeouts` and `retry`, checked and turned into the fields of `ambit.waypoint.RouteEntry`
 * (shared/xds/proto/ambit/waypoint/routes.proto). Also the shared checks on values (Gateway API durations, RE2
 * patterns).
 *
 * Owns: what is accepted and what each field becomes, with the Gateway API reason when something is not.
 * Must not know about: match precedence, parentRefs, encoding, how waypoints apply the result.
 */
import { RE2JS } from 're2js';

/** Thrown for a rule this build cannot serve as written; the route is reported `Accepted: False` with `reason`. */
export class RouteRejected extends Error {
  readonly reason: string;
  constructor(reason: string, message: string) {
    super(message);
    this.reason = reason;
  }
}

export interface HeaderValue {
  name: string;
  value: string;
}

export interface HeaderModifierMessage {
  set: HeaderValue[];
  add: HeaderValue[];
  remove: string[];
}

export interface PathModifierMessage {
  /** REPLACE_LITERAL_PREFIX: VirtualService rewrite of a plain string `prefix` (routes.proto). */
  type: 'REPLACE_FULL_PATH' | 'REPLACE_PREFIX_MATCH' | 'REPLACE_LITERAL_PREFIX';
  value: string;
  prefix?: string;
}

/** VirtualService `fault` (routes.proto FaultInjection); percentages 0..100. */
export interface FaultMessage {
  delay?: { fixedDelayMs: number; percentage: number };
  abort?: { httpStatus: number; grpcStatus: number; percentage: number };
}

export interface RuleFilterFields {
  requestHeaderModifier?: HeaderModifierMessage;
  responseHeaderModifier?: HeaderModifierMessage;
  redirect?: { scheme: string; hostname: string; port: number; path?: PathModifierMessage; statusCode: number };
  urlRewrite?: { hostname: string; path?: PathModifierMessage };
  mirrors: { service: string; port: number; fraction: number }[];
  requestTimeoutMs: number;
  backendRequestTimeoutMs: number;
  retry?: { codes: number[]; attempts: number; backoffMs: number; retryOn?: string[] };
  fault?: FaultMessage;
}

export interface BackendFilterFields {
  requestHeaderModifier?: HeaderModifierMessage;
  responseHeaderModifier?: HeaderModifierMessage;
}

type PathModifierSpec = { type?: string; replaceFullPath?: string; replacePrefixMatch?: string };
type BackendRefSpec = { group?: string; kind?: string; name?: string; namespace?: string; port?: number };
export interface FilterSpec {
  type?: string;
  requestHeaderModifier?: { set?: HeaderValue[]; add?: HeaderValue[]; remove?: string[] };
  responseHeaderModifier?: { set?: HeaderValue[]; add?: HeaderValue[]; remove?: string[] };
  requestRedirect?: { scheme?: string; hostname?: string; port?: number; path?: PathModifierSpec; statusCode?: number };
  urlRewrite?: { hostname?: string; path?: PathModifierSpec };
  requestMirror?: { backendRef?: BackendRefSpec; percent?: number; fraction?: { numerator?: number; denominator?: number } };
}
export interface RuleSpec {
  filters?: FilterSpec[];
  timeouts?: { request?: string; backendRequest?: string };
  retry?: { codes?: number[]; attempts?: number; backoff?: string };
}

/** Gateway API Duration (GEP-2257): 1 to 4 `<number><unit>` parts, units h, m, s, ms; "0s" means none. */
const DURATION = /^(?:[0-9]{1,5}(?:h|m|s|ms)){1,4}$/;
const DURATION_PART = /([0-9]{1,5})(h|ms|m|s)/g;
const UNIT_MS: Record<string, number> = { h: 3_600_000, m: 60_000, s: 1_000, ms: 1 };
/** Envoy's default retry back-off base (25 ms) and Istio's default retry count (2), for the fields a rule leaves out. */
const DEFAULT_RETRY_BACKOFF_MS = 25;
const DEFAULT_RETRY_ATTEMPTS = 2;
const REDIRECT_CODES = new Set([301, 302, 303, 307, 308]);
const SUPPORTED_RULE_FILTERS = new Set(['RequestHeaderModifier', 'ResponseHeaderModifier', 'RequestRedirect', 'URLRewrite', 'RequestMirror']);
const SUPPORTED_BACKEND_FILTERS = new Set(['RequestHeaderModifier', 'ResponseHeaderModifier']);

export function durationMs(value: string, what: string): number {
  if (!DURATION.test(value)) throw new RouteRejected('UnsupportedValue', `${what} ${value} is not a Gateway API duration (e.g. 500ms, 1m30s)`);
  let total = 0;
  for (const [, amount, unit] of value.matchAll(DURATION_PART)) total += Number(amount) * UNIT_MS[unit!]!;
  return total;
}

/** Checks an RE2 pattern (the waypoint matches with the same engine); throws UnsupportedValue when invalid. */
export function checkRegex(pattern: string, what: string): string {
  try {
    RE2JS.compile(pattern);
  } catch (error) {
    throw new RouteRejected('UnsupportedValue', `${what}: ${JSON.stringify(pattern)} is not a valid RE2 regular expression (${(error as Error).message})`);
  }
  return pattern;
}

function headerModifier(spec: FilterSpec['requestHeaderModifier'], what: string): HeaderModifierMessage {
  if (!spec) throw new RouteRejected('UnsupportedValue', `${what} has no configuration`);
  const names = new Set<string>();
  const check = (name: string): string => {
    const lower = name.toLowerCase();
    if (names.has(lower)) throw new RouteRejected('UnsupportedValue', `${what} names header ${name} twice`);
    names.add(lower);
    return lower;
  };
  return {
    set: (spec.set ?? []).map((header) => ({ name: check(header.name), value: header.value })),
    add: (spec.add ?? []).map((header) => ({ name: check(header.name), value: header.value })),
    remove: (spec.remove ?? []).map(check),
  };
}

function pathModifier(spec: PathModifierSpec | undefined, what: string, matchedByPrefix: boolean): PathModifierMessage | undefined {
  if (!spec) return undefined;
  if (spec.type === 'ReplaceFullPath' && spec.replaceFullPath !== undefined) return { type: 'REPLACE_FULL_PATH', value: spec.replaceFullPath };
  if (spec.type === 'ReplacePrefixMatch' && spec.replacePrefixMatch !== undefined) {
    // The spec allows ReplacePrefixMatch only where the rule matches by PathPrefix (the prefix is what it replaces).
    if (!matchedByPrefix) throw new RouteRejected('UnsupportedValue', `${what}: ReplacePrefixMatch needs every match of the rule to be a PathPrefix match`);
    return { type: 'REPLACE_PREFIX_MATCH', value: spec.replacePrefixMatch };
  }
  throw new RouteRejected('UnsupportedValue', `${what}: path modifier type ${spec.type ?? '(none)'} without its value`);
}

/**
 * A rule's filters, timeouts and retry. `resolveBackend` turns a mirror's backendRef into `<namespace>/<hostname>`
 * (undefined: not found, which it reports itself); `matchedByPrefix` says whether every match of the rule is a
 * PathPrefix one.
 */
export function compileRuleFilters(rule: RuleSpec, where: string, matchedByPrefix: boolean, resolveBackend: (ref: BackendRefSpec, what: string) => string | undefined): RuleFilterFields {
  const fields: RuleFilterFields = { mirrors: [], requestTimeoutMs: 0, backendRequestTimeoutMs: 0 };
  const seen = new Set<string>();
  for (const filter of rule.filters ?? []) {
    const type = filter.type ?? '(no type)';
    if (!SUPPORTED_RULE_FILTERS.has(type)) throw new RouteRejected('UnsupportedValue', `${where}: filter ${type} is not supported`);
    if (type !== 'RequestMirror' && seen.has(type)) throw new RouteRejected('UnsupportedValue', `${where}: filter ${type} appears twice`);
    seen.add(type);
    switch (type) {
      case 'RequestHeaderModifier':
        fields.requestHeaderModifier = headerModifier(filter.requestHeaderModifier, `${where}: RequestHeaderModifier`);
        break;
      case 'ResponseHeaderModifier':
        fields.responseHeaderModifier = headerModifier(filter.responseHeaderModifier, `${where}: ResponseHeaderModifier`);
        break;
      case 'RequestRedirect': {
        const redirect = filter.requestRedirect ?? {};
        const scheme = redirect.scheme ?? '';
        if (scheme !== '' && scheme !== 'http' && scheme !== 'https') throw new RouteRejected('UnsupportedValue', `${where}: redirect scheme ${scheme} (http or https)`);
        const statusCode = redirect.statusCode ?? 302;
        if (!REDIRECT_CODES.has(statusCode)) throw new RouteRejected('UnsupportedValue', `${where}: redirect status code ${statusCode} (301, 302, 303, 307 or 308)`);
        const path = pathModifier(redirect.path, `${where}: RequestRedirect`, matchedByPrefix);
        fields.redirect = { scheme, hostname: redirect.hostname ?? '', port: redirect.port ?? 0, statusCode, ...(path ? { path } : {}) };
        break;
      }
      case 'URLRewrite': {
        const rewrite = filter.urlRewrite ?? {};
        const path = pathModifier(rewrite.path, `${where}: URLRewrite`, matchedByPrefix);
        fields.urlRewrite = { hostname: rewrite.hostname ?? '', ...(path ? { path } : {}) };
        break;
      }
      case 'RequestMirror': {
        const mirror = filter.requestMirror;
        if (!mirror?.backendRef) throw new RouteRejected('UnsupportedValue', `${where}: RequestMirror without a backendRef`);
        let fraction = 1;
        if (mirror.percent !== undefined) fraction = mirror.percent / 100;
        else if (mirror.fraction !== undefined) fraction = (mirror.fraction.numerator ?? 0) / (mirror.fraction.denominator ?? 100);
        if (!(fraction >= 0 && fraction <= 1)) throw new RouteRejected('UnsupportedValue', `${where}: RequestMirror share ${fraction} is not between 0 and 1`);
        const service = resolveBackend(mirror.backendRef, `${where}: RequestMirror`);
        if (service !== undefined && mirror.backendRef.port !== undefined) fields.mirrors.push({ service, port: mirror.backendRef.port, fraction });
        break;
      }
    }
  }
  if (fields.redirect && fields.urlRewrite) throw new RouteRejected('UnsupportedValue', `${where}: RequestRedirect and URLRewrite cannot be combined`);
  if (rule.timeouts?.request !== undefined) fields.requestTimeoutMs = durationMs(rule.timeouts.request, `${where}: timeouts.request`);
  if (rule.timeouts?.backendRequest !== undefined) fields.backendRequestTimeoutMs = durationMs(rule.timeouts.backendRequest, `${where}: timeouts.backendRequest`);
  if (fields.requestTimeoutMs > 0 && fields.backendRequestTimeoutMs > fields.requestTimeoutMs) {
    throw new RouteRejected('UnsupportedValue', `${where}: timeouts.backendRequest ${rule.timeouts!.backendRequest} is longer than timeouts.request ${rule.timeouts!.request}`);
  }
  if (rule.retry !== undefined) {
    const codes = rule.retry.codes ?? [];
    for (const code of codes) if (!Number.isInteger(code) || code < 400 || code > 599) throw new RouteRejected('UnsupportedValue', `${where}: retry code ${code} (400-599)`);
    const attempts = rule.retry.attempts ?? DEFAULT_RETRY_ATTEMPTS;
    if (!Number.isInteger(attempts) || attempts < 0) throw new RouteRejected('UnsupportedValue', `${where}: retry attempts ${attempts}`);
    const backoffMs = rule.retry.backoff !== undefined ? durationMs(rule.retry.backoff, `${where}: retry.backoff`) : DEFAULT_RETRY_BACKOFF_MS;
    fields.retry = { codes, attempts, backoffMs };
  }
  return fields;
}

/** A backendRef's filters (the header modifiers; other types are reported). */
export function compileBackendFilters(filters: FilterSpec[] | undefined, where: string): BackendFilterFields {
  const fields: BackendFilterFields = {};
  for (const filter of filters ?? []) {
    const type = filter.type ?? '(no type)';
    if (!SUPPORTED_BACKEND_FILTERS.has(type)) throw new RouteRejected('UnsupportedValue', `${where}: filter ${type} on a backendRef is not supported (RequestHeaderModifier, ResponseHeaderModifier)`);
    if (type === 'RequestHeaderModifier') {
      if (fields.requestHeaderModifier) throw new RouteRejected('UnsupportedValue', `${where}: filter ${type} appears twice`);
      fields.requestHeaderModifier = headerModifier(filter.requestHeaderModifier, `${where}: RequestHeaderModifier`);
    } else {
      if (fields.responseHeaderModifier) throw new RouteRejected('UnsupportedValue', `${where}: filter ${type} appears twice`);
      fields.responseHeaderModifier = headerModifier(filter.responseHeaderModifier, `${where}: ResponseHeaderModifier`);
    }
  }
  return fields;
}
