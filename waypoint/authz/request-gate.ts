/**
 * The waypoint's L7 policy step, called once at the start of each request (HTTP/1.1 or HTTP/2 compat: it reads only
 * method, url, headers and the stream's facts): RequestAuthentication first (an invalid JWT: 401), then
 * AuthorizationPolicy (denied: 403 `RBAC: access denied`, as Envoy answers), then ambit's LocalRateLimitPolicy
 * (429 `local_rate_limited` with x-ratelimit-* and retry-after, flag RL), for the policies that apply to the
 * request's Service at this waypoint. It answers refused requests itself and returns what it answered; allowed
 * requests go on with the normalised path and the header changes JWT rules ask for. Each decision is counted, kept
 * for the access log (`decisionOf`) and handed to `onDecision`.
 *
 * Owns: the order of those steps and the refusal responses. Must not know about: routing, upstreams, how policies are
 * matched (shared/policy/l7-evaluate.ts) or tokens verified (waypoint/jwt/).
 */
import type { L7Decision, RequestAuth } from '../../shared/policy/l7-evaluate.ts';
import type { AuthenticationResult } from '../jwt/request-authenticator.ts';
import type { AuthzMetrics } from './metrics.ts';
import type { PolicyTable, ServicePolicies } from './policy-table.ts';
import type { HboneRequest } from '../../shared/hbone/index.ts';
import { normalizePath, prepareStream, remoteAddress, requestAttributes, splitTarget, type PreparedStream } from './request-attributes.ts';

/** What the gate needs of a request: Node's http.IncomingMessage and http2.Http2ServerRequest both have it. */
export interface GateRequest {
  method?: string | undefined;
  url?: string | undefined;
  headers: Record<string, string | string[] | undefined>;
  resume(): unknown;
}

/** What the gate needs of a response (http.ServerResponse, http2.Http2ServerResponse). */
export interface GateResponse {
  writeHead(status: number, headers: Record<string, string | number>): unknown;
  end(body?: string): unknown;
}

/** The Service a request is for (the mesh state's object: per-Service policies are cached on it). */
export interface GateService {
  namespace: string;
  name: string;
}

/**
 * A refusal the gate answered: the status, Envoy's response flags (none: its RBAC and jwt_authn filters answer
 * locally without one) and its response code details (`rbac_access_denied_matched_policy[...]`,
 * `jwt_authn_access_denied{...}`) for logs.
 */
export interface GateRefusal {
  status: 401 | 403 | 429;
  /** `-`, or `RL` for a local rate limit (Envoy's flag). */
  responseFlags: '-' | 'RL';
  details: string;
}

/** The access log's view of a request's policy outcome. */
export interface AuthzLogFields {
  decision: 'allow' | 'deny' | 'unauthenticated';
  policy?: string;
  rule?: number;
  audit?: string;
  dryRun?: { allowedIfEnforced: boolean; policy: string; rule: number };
  jwt?: string;
  /** `namespace/policy/limit` of the LocalRateLimitPolicy limit that refused the request (429). */
  rateLimited?: string;
  reason: string;
}

/** Envoy's answer when its RBAC filter denies a request. */
const RBAC_DENIED_BODY = 'RBAC: access denied';
const RBAC_DENIED_HEADERS = { 'content-type': 'text/plain', 'content-length': RBAC_DENIED_BODY.length };

const RATE_LIMITED_BODY = 'local_rate_limited';

/** Where the gate leaves a request's outcome on the request object (a property: cheaper than a WeakMap per request). */
const AUTHZ_FIELDS = Symbol('ambit.authz');

/** The policy outcome of a request the gate saw (for the access-log line). */
export function decisionOf(request: object): AuthzLogFields | undefined {
  return (request as { [AUTHZ_FIELDS]?: AuthzLogFields })[AUTHZ_FIELDS];
}

/** Forgets the outcome left on a request object that serves another request next (the HTTP/1.1 path's reused exchange). */
export function forgetDecision(request: object): void {
  const holder = request as { [AUTHZ_FIELDS]?: AuthzLogFields };
  if (holder[AUTHZ_FIELDS] !== undefined) holder[AUTHZ_FIELDS] = undefined;
}

function remember(request: object, fields: AuthzLogFields): void {
  (request as { [AUTHZ_FIELDS]?: AuthzLogFields })[AUTHZ_FIELDS] = fields;
}

/** Log fields of a decision without a JWT, AUDIT or dry-run: built once per decision object and reused. */
const plainFields = new WeakMap<L7Decision, AuthzLogFields>();

function logFields(decision: L7Decision, auth: RequestAuth | undefined): AuthzLogFields {
  if (auth === undefined && decision.audit === undefined && decision.dryRun === undefined) {
    let fields = plainFields.get(decision);
    if (fields === undefined) {
      fields = buildFields(decision, undefined);
      plainFields.set(decision, fields);
    }
    return fields;
  }
  return buildFields(decision, auth);
}

function buildFields(decision: L7Decision, auth: RequestAuth | undefined): AuthzLogFields {
  const fields: AuthzLogFields = { decision: decision.allowed ? 'allow' : 'deny', reason: decision.reason };
  if (decision.policy) {
    fields.policy = decision.policy;
    fields.rule = decision.rule;
  }
  if (decision.audit) fields.audit = decision.audit;
  if (decision.dryRun) fields.dryRun = decision.dryRun;
  if (auth) fields.jwt = auth.principal;
  return fields;
}

export class RequestGate {
  readonly #table: PolicyTable;
  readonly #metrics: AuthzMetrics;
  readonly #trustedProxies: number;
  readonly #onDecision: (request: GateRequest, fields: AuthzLogFields) => void;
  readonly #streams = new WeakMap<object, PreparedStream>();

  constructor(options: { table: PolicyTable; metrics: AuthzMetrics; trustedProxies?: number; onDecision?: (request: GateRequest, fields: AuthzLogFields) => void }) {
    this.#table = options.table;
    this.#metrics = options.metrics;
    this.#trustedProxies = options.trustedProxies ?? 0;
    this.#onDecision = options.onDecision ?? (() => {});
  }

  /**
   * Decides one request. Undefined: go on (allowed, or no policy applies). A refusal: already answered; the caller
   * only records it. `hbone` is the terminated HBONE stream's request (its facts are parsed once per stream). A
   * promise only while a token never seen is verified: a steady client's requests are decided synchronously.
   */
  check(request: GateRequest, response: GateResponse, hbone: HboneRequest, service: GateService): GateRefusal | undefined | Promise<GateRefusal | undefined> {
    const policies = this.#table.forService(service);
    if (policies.index.empty && policies.authenticator.empty && policies.limiter.empty) return undefined;
    let prepared = this.#streams.get(hbone);
    if (prepared === undefined) {
      prepared = prepareStream({ peer: hbone.peerIdentity, peerAddress: hbone.remoteAddress, destinationHost: hbone.target.host, destinationPort: hbone.target.port });
      this.#streams.set(hbone, prepared);
    }
    const url = request.url ?? '/';
    const target = splitTarget(url);
    const path = normalizePath(target.path);
    if (path !== target.path) request.url = path + target.rest;
    if (policies.authenticator.empty) return this.#authorize(request, response, policies, prepared, path, undefined);
    const result = policies.authenticator.authenticate(request.headers, url);
    if (result instanceof Promise) return result.then((settled) => this.#authenticated(request, response, policies, prepared, path, settled));
    return this.#authenticated(request, response, policies, prepared, path, result);
  }

  #authenticated(request: GateRequest, response: GateResponse, policies: ServicePolicies, stream: PreparedStream, path: string, result: AuthenticationResult): GateRefusal | undefined {
    if (result.kind === 'invalid') {
      this.#metrics.jwt('invalid');
      const fields: AuthzLogFields = { decision: 'unauthenticated', reason: result.message };
      remember(request, fields);
      this.#onDecision(request, fields);
      request.resume();
      const host = request.headers.host ?? request.headers[':authority'] ?? '';
      response.writeHead(401, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(result.message), 'www-authenticate': `Bearer realm="http://${String(host)}${path}", error="invalid_token"` });
      response.end(result.message);
      return { status: 401, responseFlags: '-', details: `jwt_authn_access_denied{${result.message}}` };
    }
    let auth: RequestAuth | undefined;
    if (result.kind === 'verified') {
      auth = result.auth;
      this.#metrics.jwt(result.cached ? 'cached' : 'verified');
    }
    return this.#authorize(request, response, policies, stream, path, auth);
  }

  #authorize(request: GateRequest, response: GateResponse, policies: ServicePolicies, stream: PreparedStream, path: string, auth: RequestAuth | undefined): GateRefusal | undefined {
    if (!policies.index.empty) {
      const decision = policies.index.decide(requestAttributes(request.method ?? 'GET', path, request.headers, stream, auth, this.#trustedProxies));
      this.#metrics.decision(decision.allowed ? 'allow' : 'deny', decision.policy);
      if (decision.audit) this.#metrics.decision('audit', decision.audit);
      if (decision.dryRun) this.#metrics.dryRun(decision.dryRun.allowedIfEnforced, decision.dryRun.policy);
      const fields = logFields(decision, auth);
      remember(request, fields);
      this.#onDecision(request, fields);
      if (!decision.allowed) {
        request.resume();
        response.writeHead(403, RBAC_DENIED_HEADERS);
        response.end(RBAC_DENIED_BODY);
        return { status: 403, responseFlags: '-', details: `rbac_access_denied_matched_policy[${decision.policy || 'none'}]` };
      }
    }
    if (policies.limiter.empty) return undefined;
    const hit = policies.limiter.take({
      method: request.method ?? 'GET',
      path,
      sourcePrincipal: stream.sourcePrincipal,
      clientAddress: this.#trustedProxies > 0 ? remoteAddress(stream.peerAddress, request.headers['x-forwarded-for'], this.#trustedProxies) : stream.peerAddress,
      headers: request.headers,
    });
    if (hit === undefined) return undefined;
    this.#metrics.rateLimited(hit.limit);
    const fields: AuthzLogFields = { ...(decisionOf(request) ?? { decision: 'allow', reason: 'allowed: no L7 policy' }), rateLimited: hit.limit };
    remember(request, fields);
    this.#onDecision(request, fields);
    request.resume();
    // Envoy's local rate limit answer, with its draft-03 x-ratelimit-* headers.
    response.writeHead(429, {
      'content-type': 'text/plain',
      'content-length': RATE_LIMITED_BODY.length,
      'x-ratelimit-limit': `${hit.requests}, ${hit.requests};w=${hit.periodSeconds}`,
      'x-ratelimit-remaining': '0',
      'x-ratelimit-reset': String(hit.resetSeconds),
      'retry-after': String(hit.resetSeconds),
    });
    response.end(RATE_LIMITED_BODY);
    return { status: 429, responseFlags: 'RL', details: `local_rate_limited[${hit.limit}]` };
  }
}
