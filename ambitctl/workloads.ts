/**
 * `ambitctl workloads`: the workloads an agent knows (from its mesh state), as ztunnel's
 * `istioctl ztunnel-config workloads` shows them.
 */
import type { ConfigDump } from '../agent/admin.ts';
import type { Workload } from '../shared/mesh/workload.ts';
import { adminGetJson } from './admin-client.ts';
import { PLAINTEXT_IDENTITY } from './authz-check.ts';
import type { Command } from './command.ts';
import { renderDocument, renderTable } from './output.ts';

export type WorkloadView = Workload & { identity: string };

/**
 * A workload outside the mesh (tunnel protocol not HBONE) talks plaintext: no identity is ever presented for it, so
 * none is shown (`authz check` says the same); the agent's dump names the one it would have.
 */
function shown(workload: WorkloadView): Omit<WorkloadView, 'identity'> & { identity?: string } {
  if (workload.tunnelProtocol === 'HBONE') return workload;
  const { identity: _unused, ...rest } = workload;
  return rest;
}

export const workloadsCommand: Command = {
  name: 'workloads',
  usage: 'ambitctl workloads [-n NAMESPACE] [-o table|json|yaml] [--admin URL | --node NETNS]',
  summary: 'list the workloads the agent knows: pods, addresses, node, protocol, identity',
  async run(context) {
    const dump = await adminGetJson<ConfigDump>(context.target, '/config_dump');
    const workloads = (dump.workloads as WorkloadView[]).filter((workload) => context.namespace === undefined || workload.namespace === context.namespace).map(shown);
    if (context.output !== 'table') {
      context.write(renderDocument(workloads, context.output));
      return;
    }
    context.write(
      renderTable(workloads, [
        { header: 'NAMESPACE', value: (w) => w.namespace },
        { header: 'POD NAME', value: (w) => w.name },
        { header: 'ADDRESS', value: (w) => w.addresses.join(',') },
        { header: 'NODE', value: (w) => w.node },
        { header: 'PROTOCOL', value: (w) => (w.tunnelProtocol === 'HBONE' ? 'HBONE' : 'TCP') },
        { header: 'IDENTITY', value: (w) => w.identity ?? PLAINTEXT_IDENTITY },
      ]),
    );
  },
};
