/**
 * The supervisor's control socket: how `ambitctl local` asks a running local mesh to do something that is not a
 * change of the user's directory (today: delete a pod, as `kubectl delete pod` does). HTTP over a unix socket in the
 * run directory (mode 0600, so only root reaches it), one JSON answer per request.
 *
 *   DELETE /pods/<namespace>/<name>   -> 200 {"deleted": "ns/name", "replacement": "ns/other"?}, 404 no such pod
 *
 * Owns: the socket's path, the request routes and their JSON, the client side of each.
 * Must not know about: what deleting a pod involves (the supervisor's handler does it).
 */
import { chmod, rm } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { WorkloadError } from './errors.ts';

/** What a deletion did: the pod deleted and the pod made in its place (a Deployment's replica, a file's Pod). */
export interface DeletedPod {
  deleted: string;
  replacement?: string;
}

export interface ControlHandlers {
  deletePod(namespace: string, name: string): Promise<DeletedPod>;
}

/** A client's wait for an answer: deleting a pod runs CNI DEL and the replacement's ADD on a loaded machine. */
const REQUEST_TIMEOUT_MS = 120_000;

export function controlSocketFile(runDir: string): string {
  return path.join(runDir, 'control.sock');
}

function answer(response: http.ServerResponse, status: number, body: unknown): void {
  response.writeHead(status, { 'content-type': 'application/json' });
  response.end(JSON.stringify(body));
}

/** Serves the control socket until the returned close() is called. */
export async function serveControl(runDir: string, handlers: ControlHandlers): Promise<{ close(): Promise<void> }> {
  const file = controlSocketFile(runDir);
  await rm(file, { force: true });
  const server = http.createServer((request, response) => {
    const parts = (request.url ?? '').split('/').filter((part) => part !== '').map(decodeURIComponent);
    if (request.method === 'DELETE' && parts.length === 3 && parts[0] === 'pods') {
      handlers.deletePod(parts[1]!, parts[2]!).then(
        (result) => answer(response, 200, result),
        (error: unknown) => answer(response, (error as WorkloadError).code === 'NO_SUCH_POD' ? 404 : 500, { error: (error as Error).message }),
      );
      return;
    }
    answer(response, 404, { error: `no route ${request.method} ${request.url}` });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(file, () => resolve());
  });
  await chmod(file, 0o600);
  return {
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** Asks the running supervisor to delete a pod; rejects with its error message (NO_SUCH_POD for an unknown pod). */
export function requestDeletePod(runDir: string, namespace: string, name: string): Promise<DeletedPod> {
  return new Promise((resolve, reject) => {
    const request = http.request(
      { socketPath: controlSocketFile(runDir), method: 'DELETE', path: `/pods/${encodeURIComponent(namespace)}/${encodeURIComponent(name)}`, timeout: REQUEST_TIMEOUT_MS },
      (response) => {
        let body = '';
        response.setEncoding('utf8').on('data', (chunk: string) => (body += chunk));
        response.on('end', () => {
          let parsed: DeletedPod & { error?: string };
          try {
            parsed = JSON.parse(body) as DeletedPod & { error?: string };
          } catch {
            reject(new WorkloadError('NOT_RUNNING', `the supervisor answered ${response.statusCode} with no JSON`));
            return;
          }
          if (response.statusCode === 200) resolve(parsed);
          else reject(new WorkloadError(response.statusCode === 404 ? 'NO_SUCH_POD' : 'START_FAILED', parsed.error ?? `status ${response.statusCode}`));
        });
      },
    );
    request.once('timeout', () => request.destroy(new WorkloadError('NOT_RUNNING', `the supervisor did not answer in ${REQUEST_TIMEOUT_MS / 1000} s`)));
    request.once('error', (error) => reject(error instanceof WorkloadError ? error : new WorkloadError('NOT_RUNNING', `cannot reach the supervisor at ${controlSocketFile(runDir)}: ${error.message}`)));
    request.end();
  });
}
