/**
 * `explain`: the decision for one connection with every policy in scope accounted for — which rule matched, and
 * for those that did not, which condition failed, in words. What `ambitctl authz check` prints and what a denial
 * log can carry.
 *
 * Owns: the trace. Must not know about: indexing (it reads every policy; it is not on the per-connection path).
 */
import { AuthorizationIndex, evaluate, type Decision } from './evaluate.ts';
import { CompiledMatch, matchTest, preparePeer, type Connection, type Peer } from './matchers.ts';
import { CONVERTED_PEER_AUTHENTICATION_PREFIX, STATIC_STRICT_POLICY_NAME } from './peer-authentication.ts';
import { authorizationKey, type AddressMatch, type Authorization, type Match, type Rules, type ServiceAccountMatch, type StringMatch } from './model.ts';

export interface ClauseTrace {
  matched: boolean;
  /** What the clause asks for, e.g. `source principal is one of [cluster.local/ns/web/sa/*]`. */
  description: string;
  /** Why it did not match, when it did not. */
  failure?: string;
}

export interface RuleTrace {
  /** 1-based, as `ambitctl` prints it. */
  rule: number;
  matched: boolean;
  clauses: ClauseTrace[];
}

export interface PolicyTrace {
  policy: string;
  action: 'ALLOW' | 'DENY';
  dryRun: boolean;
  matched: boolean;
  rules: RuleTrace[];
}

export interface Explanation {
  decision: Decision;
  /** The connection as it was matched: identity without `spiffe://`, namespace, addresses, port. */
  connection: { principal: string; namespace: string; sourceIp: string; destinationIp: string; destinationPort: number };
  policies: PolicyTrace[];
  /** Human-readable lines: the decision first, then each policy. */
  lines: string[];
}

function formatStringMatch(item: StringMatch): string {
  if ('exact' in item) return item.exact;
  if ('prefix' in item) return `${item.prefix}*`;
  if ('suffix' in item) return `*${item.suffix}`;
  return '* (any)';
}

interface FieldCheck {
  text: string;
  ok: boolean;
  failure: string;
}

function fieldChecks(ruleMatch: Match, peer: Peer, connection: Connection): FieldCheck[] {
  let match = ruleMatch;
  const checks: FieldCheck[] = [];
  const absent = 'absent (no verified peer identity: plaintext connection)';
  const principalText = peer.principal === '' ? absent : JSON.stringify(peer.principal);
  const namespaceText = peer.namespace === '' ? absent : JSON.stringify(peer.namespace);
  const saText = peer.serviceAccount === '' ? absent : `${peer.identityNamespace}/${peer.serviceAccount}`;
  const add = (name: string, list: readonly string[] | undefined, negated: boolean, value: string, test: () => boolean): void => {
    if (!list || list.length === 0) return;
    const hit = test();
    const ok = negated ? !hit : hit;
    const shown = `[${list.join(', ')}]`;
    checks.push({
      text: `${name} ${negated ? 'is not' : 'is'} one of ${shown}`,
      ok,
      failure: negated ? `${name} is ${value}, which is excluded` : `${name} is ${value}`,
    });
  };
  // `notPrincipals: [presence]` is how STRICT mTLS reads as a rule ("no verified identity"): say that, not
  // "is not one of [* (any)]".
  const onlyPresence = (list: readonly StringMatch[] | undefined): boolean => list?.length === 1 && 'presence' in list[0]!;
  if (onlyPresence(match.notPrincipals)) {
    const plaintext = peer.principal === '';
    checks.push({
      text: 'a connection without a verified peer identity (plaintext)',
      ok: plaintext,
      failure: `the source has the verified identity ${principalText} (mutual TLS)`,
    });
    match = { ...match, notPrincipals: undefined };
  }
  const strings = (list: readonly StringMatch[] | undefined): string[] | undefined => list?.map(formatStringMatch);
  const ips = (list: readonly AddressMatch[] | undefined): string[] | undefined => list?.map((item) => `${item.address}/${item.length}`);
  const sas = (list: readonly ServiceAccountMatch[] | undefined): string[] | undefined => list?.map((item) => `${item.namespace}/${item.serviceAccount}`);
  const one = (field: keyof Match): ((peer: Peer) => boolean) => {
    const compiled = new CompiledMatch({ [field]: match[field] } as Match);
    return (target) => matchTest(compiled, target);
  };
  add('source principal', strings(match.principals), false, principalText, () => one('principals')(peer));
  add('source principal', strings(match.notPrincipals), true, principalText, () => !one('notPrincipals')(peer));
  add('source namespace', strings(match.namespaces), false, namespaceText, () => one('namespaces')(peer));
  add('source namespace', strings(match.notNamespaces), true, namespaceText, () => !one('notNamespaces')(peer));
  add('source service account', sas(match.serviceAccounts), false, saText, () => one('serviceAccounts')(peer));
  add('source service account', sas(match.notServiceAccounts), true, saText, () => !one('notServiceAccounts')(peer));
  add('source IP', ips(match.sourceIps), false, connection.sourceIp, () => one('sourceIps')(peer));
  add('source IP', ips(match.notSourceIps), true, connection.sourceIp, () => !one('notSourceIps')(peer));
  add('destination IP', ips(match.destinationIps), false, connection.destinationIp, () => one('destinationIps')(peer));
  add('destination IP', ips(match.notDestinationIps), true, connection.destinationIp, () => !one('notDestinationIps')(peer));
  add('destination port', match.destinationPorts?.map(String), false, String(connection.destinationPort), () => one('destinationPorts')(peer));
  add('destination port', match.notDestinationPorts?.map(String), true, String(connection.destinationPort), () => !one('notDestinationPorts')(peer));
  return checks;
}

function traceClause(clause: Rules, peer: Peer, connection: Connection): ClauseTrace {
  if (clause.matches.length === 0) return { matched: true, description: 'anything' };
  const alternatives = clause.matches.map((match) => {
    const checks = fieldChecks(match, peer, connection);
    if (checks.length === 0) return { text: 'nothing (an empty alternative never matches)', ok: false, failure: 'empty alternative' };
    return { text: checks.map((check) => check.text).join(' and '), ok: checks.every((check) => check.ok), failure: checks.filter((check) => !check.ok).map((check) => check.failure).join('; ') };
  });
  const matched = alternatives.some((alternative) => alternative.ok);
  const description = alternatives.map((alternative) => alternative.text).join(', or ');
  return matched ? { matched, description } : { matched, description, failure: alternatives.map((alternative) => alternative.failure).join(' | ') };
}

/** Names the PeerAuthentication behind Istio's converted policies, which a reader did not write under that name. */
function strictNote(policyKey: string): string {
  const name = policyKey.slice(policyKey.indexOf('/') + 1);
  if (name === STATIC_STRICT_POLICY_NAME) return ' (PeerAuthentication mode STRICT: refuses plaintext)';
  if (name.startsWith(CONVERTED_PEER_AUTHENTICATION_PREFIX)) return ` (PeerAuthentication ${name.slice(CONVERTED_PEER_AUTHENTICATION_PREFIX.length)} with port-level modes)`;
  return '';
}

/**
 * The decision with a trace of every policy in scope: which rules matched and, for those that did not, which
 * condition failed. Slower than `evaluate`; meant for `ambitctl authz check` and logs of denials.
 */
export function explain(connection: Connection, policies: AuthorizationIndex | readonly Authorization[]): Explanation {
  const list = policies instanceof AuthorizationIndex ? policies.policies : policies;
  const decision = evaluate(connection, policies);
  const peer = preparePeer(connection);
  const traces: PolicyTrace[] = list.map((policy) => {
    const rules = policy.groups.map((group, index) => {
      const clauses = group.rules.map((clause) => traceClause(clause, peer, connection));
      return { rule: index + 1, matched: clauses.every((clause) => clause.matched), clauses };
    });
    return { policy: authorizationKey(policy), action: policy.action, dryRun: policy.dryRun, matched: rules.some((rule) => rule.matched), rules };
  });
  const lines = [`${decision.allowed ? 'ALLOWED' : 'DENIED'}: ${decision.reason}${decision.decidingPolicy ? strictNote(decision.decidingPolicy) : ''}`];
  if (decision.dryRun) lines.push(`dry run: ${decision.dryRun.reason}`);
  if (traces.length === 0) lines.push('no authorization policy applies to this workload');
  // The headline already says the deciding policy matches (and which rule): its trace would say it again.
  const others = traces.filter((trace) => !(trace.policy === decision.decidingPolicy && trace.matched && !trace.dryRun));
  if (others.length > 0 && others.length < traces.length) lines.push('the other policies that apply to this workload:');
  for (const trace of others) {
    const label = `${trace.dryRun ? 'dry-run ' : ''}${trace.action} ${trace.policy}${strictNote(trace.policy)}`;
    if (trace.rules.length === 0) {
      lines.push(`  ${label}: has no rules, so it matches nothing${trace.action === 'ALLOW' ? ' (an ALLOW policy with no rules allows nothing)' : ''}`);
      continue;
    }
    lines.push(`  ${label}: ${trace.matched ? 'matches' : 'does not match'}`);
    for (const rule of trace.rules) {
      if (rule.clauses.length === 0) {
        lines.push(`    rule ${rule.rule}: matches any connection`);
        continue;
      }
      const failed = rule.clauses.find((clause) => !clause.matched);
      lines.push(`    rule ${rule.rule}: ${rule.matched ? 'matches' : `does not match: ${failed?.failure ?? ''}, but the rule needs ${failed?.description ?? ''}`}`);
    }
  }
  return {
    decision,
    connection: { principal: peer.principal, namespace: peer.namespace, sourceIp: connection.sourceIp, destinationIp: connection.destinationIp, destinationPort: connection.destinationPort },
    policies: traces,
    lines,
  };
}
