/**
 * The in-pod rules as one nf_tables netlink batch: the same iptables-restore text rules.ts renders for a fresh
 * install, turned into the messages iptables-nft (1.8.9, Debian 12) itself sends for it, so the agent can write them
 * with one sendmsg (agent/native/inpod-nftables.c) instead of starting iptables-nft-restore in the pod.
 *
 * What `iptables-save` and `nft list ruleset` print in the pod is what they print after iptables-nft-restore: the
 * same tables, base chains (hook, priority, type), chains and rules, each rule with iptables-nft's own expression
 * layout: the entry's fields and the `mark` and `tcp`/`udp` port matches as native expressions (meta, payload,
 * bitwise, cmp), the other matches and targets as xtables compat expressions (`match`/`target` with the extension's
 * revision and info structure), a counter, and the rule's compat protocol. test/net/inpod-nftables.test.ts installs
 * every option combination both ways and compares the two listings.
 *
 * Owns: translating the small iptables grammar rules.ts writes (listed below) into netlink bytes. Anything outside it
 * throws NftTranslationError, and the caller runs iptables-restore instead, so the text stays the one source of the
 * rules. Must not know about: which rules (rules.ts), namespaces or sockets (the addon), pods.
 *
 * The grammar: `*table` (mangle, nat), `-N chain`, `-X chain`, `-A chain` with `[!] -d a.b.c.d/32`, `-i`/`-o` an
 * interface, `-p tcp|udp`, `-m tcp|udp [!] --dport N`, `-m mark [!] --mark V/M`, `-m connmark --mark V/M`, `-m
 * conntrack --ctstate` of NEW/ESTABLISHED/RELATED/INVALID, and `-j` ACCEPT, RETURN, a chain, `CONNMARK --set-xmark V/M`
 * or `--restore-mark --nfmask A --ctmask B`, `TPROXY --on-port P --on-ip 0.0.0.0 --tproxy-mark V/M`, `REDIRECT
 * --to-ports P`; `COMMIT`. Either family: IPv6 (`ip6` tables) with a `/128` address, TPROXY to `::` and the IPv6 NAT
 * range for REDIRECT, as ip6tables-nft writes them.
 *
 * Semantics kept from the text: `-N` is an exclusive create (the kernel refuses the whole batch with EEXIST when the
 * chain is there, as iptables-restore refuses the line), so a namespace holding anything of ours takes the caller's
 * general path; the whole batch (both tables) is one transaction. A built-in chain is created with its hook when
 * missing and left as it is (policy included) when present.
 */

import { isIPv6 } from 'node:net';
import type { IpFamily } from './rules.ts';

export class NftTranslationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NftTranslationError';
  }
}

// Netlink and nf_tables numbers (linux/netlink.h, linux/netfilter/nfnetlink.h, linux/netfilter/nf_tables.h).
const NLM_F_REQUEST = 0x1;
const NLM_F_NONREC = 0x100;
const NLM_F_EXCL = 0x200;
const NLM_F_CREATE = 0x400;
const NLM_F_APPEND = 0x800;
const NFNL_MSG_BATCH_BEGIN = 0x10;
const NFNL_MSG_BATCH_END = 0x11;
const NFNL_SUBSYS_NFTABLES = 10;
const NFT_MSG_NEWTABLE = 0;
const NFT_MSG_NEWCHAIN = 3;
const NFT_MSG_DELCHAIN = 5;
const NFT_MSG_NEWRULE = 6;
const NFPROTO_IPV4 = 2;
const NFPROTO_IPV6 = 10;
const NLA_F_NESTED = 0x8000;

const NFTA_TABLE_NAME = 1;
const NFTA_CHAIN_TABLE = 1;
const NFTA_CHAIN_NAME = 3;
const NFTA_CHAIN_HOOK = 4;
const NFTA_CHAIN_TYPE = 7;
const NFTA_HOOK_HOOKNUM = 1;
const NFTA_HOOK_PRIORITY = 2;
const NFTA_RULE_TABLE = 1;
const NFTA_RULE_CHAIN = 2;
const NFTA_RULE_EXPRESSIONS = 4;
const NFTA_RULE_COMPAT = 5;
const NFTA_RULE_COMPAT_PROTO = 1;
const NFTA_RULE_COMPAT_FLAGS = 2;
const NFTA_LIST_ELEM = 1;
const NFTA_EXPR_NAME = 1;
const NFTA_EXPR_DATA = 2;
const NFTA_DATA_VALUE = 1;
const NFTA_DATA_VERDICT = 2;
const NFTA_VERDICT_CODE = 1;
const NFTA_VERDICT_CHAIN = 2;
const NFT_REG_VERDICT = 0;
const NFT_REG_1 = 1;
const NF_ACCEPT = 1;
const NFT_RETURN = -5;
const NFT_JUMP = -3;
const NFT_CMP_EQ = 0;
const NFT_CMP_NEQ = 1;
const NFT_META_MARK = 3;
const NFT_META_IIFNAME = 6;
const NFT_META_OIFNAME = 7;
const NFT_META_L4PROTO = 16;
const NFT_PAYLOAD_NETWORK_HEADER = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER = 2;

/** The hooks iptables-nft gives the built-in chains it creates (iptables/nft.c's xtables_ipv4 tables). */
const BUILTIN_CHAINS: Record<string, Record<string, { hook: number; priority: number; type: string }>> = {
  mangle: {
    PREROUTING: { hook: 0, priority: -150, type: 'filter' },
    INPUT: { hook: 1, priority: -150, type: 'filter' },
    FORWARD: { hook: 2, priority: -150, type: 'filter' },
    OUTPUT: { hook: 3, priority: -150, type: 'route' },
    POSTROUTING: { hook: 4, priority: -150, type: 'filter' },
  },
  nat: {
    PREROUTING: { hook: 0, priority: -100, type: 'nat' },
    INPUT: { hook: 1, priority: 100, type: 'nat' },
    OUTPUT: { hook: 3, priority: -100, type: 'nat' },
    POSTROUTING: { hook: 4, priority: 100, type: 'nat' },
  },
};

const PROTOCOLS: Record<string, number> = { tcp: 6, udp: 17 };
/** conntrack --ctstate names and their XT_CONNTRACK_STATE_BIT values. */
const CT_STATES: Record<string, number> = { INVALID: 1 << 0, ESTABLISHED: 1 << 1, RELATED: 1 << 2, NEW: 1 << 3 };

// --- netlink attributes ---------------------------------------------------------------------------------------

function attr(type: number, payload: Buffer): Buffer {
  const length = 4 + payload.length;
  const out = Buffer.alloc((length + 3) & ~3);
  out.writeUInt16LE(length, 0);
  out.writeUInt16LE(type, 2);
  payload.copy(out, 4);
  return out;
}
const nested = (type: number, ...children: Buffer[]): Buffer => attr(type | NLA_F_NESTED, Buffer.concat(children));
const str = (type: number, value: string): Buffer => attr(type, Buffer.from(`${value}\0`, 'utf8'));
function be32(type: number, value: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32BE(value | 0, 0);
  return attr(type, b);
}
const be64zero = (type: number): Buffer => attr(type, Buffer.alloc(8));
const data = (type: number, value: Buffer): Buffer => nested(type, attr(NFTA_DATA_VALUE, value));

function u32le(value: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(value >>> 0, 0);
  return b;
}
function u16be(value: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(value, 0);
  return b;
}

// --- expressions, in iptables-nft's layout ---------------------------------------------------------------------

const expr = (name: string, ...body: Buffer[]): Buffer =>
  nested(NFTA_LIST_ELEM, str(NFTA_EXPR_NAME, name), nested(NFTA_EXPR_DATA, ...body));
// NFTA_META_DREG 1, NFTA_META_KEY 2 (iptables-nft writes the key first).
const meta = (key: number): Buffer => expr('meta', be32(2, key), be32(1, NFT_REG_1));
// NFTA_CMP_SREG 1, NFTA_CMP_OP 2, NFTA_CMP_DATA 3.
const cmp = (op: number, value: Buffer): Buffer => expr('cmp', be32(1, NFT_REG_1), be32(2, op), data(3, value));
// NFTA_PAYLOAD_DREG 1, BASE 2, OFFSET 3, LEN 4.
const payload = (base: number, offset: number, length: number): Buffer =>
  expr('payload', be32(1, NFT_REG_1), be32(2, base), be32(3, offset), be32(4, length));
// NFTA_BITWISE_SREG 1, DREG 2, LEN 3, MASK 4, XOR 5.
const bitwise = (mask: Buffer): Buffer =>
  expr('bitwise', be32(1, NFT_REG_1), be32(2, NFT_REG_1), be32(3, mask.length), data(4, mask), data(5, Buffer.alloc(mask.length)));
// NFTA_COUNTER_BYTES 1, NFTA_COUNTER_PACKETS 2.
const counter = (): Buffer => expr('counter', be64zero(1), be64zero(2));
// NFTA_MATCH_NAME / NFTA_TARGET_NAME 1, REV 2, INFO 3.
const compat = (kind: 'match' | 'target', name: string, revision: number, info: Buffer): Buffer =>
  expr(kind, str(1, name), be32(2, revision), attr(3, info));
function verdict(code: number, chain?: string): Buffer {
  const inner = [be32(NFTA_VERDICT_CODE, code)];
  if (chain !== undefined) inner.push(str(NFTA_VERDICT_CHAIN, chain));
  // NFTA_IMMEDIATE_DREG 1, NFTA_IMMEDIATE_DATA 2.
  return expr('immediate', be32(1, NFT_REG_VERDICT), nested(2, nested(NFTA_DATA_VERDICT, ...inner)));
}

/** `V/M` as iptables prints marks (hex or decimal). */
function markPair(text: string | undefined, what: string): { value: number; mask: number } {
  const match = /^(0x[0-9a-f]+|\d+)\/(0x[0-9a-f]+|\d+)$/i.exec(text ?? '');
  if (!match) throw new NftTranslationError(`${what}: expected value/mask, got ${text}`);
  return { value: Number(match[1]) >>> 0, mask: Number(match[2]) >>> 0 };
}
function number32(text: string | undefined, what: string): number {
  if (text === undefined || !/^(0x[0-9a-f]+|\d+)$/i.test(text)) throw new NftTranslationError(`${what}: expected a number, got ${text}`);
  return Number(text) >>> 0;
}
function port(text: string | undefined, what: string): number {
  const value = number32(text, what);
  if (value < 1 || value > 65535) throw new NftTranslationError(`${what}: ${text} is not a port`);
  return value;
}
/** A host address of the batch's family (`a.b.c.d/32`, or an IPv6 address `/128`), as its packet bytes. */
function hostAddress(text: string | undefined, family: IpFamily): Buffer {
  const [address, prefix] = (text ?? '').split('/');
  if (family === 4) {
    const match = /^(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(address ?? '');
    const bytes = match?.slice(1, 5).map(Number);
    if (!bytes || bytes.some((b) => b > 255) || (prefix !== undefined && prefix !== '32')) {
      throw new NftTranslationError(`-d: only an IPv4 host address (a.b.c.d/32) is translated, got ${text}`);
    }
    return Buffer.from(bytes);
  }
  if (address === undefined || !isIPv6(address) || (prefix !== undefined && prefix !== '128')) {
    throw new NftTranslationError(`-d: only an IPv6 host address (/128) is translated, got ${text}`);
  }
  return ipv6Bytes(address);
}

/** An IPv6 address's 16 bytes (`::` expanded; no embedded IPv4 form). */
function ipv6Bytes(address: string): Buffer {
  const [head = '', tail] = address.split('::');
  const groups = (part: string): string[] => (part === '' ? [] : part.split(':'));
  const left = groups(head);
  const right = tail === undefined ? [] : groups(tail);
  if (left.concat(right).some((group) => !/^[0-9a-f]{1,4}$/i.test(group))) throw new NftTranslationError(`-d: ${address} is not translated`);
  const all = [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right];
  const out = Buffer.alloc(16);
  all.forEach((group, i) => out.writeUInt16BE(parseInt(group, 16), i * 2));
  return out;
}

/** One `-A` line's rule: its chain and its expressions in iptables-nft's order, and the compat protocol. */
function translateRule(tokens: string[], declared: ReadonlySet<string>, family: IpFamily): { expressions: Buffer; protocol: number } {
  let iif: string | undefined;
  let oif: string | undefined;
  let protocol = 0;
  let daddr: { address: Buffer; negated: boolean } | undefined;
  const matches: Buffer[] = [];
  let target: Buffer | undefined;
  let negate = false;
  const take = (i: number): string | undefined => tokens[i];
  for (let i = 0; i < tokens.length; i++) {
    const token = tokens[i]!;
    if (token === '!') {
      negate = true;
      continue;
    }
    const wasNegated = negate;
    negate = false;
    const noNegation = (): void => {
      if (wasNegated) throw new NftTranslationError(`! before ${token} is not translated`);
    };
    switch (token) {
      case '-d':
        daddr = { address: hostAddress(take(++i), family), negated: wasNegated };
        break;
      case '-i':
      case '-o': {
        noNegation();
        const name = take(++i);
        if (name === undefined || name.includes('+') || name.length > 15) throw new NftTranslationError(`${token}: unsupported interface ${name}`);
        if (token === '-i') iif = name;
        else oif = name;
        break;
      }
      case '-p': {
        noNegation();
        const name = take(++i) ?? '';
        protocol = PROTOCOLS[name] ?? 0;
        if (protocol === 0) throw new NftTranslationError(`-p ${name} is not translated`);
        break;
      }
      case '-m': {
        noNegation();
        const module = take(++i);
        i = translateMatch(module, tokens, i, protocol, matches);
        break;
      }
      case '-j': {
        noNegation();
        if (target !== undefined) throw new NftTranslationError('two targets');
        const result = translateTarget(tokens, i + 1, declared, family);
        target = result.expression;
        i = result.next - 1;
        break;
      }
      default:
        throw new NftTranslationError(`${token} is not translated`);
    }
  }
  if (target === undefined) throw new NftTranslationError('a rule without -j is not translated');
  // iptables-nft's order: in-interface, out-interface, protocol, destination, then the matches as written.
  const parts: Buffer[] = [];
  if (iif !== undefined) parts.push(meta(NFT_META_IIFNAME), cmp(NFT_CMP_EQ, Buffer.from(`${iif}\0`)));
  if (oif !== undefined) parts.push(meta(NFT_META_OIFNAME), cmp(NFT_CMP_EQ, Buffer.from(`${oif}\0`)));
  if (protocol !== 0) parts.push(meta(NFT_META_L4PROTO), cmp(NFT_CMP_EQ, Buffer.from([protocol])));
  if (daddr !== undefined) {
    // The destination address: at 16 in an IPv4 header (4 bytes), at 24 in an IPv6 header (16 bytes).
    const offset = family === 4 ? 16 : 24;
    parts.push(payload(NFT_PAYLOAD_NETWORK_HEADER, offset, daddr.address.length), cmp(daddr.negated ? NFT_CMP_NEQ : NFT_CMP_EQ, daddr.address));
  }
  parts.push(...matches, counter(), target);
  return { expressions: Buffer.concat(parts), protocol };
}

/** Appends one `-m module ...` match's expressions; returns the index of its last token. */
function translateMatch(module: string | undefined, tokens: string[], at: number, protocol: number, out: Buffer[]): number {
  let i = at;
  let negate = false;
  const next = (): string | undefined => tokens[++i];
  const option = (): string | undefined => {
    const token = tokens[i + 1];
    if (token === '!') {
      negate = true;
      i++;
      return option();
    }
    if (token === undefined || !token.startsWith('--')) return undefined;
    i++;
    return token;
  };
  const flag = option();
  switch (module) {
    case 'tcp':
    case 'udp': {
      if (flag !== '--dport' || PROTOCOLS[module] !== protocol) throw new NftTranslationError(`-m ${module} ${flag ?? ''} is not translated`);
      out.push(payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2), cmp(negate ? NFT_CMP_NEQ : NFT_CMP_EQ, u16be(port(next(), '--dport'))));
      break;
    }
    case 'mark': {
      if (flag !== '--mark') throw new NftTranslationError(`-m mark ${flag ?? ''} is not translated`);
      const { value, mask } = markPair(next(), '--mark');
      out.push(meta(NFT_META_MARK), bitwise(u32le(mask)), cmp(negate ? NFT_CMP_NEQ : NFT_CMP_EQ, u32le(value)));
      break;
    }
    case 'connmark': {
      if (flag !== '--mark') throw new NftTranslationError(`-m connmark ${flag ?? ''} is not translated`);
      const { value, mask } = markPair(next(), '--mark');
      // struct xt_connmark_mtinfo1 { u32 mark, mask; u8 invert; }, aligned to 8.
      const info = Buffer.alloc(16);
      info.writeUInt32LE(value, 0);
      info.writeUInt32LE(mask, 4);
      info.writeUInt8(negate ? 1 : 0, 8);
      out.push(compat('match', 'connmark', 1, info));
      break;
    }
    case 'conntrack': {
      if (flag !== '--ctstate' || negate) throw new NftTranslationError(`-m conntrack ${flag ?? ''} is not translated`);
      let states = 0;
      for (const name of (next() ?? '').split(',')) {
        const bit = CT_STATES[name];
        if (bit === undefined) throw new NftTranslationError(`--ctstate ${name} is not translated`);
        states |= bit;
      }
      // struct xt_conntrack_mtinfo3: match_flags (XT_CONNTRACK_STATE = 1) at 146, state_mask at 150; 168 bytes.
      const info = Buffer.alloc(168);
      info.writeUInt16LE(1, 146);
      info.writeUInt16LE(states, 150);
      out.push(compat('match', 'conntrack', 3, info));
      break;
    }
    default:
      throw new NftTranslationError(`-m ${module} is not translated`);
  }
  if (tokens[i + 1]?.startsWith('--')) throw new NftTranslationError(`-m ${module}: ${tokens[i + 1]} is not translated`);
  return i;
}

/** The `-j` target at tokens[at]: its expression and the index after its options. */
function translateTarget(tokens: string[], at: number, declared: ReadonlySet<string>, family: IpFamily): { expression: Buffer; next: number } {
  const name = tokens[at];
  const options = new Map<string, string>();
  let i = at + 1;
  for (; i < tokens.length; i++) {
    const key = tokens[i]!;
    if (!key.startsWith('--')) throw new NftTranslationError(`-j ${name}: ${key} is not translated`);
    if (key === '--restore-mark') {
      options.set(key, '');
      continue;
    }
    const value = tokens[++i];
    if (value === undefined) throw new NftTranslationError(`-j ${name}: ${key} has no value`);
    options.set(key, value);
  }
  const only = (...keys: string[]): void => {
    for (const key of options.keys()) if (!keys.includes(key)) throw new NftTranslationError(`-j ${name} ${key} is not translated`);
  };
  switch (name) {
    case 'ACCEPT':
      only();
      return { expression: verdict(NF_ACCEPT), next: i };
    case 'RETURN':
      only();
      return { expression: verdict(NFT_RETURN), next: i };
    case 'CONNMARK': {
      // struct xt_connmark_tginfo2 { u32 ctmark, ctmask, nfmask; u8 shift_dir, shift_bits, mode; }, 16 bytes.
      const info = Buffer.alloc(16);
      if (options.has('--set-xmark')) {
        only('--set-xmark');
        const { value, mask } = markPair(options.get('--set-xmark'), '--set-xmark');
        info.writeUInt32LE(value, 0);
        info.writeUInt32LE(mask, 4);
        info.writeUInt32LE(0xffffffff, 8);
        info.writeUInt8(0, 14); // XT_CONNMARK_SET
      } else if (options.has('--restore-mark')) {
        only('--restore-mark', '--nfmask', '--ctmask');
        info.writeUInt32LE(number32(options.get('--ctmask') ?? '0xffffffff', '--ctmask'), 4);
        info.writeUInt32LE(number32(options.get('--nfmask') ?? '0xffffffff', '--nfmask'), 8);
        info.writeUInt8(2, 14); // XT_CONNMARK_RESTORE
      } else {
        throw new NftTranslationError('-j CONNMARK without --set-xmark or --restore-mark is not translated');
      }
      return { expression: compat('target', 'CONNMARK', 2, info), next: i };
    }
    case 'TPROXY': {
      only('--on-port', '--on-ip', '--tproxy-mark');
      const any = family === 4 ? '0.0.0.0' : '::';
      if ((options.get('--on-ip') ?? any) !== any) throw new NftTranslationError(`TPROXY --on-ip other than ${any} is not translated`);
      const { value, mask } = markPair(options.get('--tproxy-mark'), '--tproxy-mark');
      // struct xt_tproxy_target_info_v1 { u32 mark_mask, mark_value; nf_inet_addr laddr; be16 lport; }, aligned to 32.
      const info = Buffer.alloc(32);
      info.writeUInt32LE(mask, 0);
      info.writeUInt32LE(value, 4);
      info.writeUInt16BE(port(options.get('--on-port'), '--on-port'), 24);
      return { expression: compat('target', 'TPROXY', 1, info), next: i };
    }
    case 'REDIRECT': {
      only('--to-ports');
      const to = port(options.get('--to-ports'), '--to-ports');
      if (family === 6) {
        // struct nf_nat_range { u32 flags; nf_inet_addr min_addr, max_addr; be16 min_proto, max_proto; }, 40 bytes,
        // NF_NAT_RANGE_PROTO_SPECIFIED.
        const info = Buffer.alloc(40);
        info.writeUInt32LE(2, 0);
        info.writeUInt16BE(to, 36);
        info.writeUInt16BE(to, 38);
        return { expression: compat('target', 'REDIRECT', 0, info), next: i };
      }
      // struct nf_nat_ipv4_multi_range_compat { u32 rangesize; { u32 flags; be32 min_ip, max_ip; be16 min, max; } },
      // one range, NF_NAT_RANGE_PROTO_SPECIFIED; aligned to 24.
      const info = Buffer.alloc(24);
      info.writeUInt32LE(1, 0);
      info.writeUInt32LE(2, 4);
      info.writeUInt16BE(to, 16);
      info.writeUInt16BE(to, 18);
      return { expression: compat('target', 'REDIRECT', 0, info), next: i };
    }
    default:
      if (name === undefined || !declared.has(name)) throw new NftTranslationError(`-j ${name} is not translated (not a chain this text declares)`);
      only();
      return { expression: verdict(NFT_JUMP, name), next: i };
  }
}

// --- messages ----------------------------------------------------------------------------------------------------

/** A batch to send, and what each of its messages does (by sequence number) for an error message. */
export interface NftBatch {
  bytes: Buffer;
  /** What the message with this sequence number does, e.g. "create chain nat ISTIO_OUTPUT". */
  describe(seq: number): string;
}

/**
 * The batch that applies `restoreText` (iptables-restore input as rules.ts renders it for `family`) to a namespace's
 * nf_tables, as iptables-nft-restore (ip6tables-nft-restore) --noflush would. Throws NftTranslationError for anything outside the grammar.
 */
export function buildNftBatch(restoreText: string, family: IpFamily = 4): NftBatch {
  const nfproto = family === 4 ? NFPROTO_IPV4 : NFPROTO_IPV6;
  const messages: Buffer[] = [];
  const descriptions: string[] = [];
  let seq = 0;
  const message = (type: number, flags: number, family: number, resId: number, body: Buffer[], what: string): void => {
    seq += 1;
    const content = Buffer.concat(body);
    const header = Buffer.alloc(20);
    header.writeUInt32LE(20 + content.length, 0);
    header.writeUInt16LE(type, 4);
    header.writeUInt16LE(flags, 6);
    header.writeUInt32LE(seq, 8);
    header.writeUInt32LE(0, 12);
    header.writeUInt8(family, 16);
    header.writeUInt8(0, 17); // NFNETLINK_V0
    header.writeUInt16BE(resId, 18);
    messages.push(header, content);
    descriptions[seq] = what;
  };
  const nft = (type: number): number => (NFNL_SUBSYS_NFTABLES << 8) | type;
  message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 0, NFNL_SUBSYS_NFTABLES, [], 'begin the batch');

  let table: string | undefined;
  let committed = true;
  const builtinsMade = new Set<string>();
  /** Chains `-N` declared, per table: the only ones a `-j` may jump to. */
  const declared = new Map<string, Set<string>>();
  for (const raw of restoreText.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    if (line.startsWith('*')) {
      if (!committed) throw new NftTranslationError(`table ${line} starts before COMMIT`);
      table = line.slice(1);
      if (BUILTIN_CHAINS[table] === undefined) throw new NftTranslationError(`table ${table} is not translated`);
      committed = false;
      message(nft(NFT_MSG_NEWTABLE), NLM_F_REQUEST | NLM_F_CREATE, nfproto, 0, [str(NFTA_TABLE_NAME, table)], `create table ${table}`);
      continue;
    }
    if (table === undefined || committed) throw new NftTranslationError(`${line}: outside a table`);
    if (line === 'COMMIT') {
      committed = true;
      continue;
    }
    const tokens = line.split(/\s+/);
    const [command, chain] = tokens;
    if (chain === undefined) throw new NftTranslationError(`${line}: no chain`);
    const builtins = BUILTIN_CHAINS[table]!;
    switch (command) {
      case '-N':
        if (tokens.length !== 2 || builtins[chain] !== undefined) throw new NftTranslationError(`${line} is not translated`);
        if (!declared.has(table)) declared.set(table, new Set());
        declared.get(table)!.add(chain);
        message(nft(NFT_MSG_NEWCHAIN), NLM_F_REQUEST | NLM_F_EXCL, nfproto, 0,
          [str(NFTA_CHAIN_TABLE, table), str(NFTA_CHAIN_NAME, chain)], `create chain ${table} ${chain}`);
        break;
      case '-X':
        if (tokens.length !== 2 || builtins[chain] !== undefined) throw new NftTranslationError(`${line} is not translated`);
        declared.get(table)?.delete(chain);
        message(nft(NFT_MSG_DELCHAIN), NLM_F_REQUEST | NLM_F_NONREC, nfproto, 0,
          [str(NFTA_CHAIN_TABLE, table), str(NFTA_CHAIN_NAME, chain)], `delete chain ${table} ${chain}`);
        break;
      case '-A': {
        const builtin = builtins[chain];
        if (builtin !== undefined && !builtinsMade.has(`${table} ${chain}`)) {
          builtinsMade.add(`${table} ${chain}`);
          // No policy: a new base chain accepts (iptables' default) and an existing one keeps its own.
          message(nft(NFT_MSG_NEWCHAIN), NLM_F_REQUEST | NLM_F_CREATE, nfproto, 0, [
            str(NFTA_CHAIN_TABLE, table), str(NFTA_CHAIN_NAME, chain),
            nested(NFTA_CHAIN_HOOK, be32(NFTA_HOOK_HOOKNUM, builtin.hook), be32(NFTA_HOOK_PRIORITY, builtin.priority)),
            str(NFTA_CHAIN_TYPE, builtin.type),
          ], `create built-in chain ${table} ${chain}`);
        }
        const rule = translateRule(tokens.slice(2), declared.get(table) ?? new Set(), family);
        message(nft(NFT_MSG_NEWRULE), NLM_F_REQUEST | NLM_F_CREATE | NLM_F_APPEND, nfproto, 0, [
          str(NFTA_RULE_TABLE, table), str(NFTA_RULE_CHAIN, chain),
          nested(NFTA_RULE_EXPRESSIONS, rule.expressions),
          nested(NFTA_RULE_COMPAT, be32(NFTA_RULE_COMPAT_PROTO, rule.protocol), be32(NFTA_RULE_COMPAT_FLAGS, 0)),
        ], `append to ${table} ${chain}: ${tokens.slice(2).join(' ')}`);
        break;
      }
      default:
        throw new NftTranslationError(`${line} is not translated`);
    }
  }
  if (!committed) throw new NftTranslationError('the last table has no COMMIT');
  message(NFNL_MSG_BATCH_END, NLM_F_REQUEST, 0, NFNL_SUBSYS_NFTABLES, [], 'end the batch');
  return {
    bytes: Buffer.concat(messages),
    describe: (seq: number): string => descriptions[seq] ?? `message ${seq}`,
  };
}
