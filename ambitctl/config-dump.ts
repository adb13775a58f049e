/**
 * `ambitctl config-dump`: everything the agent's admin endpoint dumps. `-o json|yaml` prints the whole
 * document; the default table output summarises it section by section.
 */
import type { ConfigDump } from '../agent/admin.ts';
import { adminGetJson } from './admin-client.ts';
import type { Command } from './command.ts';
import { humanDuration, renderDocument, renderTable } from './output.ts';

interface CapturedPodRow {
  uid: string;
  name: string;
  namespace: string;
  ips: string[];
  listeners?: { accepted?: number; refused?: number };
}

export const configDumpCommand: Command = {
  name: 'config-dump',
  usage: 'ambitctl config-dump [-o table|json|yaml] [--admin URL | --node NETNS]',
  summary: 'show the agent\'s whole view: captured pods, workloads, services, policies, certificates',
  async run(context) {
    const dump = await adminGetJson<ConfigDump>(context.target, '/config_dump');
    if (context.output !== 'table') {
      context.write(renderDocument(dump, context.output));
      return;
    }
    const pods = (dump.capturedPods as CapturedPodRow[]).filter((pod) => context.namespace === undefined || pod.namespace === context.namespace);
    const sections = [
      `NODE ${dump.node} (dumped ${dump.generatedAt})`,
      '',
      `CAPTURED PODS (${pods.length})`,
      renderTable(pods, [
        { header: 'NAMESPACE', value: (p) => p.namespace },
        { header: 'POD NAME', value: (p) => p.name },
        { header: 'ADDRESS', value: (p) => p.ips.join(',') },
        { header: 'ACCEPTED', value: (p) => String(p.listeners?.accepted ?? '') },
        { header: 'REFUSED', value: (p) => String(p.listeners?.refused ?? '') },
      ]),
      `CERTIFICATES (${dump.certificates.length})`,
      renderTable(dump.certificates, [
        { header: 'IDENTITY', value: (c) => c.identity },
        { header: 'STATE', value: (c) => c.state },
        { header: 'EXPIRES IN', value: (c) => humanDuration(c.expiresInSeconds) },
      ]),
      `WORKLOADS ${dump.workloads.length}   SERVICES ${dump.services.length}   POLICIES ${dump.policies.length}`,
      'details: ambitctl workloads, ambitctl services, ambitctl certs, or ambitctl config-dump -o yaml',
      '',
    ];
    context.write(sections.join('\n'));
  },
};
