/**
 * What a manifest may say: the kinds the control plane understands (with their apiVersions) and the fields
 * each allows at the top level, in `metadata` and in `spec`. Anything else is reported, never silently ignored:
 * a misspelt `serviceAccountNmae` would otherwise quietly give a pod the default identity.
 *
 * Owns: the field lists (from the Kubernetes, Gateway API and Istio API references) and the check.
 * Must not know about: files, YAML, positions (the caller maps a field path to a line).
 */

export interface SchemaProblem {
  /** Path of the offending field, e.g. ['spec', 'serviceAccountNmae']; empty for the whole object. */
  path: string[];
  message: string;
}

interface KindSchema {
  apiVersions: string[];
  topLevel: string[];
  /** Allowed `spec` fields; undefined when spec is not checked (a kind stored for other consumers). */
  spec?: string[];
}

const COMMON_TOP_LEVEL = ['apiVersion', 'kind', 'metadata'];

const METADATA_FIELDS = new Set([
  'name', 'namespace', 'uid', 'labels', 'annotations', 'resourceVersion', 'generation', 'creationTimestamp', 'deletionTimestamp',
  'deletionGracePeriodSeconds', 'ownerReferences', 'finalizers', 'managedFields', 'generateName', 'selfLink',
]);

const POD_SPEC = [
  'activeDeadlineSeconds', 'affinity', 'automountServiceAccountToken', 'containers', 'dnsConfig', 'dnsPolicy', 'enableServiceLinks',
  'ephemeralContainers', 'hostAliases', 'hostIPC', 'hostNetwork', 'hostPID', 'hostUsers', 'hostname', 'hostnameOverride', 'imagePullSecrets',
  'initContainers', 'nodeName', 'nodeSelector', 'os', 'overhead', 'preemptionPolicy', 'priority', 'priorityClassName', 'readinessGates',
  'resourceClaims', 'resources', 'restartPolicy', 'runtimeClassName', 'schedulerName', 'schedulingGates', 'securityContext', 'serviceAccount',
  'serviceAccountName', 'setHostnameAsFQDN', 'shareProcessNamespace', 'subdomain', 'terminationGracePeriodSeconds', 'tolerations',
  'topologySpreadConstraints', 'volumes',
];

const SERVICE_SPEC = [
  'allocateLoadBalancerNodePorts', 'clusterIP', 'clusterIPs', 'externalIPs', 'externalName', 'externalTrafficPolicy', 'healthCheckNodePort',
  'internalTrafficPolicy', 'ipFamilies', 'ipFamilyPolicy', 'loadBalancerClass', 'loadBalancerIP', 'loadBalancerSourceRanges', 'ports',
  'publishNotReadyAddresses', 'selector', 'sessionAffinity', 'sessionAffinityConfig', 'trafficDistribution', 'type',
];

export const KIND_SCHEMAS: Record<string, KindSchema> = {
  Namespace: { apiVersions: ['v1'], topLevel: [...COMMON_TOP_LEVEL, 'spec', 'status'], spec: ['finalizers'] },
  Node: { apiVersions: ['v1'], topLevel: [...COMMON_TOP_LEVEL, 'spec', 'status'], spec: ['configSource', 'externalID', 'podCIDR', 'podCIDRs', 'providerID', 'taints', 'unschedulable'] },
  Pod: { apiVersions: ['v1'], topLevel: [...COMMON_TOP_LEVEL, 'spec', 'status'], spec: POD_SPEC },
  Service: { apiVersions: ['v1'], topLevel: [...COMMON_TOP_LEVEL, 'spec', 'status'], spec: SERVICE_SPEC },
  EndpointSlice: { apiVersions: ['discovery.k8s.io/v1'], topLevel: [...COMMON_TOP_LEVEL, 'addressType', 'endpoints', 'ports'] },
  Gateway: {
    apiVersions: ['gateway.networking.k8s.io/v1', 'gateway.networking.k8s.io/v1beta1'],
    topLevel: [...COMMON_TOP_LEVEL, 'spec', 'status'],
    spec: ['gatewayClassName', 'listeners', 'addresses', 'infrastructure', 'allowedListeners', 'backendTLS', 'tls', 'defaultScope'],
  },
  AuthorizationPolicy: {
    apiVersions: ['security.istio.io/v1', 'security.istio.io/v1beta1'],
    topLevel: [...COMMON_TOP_LEVEL, 'spec', 'status'],
    spec: ['selector', 'targetRef', 'targetRefs', 'rules', 'action', 'provider'],
  },
  PeerAuthentication: {
    apiVersions: ['security.istio.io/v1', 'security.istio.io/v1beta1'],
    topLevel: [...COMMON_TOP_LEVEL, 'spec', 'status'],
    spec: ['selector', 'mtls', 'portLevelMtls'],
  },
  RequestAuthentication: {
    apiVersions: ['security.istio.io/v1', 'security.istio.io/v1beta1'],
    topLevel: [...COMMON_TOP_LEVEL, 'spec', 'status'],
    spec: ['selector', 'targetRef', 'targetRefs', 'jwtRules'],
  },
  LocalRateLimitPolicy: { apiVersions: ['policy.ambit.dev/v1alpha1'], topLevel: [...COMMON_TOP_LEVEL, 'spec', 'status'], spec: ['targetRefs', 'limits'] },
  // Kinds other parts of ambit read (waypoint routing and traffic policy): accepted and stored, spec unchecked here.
  HTTPRoute: { apiVersions: ['gateway.networking.k8s.io/v1', 'gateway.networking.k8s.io/v1beta1'], topLevel: [...COMMON_TOP_LEVEL, 'spec', 'status'] },
  GRPCRoute: { apiVersions: ['gateway.networking.k8s.io/v1'], topLevel: [...COMMON_TOP_LEVEL, 'spec', 'status'] },
  // DestinationRule: spec's top level checked here; the rest, with paths, by controlplane/model/destination-rules.ts.
  DestinationRule: {
    apiVersions: ['networking.istio.io/v1', 'networking.istio.io/v1beta1'],
    topLevel: [...COMMON_TOP_LEVEL, 'spec', 'status'],
    spec: ['host', 'trafficPolicy', 'subsets', 'exportTo', 'workloadSelector'],
  },
  // VirtualService on waypoints: spec's top level checked here; the rest by controlplane/model/virtual-services.ts.
  VirtualService: {
    apiVersions: ['networking.istio.io/v1', 'networking.istio.io/v1beta1'],
    topLevel: [...COMMON_TOP_LEVEL, 'spec', 'status'],
    spec: ['hosts', 'gateways', 'http', 'tls', 'tcp', 'exportTo'],
  },
  ServiceAccount: { apiVersions: ['v1'], topLevel: [...COMMON_TOP_LEVEL, 'secrets', 'imagePullSecrets', 'automountServiceAccountToken'] },
};

const TOP_LEVEL_SETS = new Map(Object.entries(KIND_SCHEMAS).map(([kind, schema]) => [kind, new Set(schema.topLevel)]));
const SPEC_SETS = new Map(Object.entries(KIND_SCHEMAS).flatMap(([kind, schema]) => (schema.spec ? [[kind, new Set(schema.spec)] as const] : [])));

export function isKnownKind(kind: string): boolean {
  return kind in KIND_SCHEMAS;
}

function isMapping(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Problems with one object; an empty list means the control plane understands every field it sets. */
export function checkObject(object: Record<string, unknown>): SchemaProblem[] {
  const kind = String(object.kind);
  const apiVersion = String(object.apiVersion ?? '');
  const schema = KIND_SCHEMAS[kind];
  if (!schema) {
    return [{ path: ['kind'], message: `unknown kind ${apiVersion ? `${apiVersion}/` : ''}${kind}: ambit understands ${Object.keys(KIND_SCHEMAS).join(', ')}` }];
  }
  if (!schema.apiVersions.includes(apiVersion)) {
    return [{ path: ['apiVersion'], message: `${kind} with apiVersion "${apiVersion}" is not understood; use ${schema.apiVersions.join(' or ')}` }];
  }
  const problems: SchemaProblem[] = [];
  const topLevel = TOP_LEVEL_SETS.get(kind)!;
  for (const field of Object.keys(object)) if (!topLevel.has(field)) problems.push({ path: [field], message: `unknown field "${field}" in ${kind}` });
  if (isMapping(object.metadata)) {
    for (const field of Object.keys(object.metadata)) if (!METADATA_FIELDS.has(field)) problems.push({ path: ['metadata', field], message: `unknown field "metadata.${field}" in ${kind}` });
  }
  const spec = SPEC_SETS.get(kind);
  if (spec && object.spec !== undefined) {
    if (!isMapping(object.spec)) problems.push({ path: ['spec'], message: `${kind} spec must be a mapping` });
    else for (const field of Object.keys(object.spec)) if (!spec.has(field)) problems.push({ path: ['spec', field], message: `unknown field "spec.${field}" in ${kind}` });
  }
  return problems;
}
