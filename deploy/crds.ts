/**
 * CustomResourceDefinitions for the Istio kinds ambit reads and Istio users already write: security.istio.io
 * AuthorizationPolicy, PeerAuthentication and RequestAuthentication, v1 (stored) and v1beta1 (served), as Istio's
 * base chart defines them; and ambit's own LocalRateLimitPolicy (policy.ambit.dev/v1alpha1), kept apart
 * (ambitCrdObjects) so an install beside Istio's CRDs can still apply it.
 *
 * Owns: turning the JSON schemas the control plane validates with (shared/policy/crd-schema.ts) into structural
 * OpenAPI schemas the API server accepts: `type` on every node, no `additionalProperties: false` beside
 * `properties` (the API server prunes and, with kubectl's default strict field validation, rejects unknown fields),
 * `nullable` instead of a type list, `status` left open. One source of truth, so the cluster and the control plane
 * accept the same objects.
 * Gateway API CRDs are not here: install them from the Gateway API release, as Istio asks too.
 * Must not know about: the workloads (agent.ts, controlplane.ts).
 */
import { CustomResourceDefinition } from 'kubernetes-models/apiextensions.k8s.io/v1/CustomResourceDefinition';
import { authorizationPolicySchema, peerAuthenticationSchema } from '../shared/policy/crd-schema.ts';
import { RATE_LIMIT_KIND, rateLimitPolicySchema } from '../shared/policy/rate-limit.ts';
import { requestAuthenticationSchema } from '../shared/policy/request-authentication.ts';
import { labels } from './names.ts';

type Schema = Record<string, unknown>;

/** A JSON schema (as crd-schema.ts writes them) as a structural OpenAPI v3 schema. */
export function structural(schema: Schema): Schema {
  const out: Schema = {};
  const type = schema.type;
  if (Array.isArray(type)) {
    const types = type.filter((entry) => entry !== 'null');
    if (types.length !== 1) throw new Error(`cannot express type ${JSON.stringify(type)} structurally`);
    out.type = types[0];
    if (types.length !== type.length) out.nullable = true;
  } else if (type !== undefined) {
    out.type = type;
  } else if (Array.isArray(schema.enum) && schema.enum.every((value) => typeof value === 'string')) {
    out.type = 'string';
  } else if (typeof schema.const === 'string') {
    out.type = 'string';
  } else {
    throw new Error(`schema without a type: ${JSON.stringify(schema)}`);
  }
  if (schema.enum !== undefined) out.enum = schema.enum;
  if (schema.const !== undefined) out.enum = [schema.const];
  for (const keyword of ['minLength', 'maxLength', 'minimum', 'maximum', 'pattern', 'format', 'minItems', 'maxItems']) {
    if (schema[keyword] !== undefined) out[keyword] = schema[keyword];
  }
  if (schema.items !== undefined) out.items = structural(schema.items as Schema);
  const properties = schema.properties as Record<string, Schema> | undefined;
  if (properties !== undefined) {
    out.properties = Object.fromEntries(Object.entries(properties).map(([name, property]) => [name, structural(property)]));
    const required = schema.required as string[] | undefined;
    if (required && required.length > 0) out.required = required;
  } else if (schema.additionalProperties !== undefined && typeof schema.additionalProperties === 'object') {
    out.additionalProperties = structural(schema.additionalProperties as Schema);
  } else if (out.type === 'object') {
    // A free-form object (status, owner references): kept as given.
    out['x-kubernetes-preserve-unknown-fields'] = true;
  }
  return out;
}

/** The object's schema for the API server: spec and status only (it owns apiVersion, kind and metadata). */
function openApiSchema(objectSchema: Schema): Schema {
  const properties = objectSchema.properties as Record<string, Schema>;
  return {
    type: 'object',
    properties: { spec: structural(properties.spec!), status: structural(properties.status!) },
  };
}

interface CrdGroup {
  group: string;
  /** Served versions, the first stored. */
  versions: string[];
  categories: string[];
  labels: Record<string, string>;
}

const ISTIO_SECURITY: CrdGroup = { group: 'security.istio.io', versions: ['v1', 'v1beta1'], categories: ['istio-io', 'security-istio-io'], labels: { 'istio.io/config': 'true' } };
const AMBIT_POLICY: CrdGroup = { group: 'policy.ambit.dev', versions: ['v1alpha1'], categories: ['ambit'], labels: {} };

function crd(group: CrdGroup, kind: string, plural: string, shortNames: string[], objectSchema: Schema) {
  const schema = { openAPIV3Schema: openApiSchema(objectSchema) };
  const version = (name: string, storage: boolean) => ({ name, served: true, storage, schema, subresources: { status: {} } });
  return new CustomResourceDefinition({
    metadata: { name: `${plural}.${group.group}`, labels: { ...labels('ambit-crds'), ...group.labels } },
    spec: {
      group: group.group,
      scope: 'Namespaced',
      names: { kind, listKind: `${kind}List`, plural, singular: kind.toLowerCase(), shortNames, categories: group.categories },
      versions: group.versions.map((name, index) => version(name, index === 0)),
    },
  });
}

/** The security.istio.io CRDs (skip where Istio's base chart installed them). */
export function istioCrdObjects() {
  return [
    crd(ISTIO_SECURITY, 'AuthorizationPolicy', 'authorizationpolicies', ['ap'], authorizationPolicySchema),
    crd(ISTIO_SECURITY, 'PeerAuthentication', 'peerauthentications', ['pa'], peerAuthenticationSchema),
    crd(ISTIO_SECURITY, 'RequestAuthentication', 'requestauthentications', ['ra'], requestAuthenticationSchema),
  ];
}

/** ambit's own CRDs (always needed). */
export function ambitCrdObjects() {
  return [crd(AMBIT_POLICY, RATE_LIMIT_KIND, 'localratelimitpolicies', ['lrlp'], rateLimitPolicySchema)];
}

export function crdObjects() {
  return [...istioCrdObjects(), ...ambitCrdObjects()];
}
