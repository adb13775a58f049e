/**
 * JSON schemas for Istio's `security.istio.io` AuthorizationPolicy and PeerAuthentication (v1 and v1beta1, which
 * carry the same fields), written from the fields Istio publishes in security/v1/authorization_policy.proto,
 * peer_authentication.proto and type/v1beta1/selector.proto.
 *
 * Owns: the structure of the objects — which fields exist, their types, and the enums. Every object schema says
 * `additionalProperties: false`, so a misspelt field is an error rather than silently ignored.
 * Must not know about: value rules a schema cannot say well (CIDR syntax, principal form, port ranges, dry-run
 * annotation values); validate.ts checks those.
 */

type Schema = Record<string, unknown>;

const stringList: Schema = { type: 'array', items: { type: 'string' } };
const stringMap: Schema = { type: 'object', additionalProperties: { type: 'string' } };

function object(properties: Record<string, Schema>, required: string[] = []): Schema {
  return { type: 'object', properties, required, additionalProperties: false };
}

/** Kubernetes ObjectMeta: every field the API server may return, so objects read back from a cluster validate. */
const objectMeta = object(
  {
    name: { type: 'string', minLength: 1 },
    generateName: { type: 'string' },
    namespace: { type: 'string' },
    selfLink: { type: 'string' },
    uid: { type: 'string' },
    resourceVersion: { type: 'string' },
    generation: { type: 'integer' },
    creationTimestamp: { type: ['string', 'null'] },
    deletionTimestamp: { type: ['string', 'null'] },
    deletionGracePeriodSeconds: { type: 'integer' },
    labels: stringMap,
    annotations: stringMap,
    ownerReferences: { type: 'array', items: { type: 'object' } },
    finalizers: stringList,
    managedFields: { type: 'array', items: { type: 'object' } },
  },
  ['name'],
);

/** istio.type.v1beta1.WorkloadSelector */
const workloadSelector = object({ matchLabels: stringMap });

/** istio.type.v1beta1.PolicyTargetReference */
const policyTargetReference = object(
  { group: { type: 'string' }, kind: { type: 'string' }, name: { type: 'string' }, namespace: { type: 'string' } },
  ['kind', 'name'],
);

/** istio.security.v1.Source */
const source = object({
  principals: stringList,
  notPrincipals: stringList,
  requestPrincipals: stringList,
  notRequestPrincipals: stringList,
  namespaces: stringList,
  notNamespaces: stringList,
  ipBlocks: stringList,
  notIpBlocks: stringList,
  remoteIpBlocks: stringList,
  notRemoteIpBlocks: stringList,
  serviceAccounts: stringList,
  notServiceAccounts: stringList,
});

/** istio.security.v1.Operation */
const operation = object({
  hosts: stringList,
  notHosts: stringList,
  ports: stringList,
  notPorts: stringList,
  methods: stringList,
  notMethods: stringList,
  paths: stringList,
  notPaths: stringList,
});

/** istio.security.v1.Condition */
const condition = object({ key: { type: 'string' }, values: stringList, notValues: stringList }, ['key']);

/** istio.security.v1.Rule */
const rule = object({
  from: { type: 'array', items: object({ source }) },
  to: { type: 'array', items: object({ operation }) },
  when: { type: 'array', items: condition },
});

export const AUTHORIZATION_ACTIONS = ['ALLOW', 'DENY', 'AUDIT', 'CUSTOM'] as const;
export const MTLS_MODES = ['UNSET', 'DISABLE', 'PERMISSIVE', 'STRICT'] as const;
export const SECURITY_API_VERSIONS = ['security.istio.io/v1', 'security.istio.io/v1beta1'] as const;

/** The API server's status subresource is written by controllers, not users: accepted as is and ignored. */
const status: Schema = { type: 'object' };

export const authorizationPolicySchema: Schema = object(
  {
    apiVersion: { enum: [...SECURITY_API_VERSIONS] },
    kind: { const: 'AuthorizationPolicy' },
    metadata: objectMeta,
    spec: object({
      selector: workloadSelector,
      targetRef: policyTargetReference,
      targetRefs: { type: 'array', items: policyTargetReference },
      rules: { type: 'array', items: rule },
      action: { enum: [...AUTHORIZATION_ACTIONS] },
      provider: object({ name: { type: 'string' } }),
    }),
    status,
  },
  ['apiVersion', 'kind', 'metadata'],
);

const mutualTls = object({ mode: { enum: [...MTLS_MODES] } });

export const peerAuthenticationSchema: Schema = object(
  {
    apiVersion: { enum: [...SECURITY_API_VERSIONS] },
    kind: { const: 'PeerAuthentication' },
    metadata: objectMeta,
    spec: object({
      selector: workloadSelector,
      mtls: mutualTls,
      // map<uint32, MutualTLS>: keys are port numbers; validate.ts checks their range.
      portLevelMtls: { type: 'object', additionalProperties: mutualTls },
    }),
    status,
  },
  ['apiVersion', 'kind', 'metadata'],
);

// TypeScript shapes of the objects the schemas accept.

export interface ObjectMeta {
  name: string;
  namespace?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  creationTimestamp?: string | null;
  [field: string]: unknown;
}

export interface WorkloadSelector {
  matchLabels?: Record<string, string>;
}

export interface PolicyTargetReference {
  group?: string;
  kind: string;
  name: string;
  namespace?: string;
}

export interface SourceSpec {
  principals?: string[];
  notPrincipals?: string[];
  requestPrincipals?: string[];
  notRequestPrincipals?: string[];
  namespaces?: string[];
  notNamespaces?: string[];
  ipBlocks?: string[];
  notIpBlocks?: string[];
  remoteIpBlocks?: string[];
  notRemoteIpBlocks?: string[];
  serviceAccounts?: string[];
  notServiceAccounts?: string[];
}

export interface OperationSpec {
  hosts?: string[];
  notHosts?: string[];
  ports?: string[];
  notPorts?: string[];
  methods?: string[];
  notMethods?: string[];
  paths?: string[];
  notPaths?: string[];
}

export interface ConditionSpec {
  key: string;
  values?: string[];
  notValues?: string[];
}

export interface RuleSpec {
  from?: { source?: SourceSpec }[];
  to?: { operation?: OperationSpec }[];
  when?: ConditionSpec[];
}

export type AuthorizationPolicyAction = (typeof AUTHORIZATION_ACTIONS)[number];
export type MtlsMode = (typeof MTLS_MODES)[number];

export interface AuthorizationPolicySpec {
  selector?: WorkloadSelector;
  targetRef?: PolicyTargetReference;
  targetRefs?: PolicyTargetReference[];
  rules?: RuleSpec[];
  action?: AuthorizationPolicyAction;
  provider?: { name?: string };
}

export interface AuthorizationPolicyObject {
  apiVersion: (typeof SECURITY_API_VERSIONS)[number];
  kind: 'AuthorizationPolicy';
  metadata: ObjectMeta;
  spec?: AuthorizationPolicySpec;
}

export interface PeerAuthenticationSpec {
  selector?: WorkloadSelector;
  mtls?: { mode?: MtlsMode };
  portLevelMtls?: Record<string, { mode?: MtlsMode }>;
}

export interface PeerAuthenticationObject {
  apiVersion: (typeof SECURITY_API_VERSIONS)[number];
  kind: 'PeerAuthentication';
  metadata: ObjectMeta;
  spec?: PeerAuthenticationSpec;
}
