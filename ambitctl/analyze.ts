/**
 * `ambitctl analyze [--cluster-dir DIR | --kubeconfig FILE] [-n NS] [-o table|json|yaml]`: problems across the
 * mesh configuration (controlplane/analysis/analyzer.ts), printed as istioctl analyze prints them:
 *
 *   Error [IST0101] (AuthorizationPolicy shop/deny-delete policies.yaml:1) Referenced Service not found: "shop/web"
 *
 * then a summary line. Exit 1 when any finding is an Error (or a document could not be read), else 0.
 *
 * Owns: choosing the source, the namespace filter, rendering and the exit code. Must not know about: the rules.
 */
import { analyze, type AnalysisMessage } from '../controlplane/analysis/analyzer.ts';
import { AmbitctlError } from './admin-client.ts';
import { objectsFromDirectory, objectsFromKubeconfig, type ClusterObjects } from './cluster-objects.ts';
import type { Command } from './command.ts';
import { renderDocument } from './output.ts';

const USAGE = 'ambitctl analyze [--cluster-dir DIR | --kubeconfig FILE] [-n NS] [-o table|json|yaml]';

interface Finding {
  code: string;
  level: string;
  /** `Kind namespace/name`, as istioctl's origin. */
  origin: string;
  /** `file:line` the object was read from, when known. */
  reference?: string;
  message: string;
}

function origin(message: AnalysisMessage): string {
  const { kind, namespace, name } = message.resource;
  return `${kind} ${namespace === undefined ? name : `${namespace}/${name}`}`;
}

export function findings(source: ClusterObjects, messages: readonly AnalysisMessage[]): Finding[] {
  const unreadable: Finding[] = source.unreadable.map((problem) => ({ code: 'IST0106', level: 'Error', origin: 'File', message: `Schema validation error: ${problem}` }));
  return [
    ...unreadable,
    ...messages.map((message) => {
      const reference = source.sourceOf(message.object);
      return { code: message.code, level: message.level, origin: origin(message), ...(reference ? { reference } : {}), message: message.message };
    }),
  ];
}

export function renderFindings(list: readonly Finding[], scope: string): string {
  const lines = list.map((finding) => `${finding.level} [${finding.code}] (${finding.origin}${finding.reference ? ` ${finding.reference}` : ''}) ${finding.message}`);
  if (list.length === 0) return `✔ No validation issues found when analyzing ${scope}.\n`;
  const errors = list.some((finding) => finding.level === 'Error');
  lines.push(errors ? `Error: Analyzers found issues when analyzing ${scope}.` : `Info: Analyzers found issues (warnings only) when analyzing ${scope}.`);
  return `${lines.join('\n')}\n`;
}

export const analyzeCommand: Command = {
  name: 'analyze',
  usage: USAGE,
  summary: 'problems across the configuration (policies targeting nothing, unattached routes, unused subsets and waypoints, ...); exit 1 on errors',
  async run(context) {
    if (context.args.length > 0) throw new AmbitctlError('USAGE', `usage: ${USAGE}`);
    if (context.clusterDir && context.kubeconfig) throw new AmbitctlError('USAGE', 'pass --cluster-dir or --kubeconfig, not both');
    const source = context.clusterDir ? await objectsFromDirectory(context.clusterDir) : await objectsFromKubeconfig(context.kubeconfig);
    const all = analyze(source.objects, { ...(context.rootNamespace ? { rootNamespace: context.rootNamespace } : {}) });
    const messages = context.namespace === undefined ? all : all.filter((message) => (message.resource.namespace ?? message.resource.name) === context.namespace);
    const list = findings(source, messages);
    const scope = context.namespace === undefined ? 'all namespaces' : `namespace: ${context.namespace}`;
    if (context.output === 'table') {
      context.write(renderFindings(list, scope));
      if (source.notServed.length > 0) context.write(`(not served by the API server, not analyzed: ${source.notServed.join(', ')})\n`);
    } else {
      context.write(renderDocument(list, context.output));
    }
    return list.some((finding) => finding.level === 'Error') ? 1 : 0;
  },
};
