/**
 * `ambitctl certs`: the workload certificates an agent holds, with their validity (never keys: the agent's
 * admin endpoint does not expose them).
 */
import type { CertificateView, ConfigDump } from '../agent/admin.ts';
import { adminGetJson } from './admin-client.ts';
import type { Command } from './command.ts';
import { humanDuration, renderDocument, renderTable } from './output.ts';

function namespaceOf(identity: string): string | undefined {
  return /\/ns\/([^/]+)\//.exec(identity)?.[1];
}

export const certsCommand: Command = {
  name: 'certs',
  usage: 'ambitctl certs [-n NAMESPACE] [-o table|json|yaml] [--admin URL | --node NETNS]',
  summary: 'list the certificates the agent holds for its pods\' identities, with expiry',
  async run(context) {
    const dump = await adminGetJson<ConfigDump>(context.target, '/config_dump');
    const certificates = dump.certificates.filter((certificate: CertificateView) => context.namespace === undefined || namespaceOf(certificate.identity) === context.namespace);
    if (context.output !== 'table') {
      context.write(renderDocument(certificates, context.output));
      return;
    }
    context.write(
      renderTable(certificates, [
        { header: 'IDENTITY', value: (c) => c.identity },
        { header: 'STATE', value: (c) => c.state },
        { header: 'SERIAL', value: (c) => c.serial },
        { header: 'NOT BEFORE', value: (c) => c.notBefore },
        { header: 'NOT AFTER', value: (c) => c.notAfter },
        { header: 'EXPIRES IN', value: (c) => humanDuration(c.expiresInSeconds) },
      ]),
    );
  },
};
