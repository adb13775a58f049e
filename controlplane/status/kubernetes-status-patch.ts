/**
 * How the status writer reaches the API server: a JSON merge patch of `{status}` on the object's status
 * subresource (`PATCH /apis/<group>/<version>/namespaces/<ns>/<plural>/<name>/status`), with the control plane's
 * service account (RBAC in deploy/rbac.ts grants `patch` on exactly these subresources).
 *
 * Owns: kind -> group/version/plural for the policy kinds, and the request. Must not know about: what the status says.
 */
import { CustomObjectsApi, PatchStrategy, setHeaderOptions, type KubeConfig } from '@kubernetes/client-node';
import type { StatusTarget } from './status-writer.ts';

const RESOURCES: Record<string, { group: string; version: string; plural: string }> = {
  AuthorizationPolicy: { group: 'security.istio.io', version: 'v1', plural: 'authorizationpolicies' },
  RequestAuthentication: { group: 'security.istio.io', version: 'v1', plural: 'requestauthentications' },
  LocalRateLimitPolicy: { group: 'policy.ambit.dev', version: 'v1alpha1', plural: 'localratelimitpolicies' },
};

export function kubernetesStatusPatch(kubeConfig: KubeConfig): (target: StatusTarget, status: Record<string, unknown>) => Promise<void> {
  const api = kubeConfig.makeApiClient(CustomObjectsApi);
  const options = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
  return async (target, status) => {
    const resource = RESOURCES[target.kind];
    if (!resource) throw new Error(`no status subresource known for kind ${target.kind}`);
    await api.patchNamespacedCustomObjectStatus({ ...resource, namespace: target.namespace, name: target.name, body: { status } }, options);
  };
}
