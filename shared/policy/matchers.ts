/**
 * A connection as policy matching sees it, and policy matches compiled for it.
 *
 * Owns: preparing a connection once per decision (identity split into namespace and service account, addresses
 * parsed to numbers) and the compiled form of a Match with the one function that tests it. Matchers are plain
 * objects of one shape each, tested by one function each, so the engine sees monomorphic code it can inline
 * instead of a chain of closures per policy.
 * Must not know about: which policies apply, the order of DENY and ALLOW, or indexing (evaluate.ts).
 */
import { cidrContains, parseCidr, parseIp, parseIpv4, prefixMask, type ParsedCidr, type ParsedIp } from './ip.ts';
import type { AddressMatch, Match, Rules, ServiceAccountMatch, StringMatch } from './model.ts';

/** A new connection as the destination agent sees it. */
export interface Connection {
  /**
   * The peer's verified SPIFFE identity (`spiffe://cluster.local/ns/default/sa/web`), from the mTLS handshake of
   * inbound HBONE. Absent for plaintext connections.
   */
  sourcePrincipal?: string;
  /**
   * The peer's namespace. Taken from `sourcePrincipal` when that is set (this field is then ignored); otherwise
   * used as given, so pass it only when it is verified — Istio matches namespaces on the mTLS identity only.
   */
  sourceNamespace?: string;
  /**
   * `sourcePrincipal` already split (`principalParts`), when the caller holds it parsed: the destination agent makes
   * it once per HBONE connection from the certificate that connection presented, so every stream on it is decided
   * without parsing the identity again. Used only when its `uri` is `sourcePrincipal`; otherwise the principal is
   * parsed here, so a stale or mismatched value can never stand for another identity.
   */
  sourcePrincipalParts?: PrincipalParts;
  sourceIp: string;
  destinationIp: string;
  destinationPort: number;
}

// ---------------------------------------------------------------------------------------------------------------
// The connection, prepared once per decision

/**
 * The identity half of a Peer: a SPIFFE principal split the way the index and the matchers read it. Immutable; a
 * function of the URI alone, so one made per peer certificate serves every connection that certificate carries.
 */
export interface PrincipalParts {
  /** The URI it was parsed from (`spiffe://...`). */
  readonly uri: string;
  /** The URI without `spiffe://`, or '' when it is not a SPIFFE URI. */
  readonly principal: string;
  /** `<ns>` of `<td>/ns/<ns>/sa/<sa>`; '' when the principal is not of that form. */
  readonly identityNamespace: string;
  readonly serviceAccount: string;
  /** `<namespace>/<service account>`, or ''. */
  readonly serviceAccountKey: string;
  /** A principal that is not `<td>/ns/<ns>/sa/<sa>` (see Peer.irregular). */
  readonly irregular: boolean;
}

export interface Peer {
  /** Identity without `spiffe://`, or '' when there is none. */
  principal: string;
  namespace: string;
  /** From the identity; '' when there is none. */
  identityNamespace: string;
  serviceAccount: string;
  /** `<namespace>/<service account>` of the identity, or ''. */
  serviceAccountKey: string;
  /** IPv4 addresses as unsigned 32-bit numbers, -1 when the address is not IPv4. */
  sourceV4: number;
  destinationV4: number;
  /** Parsed only for IPv6 (or unparseable: undefined). */
  source: ParsedIp | undefined;
  destination: ParsedIp | undefined;
  port: number;
  /**
   * A principal that is not `<td>/ns/<ns>/sa/<sa>` (never the case for an identity our CA or Istio's issues):
   * decided by testing every group, since the index files wildcard principals by namespace and account.
   */
  irregular: boolean;
}

const SPIFFE_PREFIX = 'spiffe://';

/** Splits a principal URI (`spiffe://<td>/ns/<ns>/sa/<sa>`) for matching. Callers that decide many connections of one peer keep the result. */
export function principalParts(uri: string): PrincipalParts {
  let principal = '';
  let identityNamespace = '';
  let serviceAccount = '';
  if (uri.startsWith(SPIFFE_PREFIX)) {
    principal = uri.slice(SPIFFE_PREFIX.length);
    // <td>/ns/<ns>/sa/<sa>, each part without '/'
    const nsAt = principal.indexOf('/ns/');
    const saAt = nsAt === -1 ? -1 : principal.indexOf('/sa/', nsAt + 4);
    if (
      nsAt > 0 &&
      saAt !== -1 &&
      principal.indexOf('/') === nsAt &&
      principal.indexOf('/', nsAt + 4) === saAt &&
      saAt > nsAt + 4 &&
      saAt + 4 < principal.length &&
      principal.indexOf('/', saAt + 4) === -1
    ) {
      identityNamespace = principal.slice(nsAt + 4, saAt);
      serviceAccount = principal.slice(saAt + 4);
    }
  }
  return Object.freeze({
    uri,
    principal,
    identityNamespace,
    serviceAccount,
    serviceAccountKey: serviceAccount === '' ? '' : `${identityNamespace}/${serviceAccount}`,
    irregular: principal !== '' && serviceAccount === '',
  });
}

/** What a connection without a principal (plaintext) has for one. */
const NO_PRINCIPAL: PrincipalParts = principalParts('');

/** A Peer with nothing in it, for `preparePeer` to fill. */
export function emptyPeer(): Peer {
  return { principal: '', namespace: '', identityNamespace: '', serviceAccount: '', serviceAccountKey: '', sourceV4: -1, destinationV4: -1, source: undefined, destination: undefined, port: 0, irregular: false };
}

/**
 * The connection as matching reads it, written into `into` (a decision reuses one Peer: it is synchronous) or into a
 * new one. The principal is taken from `sourcePrincipalParts` when that was parsed from this very `sourcePrincipal`
 * (no parse per stream of a pooled connection), parsed here otherwise.
 */
export function preparePeer(connection: Connection, into: Peer = emptyPeer()): Peer {
  const uri = connection.sourcePrincipal;
  let parts = NO_PRINCIPAL;
  if (uri) {
    const held = connection.sourcePrincipalParts;
    parts = held !== undefined && held.uri === uri ? held : principalParts(uri);
  }
  let sourceV4 = parseIpv4(connection.sourceIp);
  let destinationV4 = parseIpv4(connection.destinationIp);
  let source: ParsedIp | undefined;
  let destination: ParsedIp | undefined;
  if (sourceV4 === -1) {
    source = parseIp(connection.sourceIp);
    if (source?.family === 4) sourceV4 = source.words[0]!;
  }
  if (destinationV4 === -1) {
    destination = parseIp(connection.destinationIp);
    if (destination?.family === 4) destinationV4 = destination.words[0]!;
  }
  into.principal = parts.principal;
  into.namespace = uri ? parts.identityNamespace : (connection.sourceNamespace ?? '');
  into.identityNamespace = parts.identityNamespace;
  into.serviceAccount = parts.serviceAccount;
  into.serviceAccountKey = parts.serviceAccountKey;
  into.sourceV4 = sourceV4;
  into.destinationV4 = destinationV4;
  into.source = source;
  into.destination = destination;
  into.port = connection.destinationPort;
  into.irregular = parts.irregular;
  return into;
}

// ---------------------------------------------------------------------------------------------------------------
// Matchers compiled from the model

const NO_STRINGS: readonly string[] = Object.freeze([]);

/** A list of StringMatch, with exact values in a Set. */
class StringList {
  /** Exact values: one kept as a string, several in a Set (most lists hold one value). */
  readonly exactOne: string | null;
  readonly exact: Set<string> | null;
  readonly prefixes: readonly string[];
  readonly suffixes: readonly string[];
  readonly presence: boolean;

  constructor(list: readonly StringMatch[]) {
    const exact: string[] = [];
    const prefixes: string[] = [];
    const suffixes: string[] = [];
    let presence = false;
    for (const item of list) {
      if ('exact' in item) exact.push(item.exact);
      else if ('prefix' in item) prefixes.push(item.prefix);
      else if ('suffix' in item) suffixes.push(item.suffix);
      else presence = true;
    }
    this.exactOne = exact.length === 1 ? exact[0]! : null;
    this.exact = exact.length > 1 ? new Set(exact) : null;
    this.prefixes = prefixes.length > 0 ? prefixes : NO_STRINGS;
    this.suffixes = suffixes.length > 0 ? suffixes : NO_STRINGS;
    this.presence = presence;
  }

  has(value: string): boolean {
    if (value === '') return false;
    if (this.presence || value === this.exactOne || (this.exact !== null && this.exact.has(value))) return true;
    const prefixes = this.prefixes;
    for (let index = 0; index < prefixes.length; index++) if (value.startsWith(prefixes[index]!)) return true;
    const suffixes = this.suffixes;
    for (let index = 0; index < suffixes.length; index++) if (value.endsWith(suffixes[index]!)) return true;
    return false;
  }
}

export function cidrList(list: readonly AddressMatch[]): ParsedCidr[] {
  const out: ParsedCidr[] = [];
  for (const item of list) {
    const parsed = parseCidr(`${item.address}/${item.length}`);
    if (!('error' in parsed)) out.push(parsed);
  }
  return out;
}

/** A list of IP blocks: IPv4 ones as (network, mask) word pairs, IPv6 ones parsed. */
class IpList {
  readonly networks: Uint32Array;
  readonly masks: Uint32Array;
  readonly v6: ParsedCidr[];

  constructor(list: readonly AddressMatch[]) {
    const cidrs = cidrList(list);
    const v4 = cidrs.filter((cidr) => cidr.family === 4);
    this.networks = Uint32Array.from(v4, (cidr) => cidr.words[0]!);
    this.masks = Uint32Array.from(v4, (cidr) => prefixMask(cidr.length));
    this.v6 = cidrs.filter((cidr) => cidr.family === 6);
  }

  /** `v4` is the address as a number, or -1 with `ip` the parsed IPv6 address. */
  has(v4: number, ip: ParsedIp | undefined): boolean {
    if (v4 !== -1) {
      const networks = this.networks;
      const masks = this.masks;
      for (let index = 0; index < networks.length; index++) if (((v4 & masks[index]!) >>> 0) === networks[index]) return true;
      return false;
    }
    if (ip === undefined) return false;
    for (const cidr of this.v6) if (cidrContains(cidr, ip)) return true;
    return false;
  }
}

export function hasAny<T>(list: readonly T[] | undefined): list is readonly T[] {
  return list !== undefined && list.length > 0;
}

function isEmptyMatch(match: Match): boolean {
  return Object.values(match).every((values) => !Array.isArray(values) || values.length === 0);
}

const stringList = (list: readonly StringMatch[] | undefined): StringList | null => (hasAny(list) ? new StringList(list) : null);
const ipList = (list: readonly AddressMatch[] | undefined): IpList | null => (hasAny(list) ? new IpList(list) : null);
const portSet = (list: readonly number[] | undefined): Set<number> | null => (hasAny(list) ? new Set(list) : null);
const serviceAccountSet = (list: readonly ServiceAccountMatch[] | undefined): Set<string> | null =>
  hasAny(list) ? new Set(list.map((item) => `${item.namespace}/${item.serviceAccount}`)) : null;

/** One Match, pre-compiled. Every field is present (null when unset) so all instances share one shape. */
export class CompiledMatch {
  /** An empty Match never matches (as in ztunnel). */
  readonly empty: boolean;
  readonly ports: Set<number> | null;
  readonly notPorts: Set<number> | null;
  readonly principals: StringList | null;
  readonly notPrincipals: StringList | null;
  readonly namespaces: StringList | null;
  readonly notNamespaces: StringList | null;
  readonly serviceAccounts: Set<string> | null;
  readonly notServiceAccounts: Set<string> | null;
  readonly sourceIps: IpList | null;
  readonly notSourceIps: IpList | null;
  readonly destinationIps: IpList | null;
  readonly notDestinationIps: IpList | null;

  constructor(match: Match) {
    this.empty = isEmptyMatch(match);
    this.ports = portSet(match.destinationPorts);
    this.notPorts = portSet(match.notDestinationPorts);
    this.principals = stringList(match.principals);
    this.notPrincipals = stringList(match.notPrincipals);
    this.namespaces = stringList(match.namespaces);
    this.notNamespaces = stringList(match.notNamespaces);
    this.serviceAccounts = serviceAccountSet(match.serviceAccounts);
    this.notServiceAccounts = serviceAccountSet(match.notServiceAccounts);
    this.sourceIps = ipList(match.sourceIps);
    this.notSourceIps = ipList(match.notSourceIps);
    this.destinationIps = ipList(match.destinationIps);
    this.notDestinationIps = ipList(match.notDestinationIps);
  }
}

/** Every set field must match; a `not*` field must not. Cheapest checks first. */
export function matchTest(match: CompiledMatch, peer: Peer): boolean {
  if (match.empty) return false;
  if (match.ports !== null && !match.ports.has(peer.port)) return false;
  if (match.notPorts !== null && match.notPorts.has(peer.port)) return false;
  if (match.serviceAccounts !== null && !match.serviceAccounts.has(peer.serviceAccountKey)) return false;
  if (match.notServiceAccounts !== null && match.notServiceAccounts.has(peer.serviceAccountKey)) return false;
  if (match.principals !== null && !match.principals.has(peer.principal)) return false;
  if (match.notPrincipals !== null && match.notPrincipals.has(peer.principal)) return false;
  if (match.namespaces !== null && !match.namespaces.has(peer.namespace)) return false;
  if (match.notNamespaces !== null && match.notNamespaces.has(peer.namespace)) return false;
  if (match.sourceIps !== null && !match.sourceIps.has(peer.sourceV4, peer.source)) return false;
  if (match.notSourceIps !== null && match.notSourceIps.has(peer.sourceV4, peer.source)) return false;
  if (match.destinationIps !== null && !match.destinationIps.has(peer.destinationV4, peer.destination)) return false;
  if (match.notDestinationIps !== null && match.notDestinationIps.has(peer.destinationV4, peer.destination)) return false;
  return true;
}

/** A group's clauses, each a list of alternatives. */
export type CompiledGroup = CompiledMatch[][];

export function compileGroup(clauses: readonly Rules[]): CompiledGroup {
  return clauses.map((clause) => clause.matches.map((match) => new CompiledMatch(match)));
}

/** All clauses must match; a clause matches when any alternative does, or when it has none (as in ztunnel). */
export function groupTest(group: CompiledGroup, peer: Peer): boolean {
  for (let clauseIndex = 0; clauseIndex < group.length; clauseIndex++) {
    const clause = group[clauseIndex]!;
    if (clause.length === 0) continue;
    let matched = false;
    for (let index = 0; index < clause.length; index++) {
      if (matchTest(clause[index]!, peer)) {
        matched = true;
        break;
      }
    }
    if (!matched) return false;
  }
  return true;
}
