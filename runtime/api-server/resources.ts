/**
 * The resources the local cluster's Kubernetes API serves: every kind the local runtime runs (Namespaces, Pods,
 * Deployments, ServiceAccounts, Services, Nodes) and every kind ambit's control plane reads (its Kubernetes source
 * watches each of them), with the names discovery announces (plural, singular, short names), the verbs kubectl may
 * use on them and which have a status subresource.
 *
 * Owns: the catalogue and lookups over it (by path segment, by kind, by what a user types).
 * Must not know about: where objects are stored or how requests are served.
 */

export interface ApiResource {
  /** '' for the core group (`/api/v1`). */
  group: string;
  version: string;
  kind: string;
  /** The path segment and the name `kubectl get` takes. */
  plural: string;
  singular: string;
  namespaced: boolean;
  shortNames: string[];
  /** What a user may change through the API; the rest is the runtime's own (read-only to clients). */
  writable: boolean;
  /**
   * Has a `status` subresource a controller writes (the control plane's Accepted conditions and route parents); the
   * status of the runtime's own kinds (Pods, Services, Deployments) is the runtime's.
   */
  statusSubresource: boolean;
}

const ALL_VERBS = ['create', 'delete', 'get', 'list', 'patch', 'update', 'watch'];
const READ_VERBS = ['get', 'list', 'watch'];

function resource(group: string, version: string, kind: string, plural: string, namespaced: boolean, shortNames: string[] = [], writable = true, statusSubresource = false): ApiResource {
  return { group, version, kind, plural, singular: kind.toLowerCase(), namespaced, shortNames, writable, statusSubresource };
}

/** A mesh resource: the control plane writes its status. */
function meshResource(group: string, version: string, kind: string, plural: string, shortNames: string[] = []): ApiResource {
  return resource(group, version, kind, plural, true, shortNames, true, true);
}

export const API_RESOURCES: readonly ApiResource[] = [
  resource('', 'v1', 'Namespace', 'namespaces', false, ['ns']),
  resource('', 'v1', 'Node', 'nodes', false, ['no'], false),
  resource('', 'v1', 'Pod', 'pods', true, ['po']),
  resource('', 'v1', 'Service', 'services', true, ['svc']),
  resource('', 'v1', 'ServiceAccount', 'serviceaccounts', true, ['sa']),
  resource('', 'v1', 'ConfigMap', 'configmaps', true, ['cm']),
  resource('apps', 'v1', 'Deployment', 'deployments', true, ['deploy']),
  resource('discovery.k8s.io', 'v1', 'EndpointSlice', 'endpointslices', true),
  meshResource('security.istio.io', 'v1', 'AuthorizationPolicy', 'authorizationpolicies', ['ap']),
  meshResource('security.istio.io', 'v1', 'PeerAuthentication', 'peerauthentications', ['pa']),
  meshResource('security.istio.io', 'v1', 'RequestAuthentication', 'requestauthentications', ['ra']),
  meshResource('networking.istio.io', 'v1', 'DestinationRule', 'destinationrules', ['dr']),
  meshResource('networking.istio.io', 'v1', 'VirtualService', 'virtualservices', ['vs']),
  meshResource('gateway.networking.k8s.io', 'v1', 'Gateway', 'gateways', ['gtw']),
  meshResource('gateway.networking.k8s.io', 'v1', 'HTTPRoute', 'httproutes'),
  meshResource('gateway.networking.k8s.io', 'v1', 'GRPCRoute', 'grpcroutes'),
  meshResource('policy.ambit.dev', 'v1alpha1', 'LocalRateLimitPolicy', 'localratelimitpolicies'),
];

export function groupVersion(resource: ApiResource): string {
  return resource.group === '' ? resource.version : `${resource.group}/${resource.version}`;
}

/** The collection path, for one namespace when given (`/api/v1/namespaces/<ns>/pods`) or across all. */
export function collectionPath(resource: ApiResource, namespace?: string): string {
  const root = resource.group === '' ? `/api/${resource.version}` : `/apis/${resource.group}/${resource.version}`;
  return resource.namespaced && namespace !== undefined ? `${root}/namespaces/${namespace}/${resource.plural}` : `${root}/${resource.plural}`;
}

export function resourceVerbs(resource: ApiResource): string[] {
  return resource.writable ? ALL_VERBS : READ_VERBS;
}

export function resourceByKind(kind: string): ApiResource | undefined {
  return API_RESOURCES.find((candidate) => candidate.kind === kind);
}

export function resourceAt(group: string, version: string, plural: string): ApiResource | undefined {
  return API_RESOURCES.find((candidate) => candidate.group === group && candidate.version === version && candidate.plural === plural);
}

/** The API groups served, each with its one version, core excluded. */
export function apiGroups(): { name: string; version: string }[] {
  const groups = new Map<string, string>();
  for (const entry of API_RESOURCES) if (entry.group !== '') groups.set(entry.group, entry.version);
  return [...groups].map(([name, version]) => ({ name, version }));
}
