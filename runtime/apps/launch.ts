/**
 * Starts the sample apps inside a pod and reads their output, so tests, the demo and benchmarks share one way.
 *
 * Owns: the apps' command lines and their stdout protocol (a JSON line each).
 * Must not know about: how pods are made.
 */
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { RuntimeError } from '../errors.ts';
import type { Pod } from '../pod.ts';

const APPS_DIR = import.meta.dirname;
export const ECHO_SERVER_APP = path.join(APPS_DIR, 'echo-server.ts');
export const CLIENT_APP = path.join(APPS_DIR, 'client.ts');
/** Node start-up plus listen: well under a second; generous for a loaded CI box. */
const SERVER_START_TIMEOUT_MS = 10_000;

export interface EchoServerOptions {
  port: number;
  http?: boolean;
  host?: string;
  /** HTTP mode: the name the server puts in its answers (default: the pod's name); set, also outside HTTP mode. */
  name?: string;
}

export interface ClientOptions {
  host: string;
  port: number;
  count?: number;
  size?: number;
  http?: boolean;
  timeoutMs?: number;
}

export interface ClientResult {
  ok: boolean;
  host: string;
  port: number;
  connections: number;
  succeeded: number;
  failed: number;
  bytesReceived: number;
  durationMs: number;
  errors: string[];
  response?: { status: number; body: unknown };
}

/** Starts echo-server.ts in the pod and resolves once it listens. */
export function startEchoServer(pod: Pod, options: EchoServerOptions): Promise<ChildProcess> {
  const args = [ECHO_SERVER_APP, '--port', String(options.port), '--host', options.host ?? '0.0.0.0', ...(options.http ? ['--http'] : []), ...(options.http || options.name ? ['--name', options.name ?? pod.name] : [])];
  const child = pod.spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  return new Promise<ChildProcess>((resolve, reject) => {
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => reject(new RuntimeError('COMMAND_FAILED', `echo server in pod ${pod.name} did not start: ${stderr}`)), SERVER_START_TIMEOUT_MS);
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
      if (stdout.includes('"listening"')) {
        clearTimeout(timer);
        resolve(child);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new RuntimeError('COMMAND_FAILED', `echo server in pod ${pod.name} exited (${code}): ${stderr.trim()}`));
    });
  });
}

/** Runs client.ts in the pod to completion and returns its JSON result (ok false on any failed connection). */
export async function runClient(pod: Pod, options: ClientOptions): Promise<ClientResult> {
  const args = [
    CLIENT_APP,
    '--host', options.host,
    '--port', String(options.port),
    '--count', String(options.count ?? 1),
    '--size', String(options.size ?? 1024),
    '--timeout', String(options.timeoutMs ?? 5000),
    ...(options.http ? ['--http'] : []),
  ];
  const result = await pod.exec(process.execPath, args);
  try {
    return JSON.parse(result.stdout) as ClientResult;
  } catch {
    throw new RuntimeError('COMMAND_FAILED', `client in pod ${pod.name} printed no result (exit ${result.code}): ${result.stderr.trim()}`);
  }
}
