/**
 * Service accounts and what each may do in the API server.
 *
 * Owns: the control plane's rights (list/watch every kind its Kubernetes source watches, TokenReviews to check
 * agents and waypoints, the waypoints' ServiceAccount/Service/Deployment and Gateway and route status, the status of
 * the L7 policies it compiles for waypoints, ConfigMaps to publish the mesh root in every namespace, the CA Secret in
 * its own namespace) and the
 * agent's (get pods and namespaces: the CNI plugin's lookup runs with the agent's service account, through the
 * kubeconfig the installer writes; patch pods: the agent's redirection annotation).
 * Must not know about: the workloads that use these accounts (agent.ts, controlplane.ts).
 */
import { ServiceAccount } from 'kubernetes-models/v1/ServiceAccount';
import { ClusterRole } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRole';
import { ClusterRoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRoleBinding';
import { Role } from 'kubernetes-models/rbac.authorization.k8s.io/v1/Role';
import { RoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1/RoleBinding';
import { AGENT, CONTROLPLANE, labels } from './names.ts';
import type { InstallValues } from './values.ts';

const READ = ['get', 'list', 'watch'];

function account(name: string, namespace: string) {
  return new ServiceAccount({ metadata: { name, namespace, labels: labels(name) } });
}

function clusterBinding(name: string, namespace: string) {
  return new ClusterRoleBinding({
    metadata: { name, labels: labels(name) },
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name },
    subjects: [{ kind: 'ServiceAccount', name, namespace }],
  });
}

export function rbacObjects(values: InstallValues) {
  const { namespace } = values;
  return [
    account(CONTROLPLANE, namespace),
    new ClusterRole({
      metadata: { name: CONTROLPLANE, labels: labels(CONTROLPLANE) },
      rules: [
        { apiGroups: [''], resources: ['namespaces', 'nodes', 'pods', 'services'], verbs: READ },
        { apiGroups: ['discovery.k8s.io'], resources: ['endpointslices'], verbs: READ },
        { apiGroups: ['gateway.networking.k8s.io'], resources: ['gateways', 'httproutes', 'grpcroutes'], verbs: READ },
        // The waypoint deployment controller: each waypoint Gateway's ServiceAccount, Service and Deployment
        // (created, then merged into place), the Gateway's status, and the routes' status.
        { apiGroups: [''], resources: ['serviceaccounts', 'services'], verbs: ['create', 'patch'] },
        { apiGroups: ['apps'], resources: ['deployments'], verbs: ['create', 'patch'] },
        { apiGroups: ['gateway.networking.k8s.io'], resources: ['gateways/status', 'httproutes/status', 'grpcroutes/status'], verbs: ['patch'] },
        { apiGroups: ['security.istio.io'], resources: ['authorizationpolicies', 'peerauthentications', 'requestauthentications'], verbs: READ },
        { apiGroups: ['policy.ambit.dev'], resources: ['localratelimitpolicies'], verbs: READ },
        // Accepted/Invalid conditions written back on the L7 policies waypoints enforce (controlplane/status/).
        { apiGroups: ['security.istio.io'], resources: ['authorizationpolicies/status', 'requestauthentications/status'], verbs: ['get', 'patch', 'update'] },
        { apiGroups: ['policy.ambit.dev'], resources: ['localratelimitpolicies/status'], verbs: ['get', 'patch', 'update'] },
        // Waypoint traffic policy and routes (issue 13 items 3 and 4).
        { apiGroups: ['networking.istio.io'], resources: ['destinationrules', 'virtualservices'], verbs: READ },
        // Agents present their service account tokens; the CA and xDS check them (and the node they are bound to).
        { apiGroups: ['authentication.k8s.io'], resources: ['tokenreviews'], verbs: ['create'] },
        // ConfigMap istio-ca-root-cert in every namespace, as istiod publishes it, watched to write it again if changed.
        { apiGroups: [''], resources: ['configmaps'], verbs: ['get', 'list', 'watch', 'create', 'update'] },
      ],
    }),
    clusterBinding(CONTROLPLANE, namespace),
    // The CA's root key: Secret istio-ca-secret, only in the control plane's namespace.
    new Role({
      metadata: { name: CONTROLPLANE, namespace, labels: labels(CONTROLPLANE) },
      rules: [{ apiGroups: [''], resources: ['secrets'], verbs: ['get', 'create', 'update'] }],
    }),
    new RoleBinding({
      metadata: { name: CONTROLPLANE, namespace, labels: labels(CONTROLPLANE) },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: CONTROLPLANE },
      subjects: [{ kind: 'ServiceAccount', name: CONTROLPLANE, namespace }],
    }),
    account(AGENT, namespace),
    new ClusterRole({
      metadata: { name: AGENT, labels: labels(AGENT) },
      rules: [
        { apiGroups: [''], resources: ['pods', 'namespaces'], verbs: ['get'] },
        // The agent marks captured pods (ambient.istio.io/redirection), as Istio's CNI node agent does.
        { apiGroups: [''], resources: ['pods'], verbs: ['patch'] },
      ],
    }),
    clusterBinding(AGENT, namespace),
  ];
}
