/**
 * The agent's CNI endpoint: HTTP/1.1 over a unix socket, the protocol in shared/cni-protocol.ts.
 *
 *   POST /v1/pod-add  -> 200 {"captured":true} once the pod's rules and listeners are in place
 *   POST /v1/pod-del  -> 200, idempotent (also with an empty netns, and for pods never seen)
 *   POST /v1/pod-gc   -> 200 {"forgotten":[...]} once every pod whose sandbox is not listed is released and forgotten
 *   POST /v1/status   -> 200 {"ready":true} while the agent serves ADDs, 503 otherwise
 *   POST /v1/cni-call -> 200 with the plugin's stdout and its exit code in a header (a whole CNI call from the native
 *                        forwarder, run by the `cniCall` option), 421 when this agent cannot run it as the host would
 *   anything else     -> {"error": "..."} with 400 (bad input), 404, 405, 413, 500, 503
 *
 * Owns: the socket file (stale one removed at start, mode 0600: only root on the node may ask), request
 * parsing and validation, mapping capture errors to statuses. A peer's bad input gets a 400 and the
 * server keeps serving; nothing a request carries can crash the agent.
 * Must not know about: how capture works (it calls PodCapture), CNI plugin internals.
 */
import http from 'node:http';
import { chmod, lstat, mkdir, rename, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import {
  CNI_CALL_EXIT_HEADER, CNI_CALL_PATH, POD_ADD_PATH, POD_DEL_PATH, POD_GC_PATH, POD_SEEN_PATH, STATUS_PATH,
  type AgentStatusResponse, type PodAddRequest, type PodAddResponse, type PodDelRequest, type PodGcRequest, type PodGcResponse,
  type ProtocolErrorResponse,
} from '../shared/cni-protocol.ts';
import { CaptureError } from './inpod/errors.ts';
import type { PodInfo } from './inpod/pod-listeners.ts';
import type { PodRef } from './inpod/capture-manager.ts';
import type { CniCallAnswer } from './cni-call.ts';
import { traceStep, withCniTrace, type CniTrace } from './cni-trace.ts';

/** The narrow handle the endpoint gets: capture and release, nothing else of the manager. */
export interface PodCapture {
  add(pod: PodInfo): Promise<void>;
  /** A pod that is not enrolled now: remember it in case it is enrolled while it runs. */
  seen?(pod: PodInfo): Promise<void>;
  del(ref: PodRef): Promise<void>;
  /** CNI GC: release and forget every pod whose sandbox is not in the list; resolves with `<namespace>/<name>` of each. */
  gc?(validContainerIds: ReadonlySet<string>): Promise<string[]>;
}

export interface CniServerOptions {
  socketPath: string;
  capture: PodCapture;
  /** Whether the agent serves ADDs now (CNI STATUS); always while the server listens when absent. */
  ready?: () => boolean;
  /** Runs a whole CNI call from the native forwarder (agent/cni-call.ts); the path answers 404 without it. */
  cniCall?: (body: Buffer) => Promise<CniCallAnswer>;
  /** Told each answered call's step timings (agent/cni-trace.ts), for the debug log. */
  onTrace?: (trace: CniTrace) => void;
}

export interface CniServer {
  readonly socketPath: string;
  close(): Promise<void>;
}

/** Requests are a few hundred bytes; anything near this is not from our plugin. */
const MAX_BODY_BYTES = 64 * 1024;
/** A GC lists every sandbox on the node (about 70 bytes each): room for thousands. */
const MAX_GC_BODY_BYTES = 1024 * 1024;
/** A forwarded CNI call: the forwarder reads at most 4 MiB of config, plus the CNI_* environment. */
const MAX_CNI_CALL_BODY_BYTES = 5 * 1024 * 1024;
/** Container ids are 64 hex digits from containerd; other runtimes use other forms, none this long. */
const MAX_CONTAINER_ID_LENGTH = 256;
/** A stuck plugin must not hold a connection forever; the plugin itself gives up after 10 s (ADD) or less. */
const REQUEST_TIMEOUT_MS = 30_000;

class BadRequest extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

export async function startCniServer(options: CniServerOptions): Promise<CniServer> {
  const { socketPath, capture } = options;
  const ready = options.ready ?? (() => true);
  await mkdir(dirname(socketPath), { recursive: true, mode: 0o700 });
  await checkSocketPath(socketPath);

  const onTrace = options.onTrace ?? (() => undefined);
  const server = http.createServer({ requestTimeout: REQUEST_TIMEOUT_MS }, (request, response) => {
    const path = (request.url ?? '').split('?')[0] ?? '';
    if (options.cniCall !== undefined && path === CNI_CALL_PATH && request.method === 'POST') {
      void withCniTrace('cni-call', () => serveCniCall(request, response, options.cniCall!), onTrace);
      return;
    }
    void withCniTrace(path.slice(path.lastIndexOf('/') + 1), () => handle(request, capture, ready).then(
      (body) => send(response, 200, body),
      (error: unknown) => {
        const status = agentErrorStatus(error);
        const message = error instanceof Error ? error.message : String(error);
        send(response, status, { error: message } satisfies ProtocolErrorResponse);
      },
    ), onTrace);
  });
  server.on('clientError', (_error, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
    else socket.destroy();
  });

  // A socket file needs write permission to connect to; the default umask (022) already denies that to
  // others, and chmod right after narrows it to the owner (root).
  // Bind under a private name, then rename over the public path. libuv unlinks a unix listener's path when
  // it closes; with the private name, an old agent closing during a restart unlinks nothing of the new one's.
  const privatePath = `${socketPath}.${process.pid}`;
  await rm(privatePath, { force: true });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(privatePath, () => {
      server.off('error', reject);
      resolve();
    });
  });
  await chmod(privatePath, 0o600);
  await rename(privatePath, socketPath);

  return {
    socketPath,
    close: () => new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    }),
  };
}

const PATHS = new Set([POD_ADD_PATH, POD_DEL_PATH, POD_SEEN_PATH, POD_GC_PATH, STATUS_PATH]);

async function handle(request: http.IncomingMessage, capture: PodCapture, ready: () => boolean): Promise<object> {
  const path = (request.url ?? '').split('?')[0] ?? '';
  if (!PATHS.has(path)) {
    request.resume();
    throw new BadRequest(404, `unknown path ${JSON.stringify(request.url)}; the agent serves ${[...PATHS].join(', ')}`);
  }
  if (request.method !== 'POST') {
    request.resume();
    throw new BadRequest(405, `${path} takes POST, not ${request.method}`);
  }
  const body = await readJson(request, path === POD_GC_PATH ? MAX_GC_BODY_BYTES : MAX_BODY_BYTES);
  traceStep('request-read');
  return answerAgentRequest(path, body, capture, ready);
}

/**
 * The answer to a POST of `body` (parsed JSON) to `path`, or a throw whose status agentErrorStatus gives: what the
 * socket serves, and what the agent answers in its own process for a call the native plugin forwarded.
 */
export async function answerAgentRequest(path: string, body: unknown, capture: PodCapture, ready: () => boolean): Promise<object> {
  if (path === STATUS_PATH) {
    if (!ready()) throw new BadRequest(503, 'the agent is starting or stopping');
    return { ready: true } satisfies AgentStatusResponse;
  }
  if (path === POD_GC_PATH) {
    const { validContainerIds } = parsePodGc(body);
    if (!capture.gc) throw new BadRequest(404, `${POD_GC_PATH} is not served by this agent`);
    return { forgotten: await capture.gc(new Set(validContainerIds)) } satisfies PodGcResponse;
  }
  if (path === POD_SEEN_PATH) {
    const seen = parsePodAdd(body);
    await capture.seen?.({
      uid: seen.podUid, name: seen.podName, namespace: seen.podNamespace, netns: seen.netns, ips: seen.ips,
      ...(seen.containerId !== '' ? { containerId: seen.containerId } : {}),
    });
    return {};
  }
  if (path === POD_ADD_PATH) {
    const add = parsePodAdd(body);
    await capture.add({
      uid: add.podUid, name: add.podName, namespace: add.podNamespace, netns: add.netns, ips: add.ips,
      ...(add.containerId !== '' ? { containerId: add.containerId } : {}),
    });
    return { captured: true } satisfies PodAddResponse;
  }
  if (path !== POD_DEL_PATH) throw new BadRequest(404, `unknown path ${JSON.stringify(path)}; the agent serves ${[...PATHS].join(', ')}`);
  const del = parsePodDel(body);
  await capture.del(del.netns === '' ? { uid: del.podUid } : { uid: del.podUid, netns: del.netns });
  return {};
}

/** The HTTP status the socket answers a failed request with. */
export function agentErrorStatus(error: unknown): number {
  return error instanceof BadRequest ? error.status : statusOf(error);
}

function serveCniCall(request: http.IncomingMessage, response: http.ServerResponse, cniCall: (body: Buffer) => Promise<CniCallAnswer>): Promise<void> {
  return readBody(request, MAX_CNI_CALL_BODY_BYTES).then((body) => {
    traceStep('request-read');
    return cniCall(body);
  }).then(
    (answer) => {
      if ('notServed' in answer) {
        send(response, 421, { error: answer.notServed } satisfies ProtocolErrorResponse);
        return;
      }
      if (response.headersSent) return;
      response.writeHead(200, {
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(answer.stdout),
        [CNI_CALL_EXIT_HEADER]: String(answer.exitCode),
      });
      response.end(answer.stdout);
      traceStep('reply');
    },
    (error: unknown) => {
      const status = error instanceof BadRequest ? error.status : 400;
      send(response, status, { error: error instanceof Error ? error.message : String(error) } satisfies ProtocolErrorResponse);
    },
  );
}

function readBody(request: http.IncomingMessage, maxBytes: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let failed = false;
    request.on('data', (chunk: Buffer) => {
      if (failed) return;
      size += chunk.length;
      if (size > maxBytes) {
        failed = true;
        reject(new BadRequest(413, `request body over ${maxBytes} bytes`));
        return;
      }
      chunks.push(chunk);
    });
    request.on('error', (error) => {
      if (!failed) reject(new BadRequest(400, `reading the request failed: ${error.message}`));
      failed = true;
    });
    request.on('end', () => {
      if (failed) return;
      try {
        resolve(Buffer.concat(chunks));
      } catch (error) {
        reject(new BadRequest(400, `reading the request failed: ${(error as Error).message}`));
      }
    });
  });
}

async function readJson(request: http.IncomingMessage, maxBytes: number): Promise<unknown> {
  const body = await readBody(request, maxBytes);
  try {
    return JSON.parse(body.toString('utf8')) as unknown;
  } catch (error) {
    throw new BadRequest(400, `request body is not valid JSON: ${(error as Error).message}`);
  }
}

function requireObject(body: unknown, what: string): Record<string, unknown> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new BadRequest(400, `${what} must be a JSON object`);
  }
  return body as Record<string, unknown>;
}

function requireString(body: Record<string, unknown>, field: string, what: string, options: { nonEmpty: boolean }): string {
  const value = body[field];
  if (typeof value !== 'string') throw new BadRequest(400, `${what}: field "${field}" must be a string`);
  if (options.nonEmpty && value === '') throw new BadRequest(400, `${what}: field "${field}" must not be empty`);
  return value;
}

function parsePodAdd(raw: unknown): PodAddRequest {
  const what = 'pod-add';
  const body = requireObject(raw, what);
  const podName = requireString(body, 'podName', what, { nonEmpty: true });
  const podNamespace = requireString(body, 'podNamespace', what, { nonEmpty: true });
  const podUid = requireString(body, 'podUid', what, { nonEmpty: true });
  const containerId = requireString(body, 'containerId', what, { nonEmpty: false });
  const netns = requireString(body, 'netns', what, { nonEmpty: true });
  const ips = body.ips;
  if (!Array.isArray(ips) || !ips.every((ip): ip is string => typeof ip === 'string')) {
    throw new BadRequest(400, `${what}: field "ips" must be a list of IP address strings`);
  }
  return { podName, podNamespace, podUid, containerId, netns, ips };
}

function parsePodGc(raw: unknown): PodGcRequest {
  const body = requireObject(raw, 'pod-gc');
  const ids = body.validContainerIds;
  if (!Array.isArray(ids) || !ids.every((id): id is string => typeof id === 'string' && id !== '' && id.length <= MAX_CONTAINER_ID_LENGTH)) {
    throw new BadRequest(400, `pod-gc: field "validContainerIds" must be a list of container ids (non-empty strings of at most ${MAX_CONTAINER_ID_LENGTH} characters)`);
  }
  return { validContainerIds: ids };
}

function parsePodDel(raw: unknown): PodDelRequest {
  const what = 'pod-del';
  const body = requireObject(raw, what);
  return {
    podName: requireString(body, 'podName', what, { nonEmpty: false }),
    podNamespace: requireString(body, 'podNamespace', what, { nonEmpty: false }),
    podUid: requireString(body, 'podUid', what, { nonEmpty: true }),
    containerId: requireString(body, 'containerId', what, { nonEmpty: false }),
    netns: requireString(body, 'netns', what, { nonEmpty: false }),
  };
}

function statusOf(error: unknown): number {
  if (!(error instanceof CaptureError)) return 500;
  switch (error.code) {
    case 'INVALID_POD': return 400;
    case 'CLOSED': return 503;
    default: return 500;
  }
}

function send(response: http.ServerResponse, status: number, body: object): void {
  if (response.headersSent) return;
  const text = JSON.stringify(body);
  response.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  response.end(text);
  traceStep('reply');
}

/** A stale socket (or a running agent's) is replaced atomically by the rename below; anything else is refused. */
async function checkSocketPath(path: string): Promise<void> {
  try {
    const info = await lstat(path);
    if (!info.isSocket()) {
      throw new CaptureError('SOCKET_FAILED', `${path} exists and is not a socket; refusing to replace it`);
    }
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw error;
  }
}
