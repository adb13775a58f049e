/**
 * The agent's CNI endpoint: HTTP/1.1 over a unix socket, the protocol in shared/cni-protocol.ts.
 *
 *   POST /v1/pod-add  -> 200 {"captured":true} once the pod's rules and listeners are in place
 *   POST /v1/pod-del  -> 200, idempotent (also with an empty netns, and for pods never seen)
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
  POD_ADD_PATH, POD_DEL_PATH, POD_SEEN_PATH,
  type PodAddRequest, type PodAddResponse, type PodDelRequest, type ProtocolErrorResponse,
} from '../shared/cni-protocol.ts';
import { CaptureError } from './inpod/errors.ts';
import type { PodInfo } from './inpod/pod-listeners.ts';
import type { PodRef } from './inpod/capture-manager.ts';

/** The narrow handle the endpoint gets: capture and release, nothing else of the manager. */
export interface PodCapture {
  add(pod: PodInfo): Promise<void>;
  /** A pod that is not enrolled now: remember it in case it is enrolled while it runs. */
  seen?(pod: PodInfo): Promise<void>;
  del(ref: PodRef): Promise<void>;
}

export interface CniServerOptions {
  socketPath: string;
  capture: PodCapture;
}

export interface CniServer {
  readonly socketPath: string;
  close(): Promise<void>;
}

/** Requests are a few hundred bytes; anything near this is not from our plugin. */
const MAX_BODY_BYTES = 64 * 1024;
/** A stuck plugin must not hold a connection forever; the plugin itself gives up after 10 s. */
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
  await mkdir(dirname(socketPath), { recursive: true, mode: 0o700 });
  await checkSocketPath(socketPath);

  const server = http.createServer({ requestTimeout: REQUEST_TIMEOUT_MS }, (request, response) => {
    handle(request, capture).then(
      (body) => send(response, 200, body),
      (error: unknown) => {
        const status = error instanceof BadRequest ? error.status : statusOf(error);
        const message = error instanceof Error ? error.message : String(error);
        send(response, status, { error: message } satisfies ProtocolErrorResponse);
      },
    );
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

async function handle(request: http.IncomingMessage, capture: PodCapture): Promise<object> {
  const path = (request.url ?? '').split('?')[0];
  if (path !== POD_ADD_PATH && path !== POD_DEL_PATH && path !== POD_SEEN_PATH) {
    request.resume();
    throw new BadRequest(404, `unknown path ${JSON.stringify(request.url)}; the agent serves ${POD_ADD_PATH} and ${POD_DEL_PATH}`);
  }
  if (request.method !== 'POST') {
    request.resume();
    throw new BadRequest(405, `${path} takes POST, not ${request.method}`);
  }
  const body = await readJson(request);
  if (path === POD_SEEN_PATH) {
    const seen = parsePodAdd(body);
    await capture.seen?.({ uid: seen.podUid, name: seen.podName, namespace: seen.podNamespace, netns: seen.netns, ips: seen.ips });
    return {};
  }
  if (path === POD_ADD_PATH) {
    const add = parsePodAdd(body);
    await capture.add({
      uid: add.podUid, name: add.podName, namespace: add.podNamespace, netns: add.netns, ips: add.ips,
    });
    return { captured: true } satisfies PodAddResponse;
  }
  const del = parsePodDel(body);
  await capture.del(del.netns === '' ? { uid: del.podUid } : { uid: del.podUid, netns: del.netns });
  return {};
}

function readJson(request: http.IncomingMessage): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let failed = false;
    request.on('data', (chunk: Buffer) => {
      if (failed) return;
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        failed = true;
        reject(new BadRequest(413, `request body over ${MAX_BODY_BYTES} bytes`));
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
        resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')));
      } catch (error) {
        reject(new BadRequest(400, `request body is not valid JSON: ${(error as Error).message}`));
      }
    });
  });
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
