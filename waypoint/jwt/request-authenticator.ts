/**
 * RequestAuthentication at the waypoint, as Envoy's jwt_authn filter does it under Istio: the JWT rules that apply
 * to a Service are merged; a request's token is taken from the first configured location that has one (a header
 * after its prefix, a query parameter, a cookie; `Authorization: Bearer` and `?access_token=` when a rule names
 * none), matched to the rule of its issuer, and verified with jose against that rule's JWKS (signature, `exp`/`nbf`
 * with 60 s of clock skew as Envoy allows, issuer, audiences when the rule lists some). No token: the request goes on
 * unauthenticated (policy decides). A token that fails: 401 with Envoy's message.
 *
 * A verified token is cached by its text until it expires, its keys change or the cache is full, so a client that
 * sends the same token costs one signature check (`stats` counts both kinds).
 *
 * Owns: extraction, verification, the token cache, and the header changes a success asks for (token removed unless
 * forwardOriginalToken, outputPayloadToHeader, outputClaimToHeaders). Must not know about: policies' decisions,
 * fetching keys (jwks-source.ts), sockets.
 */
import type { JWTPayload } from 'jose';
import { joseModule } from '../optional-modules.ts';
import type { RequestAuth } from '../../shared/policy/l7-evaluate.ts';
import type { JwtRule, L7RequestAuthentication } from '../../shared/policy/l7-model.ts';
import { JwksSource, type FetchText } from './jwks-source.ts';

/** Envoy's default clock skew for exp and nbf. */
export const JWT_CLOCK_SKEW_S = 60;
/** Verified tokens kept at most; the oldest goes first. Enough for every steady client of one waypoint. */
export const TOKEN_CACHE_SIZE = 10_000;
/**
 * A refused token is remembered this long (per Service's rule set and key generation): a client resending a bad
 * token costs one signature check, not one per request. Short, because `nbf` makes some refusals temporary.
 */
export const REFUSED_TOKEN_TTL_MS = 60_000;

type Location = { kind: 'header'; name: string; prefix: string } | { kind: 'param'; name: string } | { kind: 'cookie'; name: string };

interface CompiledRule {
  rule: JwtRule;
  jwks: JwksSource;
  /** Locations this rule reads (a token found elsewhere is not its token). */
  locations: Set<string>;
}

interface CachedToken {
  auth: RequestAuth;
  /** The result a cache hit returns (built once). */
  hit: AuthenticationResult;
  rule: CompiledRule;
  /** `exp` in ms (Infinity without one). */
  expiresAtMs: number;
  generation: number;
  /** Header changes of a success, precomputed: name -> value. */
  outputs: readonly (readonly [string, string])[];
}

export type AuthenticationResult =
  | { kind: 'none' }
  | { kind: 'verified'; auth: RequestAuth; cached: boolean }
  | { kind: 'invalid'; message: string };

export interface AuthenticatorStats {
  verifications: number;
  cacheHits: number;
  failures: number;
}

const NO_TOKEN: AuthenticationResult = { kind: 'none' };

const DEFAULT_LOCATIONS: Location[] = [
  { kind: 'header', name: 'authorization', prefix: 'Bearer ' },
  { kind: 'param', name: 'access_token' },
];

function locationKey(location: Location): string {
  return location.kind === 'header' ? `header:${location.name}:${location.prefix}` : `${location.kind}:${location.name}`;
}

function locationsOf(rule: JwtRule): Location[] {
  if (rule.fromHeaders.length === 0 && rule.fromParams.length === 0 && rule.fromCookies.length === 0) return DEFAULT_LOCATIONS;
  return [
    ...rule.fromHeaders.map((header): Location => ({ kind: 'header', name: header.name.toLowerCase(), prefix: header.prefix })),
    ...rule.fromParams.map((name): Location => ({ kind: 'param', name })),
    ...rule.fromCookies.map((name): Location => ({ kind: 'cookie', name })),
  ];
}

function cookieValue(header: string | undefined, name: string): string | undefined {
  if (header === undefined) return undefined;
  for (const part of header.split(';')) {
    const equals = part.indexOf('=');
    if (equals !== -1 && part.slice(0, equals).trim() === name) return part.slice(equals + 1).trim();
  }
  return undefined;
}

function paramValue(url: string, name: string): string | undefined {
  const query = url.indexOf('?');
  if (query === -1) return undefined;
  return new URLSearchParams(url.slice(query + 1)).get(name) ?? undefined;
}

function claimText(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  return undefined;
}

function failureMessage(error: unknown): string {
  const joseErrors = joseModule().errors;
  if (error instanceof joseErrors.JWTExpired) return 'Jwt is expired';
  if (error instanceof joseErrors.JWTClaimValidationFailed) {
    if (error.claim === 'aud') return 'Audiences in Jwt are not allowed';
    if (error.claim === 'nbf') return 'Jwt not yet valid';
    if (error.claim === 'iss') return 'Jwt issuer is not configured';
  }
  if (error instanceof joseErrors.JWSSignatureVerificationFailed || error instanceof joseErrors.JWKSNoMatchingKey) return 'Jwt verification fails';
  return 'Jwt verification fails';
}

/** The merged JWT rules of one Service. Build one per policy set (RequestAuthenticator.for). */
export class ServiceAuthenticator {
  readonly #locations: Location[] = [];
  readonly #locationKeys: string[] = [];
  readonly #byIssuer = new Map<string, CompiledRule>();
  readonly #cache: Map<string, CachedToken>;
  readonly #stats: AuthenticatorStats;
  readonly #now: () => number;
  /** Refused tokens: token -> why, until when, and under which key generation (-1: before any key was used). */
  readonly #refused = new Map<string, { message: string; untilMs: number; jwks: JwksSource | undefined; generation: number }>();

  constructor(rules: readonly { rule: JwtRule; jwks: JwksSource }[], cache: Map<string, CachedToken>, stats: AuthenticatorStats, now: () => number = Date.now) {
    this.#cache = cache;
    this.#stats = stats;
    this.#now = now;
    const seen = new Set<string>();
    for (const { rule, jwks } of rules) {
      if (this.#byIssuer.has(rule.issuer)) continue;
      const locations = locationsOf(rule);
      const keys = locations.map(locationKey);
      this.#byIssuer.set(rule.issuer, { rule, jwks, locations: new Set(keys) });
      locations.forEach((location, index) => {
        if (seen.has(keys[index]!)) return;
        seen.add(keys[index]!);
        this.#locations.push(location);
        this.#locationKeys.push(keys[index]!);
      });
    }
  }

  get empty(): boolean {
    return this.#byIssuer.size === 0;
  }

  /**
   * Finds, verifies and applies a token. `headers` is changed in place on success (token removed, outputs set);
   * `url` is the request target (for query parameters). Synchronous (no promise) when there is no token or it was
   * verified or refused before: a steady client's requests never wait on a microtask here.
   */
  authenticate(headers: Record<string, string | string[] | undefined>, url: string): AuthenticationResult | Promise<AuthenticationResult> {
    let token: string | undefined;
    let location: Location | undefined;
    let key = '';
    for (let index = 0; index < this.#locations.length && token === undefined; index++) {
      const candidate = this.#locations[index]!;
      let value: string | undefined;
      if (candidate.kind === 'header') {
        const raw = headers[candidate.name];
        const text = Array.isArray(raw) ? raw[0] : raw;
        if (text !== undefined && text.length > candidate.prefix.length && (text.startsWith(candidate.prefix) || text.slice(0, candidate.prefix.length).toLowerCase() === candidate.prefix.toLowerCase())) {
          value = text.slice(candidate.prefix.length).trim();
        }
      } else if (candidate.kind === 'param') value = paramValue(url, candidate.name);
      else {
        const raw = headers.cookie;
        value = cookieValue(Array.isArray(raw) ? raw.join('; ') : raw, candidate.name);
      }
      if (value) {
        token = value;
        location = candidate;
        key = this.#locationKeys[index]!;
      }
    }
    if (token === undefined || location === undefined) return NO_TOKEN;

    const cached = this.#cache.get(token);
    if (cached !== undefined && cached.generation === cached.rule.jwks.generation && cached.rule.locations.has(key) && this.#now() < cached.expiresAtMs + JWT_CLOCK_SKEW_S * 1000 && this.#byIssuer.get(cached.rule.rule.issuer) === cached.rule) {
      this.#stats.cacheHits++;
      this.#apply(headers, location, cached);
      return cached.hit;
    }

    const refused = this.#refused.get(token);
    if (refused !== undefined && this.#now() < refused.untilMs && (refused.jwks === undefined || refused.jwks.generation === refused.generation)) {
      this.#stats.failures++;
      return { kind: 'invalid', message: refused.message };
    }

    return this.#verify(token, location, key, headers);
  }

  /** A token not seen before (or whose keys changed): decoded, matched to its issuer's rule, signature checked. */
  async #verify(token: string, location: Location, key: string, headers: Record<string, string | string[] | undefined>): Promise<AuthenticationResult> {
    let payload: JWTPayload;
    try {
      payload = joseModule().decodeJwt(token);
    } catch {
      return this.#refuse(token, undefined, 'Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections');
    }
    const compiled = typeof payload.iss === 'string' ? this.#byIssuer.get(payload.iss) : undefined;
    if (compiled === undefined || !compiled.locations.has(key)) return this.#refuse(token, undefined, 'Jwt issuer is not configured');
    await compiled.jwks.ready();
    const getKey = compiled.jwks.getKey;
    if (getKey === undefined) {
      this.#stats.failures++;
      return { kind: 'invalid', message: 'Jwks remote fetch is failed' };
    }
    const generation = compiled.jwks.generation;
    try {
      this.#stats.verifications++;
      const verified = await joseModule().jwtVerify(token, getKey, {
        issuer: compiled.rule.issuer,
        clockTolerance: JWT_CLOCK_SKEW_S,
        currentDate: new Date(this.#now()),
        ...(compiled.rule.audiences.length > 0 ? { audience: compiled.rule.audiences } : {}),
      });
      payload = verified.payload;
    } catch (error) {
      return this.#refuse(token, compiled.jwks, failureMessage(error));
    }
    const entry = this.#entry(token, compiled, payload, generation);
    if (this.#cache.size >= TOKEN_CACHE_SIZE) this.#cache.delete(this.#cache.keys().next().value!);
    this.#cache.set(token, entry);
    this.#apply(headers, location, entry);
    return { kind: 'verified', auth: entry.auth, cached: false };
  }

  #refuse(token: string, jwks: JwksSource | undefined, message: string): AuthenticationResult {
    this.#stats.failures++;
    if (this.#refused.size >= TOKEN_CACHE_SIZE) this.#refused.delete(this.#refused.keys().next().value!);
    this.#refused.set(token, { message, untilMs: this.#now() + REFUSED_TOKEN_TTL_MS, jwks, generation: jwks?.generation ?? -1 });
    return { kind: 'invalid', message };
  }

  #entry(token: string, compiled: CompiledRule, payload: JWTPayload, generation: number): CachedToken {
    const audiences = typeof payload.aud === 'string' ? [payload.aud] : Array.isArray(payload.aud) ? payload.aud : [];
    const outputs: [string, string][] = [];
    if (compiled.rule.outputPayloadToHeader) outputs.push([compiled.rule.outputPayloadToHeader.toLowerCase(), token.split('.')[1]!]);
    for (const { header, claim } of compiled.rule.outputClaimToHeaders) {
      let node: unknown = payload;
      for (const segment of claim.split('.')) node = node !== null && typeof node === 'object' ? (node as Record<string, unknown>)[segment] : undefined;
      const text = claimText(node);
      if (text !== undefined) outputs.push([header.toLowerCase(), text]);
    }
    const auth: RequestAuth = { principal: `${String(payload.iss)}/${String(payload.sub ?? '')}`, audiences, presenter: typeof payload.azp === 'string' ? payload.azp : '', claims: payload };
    return {
      auth,
      hit: { kind: 'verified', auth, cached: true },
      rule: compiled,
      expiresAtMs: typeof payload.exp === 'number' ? payload.exp * 1000 : Infinity,
      generation,
      outputs,
    };
  }

  #apply(headers: Record<string, string | string[] | undefined>, location: Location, entry: CachedToken): void {
    if (!entry.rule.rule.forwardOriginalToken && location.kind === 'header') delete headers[location.name];
    for (const [name, value] of entry.outputs) headers[name] = value;
  }
}

/**
 * The waypoint's RequestAuthentications: one JWKS source per distinct inline JWKS or URI (shared by rules and
 * Services, kept across policy updates while still used), one token cache, and a ServiceAuthenticator per
 * policy-set-and-Service (built by the policy table).
 */
export class RequestAuthenticator {
  readonly #fetchText: FetchText;
  readonly #refreshMs: number | undefined;
  readonly #onJwksError: (uri: string, error: Error) => void;
  readonly #now: () => number;
  #sources = new Map<string, JwksSource>();
  readonly #cache = new Map<string, CachedToken>();
  readonly stats: AuthenticatorStats = { verifications: 0, cacheHits: 0, failures: 0 };

  /** `now`: the clock for token expiry (tests move it). */
  constructor(options: { fetchText: FetchText; refreshMs?: number; onJwksError?: (uri: string, error: Error) => void; now?: () => number }) {
    this.#fetchText = options.fetchText;
    this.#now = options.now ?? Date.now;
    this.#refreshMs = options.refreshMs;
    this.#onJwksError = options.onJwksError ?? (() => {});
  }

  /** Starts fetching the keys of every rule in `policies` now; sources no policy uses any more stop. */
  update(policies: readonly L7RequestAuthentication[]): void {
    const next = new Map<string, JwksSource>();
    for (const policy of policies) {
      for (const rule of policy.jwtRules) {
        const key = rule.jwks ? `inline:${rule.jwks}` : `uri:${rule.jwksUri}`;
        if (next.has(key)) continue;
        const existing = this.#sources.get(key);
        if (existing) next.set(key, existing);
        else {
          try {
            next.set(key, rule.jwks ? JwksSource.inline(rule.jwks) : JwksSource.remote(rule.jwksUri, this.#fetchText, { ...(this.#refreshMs ? { refreshMs: this.#refreshMs } : {}), onError: this.#onJwksError }));
          } catch (error) {
            this.#onJwksError('inline', error as Error);
          }
        }
      }
    }
    for (const [key, source] of this.#sources) if (!next.has(key)) source.stop();
    this.#sources = next;
  }

  /** The authenticator for a Service given the RequestAuthentications that apply to it. */
  forService(policies: readonly L7RequestAuthentication[]): ServiceAuthenticator {
    const rules: { rule: JwtRule; jwks: JwksSource }[] = [];
    for (const policy of policies) {
      for (const rule of policy.jwtRules) {
        const jwks = this.#sources.get(rule.jwks ? `inline:${rule.jwks}` : `uri:${rule.jwksUri}`);
        // A rule whose inline JWKS could not be read keeps a source with no keys: its tokens are refused.
        rules.push({ rule, jwks: jwks ?? JwksSource.unusable() });
      }
    }
    return new ServiceAuthenticator(rules, this.#cache, this.stats, this.#now);
  }

  /** What the config dump shows: each remote JWKS and its state. */
  view(): object[] {
    return [...this.#sources.values()].filter((source) => source.uri !== 'inline').map((source) => ({ uri: source.uri, generation: source.generation, fetchedAt: source.fetchedAt ? new Date(source.fetchedAt).toISOString() : null, lastError: source.lastError ?? null }));
  }

  close(): void {
    for (const source of this.#sources.values()) source.stop();
  }
}
