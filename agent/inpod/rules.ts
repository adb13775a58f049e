/**
 * The in-pod redirection rules, as text: what Istio's in-pod mode (cni/pkg/iptables) installs inside each
 * captured pod's network namespace, rendered as iptables-restore input.
 *
 * Owns: the chains, ports, marks and their order; making a re-install replace instead of duplicate (by
 * reading what a previous agent left); the policy routing that goes with the marks (as data); choosing the
 * iptables backend from what the node already uses. Every function here is pure: no processes, no files.
 * Must not know about: running commands or entering namespaces (iptables.ts applies this text), pods,
 * listeners, HBONE.
 *
 * What the rules do, for IPv4 (iptables) and, in a pod with an IPv6 address, the same for IPv6 (ip6tables, with
 * ::1 for 127.0.0.1 and :: for 0.0.0.0):
 *   outbound  nat OUTPUT: TCP from the pod's apps, not to 127.0.0.1, not marked 0x539 -> REDIRECT :15001
 *   inbound   mangle PREROUTING: new TCP not to 127.0.0.1, not to :15008, not via lo, not marked
 *             -> TPROXY :15006 (or nat REDIRECT :15006 with `inbound: 'redirect'`)
 *   15008     reaches the agent's HBONE listener untouched
 *   0x539     the agent's own sockets (mask 0xfff) are never captured
 *   connmark  a packet that arrives marked 0x539 (the agent's transparent dial to an app, over lo) marks its
 *             connection 0x111; the app's replies get 0x111 back in mangle OUTPUT and policy routing
 *             (fwmark 0x111/0xfff -> table 100: local 0.0.0.0/0 dev lo) sends them to the agent's socket
 *             instead of out to the real client whose address the agent borrowed.
 *   dns       with `dnsCapture` (Istio's DNS capture), nat OUTPUT: UDP to port 53, and TCP to port 53 not to
 *             127.0.0.1, not marked 0x539 -> REDIRECT :15053 (the agent's DNS proxy; its own upstream queries
 *             are marked and leave); placed before the TCP rule so TCP 53 never reaches 15001. Without it DNS is
 *             left alone.
 *   lo        a pod calling itself (its own IP or 127.0.0.1) is left alone.
 */

export type IptablesBackend = 'nft' | 'legacy';

/**
 * How inbound plaintext reaches 15006. TPROXY (default) keeps the destination as the accepted socket's own
 * local address, needs no NAT and no conntrack lookup per connection; REDIRECT is what newer Istio
 * releases use and needs SO_ORIGINAL_DST to recover the destination.
 */
export type InboundCapture = 'tproxy' | 'redirect';

/** Istio's in-pod numbers; they must match across agent restarts and Istio tooling, so they are fixed. */
export const INPOD = Object.freeze({
  outboundPort: 15001,
  inboundPlaintextPort: 15006,
  inboundHbonePort: 15008,
  /** The agent's DNS proxy in the pod (ztunnel's DNS capture port). */
  dnsPort: 15053,
  /** The agent's socket mark (1337); only the low 12 bits are ours, other software may use the rest. */
  mark: 0x539,
  markMask: 0xfff,
  /** Connection mark for the agent's inbound dials, and the TPROXY mark; selects routing table 100. */
  tproxyMark: 0x111,
  tproxyMask: 0xfff,
  /** Restoring the whole connmark keeps other software's bits in the packet mark, as Istio does. */
  restoreMask: 0xffffffff,
  routeTable: 100,
  /** Just before `main` (32766), after anything an operator adds with a smaller number. */
  rulePriority: 32764,
  preroutingChain: 'ISTIO_PRERT',
  outputChain: 'ISTIO_OUTPUT',
});

export interface InpodRuleOptions {
  inbound: InboundCapture;
  /** Also capture IPv6 (ip6tables, IPv6 policy routing): the pod has an IPv6 address. */
  ipv6?: boolean;
  /** Where the pod's net sysctls are written from inside its namespace (agent/config.ts procSysNet); /proc/sys/net by default. */
  procSysNet?: string;
  /** Redirect the pod's DNS (UDP and TCP port 53) to the agent's DNS proxy on 15053. */
  dnsCapture?: boolean;
}

export type IpFamily = 4 | 6;

/** What differs between the families in the rules: the loopback the rules leave alone and TPROXY's any-address. */
const FAMILY = {
  4: { loopback: '127.0.0.1/32', any: '0.0.0.0' },
  6: { loopback: '::1/128', any: '::' },
} as const;

export type Table = 'mangle' | 'nat';

/** A jump from a built-in chain into one of ours, as iptables-save prints it (`-A PREROUTING -j ISTIO_PRERT`). */
export interface Jump {
  table: Table;
  from: string;
  to: string;
}

/** What a previous install (ours or an older agent's) left in the namespace. */
export interface ExistingRules {
  /** Every jump into our chains, duplicates included. */
  jumps: Jump[];
  /** Our chains that exist, per table. */
  chains: { table: Table; chain: string }[];
}

const hex = (n: number): string => `0x${n.toString(16)}`;
const MARK = `${hex(INPOD.mark)}/${hex(INPOD.markMask)}`;
const TPROXY_MARK = `${hex(INPOD.tproxyMark)}/${hex(INPOD.tproxyMask)}`;
const OWN_CHAINS = new Set<string>([INPOD.preroutingChain, INPOD.outputChain]);

/** The jumps a fresh install wants, per inbound mode. */
function wantedJumps(options: InpodRuleOptions): Jump[] {
  const jumps: Jump[] = [
    { table: 'mangle', from: 'PREROUTING', to: INPOD.preroutingChain },
    { table: 'mangle', from: 'OUTPUT', to: INPOD.outputChain },
    { table: 'nat', from: 'OUTPUT', to: INPOD.outputChain },
  ];
  if (options.inbound === 'redirect') jumps.push({ table: 'nat', from: 'PREROUTING', to: INPOD.preroutingChain });
  return jumps;
}

/** The rules inside our chains, per table, in order. */
function chainRules(options: InpodRuleOptions, family: IpFamily): Record<Table, string[]> {
  const { loopback, any } = FAMILY[family];
  const pre = INPOD.preroutingChain;
  const out = INPOD.outputChain;
  const mangle = [
    // The agent's transparent dial to an app comes back in over lo still carrying 0x539: remember it on the
    // connection so the app's replies can be routed back to the agent.
    `-A ${pre} -m mark --mark ${MARK} -j CONNMARK --set-xmark ${TPROXY_MARK}`,
    // A pod talking to itself (its own IP, over lo) is not inbound traffic.
    `-A ${pre} ! -d ${loopback} -i lo -p tcp -j ACCEPT`,
    // HBONE goes straight to the agent's 15008 listener.
    `-A ${pre} -p tcp -m tcp --dport ${INPOD.inboundHbonePort} -j ACCEPT`,
    // Only new connections are diverted; replies to the agent's own outbound dials must pass.
    `-A ${pre} -p tcp -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`,
  ];
  if (options.inbound === 'tproxy') {
    mangle.push(
      `-A ${pre} ! -d ${loopback} -p tcp -m mark ! --mark ${MARK} -j TPROXY --on-port ${INPOD.inboundPlaintextPort} --on-ip ${any} --tproxy-mark ${TPROXY_MARK}`,
    );
  }
  mangle.push(
    `-A ${out} -m connmark --mark ${TPROXY_MARK} -j CONNMARK --restore-mark --nfmask ${hex(INPOD.restoreMask)} --ctmask ${hex(INPOD.restoreMask)}`,
  );
  const nat: string[] = [];
  if (options.inbound === 'redirect') {
    nat.push(
      `-A ${pre} ! -d ${loopback} -p tcp -m tcp ! --dport ${INPOD.inboundHbonePort} -m mark ! --mark ${MARK} -j REDIRECT --to-ports ${INPOD.inboundPlaintextPort}`,
    );
  }
  nat.push(
    // Replies to the agent's inbound dials and TPROXY'd traffic are never sent to the outbound listener.
    `-A ${out} -p tcp -m mark --mark ${TPROXY_MARK} -j ACCEPT`,
  );
  if (options.dnsCapture) {
    nat.push(
      // The pod's DNS, whatever resolver it names, goes to the agent; the agent's own queries (marked) leave.
      `-A ${out} -p udp -m mark ! --mark ${MARK} -m udp --dport 53 -j REDIRECT --to-ports ${INPOD.dnsPort}`,
      `-A ${out} ! -d ${loopback} -p tcp -m tcp --dport 53 -m mark ! --mark ${MARK} -j REDIRECT --to-ports ${INPOD.dnsPort}`,
    );
  }
  nat.push(
    // An app calling its own pod IP goes over lo and stays inside the pod.
    `-A ${out} ! -d ${loopback} -o lo -j ACCEPT`,
    `-A ${out} ! -d ${loopback} -p tcp -m mark ! --mark ${MARK} -j REDIRECT --to-ports ${INPOD.outboundPort}`,
  );
  return { mangle, nat };
}

function chainsOf(options: InpodRuleOptions): Record<Table, string[]> {
  return {
    mangle: [INPOD.preroutingChain, INPOD.outputChain],
    nat: options.inbound === 'redirect' ? [INPOD.preroutingChain, INPOD.outputChain] : [INPOD.outputChain],
  };
}

/**
 * iptables-restore input (to run with --noflush) that leaves exactly one copy of our rules, whatever a
 * previous install left: declaring our chains flushes them, existing jumps are deleted before being added
 * again, and chains the wanted mode does not use are removed. One restore run is one transaction.
 */
export function renderInstall(options: InpodRuleOptions, existing: ExistingRules, family: IpFamily = 4): string {
  const wanted = chainsOf(options);
  const rules = chainRules(options, family);
  const jumps = wantedJumps(options);
  const lines: string[] = [];
  for (const table of ['mangle', 'nat'] as const) {
    lines.push(`*${table}`);
    for (const chain of wanted[table]) lines.push(`:${chain} - [0:0]`);
    for (const jump of existing.jumps) if (jump.table === table) lines.push(`-D ${jump.from} -j ${jump.to}`);
    for (const jump of jumps) if (jump.table === table) lines.push(`-A ${jump.from} -j ${jump.to}`);
    lines.push(...rules[table]);
    // A chain from the other inbound mode (nat ISTIO_PRERT) is unreferenced now: drop it.
    for (const { table: t, chain } of existing.chains) {
      if (t === table && !wanted[table].includes(chain)) lines.push(`-F ${chain}`, `-X ${chain}`);
    }
    lines.push('COMMIT');
  }
  return lines.join('\n') + '\n';
}

/**
 * iptables-restore input (to run with --noflush) for a namespace that holds none of our chains, in one run instead of
 * read-then-replace: every chain of ours is created with `-N`, which fails when it exists, so in a namespace where a
 * previous install left anything of ours (in either table, either inbound mode) the restore stops at that line and
 * the caller takes the general path (renderInstall after reading what is there). Chains the mode does not use are
 * created and deleted again only to prove they are absent.
 */
export function renderFreshInstall(options: InpodRuleOptions, family: IpFamily = 4): string {
  const wanted = chainsOf(options);
  const rules = chainRules(options, family);
  const jumps = wantedJumps(options);
  const lines: string[] = [];
  for (const table of ['mangle', 'nat'] as const) {
    const unused = [...OWN_CHAINS].filter((chain) => !wanted[table].includes(chain));
    lines.push(`*${table}`);
    for (const chain of [...wanted[table], ...unused]) lines.push(`-N ${chain}`);
    for (const chain of unused) lines.push(`-X ${chain}`);
    for (const jump of jumps) if (jump.table === table) lines.push(`-A ${jump.from} -j ${jump.to}`);
    lines.push(...rules[table], 'COMMIT');
  }
  return lines.join('\n') + '\n';
}

/**
 * iptables-restore input (with --noflush) that removes exactly what an install with these options left (one jump
 * each, our chains). In a namespace holding anything else of ours (a duplicated jump, a chain of the other mode) a
 * line fails (changing nothing in that table) and the caller takes the general path (renderRemoval after reading
 * what is there).
 */
export function renderExpectedRemoval(options: InpodRuleOptions): string {
  const wanted = chainsOf(options);
  const jumps = wantedJumps(options);
  const lines: string[] = [];
  for (const table of ['mangle', 'nat'] as const) {
    lines.push(`*${table}`);
    for (const jump of jumps) if (jump.table === table) lines.push(`-D ${jump.from} -j ${jump.to}`);
    for (const chain of wanted[table]) lines.push(`-F ${chain}`);
    for (const chain of wanted[table]) lines.push(`-X ${chain}`);
    // Proves the chains of the other mode absent, as renderFreshInstall does.
    for (const chain of OWN_CHAINS) if (!wanted[table].includes(chain)) lines.push(`-N ${chain}`, `-X ${chain}`);
    lines.push('COMMIT');
  }
  return lines.join('\n') + '\n';
}

/** iptables-restore input (with --noflush) that removes every jump and chain of ours that exists. */
export function renderRemoval(existing: ExistingRules): string {
  const lines: string[] = [];
  for (const table of ['mangle', 'nat'] as const) {
    const jumps = existing.jumps.filter((jump) => jump.table === table);
    const chains = existing.chains.filter((c) => c.table === table);
    if (jumps.length === 0 && chains.length === 0) continue;
    lines.push(`*${table}`);
    for (const jump of jumps) lines.push(`-D ${jump.from} -j ${jump.to}`);
    for (const { chain } of chains) lines.push(`-F ${chain}`);
    for (const { chain } of chains) lines.push(`-X ${chain}`);
    lines.push('COMMIT');
  }
  return lines.length === 0 ? '' : lines.join('\n') + '\n';
}

const JUMP_LINE = /^-A (\S+) -j (\S+)$/;
const CHAIN_LINE = /^:(\S+) /;

/** Reads our jumps and chains out of `iptables-save` output. */
export function parseExisting(saveOutput: string): ExistingRules {
  const existing: ExistingRules = { jumps: [], chains: [] };
  let table: Table | undefined;
  for (const raw of saveOutput.split('\n')) {
    const line = raw.trim();
    if (line.startsWith('*')) {
      const name = line.slice(1);
      table = name === 'mangle' || name === 'nat' ? name : undefined;
      continue;
    }
    if (table === undefined) continue;
    const chain = CHAIN_LINE.exec(line);
    if (chain && OWN_CHAINS.has(chain[1]!)) {
      existing.chains.push({ table, chain: chain[1]! });
      continue;
    }
    const jump = JUMP_LINE.exec(line);
    if (jump && OWN_CHAINS.has(jump[2]!) && !OWN_CHAINS.has(jump[1]!)) {
      existing.jumps.push({ table, from: jump[1]!, to: jump[2]! });
    }
  }
  return existing;
}

/** True when `saveOutput` holds exactly the rules `renderInstall(options, ...)` installs, once each. */
export function isInstalled(options: InpodRuleOptions, saveOutput: string): boolean {
  const existing = parseExisting(saveOutput);
  const wanted = wantedJumps(options);
  if (existing.jumps.length !== wanted.length) return false;
  for (const jump of wanted) {
    if (!existing.jumps.some((j) => j.table === jump.table && j.from === jump.from && j.to === jump.to)) return false;
  }
  return true;
}

/**
 * The policy routing that goes with the marks, as data (agent/inpod/pod-routing.ts sets it over rtnetlink): per
 * family, `ip route replace local <any>/0 dev lo table 100` and `ip rule add fwmark 0x111/0xfff pref 32764 lookup
 * 100`; and the pod's tcp_migrate_req sysctl set to 1, which lets queued connections move between SO_REUSEPORT
 * listeners when an old agent closes its own (what makes an agent restart lose no connection). One TCP stack serves
 * both families: the IPv4 sysctl covers IPv6 listeners too. Setting it up twice changes nothing.
 */
export interface PodRouting {
  families: IpFamily[];
  fwmark: number;
  fwmask: number;
  table: number;
  priority: number;
  /** The sysctl file, opened from inside the pod's namespace. */
  migrateReqSysctl: string;
}

export function podRouting(families: readonly IpFamily[] = [4], procSysNet = '/proc/sys/net'): PodRouting {
  return {
    families: [...families],
    fwmark: INPOD.tproxyMark,
    fwmask: INPOD.tproxyMask,
    table: INPOD.routeTable,
    priority: INPOD.rulePriority,
    migrateReqSysctl: `${procSysNet}/ipv4/tcp_migrate_req`,
  };
}

/** Chains Kubernetes creates in the backend it uses; their presence settles the question (as iptables-wrappers). */
const KUBE_HINTS = ['KUBE-IPTABLES-HINT', 'KUBE-KUBELET-CANARY'];

/**
 * Which backend the node uses, from each backend's `iptables-save` output in the node's namespace
 * (undefined when that backend's tools are missing): Kubernetes' hint chains first, then whichever has more
 * rules, and nf_tables when neither has any (Istio's and iptables-wrappers' order).
 */
export function chooseBackend(saves: { legacy?: string; nft?: string }): IptablesBackend {
  if (saves.legacy === undefined) return 'nft';
  if (saves.nft === undefined) return 'legacy';
  for (const hint of KUBE_HINTS) {
    if (saves.nft.includes(hint)) return 'nft';
    if (saves.legacy.includes(hint)) return 'legacy';
  }
  const ruleCount = (save: string): number => save.split('\n').filter((line) => line.startsWith('-A ')).length;
  return ruleCount(saves.legacy) > ruleCount(saves.nft) ? 'legacy' : 'nft';
}
