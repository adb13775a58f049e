/**
 * ambitctl: the operator's command line for an ambit mesh.
 *
 *   ambitctl workloads   [-n NS] [-o table|json|yaml] [--admin URL | --node NETNS]
 *   ambitctl services    [-n NS] [-o table|json|yaml] [--admin URL | --node NETNS]
 *   ambitctl certs       [-n NS] [-o table|json|yaml] [--admin URL | --node NETNS]
 *   ambitctl config-dump [-n NS] [-o table|json|yaml] [--admin URL | --node NETNS]
 *   ambitctl authz check <source pod> <destination pod | svc/NS/NAME | cluster IP> <port> [--cluster-dir DIR | --admin URL | --node NETNS] [-n NS] [-o ...]
 *   ambitctl waypoint apply -n NS [--name N] [--for service|workload|all] [--kubeconfig F | --cluster-dir DIR | --run-dir DIR]
 *   ambitctl waypoint status [-n NS] [-o ...] [--kubeconfig F | --cluster-dir DIR | --run-dir DIR]
 *   ambitctl local up|get|logs|exec|status|down ...   (a user's YAML as a running local mesh: see local.ts)
 *
 * Owns: argument parsing, dispatch to one file per command, exit codes (0 ok, 1 failed, 2 usage; `authz check`:
 * 0 allowed, 1 denied, 2 any error, unknown pods included, on both its paths).
 * Must not know about: what a command does (its own file) or how the agent is reached (admin-client.ts).
 */
import { parseArgs } from 'node:util';
import { AmbitctlError, DEFAULT_ADMIN_URL, type AdminTarget } from './admin-client.ts';
import type { Command } from './command.ts';
import { authzCommand } from './authz-check.ts';
import { certsCommand } from './certs.ts';
import { configDumpCommand } from './config-dump.ts';
import { runLocal } from './local.ts';
import { OUTPUT_FORMATS, type OutputFormat } from './output.ts';
import { servicesCommand } from './services.ts';
import { waypointCommand } from './waypoint.ts';
import { workloadsCommand } from './workloads.ts';

export const COMMANDS: readonly Command[] = [workloadsCommand, servicesCommand, certsCommand, configDumpCommand, authzCommand, waypointCommand];

export interface Io {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
}

function usage(): string {
  const width = Math.max(...COMMANDS.map((command) => command.name.length));
  return [
    'usage: ambitctl <command> [options]',
    '',
    'commands:',
    '  local          up -f DIR, get, logs, exec, status, down: your own YAML as a local mesh (ambitctl local -h)',
    ...COMMANDS.map((command) => `  ${command.name.padEnd(width)}   ${command.summary}`),
    '',
    'options:',
    `  --admin URL        the agent's admin endpoint (default ${DEFAULT_ADMIN_URL}, or AMBIT_ADMIN_URL)`,
    '  --node NETNS       reach the agent inside this network namespace (a local-runtime node; needs root)',
    '  -o, --output FMT   table (default), json or yaml',
    '  -n, --namespace NS only objects of this namespace (authz check: the pods\' namespace when not ns/name)',
    '  --cluster-dir DIR  authz check: decide from the cluster directory the control plane reads (or AMBIT_CLUSTER_DIR);',
    '                     without it, authz check asks the agent (--admin/--node): ask the destination node\'s agent',
    '  --method M --path P --header name:value (repeatable)  authz check SRC SERVICE PORT for an HTTP request through\n                     the Service\'s waypoint: its L7 policies decide (cluster directory only)',
    '  --root-namespace NS, --trust-domain TD   mesh settings for authz check (istio-system, cluster.local)',
    '  --name N, --for service|workload|all     waypoint apply: the Gateway\'s name (waypoint) and what it serves (service)',
    '  --kubeconfig FILE  waypoint: the cluster (or KUBECONFIG); else --cluster-dir, else the running local mesh (--run-dir)',
    '  -h, --help         this help',
    '',
    'exit codes: 0 ok, 1 failed, 2 usage; authz check: 0 allowed, 1 denied, 2 error (unknown pod, usage, agent unreachable)',
    '',
  ].join('\n');
}

/** Runs one ambitctl invocation; resolves with the exit code. */
export async function runAmbitctl(argv: readonly string[], io: Io, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  if (argv[0] === 'local') return runLocal(argv.slice(1), io, env);
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      allowPositionals: true,
      options: {
        admin: { type: 'string' },
        node: { type: 'string' },
        output: { type: 'string', short: 'o', default: 'table' },
        namespace: { type: 'string', short: 'n' },
        'cluster-dir': { type: 'string' },
        'root-namespace': { type: 'string' },
        'trust-domain': { type: 'string' },
        method: { type: 'string' },
        path: { type: 'string' },
        header: { type: 'string', multiple: true },
        name: { type: 'string' },
        for: { type: 'string' },
        kubeconfig: { type: 'string' },
        'run-dir': { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (error) {
    io.stderr(`ambitctl: ${(error as Error).message}\n\n${usage()}`);
    return 2;
  }
  const { values, positionals } = parsed;
  const [name, ...args] = positionals;
  if (values.help || name === undefined || name === 'help') {
    (values.help || name === 'help' ? io.stdout : io.stderr)(usage());
    return values.help || name === 'help' ? 0 : 2;
  }
  const command = COMMANDS.find((candidate) => candidate.name === name);
  if (!command) {
    io.stderr(`ambitctl: unknown command "${name}"\n\n${usage()}`);
    return 2;
  }
  if (!(OUTPUT_FORMATS as readonly string[]).includes(values.output)) {
    io.stderr(`ambitctl: unknown output format "${values.output}": use ${OUTPUT_FORMATS.join(', ')}\n`);
    return 2;
  }
  const target: AdminTarget = { url: values.admin ?? env.AMBIT_ADMIN_URL ?? DEFAULT_ADMIN_URL };
  if (values.node !== undefined) target.netns = values.node;
  try {
    const code = await command.run({
      target,
      output: values.output as OutputFormat,
      namespace: values.namespace,
      clusterDir: values['cluster-dir'] ?? env.AMBIT_CLUSTER_DIR,
      rootNamespace: values['root-namespace'],
      trustDomain: values['trust-domain'],
      ...(values.method !== undefined || values.path !== undefined || values.header !== undefined ? { httpRequest: { method: values.method, path: values.path, headers: values.header ?? [] } } : {}),
      flags: { name: values.name, for: values.for, kubeconfig: values.kubeconfig ?? (command.name === 'waypoint' ? env.KUBECONFIG : undefined), 'run-dir': values['run-dir'] ?? env.AMBIT_LOCAL_RUN_DIR },
      args,
      write: io.stdout,
    });
    return code ?? 0;
  } catch (error) {
    if (error instanceof AmbitctlError) {
      io.stderr(`ambitctl ${command.name}: ${error.message}\n`);
      return command.failureExitCode ?? (error.code === 'USAGE' ? 2 : 1);
    }
    io.stderr(`ambitctl ${command.name}: ${(error as Error).stack ?? String(error)}\n`);
    return command.failureExitCode ?? 1;
  }
}

if (import.meta.main) {
  const code = await runAmbitctl(process.argv.slice(2), {
    stdout: (text) => process.stdout.write(text),
    stderr: (text) => process.stderr.write(text),
  });
  process.exitCode = code;
}
