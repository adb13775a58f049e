/**
 * Calls the node agent over its unix socket (the contract in shared/cni-protocol.ts).
 *
 * Owns: the HTTP exchange, its deadline, and turning every way it can fail into a CNI error a person can act on.
 * Must not know about: CNI environment/config parsing, enrollment, or what the agent does with the pod.
 */
import http from 'node:http';
import net from 'node:net';
import {
  AGENT_CALL_TIMEOUT_MS,
  POD_ADD_PATH,
  POD_DEL_PATH,
  POD_DEL_TIMEOUT_MS,
  POD_GC_PATH,
  POD_GC_TIMEOUT_MS,
  POD_SEEN_PATH,
  POD_SEEN_TIMEOUT_MS,
  STATUS_PATH,
  STATUS_TIMEOUT_MS,
  type PodAddRequest,
  type PodDelRequest,
  type PodGcResponse,
} from '../shared/cni-protocol.ts';
import { CniError, CniErrorCode } from './errors.ts';

/** Socket errors that mean "nobody is listening there", as opposed to a broken exchange. */
const UNREACHABLE_ERRNOS = new Set(['ENOENT', 'ECONNREFUSED', 'EACCES', 'ENOTSOCK']);
/** Cap on the agent's reply we read: replies are tiny JSON; a huge one means something else answered. */
const MAX_REPLY_BYTES = 64 * 1024;

/** An answer of the agent: HTTP status and body text. */
export interface AgentReply {
  status: number;
  body: string;
}
type Reply = AgentReply;

/**
 * How a request reaches the agent: over its unix socket (the Node plugin), or, when the agent itself runs a call the
 * native plugin forwarded (agent/cni-call.ts), answered in the agent's own process with the same replies, so the
 * plugin's decisions and error messages do not depend on which.
 */
export interface AgentTransport {
  post(socketPath: string, path: string, payload: unknown, timeoutMs: number): Promise<AgentReply>;
  /** Resolves when something accepts connections at the socket (CHECK). */
  probe(socketPath: string, timeoutMs: number): Promise<void>;
}

function unreachable(socketPath: string, why: string): CniError {
  return new CniError(
    CniErrorCode.TRY_AGAIN_LATER,
    `ambit node agent not reachable at ${socketPath}: is the ambit agent DaemonSet running on this node?`,
    why,
  );
}

export function unreachableAgent(socketPath: string, why: string): CniError {
  return unreachable(socketPath, why);
}

function post(socketPath: string, path: string, payload: unknown, timeoutMs: number): Promise<Reply> {
  const body = JSON.stringify(payload);
  return new Promise<Reply>((resolve, reject) => {
    const request = http.request({
      socketPath,
      path,
      method: 'POST',
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
      timeout: timeoutMs,
      // One call per plugin run: no keep-alive pool, so nothing holds the process open afterwards.
      agent: false,
    });
    const deadline = setTimeout(() => {
      request.destroy(unreachable(socketPath, `no answer within ${timeoutMs} ms`));
    }, timeoutMs);
    request.on('timeout', () => request.destroy(unreachable(socketPath, `no answer within ${timeoutMs} ms`)));
    request.on('error', (error: NodeJS.ErrnoException) => {
      clearTimeout(deadline);
      if (error instanceof CniError) reject(error);
      else if (error.code !== undefined && UNREACHABLE_ERRNOS.has(error.code)) reject(unreachable(socketPath, `${error.code}: ${error.message}`));
      else reject(new CniError(CniErrorCode.TRY_AGAIN_LATER, `ambit node agent at ${socketPath} broke the connection: ${error.message}`));
    });
    request.on('response', (response) => {
      let reply = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => {
        if (reply.length < MAX_REPLY_BYTES) reply += chunk;
      });
      response.on('end', () => {
        clearTimeout(deadline);
        resolve({ status: response.statusCode ?? 0, body: reply });
      });
      // An agent that dies mid-answer (fewer body bytes than it announced) aborts the response: a broken exchange,
      // never a success (without this the promise never settled and the plugin exited 13 with nothing on stdout).
      response.on('error', (error: Error) => {
        clearTimeout(deadline);
        reject(new CniError(CniErrorCode.TRY_AGAIN_LATER, `ambit node agent at ${socketPath} broke the connection mid-answer: ${error.message}`));
      });
    });
    request.end(body);
  });
}

/** The Node plugin's way: HTTP/1.1 over the agent's unix socket, one connection per request. */
export const socketTransport: AgentTransport = { post, probe: probeSocket };

function agentMessage(reply: Reply): string {
  try {
    const parsed = JSON.parse(reply.body) as { error?: unknown };
    if (typeof parsed.error === 'string' && parsed.error !== '') return parsed.error;
  } catch {
    // fall through: show the raw body
  }
  return reply.body.trim().slice(0, 500) || '(no message)';
}

export async function requestPodAdd(socketPath: string, request: PodAddRequest, timeoutMs = AGENT_CALL_TIMEOUT_MS, transport = socketTransport): Promise<void> {
  const reply = await transport.post(socketPath, POD_ADD_PATH, request, timeoutMs);
  if (reply.status !== 200) {
    throw new CniError(
      CniErrorCode.INTERNAL,
      `ambit node agent refused to capture pod ${request.podNamespace}/${request.podName} (HTTP ${reply.status}): ${agentMessage(reply)}`,
      'the pod is enrolled in the mesh (istio.io/dataplane-mode=ambient), so it must not start uncaptured; see the agent log on this node',
    );
  }
  let captured: unknown;
  try {
    captured = (JSON.parse(reply.body) as { captured?: unknown }).captured;
  } catch {
    captured = undefined;
  }
  if (captured !== true) {
    throw new CniError(
      CniErrorCode.INTERNAL,
      `ambit node agent answered pod-add for ${request.podNamespace}/${request.podName} without {"captured":true}`,
      `reply: ${reply.body.slice(0, 200)}`,
    );
  }
}

/** Tells the agent about a pod it does not capture now; best effort, failures are the caller's to ignore. */
export async function notifyPodSeen(socketPath: string, request: PodAddRequest, timeoutMs = POD_SEEN_TIMEOUT_MS, transport = socketTransport): Promise<void> {
  const reply = await transport.post(socketPath, POD_SEEN_PATH, request, timeoutMs);
  if (reply.status !== 200) throw new Error(`agent answered pod-seen with HTTP ${reply.status}: ${agentMessage(reply)}`);
}

/** Whether anything accepts connections on the agent socket (CHECK's "is the agent there" probe). */
export function probeAgent(socketPath: string, timeoutMs = AGENT_CALL_TIMEOUT_MS, transport = socketTransport): Promise<void> {
  return transport.probe(socketPath, timeoutMs);
}

function probeSocket(socketPath: string, timeoutMs: number): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const socket = net.connect({ path: socketPath, timeout: timeoutMs });
    socket.once('connect', () => {
      socket.destroy();
      resolve();
    });
    socket.once('timeout', () => {
      socket.destroy();
      reject(unreachable(socketPath, `no answer within ${timeoutMs} ms`));
    });
    socket.once('error', (error: NodeJS.ErrnoException) => reject(unreachable(socketPath, `${error.code ?? ''}: ${error.message}`)));
  });
}

export async function requestPodDel(socketPath: string, request: PodDelRequest, timeoutMs = POD_DEL_TIMEOUT_MS, transport = socketTransport): Promise<void> {
  const reply = await transport.post(socketPath, POD_DEL_PATH, request, timeoutMs);
  if (reply.status !== 200) {
    throw new CniError(CniErrorCode.INTERNAL, `ambit node agent failed pod-del (HTTP ${reply.status}): ${agentMessage(reply)}`);
  }
}

/** STATUS: resolves when the agent says it serves ADDs; a CniError (TRY_AGAIN_LATER, as for an ADD) otherwise. */
export async function requestStatus(socketPath: string, timeoutMs = STATUS_TIMEOUT_MS, transport = socketTransport): Promise<void> {
  const reply = await transport.post(socketPath, STATUS_PATH, {}, timeoutMs);
  let ready: unknown;
  try {
    ready = (JSON.parse(reply.body) as { ready?: unknown }).ready;
  } catch {
    ready = undefined;
  }
  if (reply.status !== 200 || ready !== true) {
    throw new CniError(CniErrorCode.TRY_AGAIN_LATER, `ambit node agent at ${socketPath} is not ready (HTTP ${reply.status}): ${agentMessage(reply)}`);
  }
}

/** GC: the agent forgets every pod whose sandbox is not in `validContainerIds`; resolves with the pods it forgot. */
export async function requestPodGc(socketPath: string, validContainerIds: string[], timeoutMs = POD_GC_TIMEOUT_MS, transport = socketTransport): Promise<string[]> {
  const reply = await transport.post(socketPath, POD_GC_PATH, { validContainerIds }, timeoutMs);
  if (reply.status !== 200) {
    throw new CniError(CniErrorCode.INTERNAL, `ambit node agent failed pod-gc (HTTP ${reply.status}): ${agentMessage(reply)}`);
  }
  try {
    const forgotten = (JSON.parse(reply.body) as Partial<PodGcResponse>).forgotten;
    return Array.isArray(forgotten) ? forgotten.map(String) : [];
  } catch {
    return [];
  }
}
