/**
 * `ambitctl services`: the Services an agent knows (from its mesh state) with their VIPs, ports, load balancing
 * and endpoints, as `istioctl ztunnel-config services` shows them: what a connection to a VIP can be sent to.
 */
import type { ConfigDump } from '../agent/admin.ts';
import type { Service } from '../shared/mesh/service.ts';
import { adminGetJson } from './admin-client.ts';
import type { Command } from './command.ts';
import { renderDocument, renderTable } from './output.ts';

export type ServiceView = Service & { endpoints: { name: string; namespace: string; node: string; status: string }[] };

function loadBalancing(service: ServiceView): string {
  const lb = service.loadBalancing;
  if (!lb || lb.routingPreference.length === 0) return '-';
  return `${lb.mode} ${lb.routingPreference.join('/')}`;
}

export const servicesCommand: Command = {
  name: 'services',
  usage: 'ambitctl services [-n NAMESPACE] [-o table|json|yaml] [--admin URL | --node NETNS]',
  summary: 'list the services the agent knows: VIPs, ports, load balancing, healthy/total endpoints',
  async run(context) {
    const dump = await adminGetJson<ConfigDump>(context.target, '/config_dump');
    const services = (dump.services as ServiceView[]).filter((service) => context.namespace === undefined || service.namespace === context.namespace);
    if (context.output !== 'table') {
      context.write(renderDocument(services, context.output));
      return;
    }
    context.write(
      renderTable(services, [
        { header: 'NAMESPACE', value: (s) => s.namespace },
        { header: 'SERVICE NAME', value: (s) => s.name },
        { header: 'VIPS', value: (s) => (s.vips.length === 0 ? 'None (headless)' : s.vips.map((vip) => (vip.network ? `${vip.network}/${vip.address}` : vip.address)).join(',')) },
        { header: 'PORTS', value: (s) => s.ports.map((port) => `${port.servicePort}->${port.targetPort || 'named'}`).join(',') },
        { header: 'LOAD BALANCING', value: loadBalancing },
        { header: 'ENDPOINTS', value: (s) => `${s.endpoints.filter((endpoint) => endpoint.status !== 'UNHEALTHY').length}/${s.endpoints.length}` },
      ]),
    );
  },
};
