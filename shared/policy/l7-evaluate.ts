/**
 * L7 authorization decisions at the waypoint: for one HTTP request and the L7 policies that apply to its Service,
 * allow or deny, which policy and rule decided, whether an AUDIT policy matched, and what dry-run policies would
 * have done. Envoy's order, as Istio configures its RBAC filters (CUSTOM is compiled to DENY, l7-compile.ts):
 *   1. an enforced DENY rule matches                 -> deny (403 `RBAC: access denied`)
 *   2. no enforced ALLOW policy applies              -> allow
 *   3. an enforced ALLOW rule matches                -> allow
 *   4. otherwise                                     -> deny
 * AUDIT rules never change the decision; the first one that matches is reported. Dry-run policies are evaluated
 * as if enforced too, and reported when that would change the decision.
 *
 * Owns: precompiling policies into an index per Service (`L7PolicyIndex`) and `decide`. Everything that depends
 * on the policy text (wildcards, CIDRs, ports, condition keys) is turned into closures and Sets once; a decision
 * calls them and returns a decision object built at compile time (no allocation unless AUDIT or dry-run apply).
 * Each rule is filed under one thing a request must have for it to match (an exact path, an exact principal, a
 * literal path prefix, an exact namespace); a request looks those up and scans only the rules that pin none, so
 * 1,000 policies cost a handful of Map lookups and the tests of the few rules found there.
 * Must not know about: HTTP servers, sockets, JWT verification (it gets `auth` already verified), xDS.
 */
import { cidrContains, parseCidr, type ParsedCidr, type ParsedIp } from './ip.ts';
import type { L7Action, L7Authorization, L7Condition, L7Operation, L7Rule, L7Source } from './l7-model.ts';

/** What a verified JWT says, as Istio's `request.auth.*` attributes. */
export interface RequestAuth {
  /** `<iss>/<sub>`. */
  principal: string;
  audiences: readonly string[];
  /** `azp`, '' when absent. */
  presenter: string;
  claims: Readonly<Record<string, unknown>>;
}

/** One request as the evaluator sees it (the waypoint fills it from the request and its HBONE stream). */
export interface HttpRequestAttributes {
  method: string;
  /** Normalised path, without query or fragment. */
  path: string;
  /** Lower-case `host`/`:authority`, and the same without a `:port` (equal when there is none). */
  host: string;
  hostWithoutPort: string;
  /** The destination (Service) port the client asked for. */
  port: number;
  /** Lower-case names, as Node gives them. */
  headers: Readonly<Record<string, string | string[] | undefined>>;
  /** Peer identity without `spiffe://`: `cluster.local/ns/shop/sa/client`; '' with none. */
  sourcePrincipal: string;
  sourceNamespace: string;
  /** `ns/sa` of the peer identity. */
  sourceServiceAccount: string;
  sourceIp: ParsedIp | undefined;
  /** The client's address after X-Forwarded-For with numTrustedProxies; the peer address otherwise. */
  remoteIp: ParsedIp | undefined;
  destinationIp: ParsedIp | undefined;
  /** SNI of the downstream TLS connection; '' when none (HBONE carries plaintext HTTP inside mTLS). */
  sni: string;
  /** Undefined: no JWT (or none verified). */
  auth: RequestAuth | undefined;
}

export interface L7DryRunReport {
  /** The decision if every dry-run policy were enforced too. */
  allowedIfEnforced: boolean;
  policy: string;
  rule: number;
}

export interface L7Decision {
  allowed: boolean;
  /** `namespace/name` of the deciding policy; '' when no policy decided (no ALLOW policy, or none matched). */
  policy: string;
  /** Index of the matching rule in that policy's `rules`; -1 with no policy. */
  rule: number;
  reason: string;
  /** `namespace/name` of the first AUDIT policy that matched. */
  audit?: string;
  dryRun?: L7DryRunReport;
}

// ---------------------------------------------------------------------------------------------------------------
// Compiled matchers

type Test = (request: HttpRequestAttributes) => boolean;

/** Istio's string forms: `*` (present, non-empty), `x*`, `*x`, exact. */
class StringMatcher {
  readonly exact = new Set<string>();
  readonly prefixes: string[] = [];
  readonly suffixes: string[] = [];
  presence = false;

  constructor(values: readonly string[], lowerCase = false) {
    for (const raw of values) {
      const value = lowerCase ? raw.toLowerCase() : raw;
      if (value === '*') this.presence = true;
      else if (value.startsWith('*')) this.suffixes.push(value.slice(1));
      else if (value.endsWith('*')) this.prefixes.push(value.slice(0, -1));
      else this.exact.add(value);
    }
  }

  test(value: string | undefined): boolean {
    if (value === undefined) return false;
    if (this.exact.has(value)) return true;
    if (this.presence && value !== '') return true;
    for (const prefix of this.prefixes) if (value.startsWith(prefix)) return true;
    for (const suffix of this.suffixes) if (value.endsWith(suffix)) return true;
    return false;
  }

  /** Any of a list matches (a list-valued claim, the audiences). */
  testAny(values: readonly string[]): boolean {
    for (const value of values) if (this.test(value)) return true;
    return false;
  }
}

function cidrs(values: readonly string[]): ParsedCidr[] {
  const out: ParsedCidr[] = [];
  for (const value of values) {
    const parsed = parseCidr(value);
    if (!('error' in parsed)) out.push(parsed);
  }
  return out;
}

function inAny(blocks: readonly ParsedCidr[], ip: ParsedIp | undefined): boolean {
  if (ip === undefined) return false;
  for (const block of blocks) if (cidrContains(block, ip)) return true;
  return false;
}

function ports(values: readonly string[]): Set<number> {
  return new Set(values.map(Number).filter((port) => Number.isInteger(port)));
}

function headerValue(request: HttpRequestAttributes, name: string): string | undefined {
  const value = request.headers[name];
  return Array.isArray(value) ? value.join(',') : value;
}

/** A claim by path (`request.auth.claims[a][b]`), as strings: a string, a number or boolean, or a list of those. */
function claimValues(auth: RequestAuth | undefined, path: readonly string[]): readonly string[] | undefined {
  if (auth === undefined) return undefined;
  let node: unknown = auth.claims;
  for (const segment of path) {
    if (node === null || typeof node !== 'object' || Array.isArray(node)) return undefined;
    node = (node as Record<string, unknown>)[segment];
  }
  if (typeof node === 'string') return [node];
  if (typeof node === 'number' || typeof node === 'boolean') return [String(node)];
  if (Array.isArray(node)) return node.filter((item) => typeof item === 'string') as string[];
  return undefined;
}

/** `request.auth.claims[groups][admin]` -> ['groups', 'admin']; undefined when the key is not that form. */
export function claimPath(key: string): string[] | undefined {
  const prefix = 'request.auth.claims';
  if (!key.startsWith(prefix)) return undefined;
  const rest = key.slice(prefix.length);
  const parts = [...rest.matchAll(/\[([^\]]+)\]/g)].map((match) => match[1]!);
  return parts.length > 0 && parts.map((part) => `[${part}]`).join('') === rest ? parts : undefined;
}

function headerName(key: string): string | undefined {
  const match = /^request\.headers\[([^\]]+)\]$/.exec(key);
  return match ? match[1]!.toLowerCase() : undefined;
}

/** `values` (any matches) and `notValues` (none matches) over a getter. */
function stringField(values: readonly string[] | undefined, notValues: readonly string[] | undefined, get: (request: HttpRequestAttributes) => string | undefined, lowerCase = false): Test[] {
  const tests: Test[] = [];
  if (values && values.length > 0) {
    const matcher = new StringMatcher(values, lowerCase);
    tests.push((request) => matcher.test(get(request)));
  }
  if (notValues && notValues.length > 0) {
    const matcher = new StringMatcher(notValues, lowerCase);
    tests.push((request) => !matcher.test(get(request)));
  }
  return tests;
}

function listField(values: readonly string[] | undefined, notValues: readonly string[] | undefined, get: (request: HttpRequestAttributes) => readonly string[] | undefined): Test[] {
  const tests: Test[] = [];
  if (values && values.length > 0) {
    const matcher = new StringMatcher(values);
    tests.push((request) => {
      const list = get(request);
      return list !== undefined && matcher.testAny(list);
    });
  }
  if (notValues && notValues.length > 0) {
    const matcher = new StringMatcher(notValues);
    tests.push((request) => {
      const list = get(request);
      return list === undefined || !matcher.testAny(list);
    });
  }
  return tests;
}

function ipField(values: readonly string[] | undefined, notValues: readonly string[] | undefined, get: (request: HttpRequestAttributes) => ParsedIp | undefined): Test[] {
  const tests: Test[] = [];
  if (values && values.length > 0) {
    const blocks = cidrs(values);
    tests.push((request) => inAny(blocks, get(request)));
  }
  if (notValues && notValues.length > 0) {
    const blocks = cidrs(notValues);
    tests.push((request) => !inAny(blocks, get(request)));
  }
  return tests;
}

function portField(values: readonly string[] | undefined, notValues: readonly string[] | undefined): Test[] {
  const tests: Test[] = [];
  if (values && values.length > 0) {
    const set = ports(values);
    tests.push((request) => set.has(request.port));
  }
  if (notValues && notValues.length > 0) {
    const set = ports(notValues);
    tests.push((request) => !set.has(request.port));
  }
  return tests;
}

const principalOf = (request: HttpRequestAttributes): string | undefined => request.sourcePrincipal || undefined;
const requestPrincipalOf = (request: HttpRequestAttributes): string | undefined => request.auth?.principal;

function compileSource(source: L7Source): Test[] {
  return [
    ...stringField(source.principals, source.notPrincipals, principalOf),
    ...stringField(source.requestPrincipals, source.notRequestPrincipals, requestPrincipalOf),
    ...stringField(source.namespaces, source.notNamespaces, (request) => request.sourceNamespace || undefined),
    ...stringField(source.serviceAccounts, source.notServiceAccounts, (request) => request.sourceServiceAccount || undefined),
    ...ipField(source.ipBlocks, source.notIpBlocks, (request) => request.sourceIp),
    ...ipField(source.remoteIpBlocks, source.notRemoteIpBlocks, (request) => request.remoteIp),
  ];
}

function hostTest(values: readonly string[] | undefined, negate: boolean): Test[] {
  if (!values || values.length === 0) return [];
  const matcher = new StringMatcher(values, true);
  // A host written without a port matches the authority with or without one (Istio's rule).
  const test = (request: HttpRequestAttributes): boolean => matcher.test(request.host) || matcher.test(request.hostWithoutPort);
  return [negate ? (request) => !test(request) : test];
}

function compileOperation(operation: L7Operation): Test[] {
  return [
    ...hostTest(operation.hosts, false),
    ...hostTest(operation.notHosts, true),
    ...portField(operation.ports, operation.notPorts),
    ...stringField(operation.methods, operation.notMethods, (request) => request.method),
    ...stringField(operation.paths, operation.notPaths, (request) => request.path),
  ];
}

/** The condition keys the waypoint evaluates; others (experimental.envoy.filters.*) are unsupported. */
export function conditionSupported(key: string): boolean {
  return (
    key === 'source.ip' || key === 'remote.ip' || key === 'destination.ip' || key === 'source.namespace' || key === 'source.principal' ||
    key === 'destination.port' || key === 'connection.sni' || key === 'request.auth.principal' || key === 'request.auth.audiences' ||
    key === 'request.auth.presenter' || headerName(key) !== undefined || claimPath(key) !== undefined
  );
}

function compileCondition(condition: L7Condition, action: L7Action): Test[] {
  const { key, values, notValues } = condition;
  switch (key) {
    case 'source.ip':
      return ipField(values, notValues, (request) => request.sourceIp);
    case 'remote.ip':
      return ipField(values, notValues, (request) => request.remoteIp);
    case 'destination.ip':
      return ipField(values, notValues, (request) => request.destinationIp);
    case 'source.namespace':
      return stringField(values, notValues, (request) => request.sourceNamespace || undefined);
    case 'source.principal':
      return stringField(values, notValues, principalOf);
    case 'destination.port':
      return portField(values, notValues);
    case 'connection.sni':
      return stringField(values, notValues, (request) => request.sni || undefined);
    case 'request.auth.principal':
      return stringField(values, notValues, requestPrincipalOf);
    case 'request.auth.presenter':
      return stringField(values, notValues, (request) => request.auth?.presenter || undefined);
    case 'request.auth.audiences':
      return listField(values, notValues, (request) => request.auth?.audiences);
  }
  const header = headerName(key);
  if (header !== undefined) return stringField(values, notValues, (request) => headerValue(request, header));
  const claim = claimPath(key);
  if (claim !== undefined) return listField(values, notValues, (request) => claimValues(request.auth, claim));
  // Unsupported here: a DENY rule is taken as matching (more restrictive than written), an ALLOW one as not.
  const matches = action === 'DENY';
  return [() => matches];
}

/** Every test of a list passes. */
function all(tests: readonly Test[], request: HttpRequestAttributes): boolean {
  for (const test of tests) if (!test(request)) return false;
  return true;
}

/** One alternative of a list passes (an empty list of alternatives does not constrain). */
function any(alternatives: readonly (readonly Test[])[], request: HttpRequestAttributes): boolean {
  if (alternatives.length === 0) return true;
  for (const alternative of alternatives) if (all(alternative, request)) return true;
  return false;
}

interface CompiledRule {
  from: Test[][];
  to: Test[][];
  when: Test[];
  /** Prebuilt, returned as is when this rule decides. */
  decision: L7Decision;
  policyKey: string;
  ruleIndex: number;
  /** DENY and AUDIT: what a match means. */
  action: L7Action;
}

function ruleTest(rule: CompiledRule, request: HttpRequestAttributes): boolean {
  return all(rule.when, request) && any(rule.to, request) && any(rule.from, request);
}

function compileRule(policy: L7Authorization, rule: L7Rule, ruleIndex: number): CompiledRule {
  const policyKey = `${policy.namespace}/${policy.name}`;
  const deny = policy.action === 'DENY';
  return {
    from: rule.from.map(compileSource),
    to: rule.to.map(compileOperation),
    when: rule.when.flatMap((condition) => compileCondition(condition, policy.action)),
    decision: {
      allowed: !deny,
      policy: policyKey,
      rule: ruleIndex,
      reason: `${deny ? 'denied' : 'allowed'} by ${policy.action} policy ${policyKey} rule ${ruleIndex}`,
    },
    policyKey,
    ruleIndex,
    action: policy.action,
  };
}

/** Exact values every alternative of a rule pins, or undefined when some alternative leaves that dimension open. */
function pinnedExact(alternatives: readonly (L7Operation | L7Source)[], field: 'paths' | 'principals' | 'namespaces'): string[] | undefined {
  if (alternatives.length === 0) return undefined;
  const values: string[] = [];
  for (const alternative of alternatives) {
    const list = (alternative as Record<string, string[] | undefined>)[field];
    if (!list || list.length === 0 || list.some((value) => value.includes('*'))) return undefined;
    values.push(...list);
  }
  return values;
}

/** Literal path prefixes every `to` alternative pins (`/api/*` -> `/api/`, exact paths as themselves), or undefined. */
function pinnedPathPrefixes(alternatives: readonly L7Operation[]): string[] | undefined {
  if (alternatives.length === 0) return undefined;
  const values: string[] = [];
  for (const alternative of alternatives) {
    const list = alternative.paths;
    if (!list || list.length === 0) return undefined;
    for (const value of list) {
      // `*` and `*suffix` pin nothing; a one-character prefix (`/`) is no filter.
      if (value.startsWith('*')) return undefined;
      const prefix = value.endsWith('*') ? value.slice(0, -1) : value;
      if (prefix.length < 2) return undefined;
      values.push(prefix);
    }
  }
  return values;
}

/**
 * The rules of one action, each filed under one dimension it cannot match without (in order of selectivity: exact
 * path, exact principal, literal path prefix, exact namespace) or, with none, in a list scanned for every request.
 * Rules keep their compile order within a bucket; a request's first match is searched bucket by bucket.
 */
class RuleSet {
  readonly byPath = new Map<string, CompiledRule[]>();
  readonly byPrincipal = new Map<string, CompiledRule[]>();
  readonly byPathPrefix = new Map<string, CompiledRule[]>();
  /** Distinct prefix lengths, longest first: a request looks up only these slices of its path. */
  prefixLengths: number[] = [];
  readonly byNamespace = new Map<string, CompiledRule[]>();
  readonly scanned: CompiledRule[] = [];
  size = 0;

  add(rule: CompiledRule, source: L7Rule): void {
    this.size++;
    const paths = pinnedExact(source.to, 'paths');
    if (paths) return this.#file(this.byPath, paths, rule);
    const principals = pinnedExact(source.from, 'principals');
    if (principals) return this.#file(this.byPrincipal, principals, rule);
    const prefixes = pinnedPathPrefixes(source.to);
    if (prefixes) {
      for (const prefix of prefixes) if (!this.prefixLengths.includes(prefix.length)) this.prefixLengths.push(prefix.length);
      this.prefixLengths.sort((a, b) => b - a);
      return this.#file(this.byPathPrefix, prefixes, rule);
    }
    const namespaces = pinnedExact(source.from, 'namespaces');
    if (namespaces) return this.#file(this.byNamespace, namespaces, rule);
    this.scanned.push(rule);
  }

  #file(map: Map<string, CompiledRule[]>, keys: readonly string[], rule: CompiledRule): void {
    for (const key of new Set(keys)) {
      const list = map.get(key);
      if (list) list.push(rule);
      else map.set(key, [rule]);
    }
  }

  /** The first rule that matches, or undefined. */
  find(request: HttpRequestAttributes): CompiledRule | undefined {
    if (this.size === 0) return undefined;
    if (this.byPath.size > 0) {
      const rules = this.byPath.get(request.path);
      if (rules) for (const rule of rules) if (ruleTest(rule, request)) return rule;
    }
    if (this.byPrincipal.size > 0) {
      const rules = this.byPrincipal.get(request.sourcePrincipal);
      if (rules) for (const rule of rules) if (ruleTest(rule, request)) return rule;
    }
    if (this.byPathPrefix.size > 0) {
      const path = request.path;
      for (const length of this.prefixLengths) {
        if (length > path.length) continue;
        const rules = this.byPathPrefix.get(length === path.length ? path : path.slice(0, length));
        if (rules) for (const rule of rules) if (ruleTest(rule, request)) return rule;
      }
    }
    if (this.byNamespace.size > 0) {
      const rules = this.byNamespace.get(request.sourceNamespace);
      if (rules) for (const rule of rules) if (ruleTest(rule, request)) return rule;
    }
    for (const rule of this.scanned) if (ruleTest(rule, request)) return rule;
    return undefined;
  }
}

const ALLOWED_NO_POLICY: L7Decision = { allowed: true, policy: '', rule: -1, reason: 'allowed: no ALLOW policy applies' };
const DENIED_NO_MATCH: L7Decision = { allowed: false, policy: '', rule: -1, reason: 'denied: ALLOW policies apply and none matched' };

/** The precompiled policies of one Service at one waypoint. */
export class L7PolicyIndex {
  readonly #deny = new RuleSet();
  readonly #allow = new RuleSet();
  readonly #audit = new RuleSet();
  readonly #dryDeny = new RuleSet();
  readonly #dryAllow = new RuleSet();
  readonly #hasAllowPolicy: boolean;
  readonly #hasDryAllowPolicy: boolean;
  /** `namespace/name` of every policy in the index, sorted (for config dumps and explanations). */
  readonly policies: readonly string[];

  constructor(policies: readonly L7Authorization[]) {
    // Envoy orders policies by name within an action; so does the index (the first match is reported).
    const sorted = [...policies].sort((a, b) => (a.namespace === b.namespace ? (a.name < b.name ? -1 : 1) : a.namespace < b.namespace ? -1 : 1));
    let hasAllow = false;
    let hasDryAllow = false;
    for (const policy of sorted) {
      if (policy.action === 'ALLOW') {
        if (policy.dryRun) hasDryAllow = true;
        else hasAllow = true;
      }
      const set =
        policy.action === 'AUDIT' ? this.#audit : policy.action === 'DENY' ? (policy.dryRun ? this.#dryDeny : this.#deny) : policy.dryRun ? this.#dryAllow : this.#allow;
      policy.rules.forEach((rule, index) => set.add(compileRule(policy, rule, index), rule));
    }
    this.#hasAllowPolicy = hasAllow;
    this.#hasDryAllowPolicy = hasDryAllow;
    this.policies = sorted.map((policy) => `${policy.namespace}/${policy.name}`);
  }

  get empty(): boolean {
    return this.policies.length === 0;
  }

  decide(request: HttpRequestAttributes): L7Decision {
    let decision: L7Decision;
    const denied = this.#deny.find(request);
    if (denied) decision = denied.decision;
    else if (!this.#hasAllowPolicy) decision = ALLOWED_NO_POLICY;
    else decision = this.#allow.find(request)?.decision ?? DENIED_NO_MATCH;
    const audit = this.#audit.size > 0 ? this.#audit.find(request) : undefined;
    const dryRun = this.#dryDeny.size > 0 || this.#hasDryAllowPolicy ? this.#dryRun(request, decision) : undefined;
    if (audit === undefined && dryRun === undefined) return decision;
    return { ...decision, ...(audit ? { audit: audit.policyKey } : {}), ...(dryRun ? { dryRun } : {}) };
  }

  /** The decision with dry-run policies enforced too, when it differs from the enforced one or a dry-run rule matched. */
  #dryRun(request: HttpRequestAttributes, enforced: L7Decision): L7DryRunReport | undefined {
    if (!enforced.allowed) {
      const rule = this.#dryDeny.find(request) ?? this.#dryAllow.find(request);
      return rule ? { allowedIfEnforced: false, policy: rule.policyKey, rule: rule.ruleIndex } : undefined;
    }
    const deny = this.#dryDeny.find(request);
    if (deny) return { allowedIfEnforced: false, policy: deny.policyKey, rule: deny.ruleIndex };
    if (!this.#hasDryAllowPolicy) return undefined;
    const allow = this.#dryAllow.find(request);
    if (allow) return { allowedIfEnforced: true, policy: allow.policyKey, rule: allow.ruleIndex };
    // Enforced ALLOW policies match (or none exist); with the dry-run ALLOW ones enforced too, one enforced ALLOW match still allows.
    if (this.#hasAllowPolicy && enforced.policy !== '') return undefined;
    return { allowedIfEnforced: false, policy: '', rule: -1 };
  }
}
