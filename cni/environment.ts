/**
 * Reads the CNI_* environment variables a container runtime sets, and the Kubernetes pod identity it puts in
 * CNI_ARGS (`IgnoreUnknown=1;K8S_POD_NAMESPACE=..;K8S_POD_NAME=..;...`).
 *
 * Owns: validating those variables with errors that name the variable.
 * Must not know about: the network configuration on stdin, the agent, or enrollment.
 */
import { CniError, CniErrorCode } from './errors.ts';

export const CNI_COMMANDS = ['ADD', 'DEL', 'CHECK', 'VERSION', 'STATUS', 'GC'] as const;
/** Commands about the plugin or the whole network, not one container: only CNI_COMMAND and CNI_PATH are set. */
const NETWORK_COMMANDS = new Set<string>(['VERSION', 'STATUS', 'GC']);
export type CniCommand = (typeof CNI_COMMANDS)[number];

export interface CniEnvironment {
  command: CniCommand;
  containerId: string;
  /** May be empty on DEL (container runtimes call DEL a second time without a namespace). */
  netns: string;
  ifName: string;
  args: Map<string, string>;
  path: string[];
}

export interface KubernetesPodArgs {
  podNamespace: string;
  podName: string;
  podUid: string;
  infraContainerId: string;
}

/** Parses `K=V;K=V`. Malformed pairs are an error: the runtime builds this string, so a bad one is a bug to surface. */
export function parseCniArgs(raw: string): Map<string, string> {
  const args = new Map<string, string>();
  if (raw.trim() === '') return args;
  for (const pair of raw.split(';')) {
    if (pair === '') continue;
    const equals = pair.indexOf('=');
    if (equals <= 0) {
      throw new CniError(CniErrorCode.INVALID_ENVIRONMENT, `CNI_ARGS is malformed: "${pair}" is not KEY=VALUE`, `CNI_ARGS=${raw}`);
    }
    args.set(pair.slice(0, equals), pair.slice(equals + 1));
  }
  return args;
}

function required(env: NodeJS.ProcessEnv, name: string, command: string): string {
  const value = env[name];
  if (value === undefined || value === '') {
    throw new CniError(CniErrorCode.INVALID_ENVIRONMENT, `${name} is not set: a container runtime must set it for ${command}`);
  }
  return value;
}

export function readCommand(env: NodeJS.ProcessEnv): CniCommand {
  const command = env.CNI_COMMAND;
  if (command === undefined || command === '') {
    throw new CniError(
      CniErrorCode.INVALID_ENVIRONMENT,
      'CNI_COMMAND is not set: ambit-cni is a CNI plugin, run by a container runtime with CNI_COMMAND=ADD|DEL|CHECK|VERSION|STATUS|GC',
    );
  }
  if (!(CNI_COMMANDS as readonly string[]).includes(command)) {
    throw new CniError(CniErrorCode.INVALID_ENVIRONMENT, `CNI_COMMAND=${command} is not supported; expected one of ${CNI_COMMANDS.join(', ')}`);
  }
  return command as CniCommand;
}

/** Reads every variable the command needs (VERSION, STATUS and GC need none but CNI_COMMAND and CNI_PATH). */
export function readEnvironment(env: NodeJS.ProcessEnv): CniEnvironment {
  const command = readCommand(env);
  if (NETWORK_COMMANDS.has(command)) {
    return { command, containerId: '', netns: '', ifName: '', args: new Map(), path: (env.CNI_PATH ?? '').split(':').filter((entry) => entry !== '') };
  }
  const containerId = required(env, 'CNI_CONTAINERID', command);
  // The spec lets DEL come without a namespace; ADD and CHECK need one.
  const netns = command === 'DEL' ? (env.CNI_NETNS ?? '') : required(env, 'CNI_NETNS', command);
  const ifName = required(env, 'CNI_IFNAME', command);
  const args = parseCniArgs(env.CNI_ARGS ?? '');
  const path = (env.CNI_PATH ?? '').split(':').filter((entry) => entry !== '');
  return { command, containerId, netns, ifName, args, path };
}

/** The pod identity from CNI_ARGS, or undefined when the container is not a Kubernetes pod (no K8S_POD_NAME). */
export function kubernetesPodArgs(args: Map<string, string>): KubernetesPodArgs | undefined {
  const podName = args.get('K8S_POD_NAME');
  if (podName === undefined || podName === '') return undefined;
  const podNamespace = args.get('K8S_POD_NAMESPACE');
  if (podNamespace === undefined || podNamespace === '') {
    throw new CniError(CniErrorCode.INVALID_ENVIRONMENT, `CNI_ARGS has K8S_POD_NAME=${podName} but no K8S_POD_NAMESPACE`);
  }
  return {
    podNamespace,
    podName,
    podUid: args.get('K8S_POD_UID') ?? '',
    infraContainerId: args.get('K8S_POD_INFRA_CONTAINER_ID') ?? '',
  };
}
