/**
 * The plugin's commands (ADD, DEL, CHECK, VERSION) as one function from (environment, stdin) to
 * (stdout, exit code), so tests and main.ts share it.
 *
 * Owns: the order of checks, chaining (prevResult passed through unchanged), fail-closed capture of enrolled
 * pods, and best-effort DEL.
 * Must not know about: process I/O (main.ts) or HTTP details (agent-client.ts).
 */
import type { PodAddRequest } from '../shared/cni-protocol.ts';
import { captureDecision } from '../shared/k8s/enrollment.ts';
import { notifyPodSeen, probeAgent, requestPodAdd, requestPodDel } from './agent-client.ts';
import { CHECK_MIN_VERSIONS, DEFAULT_LOG_LEVEL, parseConfig, peekCniVersion, SUPPORTED_CNI_VERSIONS, type PluginConfig } from './config.ts';
import { kubernetesPodArgs, readCommand, readEnvironment, type CniEnvironment } from './environment.ts';
import { CniError, CniErrorCode, toErrorResult } from './errors.ts';
import { createLogger, type Logger } from './log.ts';
import { lookupPod } from './pod-lookup.ts';
import { podIpsFromResult } from './result.ts';

/** The version we implement; reported by VERSION and used for errors when the config's version is unusable. */
export const IMPLEMENTED_CNI_VERSION = '1.0.0';

export interface PluginOutput {
  stdout: string;
  exitCode: number;
}

const SUCCESS_EMPTY: PluginOutput = { stdout: '', exitCode: 0 };

function printResult(result: unknown): PluginOutput {
  return { stdout: `${JSON.stringify(result)}\n`, exitCode: 0 };
}

/** Chained plugins print the previous result unchanged (it is already in the config's cniVersion). */
function passThrough(config: PluginConfig, prevResult: Record<string, unknown>): PluginOutput {
  return printResult(prevResult.cniVersion === undefined ? { cniVersion: config.cniVersion, ...prevResult } : prevResult);
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

async function add(env: CniEnvironment, config: PluginConfig, log: Logger): Promise<PluginOutput> {
  const prevResult = requirePrevResult(config, 'ADD');
  const podArgs = kubernetesPodArgs(env.args);
  if (podArgs === undefined) {
    log.debug({ containerId: env.containerId }, 'not a Kubernetes pod (no K8S_POD_NAME in CNI_ARGS): passing through');
    return passThrough(config, prevResult);
  }
  const { pod, namespace, problems } = await lookupPod(config.podSource, podArgs.podNamespace, podArgs.podName);
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
    log.info({ pod: podRef, reason: decision.reason }, 'pod not enrolled: passing through');
    // So that labelling its namespace later captures the running pod. Best effort: not enrolled means not held up.
    if (!decision.reason.includes('host network') && !decision.reason.includes('sidecar')) {
      await notifyPodSeen(config.agentSocket, request).catch((error: Error) => log.debug({ pod: podRef, err: error.message }, 'agent not told about the pod'));
    }
    return passThrough(config, prevResult);
  }
  if (ips.length === 0) {
    throw new CniError(CniErrorCode.INVALID_NETWORK_CONFIG, `prevResult for enrolled pod ${podRef} has no IP addresses: the primary plugin must assign them`);
  }
  await requestPodAdd(config.agentSocket, request);
  log.info({ pod: podRef, ips, reason: decision.reason }, 'pod captured by the node agent');
  return passThrough(config, prevResult);
}

async function del(env: CniEnvironment, config: PluginConfig, log: Logger): Promise<PluginOutput> {
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
    });
    log.debug({ pod: podRef }, 'node agent released the pod');
  } catch (error) {
    // DEL must succeed so the runtime can free the sandbox; the agent forgets pods whose namespace vanished.
    log.info({ pod: podRef, err: (error as Error).message }, 'could not tell the node agent about DEL (ignored)');
  }
  return SUCCESS_EMPTY;
}

async function check(env: CniEnvironment, config: PluginConfig, log: Logger): Promise<PluginOutput> {
  if (!CHECK_MIN_VERSIONS.has(config.cniVersion)) {
    throw new CniError(CniErrorCode.INCOMPATIBLE_VERSION, `CHECK needs cniVersion 0.4.0 or later, config has ${config.cniVersion}`);
  }
  requirePrevResult(config, 'CHECK');
  const podArgs = kubernetesPodArgs(env.args);
  if (podArgs === undefined) return SUCCESS_EMPTY;
  const { pod, namespace } = await lookupPod(config.podSource, podArgs.podNamespace, podArgs.podName);
  if (captureDecision(pod, namespace).capture) {
    await probeAgent(config.agentSocket);
    log.debug({ pod: `${podArgs.podNamespace}/${podArgs.podName}` }, 'CHECK: node agent answers');
  }
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

export async function runPlugin(processEnv: NodeJS.ProcessEnv, stdin: string): Promise<PluginOutput> {
  let log = createLogger(DEFAULT_LOG_LEVEL);
  try {
    if (readCommand(processEnv) === 'VERSION') {
      return printResult({ cniVersion: IMPLEMENTED_CNI_VERSION, supportedVersions: [...SUPPORTED_CNI_VERSIONS] });
    }
    const env = readEnvironment(processEnv);
    const config = parseConfig(stdin);
    log = createLogger(config.logLevel, config.logFile).child({ command: env.command, containerId: env.containerId });
    switch (env.command) {
      case 'ADD':
        return await add(env, config, log);
      case 'DEL':
        return await del(env, config, log);
      case 'CHECK':
        return await check(env, config, log);
      default:
        throw new CniError(CniErrorCode.INVALID_ENVIRONMENT, `CNI_COMMAND=${env.command} is not supported`);
    }
  } catch (error) {
    return errorOutput(error, stdin, log);
  }
}
