/**
 * How ambitctl reaches an agent's admin endpoint: directly (`--admin http://127.0.0.1:15000`), or inside a
 * network namespace (`--node <netns>`, a local-runtime node) by running a one-line fetch under
 * `ip netns exec <netns>`: the admin endpoint listens on the namespace's own localhost, which no other
 * namespace can reach. (Spawning beats entering the namespace in-process: setns needs the agent's native addon
 * and would move this whole thread into the node's namespace.)
 *
 * Owns: the request, and errors that say what to check.
 * Must not know about: what the endpoints return.
 */
import { execFileSync, spawn } from 'node:child_process';

export const DEFAULT_ADMIN_URL = 'http://127.0.0.1:15000';
/** An admin endpoint answers from memory: 5 s means the agent is stuck or the address is wrong. */
export const ADMIN_TIMEOUT_MS = 5000;

export interface AdminTarget {
  /** Base URL of the admin endpoint. */
  url: string;
  /** Network namespace (ip netns name) to make the request in. */
  netns?: string;
}

export class AmbitctlError extends Error {
  readonly code: 'ADMIN_UNREACHABLE' | 'ADMIN_ERROR' | 'NETNS' | 'USAGE' | 'API_SERVER';
  /** ADMIN_ERROR: the HTTP status the endpoint answered. */
  readonly status: number | undefined;

  constructor(code: AmbitctlError['code'], message: string, status?: number) {
    super(message);
    this.name = 'AmbitctlError';
    this.code = code;
    this.status = status;
  }
}

interface RawResponse {
  status?: number;
  body?: string;
  error?: string;
}

function describe(target: AdminTarget): string {
  return target.netns ? `${target.url} in network namespace ${target.netns}` : target.url;
}

function unreachable(target: AdminTarget, reason: string): AmbitctlError {
  return new AmbitctlError('ADMIN_UNREACHABLE', `cannot reach the agent admin endpoint at ${describe(target)} (${reason}): is the agent running on this node?`);
}

async function fetchDirect(url: string): Promise<RawResponse> {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(ADMIN_TIMEOUT_MS) });
    return { status: response.status, body: await response.text() };
  } catch (error) {
    const cause = (error as { cause?: { code?: string; message?: string } }).cause;
    return { error: cause?.code ?? cause?.message ?? (error as Error).message };
  }
}

/** The same fetch, run by a node process inside the namespace; it prints one JSON line. */
const NETNS_FETCH_SCRIPT = `
fetch(process.argv[1], { signal: AbortSignal.timeout(${ADMIN_TIMEOUT_MS}) }).then(
  async (r) => process.stdout.write(JSON.stringify({ status: r.status, body: await r.text() })),
  (e) => process.stdout.write(JSON.stringify({ error: (e.cause && (e.cause.code || e.cause.message)) || e.message })),
);`;

/** A local-runtime node's namespace is `ambit-<run id>-n<index>` (runtime/topology.ts); named so it can be suggested. */
const LOCAL_NODE_NETNS = /^ambit-[0-9a-f]+-n\d+$/;

function localRuntimeNodes(): string[] {
  try {
    return execFileSync('ip', ['netns', 'list'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
      .split('\n')
      .map((line) => line.split(' ')[0] ?? '')
      .filter((name) => LOCAL_NODE_NETNS.test(name))
      .sort();
  } catch {
    return [];
  }
}

function fetchInNetns(netns: string, url: string): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const child = spawn('ip', ['netns', 'exec', netns, process.execPath, '-e', NETNS_FETCH_SCRIPT, url], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.once('error', (error) => reject(new AmbitctlError('NETNS', `cannot run ip netns exec: ${error.message} (is iproute2 installed?)`)));
    child.once('close', (code) => {
      if (code === 0 && stdout) {
        try {
          resolve(JSON.parse(stdout) as RawResponse);
          return;
        } catch {
          // fall through to the error below
        }
      }
      const reason = stderr.trim() || `exit ${code}`;
      if (/No such file or directory|Cannot open network namespace/i.test(reason)) {
        const nodes = localRuntimeNodes();
        const hint = nodes.length > 0 ? `the local runtime's nodes here are ${nodes.join(', ')}` : 'no local-runtime node namespace exists here (`ip netns list`)';
        reject(new AmbitctlError('NETNS', `network namespace "${netns}" does not exist: --node takes a node's network namespace, not its name; ${hint}`));
      } else if (/Operation not permitted|Permission denied/i.test(reason)) {
        reject(new AmbitctlError('NETNS', `entering network namespace "${netns}" needs root (CAP_SYS_ADMIN): ${reason}`));
      } else {
        reject(new AmbitctlError('NETNS', `fetching ${url} in network namespace "${netns}" failed: ${reason}`));
      }
    });
  });
}

/** GETs `path` from the admin endpoint and parses its JSON body. */
export async function adminGetJson<T>(target: AdminTarget, path: string): Promise<T> {
  let url: string;
  try {
    // Relative to the base, so an endpoint behind a path prefix (a port-forward, a proxy) works too.
    url = new URL(path.replace(/^\//, ''), target.url.endsWith('/') ? target.url : `${target.url}/`).toString();
  } catch {
    throw new AmbitctlError('USAGE', `--admin ${target.url} is not a URL: use e.g. ${DEFAULT_ADMIN_URL}`);
  }
  const raw = target.netns ? await fetchInNetns(target.netns, url) : await fetchDirect(url);
  if (raw.error !== undefined) throw unreachable(target, raw.error);
  if (raw.status !== 200) {
    let message = raw.body ?? '';
    try {
      message = (JSON.parse(message) as { error?: string }).error ?? message;
    } catch {
      // not JSON: show the text
    }
    throw new AmbitctlError('ADMIN_ERROR', `the agent admin endpoint at ${describe(target)} answered ${raw.status} for ${path}: ${message.trim()}`, raw.status);
  }
  try {
    return JSON.parse(raw.body ?? '') as T;
  } catch {
    throw new AmbitctlError('ADMIN_ERROR', `the endpoint at ${describe(target)} answered ${path} with something that is not JSON: is it an ambit agent's admin port?`);
  }
}
