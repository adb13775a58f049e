/**
 * Test helper: a minimal HTTP-over-unix-socket server speaking the CNI plugin <-> agent contract
 * (shared/cni-protocol.ts). It exists ONLY to check the plugin's and the runtime's side of the wire (request
 * fields, 200 -> prevResult passthrough, errors -> CNI error, agent process lifecycle). It captures nothing:
 * the real agent's side of the contract is tested in the agent's own tests.
 *
 * Library: startProtocolServer(socketPath, respond?). CLI (as a stand-in agent *process* for runtime lifecycle
 * tests): `node test/helpers/cni-protocol-server.ts` listens on $AMBIT_CNI_SOCKET and prints one JSON line per
 * request, after a first line with the AMBIT_* environment it was given.
 */
import http from 'node:http';
import { rmSync } from 'node:fs';
import { CNI_CALL_PATH, POD_ADD_PATH, POD_DEL_PATH } from '../../shared/cni-protocol.ts';

export interface RecordedRequest {
  method: string;
  path: string;
  body: Record<string, unknown>;
}

export interface ProtocolReply {
  status: number;
  body: unknown;
}

export interface ProtocolServer {
  requests: RecordedRequest[];
  close(): Promise<void>;
}

/** The contract's happy path: 200 {"captured":true} for pod-add, 200 {} for pod-del, 404 otherwise. */
export function contractReply(path: string): ProtocolReply {
  if (path === POD_ADD_PATH) return { status: 200, body: { captured: true } };
  if (path === POD_DEL_PATH) return { status: 200, body: {} };
  return { status: 404, body: { error: `no route ${path}` } };
}

export async function startProtocolServer(
  socketPath: string,
  respond: (request: RecordedRequest) => ProtocolReply = (request) => contractReply(request.path),
  onRequest?: (request: RecordedRequest) => void,
): Promise<ProtocolServer> {
  const requests: RecordedRequest[] = [];
  const server = http.createServer((request, response) => {
    if (request.url === CNI_CALL_PATH) {
      // Played as an agent that predates the native forwarder: it falls back to the Node plugin (ambit-cni-node),
      // whose requests are what these tests check.
      request.resume();
      response.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"no route"}');
      return;
    }
    let raw = '';
    request.setEncoding('utf8');
    request.on('data', (chunk: string) => (raw += chunk));
    request.on('end', () => {
      let body: Record<string, unknown> = {};
      try {
        body = JSON.parse(raw) as Record<string, unknown>;
      } catch {
        // recorded as empty; the test asserts on it
      }
      const recorded = { method: request.method ?? '', path: request.url ?? '', body };
      requests.push(recorded);
      onRequest?.(recorded);
      const reply = respond(recorded);
      response.writeHead(reply.status, { 'content-type': 'application/json' });
      response.end(JSON.stringify(reply.body));
    });
  });
  rmSync(socketPath, { force: true });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, resolve);
  });
  return {
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

if (import.meta.main) {
  const socketPath = process.env.AMBIT_CNI_SOCKET;
  if (socketPath === undefined) throw new Error('AMBIT_CNI_SOCKET is not set');
  console.log(
    JSON.stringify({
      env: {
        AMBIT_NODE_NAME: process.env.AMBIT_NODE_NAME,
        AMBIT_CLUSTER_DIR: process.env.AMBIT_CLUSTER_DIR,
        AMBIT_CNI_SOCKET: socketPath,
      },
    }),
  );
  const server = await startProtocolServer(socketPath, undefined, (request) => console.log(JSON.stringify(request)));
  // Exit without closing the listener: closing would unlink the socket path, which after an overlapping
  // restart belongs to the new process (libuv unlinks a unix listener's path on close).
  process.once('SIGTERM', () => process.exit(0));
  void server;
}
