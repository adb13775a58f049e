/**
 * Whole CNI calls forwarded by the native `ambit-cni` (cni/native/forwarder.c), run in the agent's process so a pod
 * start does not pay for starting Node: the body of POST /v1/cni-call (shared/cni-protocol.ts) is decoded into the
 * CNI_* environment and the stdin config, and handed to the plugin's own runPlugin (cni/plugin.ts), which makes
 * every decision exactly as the Node plugin would (it reaches this agent over the same socket, as it does there).
 *
 * The plugin's questions to the agent (pod-add, pod-del, ...) are answered in this process by the same code the socket
 * serves (answerAgentRequest), not sent back through the agent's own socket: the replies, and so the plugin's
 * decisions and errors, are the same, without a second HTTP exchange per call.
 *
 * Owns: decoding the call, refusing a call this agent cannot run as the host would (the config names another agent's
 * socket, or a pod source the agent does not see), keeping the plugin's log files open and its parsed cluster
 * directory (local mode) across calls, so an ADD parses only the manifests written since the last one.
 * Must not know about: CNI commands or results (cni/plugin.ts), HTTP (agent/cni-server.ts).
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { pino, type DestinationStream } from 'pino';
import { parseConfig, type LogLevel, type PluginConfig } from '../cni/config.ts';
import type { Logger } from '../cni/log.ts';
import { unreachableAgent, type AgentReply, type AgentTransport } from '../cni/agent-client.ts';
import { runPlugin, type PluginOutput } from '../cni/plugin.ts';
import { kubernetesPodArgs, parseCniArgs } from '../cni/environment.ts';
import { podIpsFromResult } from '../cni/result.ts';
import { POD_ADD_PATH } from '../shared/cni-protocol.ts';
import type { PodInfo } from './inpod/pod-listeners.ts';
import type { PodLookupCache } from '../cni/pod-lookup.ts';
import { agentErrorStatus, answerAgentRequest, type PodCapture } from './cni-server.ts';
import { nameCniTrace, traceStep } from './cni-trace.ts';

/** The plugin's output, or why this agent cannot run the call for the host (the forwarder then runs the Node plugin). */
export type CniCallAnswer = { notServed: string } | PluginOutput;

export class CniCallDecodeError extends Error {
  readonly code = 'CNI_CALL_MALFORMED';
}

/** More CNI_* variables than any runtime sets (it sets 6): a body with more is not from our forwarder. */
const MAX_VARIABLES = 64;
/** Log files kept open for the plugin's runs; a config naming more distinct files gets stderr for the rest. */
const MAX_LOG_FILES = 16;

/** `NAME=VALUE\0`... `\0` then the config: the environment (CNI_* only) and the stdin text. */
export function decodeCniCall(body: Buffer): { env: Record<string, string>; stdin: string } {
  const env: Record<string, string> = {};
  let offset = 0;
  for (let count = 0; ; count++) {
    const end = body.indexOf(0, offset);
    if (end < 0) throw new CniCallDecodeError('cni-call: the environment block is not ended by an empty entry');
    if (end === offset) {
      offset = end + 1;
      break;
    }
    if (count === MAX_VARIABLES) throw new CniCallDecodeError(`cni-call: more than ${MAX_VARIABLES} environment entries`);
    const entry = body.toString('utf8', offset, end);
    const equals = entry.indexOf('=');
    if (equals <= 0 || !entry.startsWith('CNI_')) throw new CniCallDecodeError(`cni-call: environment entry ${JSON.stringify(entry.slice(0, 64))} is not CNI_NAME=VALUE`);
    env[entry.slice(0, equals)] = entry.slice(equals + 1);
    offset = end + 1;
  }
  return { env, stdin: body.toString('utf8', offset) };
}

/** What the agent answers in its own process: the capture handle and readiness its socket serves. */
export interface InProcessAgent {
  capture: PodCapture;
  ready?: () => boolean;
  /**
   * Told of a forwarded ADD as soon as it is decoded, before the plugin looks the pod up (a stat of the cluster
   * directory and a parse of the new Pod, or a request to the API server), so the agent can start the capture of a
   * pod its own mesh state says is enrolled; undefined when it starts nothing. The plugin still decides: the runner
   * settles the start with whether the plugin's pod-add was answered 200, before the call is answered.
   */
  startAdd?: (pod: PodInfo) => EarlyAdd | undefined;
}

/** A capture the agent started ahead of the plugin's decision. */
export interface EarlyAdd {
  /** `captured`: the plugin's pod-add was answered 200. Otherwise whatever started is taken back. Never rejects. */
  settle(captured: boolean): Promise<void>;
}

/** The pod a forwarded ADD names, when the call carries all of it (uid, namespace, IPs); undefined otherwise. */
export function podOfAdd(env: Record<string, string>, config: PluginConfig | undefined): PodInfo | undefined {
  if (env.CNI_COMMAND !== 'ADD' || config?.prevResult === undefined || !env.CNI_NETNS?.startsWith('/')) return undefined;
  try {
    const podArgs = kubernetesPodArgs(parseCniArgs(env.CNI_ARGS ?? ''));
    if (podArgs === undefined || podArgs.podUid === '') return undefined;
    const ips = podIpsFromResult(config.prevResult);
    if (ips.length === 0) return undefined;
    return {
      uid: podArgs.podUid, name: podArgs.podName, namespace: podArgs.podNamespace, netns: env.CNI_NETNS, ips,
      ...(env.CNI_CONTAINERID ? { containerId: env.CNI_CONTAINERID } : {}),
    };
  } catch {
    return undefined; // arguments the plugin will refuse with its own error: nothing starts early
  }
}

/**
 * Answers the plugin's requests with this agent's own handlers, as its socket would (same statuses, same bodies),
 * within the request's timeout as over the socket (the work goes on, as it does when a socket client gives up).
 */
export function inProcessTransport(agent: InProcessAgent): AgentTransport {
  const ready = agent.ready ?? (() => true);
  const answer = async (requestPath: string, payload: unknown): Promise<AgentReply> => {
    traceStep('plugin');
    nameCniTrace(requestPath.slice(requestPath.lastIndexOf('/') + 1), true);
    try {
      return { status: 200, body: JSON.stringify(await answerAgentRequest(requestPath, payload, agent.capture, ready)) };
    } catch (error) {
      return { status: agentErrorStatus(error), body: JSON.stringify({ error: error instanceof Error ? error.message : String(error) }) };
    }
  };
  return {
    post: (socketPath, requestPath, payload, timeoutMs) => new Promise<AgentReply>((resolve, reject) => {
      const timer = setTimeout(() => reject(unreachableAgent(socketPath, `no answer within ${timeoutMs} ms`)), timeoutMs);
      void answer(requestPath, payload).then((reply) => {
        clearTimeout(timer);
        resolve(reply);
      });
    }),
    probe: () => Promise.resolve(),
  };
}

/**
 * `agent`: answer the plugin's requests in this process; without it they go to `agentSocket` (this agent's own
 * socket, as the config must name it).
 */
export function createCniCallRunner(agentSocket: string, agent?: InProcessAgent): (body: Buffer) => Promise<CniCallAnswer> {
  const ownSocket = path.resolve(agentSocket);
  const destinations = new Map<string, DestinationStream>();
  const stderr = pino.destination({ dest: 2, sync: true });
  const lookupCache: PodLookupCache = new Map();
  const transport = agent === undefined ? undefined : inProcessTransport(agent);
  // One logger per level and file, made once: a pino logger per call cost the agent's main thread about 0.8 ms each
  // (a CPU profile of 100 calls), three times per pod cycle.
  const loggers = new Map<string, Logger>();
  const openLog = (level: LogLevel, logFile?: string): Logger => {
    const key = `${level}\0${logFile ?? ''}`;
    const known = loggers.get(key);
    if (known !== undefined) return known;
    let destination = logFile === undefined ? undefined : destinations.get(logFile);
    if (destination === undefined && logFile !== undefined && destinations.size < MAX_LOG_FILES) {
      destination = pino.destination({ dest: logFile, sync: true, mkdir: true });
      destinations.set(logFile, destination);
    }
    const logger = pino({ name: 'ambit-cni', level, base: { pid: process.pid } }, destination ?? stderr);
    // Bounded as the files are: a config naming ever new files gets a fresh logger each time, as before.
    if (destination !== undefined || logFile === undefined) loggers.set(key, logger);
    return logger;
  };
  return async (body) => {
    const { env, stdin } = decodeCniCall(body);
    nameCniTrace(`cni-call ${env.CNI_COMMAND ?? '?'}${env.CNI_NETNS === '' ? ' (no netns)' : ''}`);
    let config: PluginConfig | undefined;
    try {
      config = env.CNI_COMMAND === 'VERSION' ? undefined : parseConfig(stdin);
    } catch {
      config = undefined; // a config the plugin cannot parse: it answers with the same error the Node plugin would
    }
    if (config !== undefined) {
      const named = path.resolve(config.agentSocket);
      if (named !== ownSocket) return { notServed: `the config names the agent socket ${named}, not this agent's` };
      // The pod source is a path on the host; this agent may run where it is not (a container without that mount).
      const source = config.podSource.mode === 'local' ? config.podSource.clusterDir : config.podSource.kubeconfig;
      if (!existsSync(source)) return { notServed: `${source} (the config's pod source) is not visible to the agent` };
    }
    const pod = transport === undefined || agent?.startAdd === undefined ? undefined : podOfAdd(env, config);
    const early = pod === undefined ? undefined : agent!.startAdd!(pod);
    if (early === undefined) return finish(await runPlugin(env, stdin, openLog, lookupCache, transport));
    // Whether this call's pod-add was answered 200: the plugin captured the pod, and what started early stays.
    let captured = false;
    const watching: AgentTransport = {
      post: async (socketPath, requestPath, payload, timeoutMs) => {
        const reply = await transport!.post(socketPath, requestPath, payload, timeoutMs);
        if (requestPath === POD_ADD_PATH && reply.status === 200) captured = true;
        return reply;
      },
      probe: (socketPath, timeoutMs) => transport!.probe(socketPath, timeoutMs),
    };
    try {
      return finish(await runPlugin(env, stdin, openLog, lookupCache, watching));
    } finally {
      await early.settle(captured);
    }
  };
  function finish(output: PluginOutput): PluginOutput {
    traceStep('plugin-done');
    return output;
  }
}
