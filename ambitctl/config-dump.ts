/**
 * `ambitctl config-dump`: everything the agent's admin endpoint dumps, or a waypoint's (its /config_dump on 15000:
 * `--node <the waypoint pod's netns>` or `--admin URL`), told apart by the waypoint's `gateway` field. `-o json|yaml`
 * prints the whole document; the default table output summarises it section by section (a waypoint's: its routes
 * per Service, in the order it matches them).
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

/** A waypoint's /config_dump (waypoint/main.ts): routes by `<namespace>/<hostname>` of the Service they apply to. */
interface WaypointDump {
  gateway: string;
  identity: string;
  services: unknown[];
  routes: Record<string, Record<string, unknown>[]>;
}

function describeMatch(entry: Record<string, unknown>): string {
  const parts: string[] = [];
  if (typeof entry.method === 'string' && entry.method !== '') parts.push(entry.method);
  if (typeof entry.path === 'string') {
    parts.push(entry.pathType === 'REGULAR_EXPRESSION' ? `~${entry.path}` : `${entry.pathType === 'EXACT' ? '=' : ''}${entry.path}${entry.pathType === 'PATH_PREFIX' ? '*' : ''}`);
  }
  type ValueMatch = { name: string; exact?: string; value?: string; regex?: string };
  for (const header of (entry.headers as ValueMatch[] | undefined) ?? []) parts.push(header.regex ? `${header.name} ~ ${header.regex}` : `${header.name}: ${header.exact ?? header.value ?? ''}`);
  for (const param of (entry.queryParams as ValueMatch[] | undefined) ?? []) parts.push(param.regex ? `?${param.name}~${param.regex}` : `?${param.name}=${param.exact ?? ''}`);
  for (const header of (entry.withoutHeaders as ValueMatch[] | undefined) ?? []) parts.push(header.regex ? `!${header.name} ~ ${header.regex}` : `!${header.name}: ${header.exact ?? ''}`);
  return parts.join(' ') || '*';
}

type Fault = { delay?: { fixedDelayMs: number; percentage: number }; abort?: { httpStatus: number; grpcStatus: number; percentage: number } };

/** A VirtualService fault as `delay 50ms 10% abort 503 5%` ('' when none). */
function describeFault(fault: Fault | undefined): string {
  const parts: string[] = [];
  if (fault?.delay) parts.push(`delay ${fault.delay.fixedDelayMs}ms ${fault.delay.percentage}%`);
  if (fault?.abort) parts.push(`abort ${fault.abort.httpStatus || `grpc ${fault.abort.grpcStatus}`} ${fault.abort.percentage}%`);
  return parts.join(' ');
}

function waypointTable(dump: WaypointDump, namespace: string | undefined): string {
  const rows = Object.entries(dump.routes ?? {})
    .filter(([service]) => namespace === undefined || service.startsWith(`${namespace}/`))
    .flatMap(([service, entries]) => entries.map((entry) => ({ service, entry })));
  return [
    `WAYPOINT ${dump.gateway} (identity ${dump.identity})`,
    '',
    `ROUTES (${rows.length}, in match order per Service)`,
    renderTable(rows, [
      { header: 'SERVICE', value: (row) => row.service },
      { header: 'PORT', value: (row) => String(row.entry.port || '*') },
      { header: 'ROUTE', value: (row) => `${String(row.entry.route ?? '')}${row.entry.ruleName ? `/${String(row.entry.ruleName)}` : ''}` },
      { header: 'MATCH', value: (row) => describeMatch(row.entry) },
      { header: 'BACKENDS', value: (row) => ((row.entry.backends as { service: string; port: number; weight: number; subset?: string }[] | undefined) ?? []).map((backend) => `${backend.service}:${backend.port}${backend.subset ? `/${backend.subset}` : ''} w${backend.weight}`).join(', ') },
      { header: 'FAULT', value: (row) => describeFault(row.entry.fault as Fault | undefined) },
    ]),
    `SERVICES ${dump.services.length}`,
    'details: ambitctl config-dump -o yaml',
    '',
  ].join('\n');
}

export const configDumpCommand: Command = {
  name: 'config-dump',
  usage: 'ambitctl config-dump [-o table|json|yaml] [--admin URL | --node NETNS]',
  summary: 'show the agent\'s whole view (captured pods, workloads, services, policies, certificates), or a waypoint\'s routes',
  async run(context) {
    const dump = await adminGetJson<ConfigDump | WaypointDump>(context.target, '/config_dump');
    if (context.output !== 'table') {
      context.write(renderDocument(dump, context.output));
      return;
    }
    if ('gateway' in dump) {
      context.write(waypointTable(dump, context.namespace));
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
