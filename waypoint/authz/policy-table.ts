/**
 * The L7 policies this waypoint received (`ambit.waypoint.HttpAuthorization` and `ambit.waypoint.RequestAuthentication`
 * over delta xDS), and for each Service the precompiled decision index and JWT authenticator built from the ones
 * that apply to it here (targets: this waypoint's Gateway, the Service, or the GatewayClass). Built on a Service's
 * first request after a change, then reused.
 *
 * Owns: decoding and checking resources (a malformed one is NACKed, the last good kept) and the per-Service cache.
 * Must not know about: HTTP, how decisions or verifications are made.
 */
import { L7PolicyIndex } from '../../shared/policy/l7-evaluate.ts';
import { targetsApply, type L7Authorization, type L7RequestAuthentication, type L7Target } from '../../shared/policy/l7-model.ts';
import type { XdsRejection, XdsResourceUpdate } from '../../shared/xds/client.ts';
import type { L7RateLimitPolicy } from '../../shared/policy/rate-limit.ts';
import type { RequestAuthenticator, ServiceAuthenticator } from '../jwt/request-authenticator.ts';
import { RateLimiter, type ServiceRateLimiter } from './rate-limiter.ts';

export interface ServicePolicies {
  index: L7PolicyIndex;
  authenticator: ServiceAuthenticator;
  limiter: ServiceRateLimiter;
}

const KEY_TYPES = new Set(['Route', 'SourcePrincipal', 'ClientIP', 'Header']);

function rateLimitFromXds(resource: unknown): L7RateLimitPolicy {
  const decoded = resource as Partial<L7RateLimitPolicy>;
  if (!decoded.name || !decoded.namespace) throw new Error('no name or namespace');
  const limits = decoded.limits ?? [];
  for (const limit of limits) {
    if (!(limit.requests >= 1) || !(limit.periodMs >= 1) || !(limit.burst >= 1)) throw new Error(`limit ${limit.name}: requests, periodMs and burst must be at least 1`);
    if (!KEY_TYPES.has(limit.keyType)) throw new Error(`limit ${limit.name}: unknown key type ${String(limit.keyType)}`);
    if (limit.keyType === 'Header' && !limit.header) throw new Error(`limit ${limit.name}: a Header key without a header`);
  }
  return { name: decoded.name, namespace: decoded.namespace, targets: checkTargets(decoded.targets), limits };
}

const ACTIONS = new Set(['ALLOW', 'DENY', 'AUDIT']);
const TARGET_KINDS = new Set(['Gateway', 'Service', 'GatewayClass']);

function checkTargets(targets: readonly L7Target[] | undefined): L7Target[] {
  if (!targets || targets.length === 0) throw new Error('no targets');
  for (const target of targets) if (!TARGET_KINDS.has(target.kind) || !target.name) throw new Error(`target ${target.kind}/${target.name} is not a Gateway, Service or GatewayClass`);
  return [...targets];
}

function authorizationFromXds(resource: unknown): L7Authorization {
  const decoded = resource as Partial<L7Authorization>;
  if (!decoded.name || !decoded.namespace) throw new Error('no name or namespace');
  if (!ACTIONS.has(decoded.action ?? '')) throw new Error(`action ${String(decoded.action)} is not ALLOW, DENY or AUDIT`);
  const rules = (decoded.rules ?? []).map((rule) => ({ from: rule.from ?? [], to: rule.to ?? [], when: rule.when ?? [] }));
  for (const rule of rules) for (const condition of rule.when) if (!condition.key) throw new Error('a condition without a key');
  return { name: decoded.name, namespace: decoded.namespace, action: decoded.action!, dryRun: decoded.dryRun ?? false, targets: checkTargets(decoded.targets), rules };
}

function requestAuthenticationFromXds(resource: unknown): L7RequestAuthentication {
  const decoded = resource as Partial<L7RequestAuthentication>;
  if (!decoded.name || !decoded.namespace) throw new Error('no name or namespace');
  const jwtRules = decoded.jwtRules ?? [];
  for (const rule of jwtRules) {
    if (!rule.issuer) throw new Error('a JWT rule without an issuer');
    if (!rule.jwks && !rule.jwksUri) throw new Error(`JWT rule of ${rule.issuer} has neither jwks nor jwksUri`);
  }
  return { name: decoded.name, namespace: decoded.namespace, targets: checkTargets(decoded.targets), jwtRules };
}

export class PolicyTable {
  readonly #gateway: string;
  readonly #authenticator: RequestAuthenticator;
  readonly #authorizations = new Map<string, L7Authorization>();
  readonly #requestAuthentications = new Map<string, L7RequestAuthentication>();
  readonly #rateLimits = new Map<string, L7RateLimitPolicy>();
  readonly #limiter: RateLimiter;
  /** By the mesh state's Service object: a changed Service is a new object, and a policy change replaces the map. */
  #byService = new WeakMap<object, ServicePolicies>();

  /** `gateway` is this waypoint's Gateway, `namespace/name`. */
  constructor(gateway: string, authenticator: RequestAuthenticator, limiter: RateLimiter = new RateLimiter()) {
    this.#gateway = gateway;
    this.#authenticator = authenticator;
    this.#limiter = limiter;
  }

  /** The policies for requests to `target` (a Service of the mesh state), built once per change. */
  forService(target: { namespace: string; name: string }): ServicePolicies {
    const cached = this.#byService.get(target);
    if (cached !== undefined) return cached;
    const service = `${target.namespace}/${target.name}`;
    const authorizations = [...this.#authorizations.values()].filter((policy) => targetsApply(policy.targets, this.#gateway, service));
    const requestAuthentications = [...this.#requestAuthentications.values()].filter((policy) => targetsApply(policy.targets, this.#gateway, service));
    const rateLimits = [...this.#rateLimits.values()].filter((policy) => targetsApply(policy.targets, this.#gateway, service));
    const built = { index: new L7PolicyIndex(authorizations), authenticator: this.#authenticator.forService(requestAuthentications), limiter: this.#limiter.forService(rateLimits) };
    this.#byService.set(target, built);
    return built;
  }

  readonly applyAuthorizations = (added: XdsResourceUpdate<unknown>[], removed: string[]): { rejected?: XdsRejection[] } | undefined =>
    this.#apply(this.#authorizations, authorizationFromXds, added, removed);

  readonly applyRequestAuthentications = (added: XdsResourceUpdate<unknown>[], removed: string[]): { rejected?: XdsRejection[] } | undefined => {
    const result = this.#apply(this.#requestAuthentications, requestAuthenticationFromXds, added, removed);
    this.#authenticator.update([...this.#requestAuthentications.values()]);
    return result;
  };

  readonly applyRateLimits = (added: XdsResourceUpdate<unknown>[], removed: string[]): { rejected?: XdsRejection[] } | undefined => {
    const result = this.#apply(this.#rateLimits, rateLimitFromXds, added, removed);
    this.#limiter.update([...this.#rateLimits.values()]);
    return result;
  };

  #apply<T>(map: Map<string, T>, decode: (resource: unknown) => T, added: XdsResourceUpdate<unknown>[], removed: string[]): { rejected?: XdsRejection[] } | undefined {
    const rejected: XdsRejection[] = [];
    for (const update of added) {
      try {
        map.set(update.name, decode(update.resource));
      } catch (error) {
        rejected.push({ name: update.name, reason: (error as Error).message });
      }
    }
    for (const name of removed) map.delete(name);
    this.#byService = new WeakMap();
    return rejected.length > 0 ? { rejected } : undefined;
  }

  view(): object {
    return { authorizationPolicies: [...this.#authorizations.values()], requestAuthentications: [...this.#requestAuthentications.values()], rateLimits: [...this.#rateLimits.values()], jwks: this.#authenticator.view() };
  }
}
