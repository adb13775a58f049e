/**
 * The store's AuthorizationPolicy and RequestAuthentication objects (and ambit's LocalRateLimitPolicy) that attach to waypoints (`targetRefs` to a
 * waypoint Gateway, a Service, or the GatewayClass `istio-waypoint` from the root namespace), compiled for waypoints
 * as `ambit.waypoint.HttpAuthorization` and `ambit.waypoint.RequestAuthentication` resources
 * (shared/xds/proto/ambit/waypoint/policies.proto). Selector and namespace-wide AuthorizationPolicies stay the
 * agents' (controlplane/model/policies.ts); waypoints ignore them, as in Istio.
 *
 * Owns: recompiling both sets from the store, and reporting each object's problems (refused targets, CUSTOM,
 * invalid fields with their paths) once per change of that object.
 * Must not know about: policy semantics (shared/policy), encoding, the xDS server.
 */
import type { K8sObject } from '../../shared/k8s/objects.ts';
import { compileWaypointAuthorization } from '../../shared/policy/l7-compile.ts';
import type { L7Authorization, L7RequestAuthentication } from '../../shared/policy/l7-model.ts';
import { DEFAULT_ROOT_NAMESPACE } from '../../shared/policy/model.ts';
import { compileRequestAuthentication, validateRequestAuthentication } from '../../shared/policy/request-authentication.ts';
import { validatePolicy } from '../../shared/policy/validate.ts';
import { compileRateLimitPolicy, RATE_LIMIT_KIND, validateRateLimitPolicy, type L7RateLimitPolicy } from '../../shared/policy/rate-limit.ts';
import type { ObjectStore } from '../store.ts';
import { namespaceOf } from './kube-types.ts';
import type { PolicyProblem } from './policies.ts';
import { ProblemReports } from './problem-reports.ts';

export interface CompiledWaypointPolicies {
  /** `namespace/name` -> protobufjs `fromObject` input for ambit.waypoint.HttpAuthorization. */
  authorizations: Map<string, L7Authorization>;
  /** `namespace/name` -> input for ambit.waypoint.RequestAuthentication. */
  requestAuthentications: Map<string, L7RequestAuthentication>;
  /** `namespace/name` -> input for ambit.waypoint.RateLimit. */
  rateLimits: Map<string, L7RateLimitPolicy>;
}

export class WaypointPolicyModel {
  readonly #rootNamespace: string;
  readonly #problems: ProblemReports;

  constructor(options: { rootNamespace?: string; onProblem?: (problem: PolicyProblem) => void } = {}) {
    this.#rootNamespace = options.rootNamespace ?? DEFAULT_ROOT_NAMESPACE;
    this.#problems = new ProblemReports(options.onProblem ?? (() => {}));
  }

  compile(store: ObjectStore): CompiledWaypointPolicies {
    this.#problems.begin();
    const report = (object: K8sObject, problem: PolicyProblem): void => this.#problems.add(object, problem);
    const authorizations = new Map<string, L7Authorization>();
    for (const object of store.list('AuthorizationPolicy')) {
      const spec = (object as { spec?: { targetRef?: unknown; targetRefs?: unknown[] } }).spec;
      if (!spec?.targetRef && !spec?.targetRefs?.length) continue;
      const key = `${namespaceOf(object)}/${object.metadata?.name}`;
      const validated = validatePolicy(object);
      // Invalid objects are reported by the agents' policy model already (same store, same validation).
      if (!validated.ok || validated.kind !== 'AuthorizationPolicy') continue;
      const result = compileWaypointAuthorization(validated.object, { rootNamespace: this.#rootNamespace });
      for (const warning of result.warnings) report(object, { policy: key, kind: 'AuthorizationPolicy', message: warning });
      if (result.authorization) authorizations.set(key, result.authorization);
    }
    const requestAuthentications = new Map<string, L7RequestAuthentication>();
    for (const object of store.list('RequestAuthentication')) {
      const key = `${namespaceOf(object)}/${object.metadata?.name}`;
      try {
        const result = compileRequestAuthentication(validateRequestAuthentication(object), { rootNamespace: this.#rootNamespace });
        for (const warning of result.warnings) report(object, { policy: key, kind: 'RequestAuthentication', message: warning });
        if (result.requestAuthentication) requestAuthentications.set(key, result.requestAuthentication);
      } catch (error) {
        report(object, { policy: key, kind: 'RequestAuthentication', message: `rejected: ${(error as Error).message}` });
      }
    }
    const rateLimits = new Map<string, L7RateLimitPolicy>();
    for (const object of store.list(RATE_LIMIT_KIND)) {
      const key = `${namespaceOf(object)}/${object.metadata?.name}`;
      try {
        const result = compileRateLimitPolicy(validateRateLimitPolicy(object), { rootNamespace: this.#rootNamespace });
        for (const warning of result.warnings) report(object, { policy: key, kind: RATE_LIMIT_KIND, message: warning });
        if (result.policy) rateLimits.set(key, result.policy);
      } catch (error) {
        report(object, { policy: key, kind: RATE_LIMIT_KIND, message: `rejected: ${(error as Error).message}` });
      }
    }
    this.#problems.flush();
    return { authorizations, requestAuthentications, rateLimits };
  }

}
