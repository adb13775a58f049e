/**
 * ambit's own rate-limit resource for waypoints (issue 13 item 5; no mesh anchor has a first-class one: Istio
 * needs an EnvoyFilter). `LocalRateLimitPolicy` in the group `policy.ambit.dev`, version `v1alpha1`:
 *
 *   apiVersion: policy.ambit.dev/v1alpha1
 *   kind: LocalRateLimitPolicy
 *   metadata: {name: per-client, namespace: shop}
 *   spec:
 *     targetRefs: [{kind: Service, group: "", name: web}]      # or the waypoint Gateway / GatewayClass, as policies
 *     limits:
 *     - name: orders                                           # optional, in headers and metrics
 *       requests: 10                                           # tokens added per `unit`
 *       unit: Second                                           # Second | Minute | Hour
 *       burst: 10                                              # bucket size (default: requests)
 *       key: {type: SourcePrincipal}                           # Route | SourcePrincipal | ClientIP | Header (+ header)
 *       match: {paths: ["/orders*"], methods: [POST]}          # optional: which requests count (Istio's wildcards)
 *
 * Local token buckets per waypoint instance (not shared between replicas, as Envoy's local rate limit). `Route`
 * keys one bucket per limit (the limit's `match` selects the route's requests); the others one bucket per
 * principal, client address or header value. Over the limit: 429 with `x-ratelimit-limit`, `x-ratelimit-remaining`,
 * `x-ratelimit-reset` and `retry-after`, body `local_rate_limited` (Envoy's).
 *
 * Owns: the schema (ajv, unknown fields refused with their path), value checks, and compiling to the model the
 * waypoint enforces. Must not know about: buckets, requests, encoding.
 */
import { Ajv, type ValidateFunction } from 'ajv';
import type { PolicyTargetReference } from './crd-schema.ts';
import { PolicyError, type PolicyProblem } from './errors.ts';
import { compileTargets } from './l7-compile.ts';
import type { L7Target } from './l7-model.ts';
import { DEFAULT_ROOT_NAMESPACE } from './model.ts';
import { schemaProblem } from './validate.ts';

export const RATE_LIMIT_API_VERSION = 'policy.ambit.dev/v1alpha1';
export const RATE_LIMIT_KIND = 'LocalRateLimitPolicy';
export const RATE_LIMIT_UNITS = { Second: 1_000, Minute: 60_000, Hour: 3_600_000 } as const;
export const RATE_LIMIT_KEY_TYPES = ['Route', 'SourcePrincipal', 'ClientIP', 'Header'] as const;

type Schema = Record<string, unknown>;
const stringList: Schema = { type: 'array', items: { type: 'string', minLength: 1 } };
function object(properties: Record<string, Schema>, required: string[] = []): Schema {
  return { type: 'object', properties, required, additionalProperties: false };
}
const targetRef = object({ group: { type: 'string' }, kind: { type: 'string' }, name: { type: 'string' }, namespace: { type: 'string' } }, ['kind', 'name']);

export const rateLimitPolicySchema: Schema = object(
  {
    apiVersion: { const: RATE_LIMIT_API_VERSION },
    kind: { const: RATE_LIMIT_KIND },
    metadata: { type: 'object', properties: { name: { type: 'string', minLength: 1 }, namespace: { type: 'string' } }, required: ['name'] },
    spec: object(
      {
        targetRefs: { type: 'array', items: targetRef, minItems: 1 },
        limits: {
          type: 'array',
          minItems: 1,
          items: object(
            {
              name: { type: 'string' },
              requests: { type: 'integer', minimum: 1 },
              unit: { enum: Object.keys(RATE_LIMIT_UNITS) },
              burst: { type: 'integer', minimum: 1 },
              key: object({ type: { enum: [...RATE_LIMIT_KEY_TYPES] }, header: { type: 'string' } }, ['type']),
              match: object({ paths: stringList, methods: stringList }),
            },
            ['requests', 'unit'],
          ),
        },
      },
      ['targetRefs', 'limits'],
    ),
    status: { type: 'object' },
  },
  ['apiVersion', 'kind', 'metadata', 'spec'],
);

export interface RateLimitSpec {
  name?: string;
  requests: number;
  unit: keyof typeof RATE_LIMIT_UNITS;
  burst?: number;
  key?: { type: (typeof RATE_LIMIT_KEY_TYPES)[number]; header?: string };
  match?: { paths?: string[]; methods?: string[] };
}

export interface RateLimitPolicyObject {
  apiVersion: typeof RATE_LIMIT_API_VERSION;
  kind: typeof RATE_LIMIT_KIND;
  metadata: { name: string; namespace?: string };
  spec: { targetRefs: PolicyTargetReference[]; limits: RateLimitSpec[] };
}

/** One compiled limit, as the waypoint enforces it (and as ambit.waypoint.RateLimit carries it). */
export interface L7RateLimit {
  name: string;
  /** Tokens per `periodMs`. */
  requests: number;
  periodMs: number;
  burst: number;
  keyType: (typeof RATE_LIMIT_KEY_TYPES)[number];
  /** Lower-case header name for keyType Header. */
  header: string;
  paths: string[];
  methods: string[];
}

export interface L7RateLimitPolicy {
  name: string;
  namespace: string;
  targets: L7Target[];
  limits: L7RateLimit[];
}

let validator: ValidateFunction | undefined;
const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/** Validates one object; throws PolicyError (AMBIT_POLICY_INVALID) with every problem's path. */
export function validateRateLimitPolicy(value: unknown): RateLimitPolicyObject {
  const metadata = (value as { metadata?: { name?: string; namespace?: string } } | null)?.metadata;
  const resource = `${RATE_LIMIT_KIND} ${metadata?.namespace ?? 'default'}/${metadata?.name ?? '?'}`;
  validator ??= new Ajv({ allErrors: true, verbose: true, allowUnionTypes: true, strict: true }).compile(rateLimitPolicySchema);
  if (!validator(value)) throw new PolicyError('AMBIT_POLICY_INVALID', resource, (validator.errors ?? []).map((error) => schemaProblem(error, value)));
  const object = value as RateLimitPolicyObject;
  const problems: PolicyProblem[] = [];
  const names = new Set<string>();
  object.spec.limits.forEach((limit, index) => {
    const path = `spec.limits[${index}]`;
    if (limit.key?.type === 'Header' && (!limit.key.header || !HEADER_NAME.test(limit.key.header))) problems.push({ path: `${path}.key.header`, message: 'a Header key needs the header name' });
    if (limit.key?.type !== 'Header' && limit.key?.header !== undefined) problems.push({ path: `${path}.key.header`, message: `only a Header key takes a header (this key is ${limit.key?.type})` });
    if (limit.burst !== undefined && limit.burst < 1) problems.push({ path: `${path}.burst`, message: 'must be at least 1' });
    const name = limit.name ?? `limit-${index}`;
    if (names.has(name)) problems.push({ path: `${path}.name`, message: `${name} is used by another limit of this policy` });
    names.add(name);
  });
  if (problems.length > 0) throw new PolicyError('AMBIT_POLICY_INVALID', resource, problems);
  return object;
}

export function compileRateLimitPolicy(object: RateLimitPolicyObject, options: { rootNamespace?: string } = {}): { policy: L7RateLimitPolicy | undefined; warnings: string[] } {
  const namespace = object.metadata.namespace ?? 'default';
  const key = `${namespace}/${object.metadata.name}`;
  const warnings: string[] = [];
  const targets = compileTargets(object.spec.targetRefs, namespace, options.rootNamespace ?? DEFAULT_ROOT_NAMESPACE, 'spec.targetRefs', warnings);
  const prefixed = warnings.map((warning) => `${RATE_LIMIT_KIND} ${key} ${warning}`);
  if (targets.length === 0) return { policy: undefined, warnings: [...prefixed, `${RATE_LIMIT_KIND} ${key} has no target a waypoint can enforce: not applied`] };
  return {
    policy: {
      name: object.metadata.name,
      namespace,
      targets,
      limits: object.spec.limits.map((limit, index) => ({
        name: limit.name ?? `limit-${index}`,
        requests: limit.requests,
        periodMs: RATE_LIMIT_UNITS[limit.unit],
        burst: limit.burst ?? limit.requests,
        keyType: limit.key?.type ?? 'Route',
        header: limit.key?.header?.toLowerCase() ?? '',
        paths: limit.match?.paths ?? [],
        methods: limit.match?.methods ?? [],
      })),
    },
    warnings: prefixed,
  };
}
