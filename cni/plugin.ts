/**
 * The plugin's commands (ADD, DEL, CHECK, VERSION, and spec 1.1.0's STATUS and GC) as one function from
 * (environment, stdin) to (stdout, exit code), so tests, main.ts (the Node plugin) and the node agent (which runs
 * it for the native forwarder's calls, agent/cni-call.ts) share it.
 *
 * Owns: the order of checks, chaining (prevResult passed through, in the config's version), fail-closed capture of
 * enrolled pods within one deadline per ADD, best-effort DEL that gives up fast, STATUS from the agent's answer, GC.
 * Must not know about: process I/O (main.ts) or HTTP details (agent-client.ts).
 */
import type { PodAddRequest } from '../shared/cni-protocol.ts';
import { captureDecision } from '../shared/k8s/enrollment.ts';
import { AGENT_CALL_TIMEOUT_MS } from '../shared/cni-protocol.ts';
import {
  notifyPodSeen, probeAgent, requestPodAdd, requestPodDel, requestPodGc, requestStatus, socketTransport, type AgentTransport,
} from './agent-client.ts';
import {
  CHECK_MIN_VERSIONS, DEFAULT_LOG_LEVEL, parseConfig, peekCniVersion, RESULT_RELABEL_TO, STATUS_GC_MIN_VERSIONS,
  SUPPORTED_CNI_VERSIONS, VALID_ATTACHMENTS_KEY, type LogLevel, type PluginConfig,
} from './config.ts';
import { kubernetesPodArgs, readCommand, readEnvironment, type CniEnvironment } from './environment.ts';
import { CniError, CniErrorCode, toErrorResult } from './errors.ts';
import { createLogger, type Logger } from './log.ts';
import { lookupPod, type PodLookupCache } from './pod-lookup.ts';
import { podIpsFromResult } from './result.ts';

/** The agent call's least share of an ADD's budget (a capture takes the agent a few hundred ms on a busy node). */
const AGENT_CALL_MIN_MS = 3000;

/** The version we implement; reported by VERSION and used for errors when the config's version is unusable. */
export const IMPLEMENTED_CNI_VERSION = '1.1.0';

export interface PluginOutput {
  stdout: string;
  exitCode: number;
}

const SUCCESS_EMPTY: PluginOutput = { stdout: '', exitCode: 0 };

function printResult(result: unknown): PluginOutput {
  return { stdout: `${JSON.stringify(result)}\n`, exitCode: 0 };
}

/**
 * Chained plugins print the previous result, in the config's cniVersion (the runtime already converted it; a result
 * labelled 1.0.0 under a 1.1.0 config is a valid 1.1.0 result, so it is only re-labelled). Nothing else is changed.
 */
function passThrough(config: PluginConfig, prevResult: Record<string, unknown>): PluginOutput {
  const labelled = prevResult.cniVersion;
  if (labelled === undefined) return printResult({ cniVersion: config.cniVersion, ...prevResult });
  if (RESULT_RELABEL_TO.get(String(labelled))?.has(config.cniVersion)) {
    return printResult({ ...prevResult, cniVersion: config.cniVersion });
  }
  return printResult(prevResult);
}

function requireVersion(config: PluginConfig, command: string, versions: Set<string>, since: string): void {
  if (!versions.has(config.cniVersion)) {
    throw new CniError(CniErrorCode.INCOMPATIBLE_VERSION, `${command} needs cniVersion ${since} or later, config has ${config.cniVersion}`);
  }
}

function requirePrevResult(config: PluginConfig, command: string): Record<string, unknown> {
  if (config.prevResult === undefined) {
    throw new CniError(
      CniErrorCode.INVALID_NETWORK_CONFIG,
      `${command} without "prevResult": ambit-cni is a chained plugin and must come after the primary network plugin (e.g. bridge) in the conflist`,
    );
  }
  return config.prevResult;
}

async function add(env: CniEnvironment, config: PluginConfig, log: Logger, lookupCache: PodLookupCache | undefined, agent: AgentTransport): Promise<PluginOutput> {
  // One budget for the whole ADD: the pod lookup's retries and the agent call share it.
  const deadline = Date.now() + AGENT_CALL_TIMEOUT_MS;
  const prevResult = requirePrevResult(config, 'ADD');
  const podArgs = kubernetesPodArgs(env.args);
  if (podArgs === undefined) {
    log.debug({ containerId: env.containerId }, 'not a Kubernetes pod (no K8S_POD_NAME in CNI_ARGS): passing through');
    return passThrough(config, prevResult);
  }
  const { pod, namespace, problems } = await lookupPod(config.podSource, podArgs.podNamespace, podArgs.podName, deadline, lookupCache);
  for (const problem of problems) log.warn({ problem }, 'skipped an unreadable document in the cluster directory');
  const decision = captureDecision(pod, namespace);
  const podRef = `${podArgs.podNamespace}/${podArgs.podName}`;
  const ips = podIpsFromResult(prevResult);
  const request: PodAddRequest = {
    podName: podArgs.podName,
    podNamespace: podArgs.podNamespace,
    podUid: podArgs.podUid || pod.metadata.uid || '',
    containerId: env.containerId,
    netns: env.netns,
    ips,
  };
  if (!decision.capture) {
    // Per pod and routine: debug, not info (the agent logs what ops need: captures, releases, failures).
    log.debug({ pod: podRef, reason: decision.reason }, 'pod not enrolled: passing through');
    // So that labelling its namespace later captures the running pod. Best effort: not enrolled means not held up.
    if (!decision.reason.includes('host network') && !decision.reason.includes('sidecar')) {
      await notifyPodSeen(config.agentSocket, request, undefined, agent).catch((error: Error) => log.debug({ pod: podRef, err: error.message }, 'agent not told about the pod'));
    }
    return passThrough(config, prevResult);
  }
  if (ips.length === 0) {
    throw new CniError(CniErrorCode.INVALID_NETWORK_CONFIG, `prevResult for enrolled pod ${podRef} has no IP addresses: the primary plugin must assign them`);
  }
  // What is left of the budget, but never less than AGENT_CALL_MIN_MS: an agent that is up answers within it, and a
  // node so busy that loading the plugin and reading the pod took the whole budget must not fail a pod by itself.
  await requestPodAdd(config.agentSocket, request, Math.max(AGENT_CALL_MIN_MS, deadline - Date.now()), agent);
  log.debug({ pod: podRef, ips, reason: decision.reason }, 'pod captured by the node agent'); // the agent logs it at info
  return passThrough(config, prevResult);
}

async function del(env: CniEnvironment, config: PluginConfig, log: Logger, agent: AgentTransport): Promise<PluginOutput> {
  const podArgs = kubernetesPodArgs(env.args);
  if (podArgs === undefined) return SUCCESS_EMPTY;
  const podRef = `${podArgs.podNamespace}/${podArgs.podName}`;
  try {
    await requestPodDel(config.agentSocket, {
      podName: podArgs.podName,
      podNamespace: podArgs.podNamespace,
      podUid: podArgs.podUid,
      containerId: env.containerId,
      netns: env.netns,
    }, undefined, agent);
    log.debug({ pod: podRef }, 'node agent released the pod');
  } catch (error) {
    // DEL must succeed so the runtime can free the sandbox; the agent forgets pods whose namespace vanished.
    log.info({ pod: podRef, err: (error as Error).message }, 'could not tell the node agent about DEL (ignored)');
  }
  return SUCCESS_EMPTY;
}

async function check(env: CniEnvironment, config: PluginConfig, log: Logger, lookupCache: PodLookupCache | undefined, agent: AgentTransport): Promise<PluginOutput> {
  requireVersion(config, 'CHECK', CHECK_MIN_VERSIONS, '0.4.0');
  requirePrevResult(config, 'CHECK');
  const podArgs = kubernetesPodArgs(env.args);
  if (podArgs === undefined) return SUCCESS_EMPTY;
  const { pod, namespace } = await lookupPod(config.podSource, podArgs.podNamespace, podArgs.podName, undefined, lookupCache);
  if (captureDecision(pod, namespace).capture) {
    await probeAgent(config.agentSocket, undefined, agent);
    log.debug({ pod: `${podArgs.podNamespace}/${podArgs.podName}` }, 'CHECK: node agent answers');
  }
  return SUCCESS_EMPTY;
}

/**
 * STATUS (1.1.0): ready when the node agent says it serves ADDs. An agent that does not answer means enrolled pods
 * cannot start here (their ADD fails closed) and captured ones have no proxy: "not available" (50), so the runtime
 * reports the node's network not ready, unless the config says `statusRequiresAgent: false`.
 */
async function status(config: PluginConfig, log: Logger, agent: AgentTransport): Promise<PluginOutput> {
  requireVersion(config, 'STATUS', STATUS_GC_MIN_VERSIONS, '1.1.0');
  if (!config.statusRequiresAgent) return SUCCESS_EMPTY;
  try {
    await requestStatus(config.agentSocket, undefined, agent);
  } catch (error) {
    const why = error instanceof CniError ? `${error.message}${error.details ? ` (${error.details})` : ''}` : (error as Error).message;
    throw new CniError(CniErrorCode.PLUGIN_NOT_AVAILABLE, `ambit-cni cannot serve ADD for enrolled pods: ${why}`, 'enrolled pods would fail to start on this node until the agent answers');
  }
  log.debug({}, 'STATUS: node agent ready');
  return SUCCESS_EMPTY;
}

/** GC (1.1.0): the agent forgets every pod whose sandbox is not among the network's valid attachments. */
async function gc(config: PluginConfig, log: Logger, agent: AgentTransport): Promise<PluginOutput> {
  requireVersion(config, 'GC', STATUS_GC_MIN_VERSIONS, '1.1.0');
  if (config.validContainerIds === undefined) {
    // Forgetting every pod because the list is missing would release running pods: refuse instead.
    throw new CniError(CniErrorCode.INVALID_NETWORK_CONFIG, `GC without "${VALID_ATTACHMENTS_KEY}": the runtime must list the attachments still in use`);
  }
  const forgotten = await requestPodGc(config.agentSocket, config.validContainerIds, undefined, agent);
  log.info({ valid: config.validContainerIds.length, forgotten }, 'GC: node agent forgot the pods not in the valid attachments');
  return SUCCESS_EMPTY;
}

function errorOutput(error: unknown, stdin: string, log: Logger): PluginOutput {
  const peeked = peekCniVersion(stdin);
  const version = peeked !== undefined && (SUPPORTED_CNI_VERSIONS as readonly string[]).includes(peeked) ? peeked : IMPLEMENTED_CNI_VERSION;
  const result = toErrorResult(error, version);
  if (error instanceof CniError) log.warn({ code: result.code, details: result.details }, result.msg);
  else log.error({ err: error }, 'unexpected failure');
  return { stdout: `${JSON.stringify(result)}\n`, exitCode: 1 };
}

/** Where a run's log goes: a new destination per process (main.ts), or destinations the node agent keeps open. */
export type OpenLog = (level: LogLevel, logFile?: string) => Logger;

/**
 * `lookupCache`: parsed cluster directories kept across calls by a caller that runs many (the node agent); `agent`:
 * how the node agent is asked (over its socket, or in its own process when the agent runs the call).
 */
export async function runPlugin(
  processEnv: NodeJS.ProcessEnv, stdin: string, openLog: OpenLog = createLogger, lookupCache?: PodLookupCache, agent: AgentTransport = socketTransport,
): Promise<PluginOutput> {
  let log = openLog(DEFAULT_LOG_LEVEL);
  try {
    if (readCommand(processEnv) === 'VERSION') {
      return printResult({ cniVersion: IMPLEMENTED_CNI_VERSION, supportedVersions: [...SUPPORTED_CNI_VERSIONS] });
    }
    const env = readEnvironment(processEnv);
    const config = parseConfig(stdin);
    log = openLog(config.logLevel, config.logFile).child({ command: env.command, containerId: env.containerId });
    switch (env.command) {
      case 'ADD':
        return await add(env, config, log, lookupCache, agent);
      case 'DEL':
        return await del(env, config, log, agent);
      case 'CHECK':
        return await check(env, config, log, lookupCache, agent);
      case 'STATUS':
        return await status(config, log, agent);
      case 'GC':
        return await gc(config, log, agent);
      default:
        throw new CniError(CniErrorCode.INVALID_ENVIRONMENT, `CNI_COMMAND=${env.command} is not supported`);
    }
  } catch (error) {
    return errorOutput(error, stdin, log);
  }
}
