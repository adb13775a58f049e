/**
 * Compiles a validated AuthorizationPolicy into the L4 Authorization the node agent enforces, with Istio's
 * ambient semantics (pilot's convertAuthorizationPolicy):
 *   - selector -> WORKLOAD_SELECTOR (labels kept on the result); none -> NAMESPACE, or GLOBAL in the root namespace;
 *   - each rule -> one group whose clauses are its `to`, its `from` and each `when`;
 *   - `serviceAccounts: [ns/sa | sa]` -> ServiceAccountMatch (namespace defaults to the policy's);
 *   - `*`, `x*`, `*x` -> presence, prefix, suffix;
 *   - HTTP-only fields (hosts, methods, paths, request principals, remote IPs, request.* conditions): in an ALLOW
 *     rule the whole rule is dropped (it can never match at L4); in a DENY rule only the HTTP part is dropped
 *     and the L4 part is enforced. Both are more restrictive than written, and both leave a warning saying a
 *     waypoint is needed.
 *   - targetRef(s) policies are for waypoints and gateways; AUDIT and CUSTOM are not enforced at L4: no result.
 *
 * Owns: the CRD -> model mapping. Must not know about: validation details (validate.ts runs first), wire
 * encoding, or evaluation.
 */
import type { AuthorizationPolicyObject, OperationSpec, RuleSpec, SourceSpec } from './crd-schema.ts';
import { PolicyError } from './errors.ts';
import { parseCidr } from './ip.ts';
import { DEFAULT_ROOT_NAMESPACE, type AddressMatch, type Authorization, type CompileResult, type Group, type Match, type Rules, type ServiceAccountMatch, type StringMatch } from './model.ts';
import { isDryRun, L4_CONDITION_KEYS, validatePolicy } from './validate.ts';

export interface CompileOptions {
  /** The mesh's root namespace: policies there without a selector apply mesh-wide. Default `istio-system`. */
  rootNamespace?: string;
}

export function toStringMatch(value: string): StringMatch {
  if (value === '*') return { presence: true };
  if (value.startsWith('*')) return { suffix: value.slice(1) };
  if (value.endsWith('*')) return { prefix: value.slice(0, -1) };
  return { exact: value };
}

function toAddresses(values: readonly string[] | undefined): AddressMatch[] {
  const out: AddressMatch[] = [];
  for (const value of values ?? []) {
    const parsed = parseCidr(value);
    if (!('error' in parsed)) out.push({ address: parsed.network, length: parsed.length });
  }
  return out;
}

function toPorts(values: readonly string[] | undefined): number[] {
  const out: number[] = [];
  for (const value of values ?? []) {
    const port = Number(value);
    if (Number.isInteger(port) && port >= 0 && port <= 65535 && value.trim() !== '') out.push(port);
  }
  return out;
}

function toServiceAccounts(values: readonly string[] | undefined, policyNamespace: string): ServiceAccountMatch[] {
  return (values ?? []).map((value) => {
    const slash = value.indexOf('/');
    return slash === -1 ? { namespace: policyNamespace, serviceAccount: value } : { namespace: value.slice(0, slash), serviceAccount: value.slice(slash + 1) };
  });
}

/** Sets `field` on `match` only when the list is not empty, so compiled policies stay small and readable. */
function put<K extends keyof Match>(match: Match, field: K, values: NonNullable<Match[K]>): void {
  if ((values as unknown[]).length > 0) match[field] = values;
}

function isEmptyMatch(match: Match): boolean {
  return Object.values(match).every((values) => !Array.isArray(values) || values.length === 0);
}

const HTTP_OPERATION_FIELDS = ['hosts', 'notHosts', 'methods', 'notMethods', 'paths', 'notPaths'] as const satisfies readonly (keyof OperationSpec)[];
const HTTP_SOURCE_FIELDS = ['requestPrincipals', 'notRequestPrincipals', 'remoteIpBlocks', 'notRemoteIpBlocks'] as const satisfies readonly (keyof SourceSpec)[];

interface CompiledRule {
  /** Undefined when the rule can never match at L4 (ALLOW rule with HTTP fields). */
  group: Group | undefined;
  httpFields: string[];
}

function compileRule(rule: RuleSpec, action: 'ALLOW' | 'DENY', policyNamespace: string): CompiledRule {
  const httpFields = new Set<string>();
  const clauses: Rules[] = [];

  if (rule.to && rule.to.length > 0) {
    const matches = rule.to.map(({ operation = {} }) => {
      for (const field of HTTP_OPERATION_FIELDS) if (operation[field]?.length) httpFields.add(field);
      const match: Match = {};
      put(match, 'destinationPorts', toPorts(operation.ports));
      put(match, 'notDestinationPorts', toPorts(operation.notPorts));
      return match;
    });
    clauses.push({ matches });
  }
  if (rule.from && rule.from.length > 0) {
    const matches = rule.from.map(({ source = {} }) => {
      for (const field of HTTP_SOURCE_FIELDS) if (source[field]?.length) httpFields.add(field);
      const match: Match = {};
      put(match, 'sourceIps', toAddresses(source.ipBlocks));
      put(match, 'notSourceIps', toAddresses(source.notIpBlocks));
      put(match, 'namespaces', (source.namespaces ?? []).map(toStringMatch));
      put(match, 'notNamespaces', (source.notNamespaces ?? []).map(toStringMatch));
      put(match, 'serviceAccounts', toServiceAccounts(source.serviceAccounts, policyNamespace));
      put(match, 'notServiceAccounts', toServiceAccounts(source.notServiceAccounts, policyNamespace));
      put(match, 'principals', (source.principals ?? []).map(toStringMatch));
      put(match, 'notPrincipals', (source.notPrincipals ?? []).map(toStringMatch));
      return match;
    });
    clauses.push({ matches });
  }
  for (const condition of rule.when ?? []) {
    if (!L4_CONDITION_KEYS.includes(condition.key)) {
      httpFields.add(condition.key);
      clauses.push({ matches: [{}] });
      continue;
    }
    const match: Match = {};
    const values = condition.values ?? [];
    const notValues = condition.notValues ?? [];
    switch (condition.key) {
      case 'source.ip':
        put(match, 'sourceIps', toAddresses(values));
        put(match, 'notSourceIps', toAddresses(notValues));
        break;
      case 'destination.ip':
        put(match, 'destinationIps', toAddresses(values));
        put(match, 'notDestinationIps', toAddresses(notValues));
        break;
      case 'source.namespace':
        put(match, 'namespaces', values.map(toStringMatch));
        put(match, 'notNamespaces', notValues.map(toStringMatch));
        break;
      case 'source.principal':
        put(match, 'principals', values.map(toStringMatch));
        put(match, 'notPrincipals', notValues.map(toStringMatch));
        break;
      case 'destination.port':
        put(match, 'destinationPorts', toPorts(values));
        put(match, 'notDestinationPorts', toPorts(notValues));
        break;
    }
    clauses.push({ matches: [match] });
  }

  if (httpFields.size > 0 && action === 'ALLOW') return { group: undefined, httpFields: [...httpFields] };
  // DENY: a clause alternative left empty by dropping HTTP fields stands for "any request", so the clause as a
  // whole always matches at L4: leave it out, which enforces the L4 part of the rule. (ztunnel skips an empty
  // Match instead of treating it as a match, so sending it would silently disable the rule.)
  const kept = clauses.filter((clause) => !clause.matches.some(isEmptyMatch));
  return { group: { rules: kept }, httpFields: [...httpFields] };
}

/** Compiles a validated AuthorizationPolicy (see validate.ts). */
export function compileAuthorizationPolicy(object: AuthorizationPolicyObject, options: CompileOptions = {}): CompileResult {
  const rootNamespace = options.rootNamespace ?? DEFAULT_ROOT_NAMESPACE;
  const spec = object.spec ?? {};
  const name = object.metadata.name;
  const namespace = object.metadata.namespace ?? 'default';
  const key = `${namespace}/${name}`;
  if (spec.targetRef || (spec.targetRefs && spec.targetRefs.length > 0)) {
    return { authorization: undefined, warnings: [`AuthorizationPolicy ${key} uses targetRef: it is enforced by the waypoint or gateway it names, not by the node agent`] };
  }
  const action = spec.action ?? 'ALLOW';
  if (action !== 'ALLOW' && action !== 'DENY') {
    return { authorization: undefined, warnings: [`AuthorizationPolicy ${key}: the node agent does not enforce the ${action} action; it is ignored at L4`] };
  }
  const matchLabels = spec.selector?.matchLabels;
  const hasSelector = matchLabels !== undefined && Object.keys(matchLabels).length > 0;
  const authorization: Authorization = {
    name,
    namespace,
    scope: hasSelector ? 'WORKLOAD_SELECTOR' : namespace === rootNamespace ? 'GLOBAL' : 'NAMESPACE',
    action,
    groups: [],
    dryRun: isDryRun(object),
  };
  if (hasSelector) authorization.selector = { ...matchLabels };

  const warnings: string[] = [];
  (spec.rules ?? []).forEach((rule, index) => {
    const compiled = compileRule(rule, action, namespace);
    if (compiled.group) authorization.groups.push(compiled.group);
    if (compiled.httpFields.length > 0) {
      const fields = compiled.httpFields.sort().join(', ');
      const consequence =
        action === 'ALLOW'
          ? 'this ALLOW rule never matches at L4 (more restrictive than written)'
          : 'this DENY rule is enforced on its L4 part only (more restrictive than written)';
      warnings.push(`AuthorizationPolicy ${key} spec.rules[${index}] uses HTTP attributes (${fields}) that the node agent cannot see: ${consequence}; use a waypoint to enforce HTTP rules`);
    }
  });
  return { authorization, warnings };
}

/**
 * Validates then compiles an AuthorizationPolicy object. Throws PolicyError when the object is invalid; a bad
 * policy never reaches the compiled set, so it cannot affect the others.
 */
export function compilePolicyObject(object: unknown, options: CompileOptions = {}): CompileResult {
  const result = validatePolicy(object);
  if (!result.ok) throw result.error;
  if (result.kind !== 'AuthorizationPolicy') {
    throw new PolicyError('AMBIT_POLICY_INVALID', `${result.kind} ${result.object.metadata.name}`, [
      { path: 'kind', message: 'expected an AuthorizationPolicy (compile PeerAuthentication with peerAuthenticationToAuthorization)' },
    ]);
  }
  return compileAuthorizationPolicy(result.object, options);
}
