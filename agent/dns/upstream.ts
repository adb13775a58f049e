/**
 * Which resolver the agent forwards the names it does not own to, decided as ztunnel does: the nameservers of the
 * agent's own resolv.conf (ztunnel reads its system configuration, which in a cluster is the node's kube-dns
 * Service through the DaemonSet's ClusterFirst DNS policy), unless AMBIT_DNS_UPSTREAM names resolvers explicitly
 * (the local runtime, tests, a node whose resolv.conf points at a stub on the host's loopback, which a pod cannot
 * reach). The pod's own original nameserver is not used: in a cluster it is the same kube-dns, and after capture
 * every port-53 packet of the pod arrives at the agent whatever address the pod sent it to.
 *
 * Owns: parsing resolver addresses (`ip`, `ip:port`, `[ipv6]:port`) and the nameserver lines of a resolv.conf.
 * Must not know about: sockets, pods, DNS messages.
 */
import { isIP } from 'node:net';
import { DnsError } from './errors.ts';

export interface Upstream {
  address: string;
  port: number;
  family: 4 | 6;
}

const DNS_PORT = 53;

/** One resolver address; throws DnsError BAD_UPSTREAM for anything else (names are not resolved: that would loop). */
export function parseUpstream(text: string): Upstream {
  const trimmed = text.trim();
  let address = trimmed;
  let port = DNS_PORT;
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(trimmed);
  if (bracketed) {
    address = bracketed[1]!;
    if (bracketed[2] !== undefined) port = Number(bracketed[2]);
  } else if (isIP(trimmed) === 0) {
    const colon = trimmed.lastIndexOf(':');
    if (colon > 0 && isIP(trimmed.slice(0, colon)) === 4) {
      address = trimmed.slice(0, colon);
      port = Number(trimmed.slice(colon + 1));
    }
  }
  const family = isIP(address);
  if (family === 0 || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new DnsError('BAD_UPSTREAM', `DNS upstream "${text}" must be an IP address with an optional port (10.96.0.10, 10.96.0.10:53, [fd00::a]:53)`);
  }
  return { address, port, family: family as 4 | 6 };
}

/** AMBIT_DNS_UPSTREAM: comma-separated resolver addresses, tried in order. */
export function parseUpstreamList(text: string): Upstream[] {
  return text.split(',').filter((part) => part.trim() !== '').map(parseUpstream);
}

/** The `nameserver` lines of a resolv.conf, in order; lines that are not IP addresses are skipped. */
export function nameserversOf(resolvConf: string): Upstream[] {
  const upstreams: Upstream[] = [];
  for (const line of resolvConf.split('\n')) {
    const match = /^\s*nameserver\s+(\S+)/.exec(line);
    if (!match) continue;
    // A scoped IPv6 address (fe80::1%eth0) names an interface of the agent's namespace, not the pod's.
    const address = match[1]!;
    if (isIP(address) !== 0 && !address.includes('%')) upstreams.push(parseUpstream(address));
  }
  return upstreams;
}
