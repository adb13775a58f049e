/**
 * Istio's RequestAuthentication (`security.istio.io/v1`) for waypoints: the schema (from the fields Istio
 * publishes in security/v1/request_authentication.proto, `additionalProperties: false` everywhere), the value
 * rules Istio's webhook checks (issuer set, jwksUri an http(s) URL, inline jwks JSON with keys, header names),
 * and the compile step into the L7 model (l7-model.ts) for policies whose targetRefs name a waypoint target.
 *
 * Owns: validating and compiling one RequestAuthentication. Must not know about: verifying tokens, fetching JWKS,
 * encoding, the control plane's store.
 */
import { Ajv, type ValidateFunction } from 'ajv';
import type { PolicyTargetReference } from './crd-schema.ts';
import { PolicyError, type PolicyProblem } from './errors.ts';
import { compileTargets } from './l7-compile.ts';
import { DEFAULT_ROOT_NAMESPACE } from './model.ts';
import { schemaProblem } from './validate.ts';
import type { L7RequestAuthentication } from './l7-model.ts';

type Schema = Record<string, unknown>;
const stringList: Schema = { type: 'array', items: { type: 'string' } };
function object(properties: Record<string, Schema>, required: string[] = []): Schema {
  return { type: 'object', properties, required, additionalProperties: false };
}
const targetRef = object({ group: { type: 'string' }, kind: { type: 'string' }, name: { type: 'string' }, namespace: { type: 'string' } }, ['kind', 'name']);

const jwtRule = object(
  {
    issuer: { type: 'string' },
    audiences: stringList,
    jwksUri: { type: 'string' },
    jwks: { type: 'string' },
    fromHeaders: { type: 'array', items: object({ name: { type: 'string' }, prefix: { type: 'string' } }, ['name']) },
    fromParams: stringList,
    fromCookies: stringList,
    outputPayloadToHeader: { type: 'string' },
    forwardOriginalToken: { type: 'boolean' },
    outputClaimToHeaders: { type: 'array', items: object({ header: { type: 'string' }, claim: { type: 'string' } }, ['header', 'claim']) },
    timeout: { type: 'string' },
  },
  ['issuer'],
);

export const requestAuthenticationSchema: Schema = object(
  {
    apiVersion: { enum: ['security.istio.io/v1', 'security.istio.io/v1beta1'] },
    kind: { const: 'RequestAuthentication' },
    metadata: { type: 'object', properties: { name: { type: 'string', minLength: 1 }, namespace: { type: 'string' } }, required: ['name'] },
    spec: object({
      selector: object({ matchLabels: { type: 'object', additionalProperties: { type: 'string' } } }),
      targetRef,
      targetRefs: { type: 'array', items: targetRef },
      jwtRules: { type: 'array', items: jwtRule },
    }),
    status: { type: 'object' },
  },
  ['apiVersion', 'kind', 'metadata'],
);

export interface JwtRuleSpec {
  issuer: string;
  audiences?: string[];
  jwksUri?: string;
  jwks?: string;
  fromHeaders?: { name: string; prefix?: string }[];
  fromParams?: string[];
  fromCookies?: string[];
  outputPayloadToHeader?: string;
  forwardOriginalToken?: boolean;
  outputClaimToHeaders?: { header: string; claim: string }[];
  timeout?: string;
}

export interface RequestAuthenticationObject {
  apiVersion: string;
  kind: 'RequestAuthentication';
  metadata: { name: string; namespace?: string; [field: string]: unknown };
  spec?: { selector?: { matchLabels?: Record<string, string> }; targetRef?: PolicyTargetReference; targetRefs?: PolicyTargetReference[]; jwtRules?: JwtRuleSpec[] };
}

let validator: ValidateFunction | undefined;

const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

function valueProblems(object: RequestAuthenticationObject): PolicyProblem[] {
  const problems: PolicyProblem[] = [];
  const spec = object.spec ?? {};
  if (spec.selector && (spec.targetRef || spec.targetRefs)) problems.push({ path: 'spec.selector', message: 'only one of selector, targetRef or targetRefs may be set' });
  if (spec.targetRef && spec.targetRefs) problems.push({ path: 'spec.targetRef', message: 'only one of targetRef or targetRefs may be set' });
  const issuers = new Set<string>();
  spec.jwtRules?.forEach((rule, index) => {
    const path = `spec.jwtRules[${index}]`;
    if (rule.issuer.trim() === '') problems.push({ path: `${path}.issuer`, message: 'must not be empty' });
    else if (issuers.has(rule.issuer)) problems.push({ path: `${path}.issuer`, message: `issuer ${rule.issuer} appears in more than one rule` });
    issuers.add(rule.issuer);
    if (rule.jwksUri !== undefined) {
      let url: URL | undefined;
      try {
        url = new URL(rule.jwksUri);
      } catch {
        // reported below
      }
      if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:')) problems.push({ path: `${path}.jwksUri`, message: `must be an http or https URL (got ${JSON.stringify(rule.jwksUri)})` });
    }
    if (rule.jwks !== undefined) {
      let keys: unknown;
      try {
        keys = (JSON.parse(rule.jwks) as { keys?: unknown }).keys;
      } catch (error) {
        problems.push({ path: `${path}.jwks`, message: `is not JSON: ${(error as Error).message}` });
      }
      if (keys !== undefined && (!Array.isArray(keys) || keys.length === 0)) problems.push({ path: `${path}.jwks`, message: 'must be a JWKS with a non-empty "keys" list' });
    }
    if (rule.jwks === undefined && rule.jwksUri === undefined) problems.push({ path, message: 'needs jwksUri or jwks (ambit does not discover keys from the issuer)' });
    rule.fromHeaders?.forEach((header, headerIndex) => {
      if (!HEADER_NAME.test(header.name)) problems.push({ path: `${path}.fromHeaders[${headerIndex}].name`, message: `${JSON.stringify(header.name)} is not a header name` });
    });
    rule.fromParams?.forEach((param, paramIndex) => {
      if (param === '') problems.push({ path: `${path}.fromParams[${paramIndex}]`, message: 'must not be empty' });
    });
    rule.fromCookies?.forEach((cookie, cookieIndex) => {
      if (cookie === '') problems.push({ path: `${path}.fromCookies[${cookieIndex}]`, message: 'must not be empty' });
    });
    if (rule.outputPayloadToHeader !== undefined && !HEADER_NAME.test(rule.outputPayloadToHeader)) {
      problems.push({ path: `${path}.outputPayloadToHeader`, message: `${JSON.stringify(rule.outputPayloadToHeader)} is not a header name` });
    }
    const outputHeaders = new Set<string>();
    rule.outputClaimToHeaders?.forEach((entry, entryIndex) => {
      const entryPath = `${path}.outputClaimToHeaders[${entryIndex}]`;
      if (!HEADER_NAME.test(entry.header)) problems.push({ path: `${entryPath}.header`, message: `${JSON.stringify(entry.header)} is not a header name` });
      else if (outputHeaders.has(entry.header.toLowerCase())) problems.push({ path: `${entryPath}.header`, message: `header ${entry.header} is set twice` });
      outputHeaders.add(entry.header.toLowerCase());
      if (entry.claim === '') problems.push({ path: `${entryPath}.claim`, message: 'must not be empty' });
    });
  });
  return problems;
}

/** Validates one object; throws PolicyError (code AMBIT_POLICY_INVALID) listing every problem with its path. */
export function validateRequestAuthentication(value: unknown): RequestAuthenticationObject {
  const metadata = (value as { metadata?: { name?: string; namespace?: string } } | null)?.metadata;
  const resource = `RequestAuthentication ${metadata?.namespace ?? 'default'}/${metadata?.name ?? '?'}`;
  validator ??= new Ajv({ allErrors: true, verbose: true, allowUnionTypes: true, strict: true }).compile(requestAuthenticationSchema);
  if (!validator(value)) throw new PolicyError('AMBIT_POLICY_INVALID', resource, (validator.errors ?? []).map((error) => schemaProblem(error, value)));
  const object = value as RequestAuthenticationObject;
  const problems = valueProblems(object);
  if (problems.length > 0) throw new PolicyError('AMBIT_POLICY_INVALID', resource, problems);
  return object;
}

/**
 * Compiles a validated RequestAuthentication for waypoints: undefined (no warning) for selector or namespace-wide
 * ones, which the agents cannot enforce either (JWT needs L7): those get a warning saying a waypoint is needed.
 */
export function compileRequestAuthentication(object: RequestAuthenticationObject, options: { rootNamespace?: string } = {}): { requestAuthentication: L7RequestAuthentication | undefined; warnings: string[] } {
  const spec = object.spec ?? {};
  const namespace = object.metadata.namespace ?? 'default';
  const key = `${namespace}/${object.metadata.name}`;
  const refs = spec.targetRefs ?? (spec.targetRef ? [spec.targetRef] : []);
  if (refs.length === 0) {
    return { requestAuthentication: undefined, warnings: [`RequestAuthentication ${key} has no targetRefs: JWTs are checked at L7 only, so attach it to a waypoint (Gateway) or a Service bound to one`] };
  }
  const warnings: string[] = [];
  const targets = compileTargets(refs, namespace, options.rootNamespace ?? DEFAULT_ROOT_NAMESPACE, spec.targetRefs ? 'spec.targetRefs' : 'spec.targetRef', warnings);
  const prefixed = warnings.map((warning) => `RequestAuthentication ${key} ${warning}`);
  if (targets.length === 0) return { requestAuthentication: undefined, warnings: [...prefixed, `RequestAuthentication ${key} has no target a waypoint can enforce: not applied`] };
  return {
    requestAuthentication: {
      name: object.metadata.name,
      namespace,
      targets,
      jwtRules: (spec.jwtRules ?? []).map((rule) => ({
        issuer: rule.issuer,
        audiences: rule.audiences ?? [],
        jwksUri: rule.jwksUri ?? '',
        jwks: rule.jwks ?? '',
        fromHeaders: (rule.fromHeaders ?? []).map((header) => ({ name: header.name.toLowerCase(), prefix: header.prefix ?? '' })),
        fromParams: rule.fromParams ?? [],
        fromCookies: rule.fromCookies ?? [],
        forwardOriginalToken: rule.forwardOriginalToken ?? false,
        outputPayloadToHeader: rule.outputPayloadToHeader ?? '',
        outputClaimToHeaders: rule.outputClaimToHeaders ?? [],
      })),
    },
    warnings: prefixed,
  };
}
