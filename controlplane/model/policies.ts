/**
 * The store's AuthorizationPolicy and PeerAuthentication objects as `istio.security.Authorization` resources,
 * through the policy library (shared/policy: validation, compilation, PeerAuthentication conversion), and the
 * selector-scoped policy keys each workload lists in `authorization_policies`, as istiod sends them to ztunnel.
 *
 * Owns: recompiling the policy set from the store, reporting each policy's problems once (again only when that
 * policy changes, not on every recompile), and answering "which selector policies apply to this pod".
 * Must not know about: policy semantics (shared/policy), encoding, the xDS server.
 */
import type { K8sObject, PodObject } from '../../shared/k8s/objects.ts';
// Only the control plane's half of shared/policy (validate, compile, scope, encode), not the evaluator.
import { compilePolicyObject } from '../../shared/policy/compile.ts';
import type { PeerAuthenticationObject } from '../../shared/policy/crd-schema.ts';
import { authorizationKey, DEFAULT_ROOT_NAMESPACE, type Authorization } from '../../shared/policy/model.ts';
import { convertPeerAuthentication, peerAuthenticationLevels, peerAuthenticationToAuthorization, staticStrictAuthorization } from '../../shared/policy/peer-authentication.ts';
import { selectorPolicyKeysForWorkload } from '../../shared/policy/scope.ts';
import { validatePolicy } from '../../shared/policy/validate.ts';
import { authorizationToWireObject } from '../../shared/policy/wire.ts';
import type { ObjectStore } from '../store.ts';
import type { CompiledAuthorization } from '../xds/authorization-feed.ts';
import { namespaceOf } from './kube-types.ts';
import { ProblemReports } from './problem-reports.ts';

export interface PolicyProblem {
  /** `<namespace>/<name>` of the policy. */
  policy: string;
  kind: string;
  message: string;
}

export class PolicyModel {
  readonly #rootNamespace: string;
  readonly #problems: ProblemReports;
  #authorizationPolicies: Authorization[] = [];
  #peerAuthentications: PeerAuthenticationObject[] = [];
  /**
   * `<kind> <key>` -> the policy's spec and the problems reported for it. Every policy change recompiles every
   * policy; a warning such as "an ALLOW rule with HTTP fields" is logged again only when its own policy changed.
   */

  constructor(options: { rootNamespace?: string; onProblem?: (problem: PolicyProblem) => void } = {}) {
    this.#rootNamespace = options.rootNamespace ?? DEFAULT_ROOT_NAMESPACE;
    this.#problems = new ProblemReports(options.onProblem ?? (() => {}));
  }

  /** Recompiles every policy in the store; an invalid one is reported and left out, the others still apply. */
  compile(store: ObjectStore): CompiledAuthorization[] {
    this.#problems.begin();
    const report = (object: K8sObject, problem: PolicyProblem): void => this.#problems.add(object, problem);
    const byKey = new Map<string, Authorization>();
    const authorizationPolicies: Authorization[] = [];
    for (const object of store.list('AuthorizationPolicy')) {
      const key = `${namespaceOf(object)}/${object.metadata?.name}`;
      try {
        const result = compilePolicyObject(object, { rootNamespace: this.#rootNamespace });
        for (const warning of result.warnings) report(object, { policy: key, kind: 'AuthorizationPolicy', message: warning });
        if (result.authorization) {
          authorizationPolicies.push(result.authorization);
          byKey.set(authorizationKey(result.authorization), result.authorization);
        }
      } catch (error) {
        report(object, { policy: key, kind: 'AuthorizationPolicy', message: `rejected: ${(error as Error).message}` });
      }
    }
    const peerAuthentications: PeerAuthenticationObject[] = [];
    for (const object of store.list('PeerAuthentication')) {
      const result = validatePolicy(object);
      if (result.ok && result.kind === 'PeerAuthentication') peerAuthentications.push(result.object);
      else if (!result.ok) report(object, { policy: `${namespaceOf(object)}/${object.metadata?.name}`, kind: 'PeerAuthentication', message: `rejected: ${result.error.message}` });
    }
    // The resources PeerAuthentication can make workloads reference: Istio's static STRICT policy, and one
    // converted policy per workload-scoped PeerAuthentication with port-level modes.
    if (peerAuthentications.length > 0) {
      const strict = staticStrictAuthorization(this.#rootNamespace);
      byKey.set(authorizationKey(strict), strict);
    }
    for (const policy of peerAuthentications) {
      const labels = policy.spec?.selector?.matchLabels;
      if (!labels || Object.keys(labels).length === 0) continue;
      const levels = peerAuthenticationLevels({ namespace: policy.metadata.namespace ?? 'default', labels }, peerAuthentications, this.#rootNamespace);
      const converted = convertPeerAuthentication(policy, levels.namespace, levels.mesh, this.#rootNamespace);
      if (converted) byKey.set(authorizationKey(converted), converted);
    }
    this.#authorizationPolicies = authorizationPolicies;
    this.#peerAuthentications = peerAuthentications;
    this.#problems.flush();
    return [...byKey].map(([name, authorization]) => ({ name, resource: authorizationToWireObject(authorization) }));
  }


  /** Keys of the selector-scoped policies (and PeerAuthentication-derived ones) that apply to `pod`, sorted. */
  policiesForPod(pod: PodObject): string[] {
    const namespace = namespaceOf(pod);
    const labels = pod.metadata.labels ?? {};
    const keys = new Set(selectorPolicyKeysForWorkload(labels, namespace, this.#rootNamespace, this.#authorizationPolicies));
    if (this.#peerAuthentications.length > 0) {
      for (const policy of peerAuthenticationToAuthorization({ namespace, labels }, this.#peerAuthentications, this.#rootNamespace)) keys.add(authorizationKey(policy));
    }
    return [...keys].sort();
  }
}
