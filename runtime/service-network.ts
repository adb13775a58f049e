/**
 * Wires Services into a local cluster: the Services controller (services.ts) feeding, on every node, the
 * kube-proxy stand-in (kube-proxy.ts) and the cluster DNS (cluster-dns.ts), and the nameservers pods are given.
 *
 * Owns: which node address serves DNS, start order (DNS up, then the first table everywhere, then watching) and
 * stopping the watch.
 * Must not know about: pods, CNI, the mesh.
 */
import type { ChildProcess } from 'node:child_process';
import path from 'node:path';
import { NodeDns } from './cluster-dns.ts';
import { applyKubeProxyRules, type KubeProxyNode } from './kube-proxy.ts';
import { ipIn, sysctlIn } from './netns.ts';
import type { ClusterNode } from './node.ts';
import { ClusterServices } from './services.ts';

export interface ServiceNetworkOptions {
  clusterDir: string;
  dualStack: boolean;
  nodes: ClusterNode[];
  /** The run's directory: services.log goes there. */
  dir: string;
}

export class ServiceNetwork {
  readonly services: ClusterServices;
  /** What every pod's resolv.conf names: the cluster DNS Service's address. */
  readonly nameservers: string[];
  readonly #dnsByNode = new Map<ClusterNode, NodeDns>();

  private constructor(services: ClusterServices, nameservers: string[]) {
    this.services = services;
    this.nameservers = nameservers;
  }

  dns(node: ClusterNode): NodeDns | undefined {
    return this.#dnsByNode.get(node);
  }

  static async start(options: ServiceNetworkOptions): Promise<ServiceNetwork> {
    const proxyNodes = new Map<ClusterNode, KubeProxyNode>();
    const dnsByNode = new Map<ClusterNode, NodeDns>();
    const services = new ClusterServices({
      clusterDir: options.clusterDir,
      dualStack: options.dualStack,
      logFile: path.join(options.dir, 'services.log'),
      consumers: [
        async (table) => {
          await Promise.all(options.nodes.map((node) => applyKubeProxyRules((cmd, args, runOptions) => node.exec(cmd, args, runOptions), table, proxyNodes.get(node)!)));
        },
        async (table) => {
          await Promise.all([...dnsByNode.values()].map((dns) => dns.apply(table)));
        },
      ],
    });
    const dnsIp4 = services.allocator.dnsAddress('IPv4')!;
    const dnsIp6 = options.dualStack ? services.allocator.dnsAddress('IPv6') : undefined;
    const network = new ServiceNetwork(services, [dnsIp4]);
    for (const node of options.nodes) {
      proxyNodes.set(node, { name: node.name, families: dnsIp6 !== undefined ? ['IPv4', 'IPv6'] : ['IPv4'] });
      // The cluster DNS address is the node's own (NodeLocal DNSCache's way): pods reach their node's dnsmasq
      // without NAT. nodad: usable at once.
      await ipIn(node.netnsName, ['addr', 'add', `${dnsIp4}/32`, 'dev', 'lo']);
      if (dnsIp6 !== undefined) await ipIn(node.netnsName, ['-6', 'addr', 'add', `${dnsIp6}/128`, 'dev', 'lo', 'nodad']);
      // kube-proxy's requirement: bridged traffic passes the IP hooks, so a reply from an endpoint on the client's
      // own bridge is un-DNATed (it would otherwise go straight back over the bridge with the endpoint's address).
      await sysctlIn(node.netnsName, 'net.bridge.bridge-nf-call-iptables', '1');
      if (options.dualStack) await sysctlIn(node.netnsName, 'net.bridge.bridge-nf-call-ip6tables', '1');
      const dns = new NodeDns({
        dir: node.dir,
        listenAddresses: [dnsIp4, ...(dnsIp6 !== undefined ? [dnsIp6] : [])],
        spawn: (cmd, args, spawnOptions): ChildProcess => node.spawn(cmd, args, spawnOptions),
      });
      await dns.start({ services: [] });
      dnsByNode.set(node, dns);
      network.#dnsByNode.set(node, dns);
    }
    await services.start();
    return network;
  }

  /** Upstream servers for names outside cluster.local, on every node's cluster DNS. */
  async setDnsUpstream(servers: string[]): Promise<void> {
    await Promise.all([...this.#dnsByNode.values()].map((dns) => dns.setUpstream(servers)));
  }

  stop(): void {
    this.services.stop();
  }
}
