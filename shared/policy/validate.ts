/**
 * Validation of AuthorizationPolicy and PeerAuthentication objects, as Istio's webhook would do it.
 *
 * Owns: checking one object (schema via ajv, then the value rules: CIDRs, principal form, ports, conditions,
 * dry-run annotation) and turning every finding into a PolicyProblem whose path a person finds in their YAML,
 * e.g. `spec.rules[0].from[0].source.principal: unknown field (did you mean principals?)`. Also parsing a
 * multi-document YAML text where each document stands or falls alone.
 * Must not know about: compiling or evaluating policies, or where the objects came from.
 */
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { parseAllDocuments } from 'yaml';
import {
  authorizationPolicySchema,
  peerAuthenticationSchema,
  type AuthorizationPolicyObject,
  type PeerAuthenticationObject,
  type SourceSpec,
} from './crd-schema.ts';
import { PolicyError, type PolicyProblem } from './errors.ts';
import { parseCidr } from './ip.ts';

export const DRY_RUN_ANNOTATION = 'istio.io/dry-run';

/** `when` keys ztunnel enforces at L4. */
export const L4_CONDITION_KEYS: readonly string[] = ['source.ip', 'source.namespace', 'source.principal', 'destination.ip', 'destination.port'];
/** Other `when` keys Istio accepts; they need a waypoint (or a gateway) to be enforced. */
const OTHER_CONDITION_KEYS: readonly string[] = ['remote.ip', 'request.auth.principal', 'request.auth.audiences', 'request.auth.presenter', 'connection.sni'];
const OTHER_CONDITION_PREFIXES: readonly string[] = ['request.headers[', 'request.auth.claims[', 'experimental.envoy.filters.'];

export type ValidatedPolicy =
  | { kind: 'AuthorizationPolicy'; object: AuthorizationPolicyObject }
  | { kind: 'PeerAuthentication'; object: PeerAuthenticationObject };

export type ValidationResult = ({ ok: true } & ValidatedPolicy) | { ok: false; error: PolicyError };

let validators: { authz: ValidateFunction; peer: ValidateFunction } | undefined;
function schemaValidators(): { authz: ValidateFunction; peer: ValidateFunction } {
  if (!validators) {
    const ajv = new Ajv({ allErrors: true, verbose: true, allowUnionTypes: true, strict: true });
    validators = { authz: ajv.compile(authorizationPolicySchema), peer: ajv.compile(peerAuthenticationSchema) };
  }
  return validators;
}

// ---------------------------------------------------------------------------------------------------------------
// Paths and messages

/** Turns a JSON pointer into `spec.rules[0].from[0]`, using the data to tell array indexes from map keys. */
function readablePath(pointer: string, data: unknown): string {
  if (!pointer) return '';
  let out = '';
  let node: unknown = data;
  for (const raw of pointer.slice(1).split('/')) {
    const segment = raw.replaceAll('~1', '/').replaceAll('~0', '~');
    if (Array.isArray(node)) out += `[${segment}]`;
    else if (/^[A-Za-z_][A-Za-z0-9_]*$/.test(segment)) out += out ? `.${segment}` : segment;
    else out += `[${JSON.stringify(segment)}]`;
    node = node !== null && typeof node === 'object' ? (node as Record<string, unknown>)[segment] : undefined;
  }
  return out;
}

function joinPath(base: string, field: string): string {
  return base ? `${base}.${field}` : field;
}

function editDistance(a: string, b: string): number {
  const previous = Array.from({ length: b.length + 1 }, (_, index) => index);
  for (let i = 1; i <= a.length; i++) {
    let diagonal = previous[0]!;
    previous[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const above = previous[j]!;
      previous[j] = Math.min(previous[j]! + 1, previous[j - 1]! + 1, diagonal + (a[i - 1] === b[j - 1] ? 0 : 1));
      diagonal = above;
    }
  }
  return previous[b.length]!;
}

/** The allowed name a misspelt field most likely meant, if any is close. */
export function suggestField(unknown: string, allowed: readonly string[]): string | undefined {
  const lower = unknown.toLowerCase();
  const exactCase = allowed.find((name) => name.toLowerCase() === lower);
  if (exactCase) return exactCase;
  const plural = allowed.find((name) => name.toLowerCase() === `${lower}s` || `${name.toLowerCase()}s` === lower);
  if (plural) return plural;
  const containing = allowed.filter((name) => lower.length >= 4 && name.toLowerCase().includes(lower));
  if (containing.length === 1) return containing[0];
  let best: string | undefined;
  let bestDistance = Math.max(2, Math.floor(unknown.length / 4)) + 1;
  for (const name of allowed) {
    const distance = editDistance(lower, name.toLowerCase());
    if (distance < bestDistance) {
      best = name;
      bestDistance = distance;
    }
  }
  return best;
}

function describeType(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'an object';
  if (typeof value === 'string') return `the string ${JSON.stringify(value)}`;
  return `${typeof value} ${JSON.stringify(value)}`;
}

const TYPE_PHRASES: Record<string, string> = { string: 'a string', object: 'an object', array: 'a list', integer: 'an integer', boolean: 'true or false' };

export function schemaProblem(error: ErrorObject, data: unknown): PolicyProblem {
  const path = readablePath(error.instancePath, data);
  switch (error.keyword) {
    case 'additionalProperties': {
      const field = String((error.params as { additionalProperty: string }).additionalProperty);
      const properties = (error.parentSchema as { properties?: Record<string, unknown> } | undefined)?.properties;
      const allowed = properties ? Object.keys(properties) : [];
      const suggestion = suggestField(field, allowed);
      const hint = suggestion ? `did you mean ${suggestion}?` : allowed.length > 0 ? `allowed: ${allowed.join(', ')}` : 'no fields allowed here';
      return { path: joinPath(path, field), message: `unknown field (${hint})` };
    }
    case 'required': {
      const field = String((error.params as { missingProperty: string }).missingProperty);
      return { path: joinPath(path, field), message: 'required field is missing' };
    }
    case 'type': {
      const expected = String((error.params as { type: string | string[] }).type);
      const phrase = TYPE_PHRASES[expected] ?? `of type ${expected}`;
      const hint = expected === 'string' && typeof error.data === 'number' ? ` (quote it: "${error.data}")` : '';
      return { path, message: `must be ${phrase}, not ${describeType(error.data)}${hint}` };
    }
    case 'enum': {
      const allowed = (error.params as { allowedValues: unknown[] }).allowedValues.map(String);
      return { path, message: `must be one of ${allowed.join(', ')} (got ${JSON.stringify(error.data)})` };
    }
    case 'const':
      return { path, message: `must be ${JSON.stringify((error.params as { allowedValue: unknown }).allowedValue)} (got ${JSON.stringify(error.data)})` };
    case 'minLength':
      return { path, message: 'must not be empty' };
    default:
      return { path, message: error.message ?? 'is invalid' };
  }
}

function resourceName(object: unknown): string | undefined {
  if (object === null || typeof object !== 'object') return undefined;
  const record = object as { kind?: unknown; metadata?: { name?: unknown; namespace?: unknown } };
  const kind = typeof record.kind === 'string' ? record.kind : 'object';
  const name = typeof record.metadata?.name === 'string' ? record.metadata.name : undefined;
  if (!name) return kind;
  const namespace = typeof record.metadata?.namespace === 'string' ? record.metadata.namespace : undefined;
  return `${kind} ${namespace ? `${namespace}/` : ''}${name}`;
}

// ---------------------------------------------------------------------------------------------------------------
// Value rules

const PRINCIPAL_SEGMENT = '[^/*\\s]+';
const FULL_PRINCIPAL = new RegExp(`^${PRINCIPAL_SEGMENT}/ns/${PRINCIPAL_SEGMENT}/sa/${PRINCIPAL_SEGMENT}$`);
/** Every prefix of a `<td>/ns/<ns>/sa/<sa>` string, for `prefix*`. */
const PRINCIPAL_PREFIX = /^(?:[^/*\s]*|[^/*\s]+\/(?:n|ns|ns\/[^/*\s]*|ns\/[^/*\s]+\/(?:s|sa|sa\/[^/*\s]*)?)?)$/;
/** Every suffix of a `<td>/ns/<ns>/sa/<sa>` string, for `*suffix`. */
const PRINCIPAL_SUFFIX =
  /^(?:[^/*\s]*|(?:a|sa)?\/[^/*\s]+|[^/*\s]*\/sa\/[^/*\s]+|(?:s|ns)?\/[^/*\s]+\/sa\/[^/*\s]+|[^/*\s]*\/ns\/[^/*\s]+\/sa\/[^/*\s]+)$/;

/** Why `value` is not a principal Istio accepts, or undefined when it is fine. */
export function principalProblem(value: string): string | undefined {
  const form = 'expected <trust-domain>/ns/<namespace>/sa/<service-account>, e.g. "cluster.local/ns/default/sa/web", with "*" only as a whole value, prefix or suffix';
  if (value === '') return `must not be empty (${form})`;
  if (value.startsWith('spiffe://')) return `${JSON.stringify(value)}: leave out "spiffe://" (write ${JSON.stringify(value.slice('spiffe://'.length))})`;
  if (value === '*') return undefined;
  const starts = value.startsWith('*');
  const ends = value.endsWith('*');
  const body = starts ? value.slice(1) : ends ? value.slice(0, -1) : value;
  if (body.includes('*') || (starts && ends)) return `${JSON.stringify(value)}: "*" may only be the first or the last character (${form})`;
  const ok = starts ? PRINCIPAL_SUFFIX.test(body) : ends ? PRINCIPAL_PREFIX.test(body) : FULL_PRINCIPAL.test(body);
  return ok ? undefined : `${JSON.stringify(value)} is not a principal (${form})`;
}

/** Namespaces and other plain string matches: `*` only whole, first or last. */
function wildcardProblem(value: string): string | undefined {
  if (value === '') return 'must not be empty';
  if (value === '*') return undefined;
  const body = value.startsWith('*') ? value.slice(1) : value.endsWith('*') ? value.slice(0, -1) : value;
  if (body.includes('*')) return `${JSON.stringify(value)}: "*" may only be the first or the last character`;
  return undefined;
}

function namespaceProblem(value: string): string | undefined {
  const wildcard = wildcardProblem(value);
  if (wildcard) return wildcard;
  if (value.includes('/')) return `${JSON.stringify(value)} is not a namespace name (to match a service account, use serviceAccounts or principals)`;
  return undefined;
}

const KUBERNETES_NAME = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;

function serviceAccountProblem(value: string): string | undefined {
  const form = 'expected <namespace>/<service-account> or <service-account> (in the policy\'s namespace); wildcards are not supported';
  const parts = value.split('/');
  if (parts.length > 2 || parts.some((part) => !KUBERNETES_NAME.test(part))) return `${JSON.stringify(value)} is not a service account (${form})`;
  return undefined;
}

function portProblem(value: string): string | undefined {
  if (!/^[0-9]{1,5}$/.test(value) || Number(value) < 1 || Number(value) > 65535) {
    return `${JSON.stringify(value)} is not a port (expected a number from 1 to 65535)`;
  }
  return undefined;
}

function cidrProblem(value: string): string | undefined {
  const parsed = parseCidr(value);
  return 'error' in parsed ? parsed.error : undefined;
}

/** strconv.ParseBool's accepted spellings, which Istio uses for the dry-run annotation. */
const BOOL_TRUE = ['1', 't', 'T', 'TRUE', 'true', 'True'];
const BOOL_FALSE = ['0', 'f', 'F', 'FALSE', 'false', 'False'];

/** Whether the object carries `istio.io/dry-run: "true"` (or another spelling of true Go's ParseBool accepts). */
export function isDryRun(object: { metadata?: { annotations?: Record<string, string> } }): boolean {
  const value = object.metadata?.annotations?.[DRY_RUN_ANNOTATION];
  return value !== undefined && BOOL_TRUE.includes(value);
}

function checkList(problems: PolicyProblem[], path: string, values: readonly string[] | undefined, check: (value: string) => string | undefined): void {
  values?.forEach((value, index) => {
    const message = check(value);
    if (message) problems.push({ path: `${path}[${index}]`, message });
  });
}

function conditionChecker(key: string): ((value: string) => string | undefined) | undefined {
  switch (key) {
    case 'source.ip':
    case 'destination.ip':
    case 'remote.ip':
      return cidrProblem;
    case 'source.principal':
      return principalProblem;
    case 'source.namespace':
      return namespaceProblem;
    case 'destination.port':
      return portProblem;
    default:
      return undefined;
  }
}

function knownConditionKey(key: string): boolean {
  return L4_CONDITION_KEYS.includes(key) || OTHER_CONDITION_KEYS.includes(key) || OTHER_CONDITION_PREFIXES.some((prefix) => key.startsWith(prefix));
}

function sourceIsEmpty(source: SourceSpec): boolean {
  return Object.values(source).every((list) => !Array.isArray(list) || list.length === 0);
}

function authorizationValueProblems(object: AuthorizationPolicyObject): PolicyProblem[] {
  const problems: PolicyProblem[] = [];
  const spec = object.spec ?? {};
  const dryRun = object.metadata.annotations?.[DRY_RUN_ANNOTATION];
  if (dryRun !== undefined && !BOOL_TRUE.includes(dryRun) && !BOOL_FALSE.includes(dryRun)) {
    problems.push({ path: `metadata.annotations[${JSON.stringify(DRY_RUN_ANNOTATION)}]`, message: `must be "true" or "false" (got ${JSON.stringify(dryRun)})` });
  }
  if (spec.selector && (spec.targetRef || spec.targetRefs)) {
    problems.push({ path: 'spec.selector', message: 'only one of selector, targetRef or targetRefs may be set' });
  }
  if (spec.targetRef && spec.targetRefs) problems.push({ path: 'spec.targetRef', message: 'only one of targetRef or targetRefs may be set' });
  if (spec.action === 'CUSTOM' && !spec.provider?.name) problems.push({ path: 'spec.provider.name', message: 'a CUSTOM policy must name its extension provider' });
  if (spec.provider && spec.action !== 'CUSTOM') problems.push({ path: 'spec.provider', message: 'provider may only be set with action CUSTOM' });

  spec.rules?.forEach((rule, ruleIndex) => {
    const rulePath = `spec.rules[${ruleIndex}]`;
    rule.from?.forEach((from, fromIndex) => {
      const path = `${rulePath}.from[${fromIndex}].source`;
      const source = from.source;
      if (!source || sourceIsEmpty(source)) {
        problems.push({ path, message: 'must not be empty (remove this from entry to match any source)' });
        return;
      }
      checkList(problems, `${path}.principals`, source.principals, principalProblem);
      checkList(problems, `${path}.notPrincipals`, source.notPrincipals, principalProblem);
      checkList(problems, `${path}.namespaces`, source.namespaces, namespaceProblem);
      checkList(problems, `${path}.notNamespaces`, source.notNamespaces, namespaceProblem);
      checkList(problems, `${path}.serviceAccounts`, source.serviceAccounts, serviceAccountProblem);
      checkList(problems, `${path}.notServiceAccounts`, source.notServiceAccounts, serviceAccountProblem);
      checkList(problems, `${path}.requestPrincipals`, source.requestPrincipals, wildcardProblem);
      checkList(problems, `${path}.notRequestPrincipals`, source.notRequestPrincipals, wildcardProblem);
      for (const field of ['ipBlocks', 'notIpBlocks', 'remoteIpBlocks', 'notRemoteIpBlocks'] as const) {
        checkList(problems, `${path}.${field}`, source[field], cidrProblem);
      }
      const hasServiceAccounts = (source.serviceAccounts?.length ?? 0) + (source.notServiceAccounts?.length ?? 0) > 0;
      const hasIdentity = (source.principals?.length ?? 0) + (source.notPrincipals?.length ?? 0) + (source.namespaces?.length ?? 0) + (source.notNamespaces?.length ?? 0) > 0;
      if (hasServiceAccounts && hasIdentity) {
        problems.push({ path, message: 'serviceAccounts and notServiceAccounts cannot be combined with principals or namespaces in one source' });
      }
    });
    rule.to?.forEach((to, toIndex) => {
      const path = `${rulePath}.to[${toIndex}].operation`;
      const op = to.operation;
      if (!op || Object.values(op).every((list) => !Array.isArray(list) || list.length === 0)) {
        problems.push({ path, message: 'must not be empty (remove this to entry to match any operation)' });
        return;
      }
      checkList(problems, `${path}.ports`, op.ports, portProblem);
      checkList(problems, `${path}.notPorts`, op.notPorts, portProblem);
      for (const field of ['hosts', 'notHosts', 'methods', 'notMethods', 'paths', 'notPaths'] as const) {
        checkList(problems, `${path}.${field}`, op[field], wildcardProblem);
      }
    });
    rule.when?.forEach((condition, whenIndex) => {
      const path = `${rulePath}.when[${whenIndex}]`;
      if (!knownConditionKey(condition.key)) {
        problems.push({
          path: `${path}.key`,
          message: `unknown attribute ${JSON.stringify(condition.key)} (supported: ${[...L4_CONDITION_KEYS, ...OTHER_CONDITION_KEYS].join(', ')}, request.headers[<name>], request.auth.claims[<name>])`,
        });
        return;
      }
      if (!condition.values?.length && !condition.notValues?.length) {
        problems.push({ path, message: 'at least one of values or notValues must be set' });
      }
      const check = conditionChecker(condition.key);
      if (check) {
        checkList(problems, `${path}.values`, condition.values, check);
        checkList(problems, `${path}.notValues`, condition.notValues, check);
      }
    });
  });
  return problems;
}

function peerAuthenticationValueProblems(object: PeerAuthenticationObject): PolicyProblem[] {
  const problems: PolicyProblem[] = [];
  const spec = object.spec ?? {};
  if (spec.portLevelMtls && Object.keys(spec.portLevelMtls).length > 0) {
    if (!spec.selector?.matchLabels || Object.keys(spec.selector.matchLabels).length === 0) {
      problems.push({ path: 'spec.portLevelMtls', message: 'port-level mTLS needs a workload selector (spec.selector.matchLabels)' });
    }
    for (const port of Object.keys(spec.portLevelMtls)) {
      const message = portProblem(port);
      if (message) problems.push({ path: `spec.portLevelMtls[${JSON.stringify(port)}]`, message });
    }
  }
  return problems;
}

// ---------------------------------------------------------------------------------------------------------------
// Entry points

/**
 * Validates one AuthorizationPolicy or PeerAuthentication object (as parsed from YAML or JSON). Never throws for
 * a bad object: the result carries a PolicyError listing every problem with its path.
 */
export function validatePolicy(object: unknown): ValidationResult {
  const resource = resourceName(object);
  const kind = object !== null && typeof object === 'object' ? (object as { kind?: unknown }).kind : undefined;
  if (kind !== 'AuthorizationPolicy' && kind !== 'PeerAuthentication') {
    const problem = { path: 'kind', message: `must be AuthorizationPolicy or PeerAuthentication (got ${JSON.stringify(kind)})` };
    return { ok: false, error: new PolicyError('AMBIT_POLICY_INVALID', resource, [problem]) };
  }
  const { authz, peer } = schemaValidators();
  const validator = kind === 'AuthorizationPolicy' ? authz : peer;
  if (!validator(object)) {
    const problems = (validator.errors ?? []).map((error) => schemaProblem(error, object));
    return { ok: false, error: new PolicyError('AMBIT_POLICY_INVALID', resource, dedupe(problems)) };
  }
  const problems =
    kind === 'AuthorizationPolicy'
      ? authorizationValueProblems(object as AuthorizationPolicyObject)
      : peerAuthenticationValueProblems(object as PeerAuthenticationObject);
  if (problems.length > 0) return { ok: false, error: new PolicyError('AMBIT_POLICY_INVALID', resource, problems) };
  return kind === 'AuthorizationPolicy'
    ? { ok: true, kind, object: object as AuthorizationPolicyObject }
    : { ok: true, kind, object: object as PeerAuthenticationObject };
}

function dedupe(problems: PolicyProblem[]): PolicyProblem[] {
  const seen = new Set<string>();
  return problems.filter((problem) => {
    const key = `${problem.path}\n${problem.message}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/** Like validatePolicy, but throws the PolicyError. */
export function assertValidPolicy(object: unknown): ValidatedPolicy {
  const result = validatePolicy(object);
  if (!result.ok) throw result.error;
  return result;
}

export interface ParsedDocument {
  /** 0-based position of the document in the text. */
  index: number;
  /** 1-based line of the document's first content (after any `---`), for messages. */
  line: number;
  result: ValidationResult;
}

/**
 * Parses a multi-document YAML text and validates each AuthorizationPolicy or PeerAuthentication in it.
 * Documents of other kinds are skipped; a bad document yields a failed result and leaves the others untouched.
 */
export function parsePolicyYaml(text: string): ParsedDocument[] {
  const out: ParsedDocument[] = [];
  const lineStarts = [0];
  for (let index = 0; index < text.length; index++) if (text.charCodeAt(index) === 10) lineStarts.push(index + 1);
  const lineOf = (offset: number): number => {
    let low = 0;
    let high = lineStarts.length - 1;
    while (low < high) {
      const middle = (low + high + 1) >> 1;
      if (lineStarts[middle]! <= offset) low = middle;
      else high = middle - 1;
    }
    return low + 1;
  };
  parseAllDocuments(text).forEach((document, index) => {
    if (!('errors' in document)) return;
    const line = lineOf(document.contents?.range?.[0] ?? document.range?.[0] ?? 0);
    if (document.errors.length > 0) {
      const problems = document.errors.map((error) => ({ path: '', message: `line ${error.linePos?.[0]?.line ?? line}: ${error.message}` }));
      out.push({ index, line, result: { ok: false, error: new PolicyError('AMBIT_POLICY_BAD_YAML', undefined, problems) } });
      return;
    }
    const object: unknown = document.toJS();
    if (object === null || object === undefined) return;
    const kind = typeof object === 'object' ? (object as { kind?: unknown }).kind : undefined;
    if (kind !== 'AuthorizationPolicy' && kind !== 'PeerAuthentication') return;
    out.push({ index, line, result: validatePolicy(object) });
  });
  return out;
}
