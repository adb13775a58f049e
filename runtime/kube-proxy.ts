/**
 * The kube-proxy stand-in of one node: nftables rules in the node's network namespace shaped as kube-proxy's
 * nftables mode writes them, so that traffic to a Service's cluster IP reaches one of its ready endpoints.
 *
 *   table ip|ip6 kube-proxy
 *     nat-prerouting / nat-output  -> services: `daddr . l4proto . dport vmap @service-ips`
 *     service-<ns>/<svc>/<proto>/<port>: `numgen random mod N vmap { 0 : goto endpoint-..., ... }`
 *     endpoint-...__<ip>/<port>: hairpin (the endpoint calling its own Service) marked for masquerade, then DNAT
 *     filter-prerouting / filter-output -> a Service with no ready endpoint is rejected at once (no-endpoint-services)
 *     nat-postrouting -> masquerade what was marked
 *
 * A pod's traffic to a VIP leaves it by its default route to the node's bridge, so the node namespace is where the
 * DNAT happens, for pods of every node (their nodes route pod ranges to each other). Pods the agent captures are
 * redirected inside the pod first; what the agent sends on to a VIP (not in the mesh) comes through here like any
 * pod's, and what it sends to a pod IP matches nothing here. The cluster DNS address is not DNATed here: every
 * node holds it itself (cluster-dns.ts).
 * Each sync replaces both tables in one `nft -f` transaction: packets see the old rules or the new, never a mix.
 *
 * Owns: the ruleset text and applying it in one node.
 * Must not know about: where Services and endpoints come from (services.ts), or the mesh.
 */
import { RuntimeError } from './errors.ts';
import { familyOf, type IpFamily } from './service-ips.ts';
import type { ServiceTable, ServiceView } from './services.ts';

export const KUBE_PROXY_TABLE = 'kube-proxy';
/** kube-proxy's masquerade bit. */
const MASQUERADE_MARK = '0x4000';
/** By absolute path: `nft` on a developer's PATH may be node_modules/.bin/nft (@vercel/nft, a file tracer). */
const NFT = '/usr/sbin/nft';

/** What the rules of one node depend on besides the table. */
export interface KubeProxyNode {
  name: string;
  /** The families the cluster has (IPv6 too in a dual-stack cluster): one table each. */
  families: IpFamily[];
}

/** Chain names are nft identifiers: keep letters, digits and `/._-`; an IPv6 address's colons become dots. */
function chainPart(text: string): string {
  return text.replace(/:/g, '.').replace(/[^A-Za-z0-9/._-]/g, '_');
}

function address(ip: string, family: IpFamily): string {
  return family === 'IPv6' ? `[${ip}]` : ip;
}

interface ChainSet {
  serviceIps: string[];
  noEndpoints: string[];
  chains: string[];
}

function addService(
  set: ChainSet,
  family: IpFamily,
  id: string,
  vip: string,
  protocol: string,
  port: number,
  endpoints: { ip: string; port: number }[],
): void {
  const key = `${vip} . ${protocol} . ${port}`;
  if (endpoints.length === 0) {
    set.noEndpoints.push(`${key} : goto reject-chain`);
    return;
  }
  const serviceChain = `service-${chainPart(id)}`;
  const saddr = family === 'IPv4' ? 'ip saddr' : 'ip6 saddr';
  const endpointChains = endpoints.map((endpoint) => {
    const name = `endpoint-${chainPart(`${id}__${endpoint.ip}/${endpoint.port}`)}`;
    set.chains.push(
      `  chain ${name} {\n    ${saddr} ${endpoint.ip} jump mark-for-masquerade\n    meta l4proto ${protocol} dnat to ${address(endpoint.ip, family)}:${endpoint.port}\n  }`,
    );
    return name;
  });
  const choices = endpointChains.map((name, index) => `${index} : goto ${name}`).join(', ');
  set.chains.push(`  chain ${serviceChain} {\n    numgen random mod ${endpointChains.length} vmap { ${choices} }\n  }`);
  set.serviceIps.push(`${key} : goto ${serviceChain}`);
}

function serviceEndpoints(service: ServiceView, portIndex: number, family: IpFamily, node: KubeProxyNode): { ip: string; port: number }[] {
  const port = service.ports[portIndex]!;
  return port.endpoints.filter((endpoint) => familyOf(endpoint.ip) === family && (!service.localOnly || endpoint.nodeName === node.name));
}

/** The `nft -f` input that replaces one family's kube-proxy table on `node`. */
export function renderFamily(table: ServiceTable, node: KubeProxyNode, family: IpFamily): string {
  const nftFamily = family === 'IPv4' ? 'ip' : 'ip6';
  const daddr = family === 'IPv4' ? 'ip daddr' : 'ip6 daddr';
  const keyType = family === 'IPv4' ? 'ipv4_addr . inet_proto . inet_service' : 'ipv6_addr . inet_proto . inet_service';
  const set: ChainSet = { serviceIps: [], noEndpoints: [], chains: [] };
  for (const service of table.services) {
    for (const vip of service.clusterIPs) {
      if (familyOf(vip) !== family) continue;
      for (const [index, port] of service.ports.entries()) {
        const id = `${service.namespace}/${service.name}/${port.protocol}/${port.name || port.port}`;
        addService(set, family, id, vip, port.protocol, port.port, serviceEndpoints(service, index, family, node));
      }
    }
  }
  const map = (name: string, elements: string[]): string =>
    `  map ${name} {\n    type ${keyType} : verdict\n${elements.length > 0 ? `    elements = {\n      ${elements.join(',\n      ')}\n    }\n` : ''}  }`;
  return [
    `table ${nftFamily} ${KUBE_PROXY_TABLE}`,
    `delete table ${nftFamily} ${KUBE_PROXY_TABLE}`,
    `table ${nftFamily} ${KUBE_PROXY_TABLE} {`,
    `  comment "ambit local runtime: kube-proxy stand-in (nftables mode) for node ${node.name}"`,
    map('service-ips', set.serviceIps),
    map('no-endpoint-services', set.noEndpoints),
    '  chain nat-prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n    jump services\n  }',
    '  chain nat-output {\n    type nat hook output priority -100; policy accept;\n    jump services\n  }',
    '  chain nat-postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n    jump masquerading\n  }',
    '  chain filter-prerouting {\n    type filter hook prerouting priority dstnat - 10; policy accept;\n    ct state new jump service-endpoints-check\n  }',
    '  chain filter-output {\n    type filter hook output priority -110; policy accept;\n    ct state new jump service-endpoints-check\n  }',
    `  chain service-endpoints-check {\n    ${daddr} . meta l4proto . th dport vmap @no-endpoint-services\n  }`,
    // A TCP client sees "connection refused" at once, as with kube-proxy, instead of a timeout.
    '  chain reject-chain {\n    meta l4proto tcp reject with tcp reset\n    reject\n  }',
    `  chain services {\n    ${daddr} . meta l4proto . th dport vmap @service-ips\n  }`,
    `  chain mark-for-masquerade {\n    meta mark set meta mark | ${MASQUERADE_MARK}\n  }`,
    `  chain masquerading {\n    meta mark & ${MASQUERADE_MARK} == 0 return\n    meta mark set meta mark ^ ${MASQUERADE_MARK}\n    masquerade fully-random\n  }`,
    ...set.chains,
    '}',
    '',
  ].join('\n');
}

/** The tables of the node's families. */
export function renderRuleset(table: ServiceTable, node: KubeProxyNode): string {
  return node.families.map((family) => renderFamily(table, node, family)).join('');
}

/** Runs a command in the node's namespace (ClusterNode.exec). */
export type NodeExec = (cmd: string, args: string[], options: { input?: string }) => Promise<{ code: number; stdout: string; stderr: string }>;

/** Replaces the node's kube-proxy tables with the rules for `table`, in one nft transaction. */
export async function applyKubeProxyRules(exec: NodeExec, table: ServiceTable, node: KubeProxyNode): Promise<void> {
  const result = await exec(NFT, ['-f', '-'], { input: renderRuleset(table, node) });
  if (result.code !== 0) throw new RuntimeError('COMMAND_FAILED', `nft -f failed on node ${node.name} (exit ${result.code}): ${result.stderr.trim()}`);
}
