/**
 * L4 authorization decisions: for one new connection and the policies that apply to its destination workload,
 * allow or deny, which policy decided, and why in words. Istio's order (ztunnel's state.rs):
 *   1. any enforced DENY policy matches        -> deny
 *   2. no enforced ALLOW policy applies        -> allow
 *   3. any enforced ALLOW policy matches       -> allow
 *   4. otherwise                               -> deny
 * Dry-run policies are evaluated the same way and reported (what would change if they were enforced), never
 * enforced.
 *
 * Owns: the pre-compiled index that makes a decision cheap with thousands of policies in scope, and `evaluate`.
 * `explain` (the full trace `ambitctl authz check` prints) lives in explain.ts; matching itself in matchers.ts.
 * Must not know about: sockets, HBONE, xDS, or how a denial is carried out (401 or reset).
 *
 * How the index works: every policy group (one AuthorizationPolicy rule) is pre-compiled (matchers.ts: CIDRs as
 * 32-bit words, ports and exact values in Sets, wildcards split into prefixes and suffixes). Each group is filed
 * under the keys of one clause it cannot match without — an exact principal, a service account, a namespace
 * (also for `<td>/ns/<ns>/*` principals), an account name (for principals ending in `/sa/<name>`), another
 * principal prefix or suffix, an IPv4 block, a port — or, when it has none, in a short list checked for every
 * connection. A decision looks the connection up once in those maps, then tests only the groups found there:
 * DENY ones first, then ALLOW ones until one matches, then dry-run ones when there are any.
 */
import { prefixMask, type ParsedCidr } from './ip.ts';
import { cidrList, compileGroup, emptyPeer, groupTest, hasAny, preparePeer, type CompiledGroup, type Connection, type Peer } from './matchers.ts';
import { authorizationKey, type Authorization, type Match, type Rules, type StringMatch } from './model.ts';

export type { Connection, PrincipalParts } from './matchers.ts';
export { principalParts } from './matchers.ts';

export interface DryRunReport {
  /** The connection is allowed now but would be denied if the dry-run policies were enforced. */
  wouldDeny: boolean;
  /** The decision if every dry-run policy were enforced too. */
  allowedIfEnforced: boolean;
  /** `namespace/name` of each dry-run policy whose rules match the connection. */
  matchedPolicies: string[];
  reason: string;
}

export interface Decision {
  allowed: boolean;
  /** `namespace/name` of the policy that decided; absent when no policy did (allowed by default, or no ALLOW matched). */
  decidingPolicy?: string;
  /** The decision in words a person understands. */
  reason: string;
  /** Present when dry-run policies apply to the workload. */
  dryRun?: DryRunReport;
}

// ---------------------------------------------------------------------------------------------------------------
// The index

interface GroupEntry {
  policyKey: string;
  deny: boolean;
  /**
   * Ports the group needs (from a clause that only matches given ports), checked inline before the group: a
   * cheap filter that spares most tests when a bucket holds many groups for other ports.
   */
  ports: Set<number> | undefined;
  group: CompiledGroup;
  /** Precomputed, so a decision builds no strings. */
  reason: string;
  /** The decision this group makes when it matches (frozen: shared by every connection it decides). */
  decision: Decision;
}

function entryTest(entry: GroupEntry, peer: Peer): boolean {
  const ports = entry.ports;
  if (ports !== undefined && !ports.has(peer.port)) return false;
  return groupTest(entry.group, peer);
}

/** The groups filed under one key, split by what a match means. */
class Bucket {
  // Shared empty lists until the first group of a kind arrives: most buckets hold one kind only.
  deny: GroupEntry[] = NO_ENTRIES;
  allow: GroupEntry[] = NO_ENTRIES;
  /** Dry-run groups of either action. */
  dryRun: GroupEntry[] = NO_ENTRIES;

  add(entry: GroupEntry, dryRun: boolean): void {
    if (dryRun) (this.dryRun === NO_ENTRIES ? (this.dryRun = []) : this.dryRun).push(entry);
    else if (entry.deny) (this.deny === NO_ENTRIES ? (this.deny = []) : this.deny).push(entry);
    else (this.allow === NO_ENTRIES ? (this.allow = []) : this.allow).push(entry);
  }
}

/** Never pushed to (Bucket.add replaces it first). */
const NO_ENTRIES: GroupEntry[] = [];

/** An index key a group can be filed under: the connection must carry this value for the group to match. */
type IndexKey =
  | { kind: 'principal'; value: string }
  | { kind: 'principalPrefix'; value: string }
  | { kind: 'principalSuffix'; value: string }
  | { kind: 'serviceAccount'; value: string }
  | { kind: 'serviceAccountName'; value: string }
  | { kind: 'namespace'; value: string }
  | { kind: 'namespacePrefix'; value: string }
  | { kind: 'sourceV4'; cidr: ParsedCidr }
  | { kind: 'destinationV4'; cidr: ParsedCidr }
  | { kind: 'port'; value: number };

/** Lower is more selective: used to pick which clause a group is filed under. */
const DIMENSION_RANK = { principal: 0, serviceAccount: 0, namespace: 1, sourceV4: 2, destinationV4: 3, port: 4 } as const;
type Dimension = keyof typeof DIMENSION_RANK;

// Wildcard principals of the common forms are filed by the part of the identity they pin down, so a decision
// needs one lookup by namespace or account name instead of one per distinct prefix or suffix length.
const NAMESPACE_PREFIX = /^[^/*]+\/ns\/([^/*]+)\/(?:sa\/?)?$/;
const ACCOUNT_SUFFIX = /^\/sa\/([^/*]+)$/;
const NAMESPACE_ACCOUNT_SUFFIX = /^\/ns\/([^/*]+)\/sa\/([^/*]+)$/;

function principalKey(item: StringMatch): IndexKey | undefined {
  if ('exact' in item) return { kind: 'principal', value: item.exact };
  if ('prefix' in item && item.prefix !== '') {
    const namespace = NAMESPACE_PREFIX.exec(item.prefix);
    return namespace ? { kind: 'namespace', value: namespace[1]! } : { kind: 'principalPrefix', value: item.prefix };
  }
  if ('suffix' in item && item.suffix !== '') {
    const both = NAMESPACE_ACCOUNT_SUFFIX.exec(item.suffix);
    if (both) return { kind: 'serviceAccount', value: `${both[1]}/${both[2]}` };
    const account = ACCOUNT_SUFFIX.exec(item.suffix);
    return account ? { kind: 'serviceAccountName', value: account[1]! } : { kind: 'principalSuffix', value: item.suffix };
  }
  return undefined;
}

/** The keys one Match would need along a dimension, or undefined when it does not constrain that dimension. */
function matchKeys(match: Match, dimension: Dimension): IndexKey[] | undefined {
  switch (dimension) {
    case 'principal': {
      if (!hasAny(match.principals)) return undefined;
      const keys: IndexKey[] = [];
      for (const item of match.principals) {
        const key = principalKey(item);
        if (!key) return undefined;
        keys.push(key);
      }
      return keys;
    }
    case 'serviceAccount':
      return hasAny(match.serviceAccounts) ? match.serviceAccounts.map((item) => ({ kind: 'serviceAccount', value: `${item.namespace}/${item.serviceAccount}` })) : undefined;
    case 'namespace': {
      if (!hasAny(match.namespaces)) return undefined;
      const keys: IndexKey[] = [];
      for (const item of match.namespaces) {
        if ('exact' in item) keys.push({ kind: 'namespace', value: item.exact });
        else if ('prefix' in item && item.prefix !== '') keys.push({ kind: 'namespacePrefix', value: item.prefix });
        else return undefined;
      }
      return keys;
    }
    case 'sourceV4':
    case 'destinationV4': {
      const list = dimension === 'sourceV4' ? match.sourceIps : match.destinationIps;
      if (!hasAny(list)) return undefined;
      const cidrs = cidrList(list);
      if (cidrs.length !== list.length || cidrs.some((cidr) => cidr.family !== 4)) return undefined;
      return cidrs.map((cidr) => ({ kind: dimension, cidr }));
    }
    case 'port':
      return hasAny(match.destinationPorts) ? match.destinationPorts.map((value) => ({ kind: 'port', value })) : undefined;
  }
}

/** The ports a group cannot match without (the smallest such set among its clauses), if any. */
function requiredPorts(clauses: readonly Rules[]): Set<number> | undefined {
  let best: Set<number> | undefined;
  for (const clause of clauses) {
    if (clause.matches.length === 0 || !clause.matches.every((match) => hasAny(match.destinationPorts))) continue;
    const ports = new Set(clause.matches.flatMap((match) => match.destinationPorts ?? []));
    if (!best || ports.size < best.size) best = ports;
  }
  return best;
}

/** The most selective keys a group can be filed under, or undefined when it must be checked for every connection. */
function chooseKeys(clauses: readonly Rules[]): IndexKey[] | undefined {
  let best: IndexKey[] | undefined;
  let bestRank = Infinity;
  for (const clause of clauses) {
    if (clause.matches.length === 0) continue;
    for (const dimension of Object.keys(DIMENSION_RANK) as Dimension[]) {
      const rank = DIMENSION_RANK[dimension];
      if (rank > bestRank) continue;
      const keys: IndexKey[] = [];
      let usable = true;
      for (const match of clause.matches) {
        const found = matchKeys(match, dimension);
        if (!found) {
          usable = false;
          break;
        }
        keys.push(...found);
      }
      if (usable && (rank < bestRank || keys.length < best!.length)) {
        best = keys;
        bestRank = rank;
      }
    }
  }
  return best;
}

interface CidrBuckets {
  mask: number;
  byNetwork: Map<number, Bucket>;
}

function bucketFor<K>(map: Map<K, Bucket>, key: K): Bucket {
  let bucket = map.get(key);
  if (!bucket) map.set(key, (bucket = new Bucket()));
  return bucket;
}

function lengthsOf(map: Map<string, unknown>): number[] {
  return [...new Set([...map.keys()].map((key) => key.length))].sort((a, b) => a - b);
}

/**
 * The policies in scope for one destination workload, compiled for fast decisions. Build it when the set
 * changes (xDS update), then call `evaluate` per connection.
 */
export class AuthorizationIndex {
  readonly policies: readonly Authorization[];
  private readonly principals = new Map<string, Bucket>();
  private readonly principalPrefixes = new Map<string, Bucket>();
  private readonly principalSuffixes = new Map<string, Bucket>();
  private readonly serviceAccounts = new Map<string, Bucket>();
  private readonly serviceAccountNames = new Map<string, Bucket>();
  private readonly namespaces = new Map<string, Bucket>();
  private readonly namespacePrefixes = new Map<string, Bucket>();
  private readonly sourceBlocks = new Map<number, CidrBuckets>();
  private readonly destinationBlocks = new Map<number, CidrBuckets>();
  private readonly ports = new Map<number, Bucket>();
  /** Groups with no selective key: checked for every connection. */
  private readonly unindexed = new Bucket();
  /** Every group, for the rare connection the index cannot serve (see Peer.irregular). */
  private readonly everything = new Bucket();
  private readonly principalPrefixLengths: number[];
  private readonly principalSuffixLengths: number[];
  private readonly namespacePrefixLengths: number[];
  private readonly sourceBuckets: CidrBuckets[];
  private readonly destinationBuckets: CidrBuckets[];
  private readonly enforcedAllowPolicies: number;
  private readonly dryRunAllowPolicies: number;
  private readonly hasDryRun: boolean;
  private readonly noAllowMatchedReason: string;
  private readonly noAllowMatched: Decision;
  /** The connection as matching reads it; reused, as a decision is synchronous (no object made per connection). */
  private readonly peer: Peer = emptyPeer();
  /** The buckets one decision looks at; reused (a decision is synchronous). */
  private readonly found: Bucket[] = [];
  private foundCount = 0;

  constructor(policies: readonly Authorization[]) {
    this.policies = policies;
    let enforcedAllow = 0;
    let dryRunAllow = 0;
    let hasDryRun = false;
    for (const policy of policies) {
      const key = authorizationKey(policy);
      if (policy.dryRun) hasDryRun = true;
      if (policy.action === 'ALLOW') {
        if (policy.dryRun) dryRunAllow++;
        else enforcedAllow++;
      }
      policy.groups.forEach((group, groupIndex) => {
        const rule = policy.groups.length > 1 ? ` (rule ${groupIndex + 1} of ${policy.groups.length})` : '';
        const reason = `${policy.dryRun ? 'dry-run ' : ''}${policy.action} policy ${key} matches this connection${rule}`;
        const entry: GroupEntry = {
          policyKey: key,
          deny: policy.action === 'DENY',
          ports: requiredPorts(group.rules),
          group: compileGroup(group.rules),
          reason,
          decision: Object.freeze({ allowed: policy.action !== 'DENY', decidingPolicy: key, reason }),
        };
        this.everything.add(entry, policy.dryRun);
        this.file(entry, chooseKeys(group.rules), policy.dryRun);
      });
    }
    this.principalPrefixLengths = lengthsOf(this.principalPrefixes);
    this.principalSuffixLengths = lengthsOf(this.principalSuffixes);
    this.namespacePrefixLengths = lengthsOf(this.namespacePrefixes);
    this.sourceBuckets = [...this.sourceBlocks.values()];
    this.destinationBuckets = [...this.destinationBlocks.values()];
    this.enforcedAllowPolicies = enforcedAllow;
    this.dryRunAllowPolicies = dryRunAllow;
    this.hasDryRun = hasDryRun;
    this.noAllowMatchedReason =
      `${enforcedAllow === 1 ? '1 ALLOW policy applies' : `${enforcedAllow} ALLOW policies apply`} to this workload ` +
      `and none matches this connection; once a workload has ALLOW policies, anything they do not allow is denied`;
    this.noAllowMatched = Object.freeze({ allowed: false, reason: this.noAllowMatchedReason });
  }

  private file(entry: GroupEntry, keys: IndexKey[] | undefined, dryRun: boolean): void {
    if (!keys) {
      this.unindexed.add(entry, dryRun);
      return;
    }
    // The same bucket twice (two values with one key) would only test the group twice: keep each once.
    const buckets = new Set<Bucket>();
    for (const key of keys) {
      switch (key.kind) {
        case 'principal':
          buckets.add(bucketFor(this.principals, key.value));
          break;
        case 'principalPrefix':
          buckets.add(bucketFor(this.principalPrefixes, key.value));
          break;
        case 'principalSuffix':
          buckets.add(bucketFor(this.principalSuffixes, key.value));
          break;
        case 'serviceAccount':
          buckets.add(bucketFor(this.serviceAccounts, key.value));
          break;
        case 'serviceAccountName':
          buckets.add(bucketFor(this.serviceAccountNames, key.value));
          break;
        case 'namespace':
          buckets.add(bucketFor(this.namespaces, key.value));
          break;
        case 'namespacePrefix':
          buckets.add(bucketFor(this.namespacePrefixes, key.value));
          break;
        case 'sourceV4':
        case 'destinationV4': {
          const blocks = key.kind === 'sourceV4' ? this.sourceBlocks : this.destinationBlocks;
          let byLength = blocks.get(key.cidr.length);
          if (!byLength) blocks.set(key.cidr.length, (byLength = { mask: prefixMask(key.cidr.length), byNetwork: new Map() }));
          buckets.add(bucketFor(byLength.byNetwork, key.cidr.words[0]!));
          break;
        }
        case 'port':
          buckets.add(bucketFor(this.ports, key.value));
          break;
      }
    }
    for (const bucket of buckets) bucket.add(entry, dryRun);
  }

  /** How many groups could not be indexed and are checked for every connection (a figure for benchmarks). */
  get unindexedGroups(): number {
    return this.unindexed.deny.length + this.unindexed.allow.length + this.unindexed.dryRun.length;
  }

  private take(bucket: Bucket | undefined): void {
    if (bucket !== undefined) this.found[this.foundCount++] = bucket;
  }

  /** Collects the buckets whose key the connection carries into `found[0..foundCount)`. */
  private lookup(peer: Peer): void {
    this.foundCount = 0;
    if (peer.irregular) {
      this.take(this.everything);
      return;
    }
    const principal = peer.principal;
    if (principal !== '') {
      if (this.principals.size !== 0) this.take(this.principals.get(principal));
      for (const length of this.principalPrefixLengths) {
        if (length > principal.length) break;
        this.take(this.principalPrefixes.get(principal.slice(0, length)));
      }
      for (const length of this.principalSuffixLengths) {
        if (length > principal.length) break;
        this.take(this.principalSuffixes.get(principal.slice(principal.length - length)));
      }
      if (this.serviceAccounts.size !== 0) this.take(this.serviceAccounts.get(peer.serviceAccountKey));
      if (this.serviceAccountNames.size !== 0) this.take(this.serviceAccountNames.get(peer.serviceAccount));
    }
    const namespace = peer.namespace;
    if (namespace !== '') {
      if (this.namespaces.size !== 0) this.take(this.namespaces.get(namespace));
      for (const length of this.namespacePrefixLengths) {
        if (length > namespace.length) break;
        this.take(this.namespacePrefixes.get(namespace.slice(0, length)));
      }
    }
    const source = peer.sourceV4;
    if (source !== -1) for (const blocks of this.sourceBuckets) this.take(blocks.byNetwork.get((source & blocks.mask) >>> 0));
    const destination = peer.destinationV4;
    if (destination !== -1) for (const blocks of this.destinationBuckets) this.take(blocks.byNetwork.get((destination & blocks.mask) >>> 0));
    if (this.ports.size !== 0) this.take(this.ports.get(peer.port));
    this.take(this.unindexed);
  }

  /** The first matching enforced DENY (or ALLOW) group in the found buckets, in lookup order. */
  private firstMatch(peer: Peer, deny: boolean): GroupEntry | undefined {
    const found = this.found;
    for (let bucketIndex = 0; bucketIndex < this.foundCount; bucketIndex++) {
      const entries = deny ? found[bucketIndex]!.deny : found[bucketIndex]!.allow;
      for (let index = 0; index < entries.length; index++) {
        const entry = entries[index]!;
        if (entryTest(entry, peer)) return entry;
      }
    }
    return undefined;
  }

  /**
   * The decision for one connection. Without dry-run policies it is one of the index's frozen decisions (nothing made
   * per connection); with them, a new object carrying the dry-run report.
   */
  evaluate(connection: Connection): Decision {
    // No policy in scope (most workloads): allowed, nothing to prepare or look up.
    if (this.policies.length === 0) return ALLOWED_BY_DEFAULT;
    const peer = preparePeer(connection, this.peer);
    this.lookup(peer);
    const decision = this.decide(peer);
    if (!this.hasDryRun) return decision;
    return { ...decision, dryRun: this.dryRunReport(peer, decision) };
  }

  private decide(peer: Peer): Decision {
    const denied = this.firstMatch(peer, true);
    if (denied) return denied.decision;
    if (this.enforcedAllowPolicies === 0) return ALLOWED_BY_DEFAULT;
    const allowed = this.firstMatch(peer, false);
    if (allowed) return allowed.decision;
    return this.noAllowMatched;
  }

  private dryRunReport(peer: Peer, decision: Decision): DryRunReport {
    const allowedNow = decision.allowed;
    let firstDeny: GroupEntry | undefined;
    let anyAllow = false;
    const matched = new Set<string>();
    for (let bucketIndex = 0; bucketIndex < this.foundCount; bucketIndex++) {
      for (const entry of this.found[bucketIndex]!.dryRun) {
        if (matched.has(entry.policyKey) || !entryTest(entry, peer)) continue;
        matched.add(entry.policyKey);
        if (entry.deny) firstDeny ??= entry;
        else anyAllow = true;
      }
    }
    const matchedPolicies = [...matched];
    let allowedIfEnforced: boolean;
    let reason: string;
    if (!allowedNow) {
      allowedIfEnforced = false;
      reason = 'denied already; dry-run policies would not change that';
    } else if (firstDeny) {
      allowedIfEnforced = false;
      reason = `would be denied by dry-run DENY policy ${firstDeny.policyKey} if it were enforced`;
    } else if (this.dryRunAllowPolicies > 0 && !anyAllow && decision.decidingPolicy === undefined) {
      allowedIfEnforced = false;
      reason = 'would be denied if the dry-run ALLOW policies were enforced: none of them matches this connection';
    } else {
      allowedIfEnforced = true;
      reason = matchedPolicies.length > 0 ? `dry-run policies ${matchedPolicies.join(', ')} match; enforcing them would still allow it` : 'enforcing the dry-run policies would not change the decision';
    }
    return { wouldDeny: allowedNow && !allowedIfEnforced, allowedIfEnforced, matchedPolicies, reason };
  }
}

const ALLOWED_NO_ALLOW_POLICY = 'no DENY policy matches and no ALLOW policy applies to this workload, so it is allowed by default';
const ALLOWED_BY_DEFAULT: Decision = Object.freeze({ allowed: true, reason: ALLOWED_NO_ALLOW_POLICY });

const indexCache = new WeakMap<readonly Authorization[], AuthorizationIndex>();

/** Builds the index for a set of policies (those in scope for one destination workload). */
export function buildAuthorizationIndex(policies: readonly Authorization[]): AuthorizationIndex {
  return new AuthorizationIndex(policies);
}

/**
 * Decides one connection against the policies in scope for its destination workload. Pass an
 * AuthorizationIndex for the fast path; a plain array is indexed once and cached for as long as the same array
 * object is passed again (do not mutate it afterwards).
 */
export function evaluate(connection: Connection, policies: AuthorizationIndex | readonly Authorization[]): Decision {
  if (policies instanceof AuthorizationIndex) return policies.evaluate(connection);
  let index = indexCache.get(policies);
  if (!index) indexCache.set(policies, (index = new AuthorizationIndex(policies)));
  return index.evaluate(connection);
}
