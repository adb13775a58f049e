/**
 * The processes of one benchmark run: relays, anchors, targets and load drivers, each its own OS process.
 *
 * Owns: starting a process and waiting until it is ready (a `{"ready":...}` line on stdout, or a TCP port in
 * LISTEN), running a one-shot tool to its `{"result":...}` line, and killing every process it started: at the
 * end, on error, on Ctrl-C, and (by the pid file) after a run that was itself killed.
 * Must not know about: what the processes do.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';

/** Temp directories of runs are named with this prefix; their `pids` file lists what they started. */
export const RUN_DIR_PREFIX = 'ambit-bench-';
const READY_TIMEOUT_MS = 15_000;
const STOP_GRACE_MS = 3_000;
const STDERR_TAIL_BYTES = 4_000;

export interface StartOptions {
  /** Ready when the process prints a `{"ready": {...}}` line (default) or when this TCP port is listening. */
  readyPort?: number;
  env?: NodeJS.ProcessEnv;
  readyTimeoutMs?: number;
}

export interface ManagedProcess {
  readonly name: string;
  readonly pid: number;
  /** What the process announced in its ready line (e.g. `{ port }`), empty for port-polled processes. */
  readonly ready: Record<string, unknown>;
  /** The port it listens on (announced or polled). */
  readonly port: number;
  stderrTail(): string;
}

interface Tracked {
  name: string;
  child: ChildProcess;
  exited: Promise<void>;
  stderr: string[];
}

export class ProcessGroup {
  readonly #runDir: string;
  readonly #tracked = new Set<Tracked>();

  /** `runDir` is the run's temp directory; started pids are appended to `<runDir>/pids`. */
  constructor(runDir: string) {
    this.#runDir = runDir;
  }

  /** Starts a long-running process and resolves once it is ready. */
  async start(name: string, command: string, args: readonly string[], options: StartOptions = {}): Promise<ManagedProcess> {
    const tracked = this.#spawn(name, command, args, options.env);
    const timeoutMs = options.readyTimeoutMs ?? READY_TIMEOUT_MS;
    try {
      let ready: Record<string, unknown> = {};
      let port: number;
      if (options.readyPort !== undefined) {
        await waitForListen(options.readyPort, timeoutMs, tracked);
        port = options.readyPort;
      } else {
        ready = await waitForReadyLine(tracked, timeoutMs);
        port = Number(ready.port);
      }
      return { name, pid: tracked.child.pid!, ready, port, stderrTail: () => tracked.stderr.join('') };
    } catch (error) {
      throw new Error(`${name} did not start: ${(error as Error).message}\n${tracked.stderr.join('')}`, { cause: error });
    }
  }

  /** Runs a one-shot tool and returns the object in its last `{"result": ...}` line. */
  async run<T>(name: string, command: string, args: readonly string[], env?: NodeJS.ProcessEnv): Promise<T> {
    const tracked = this.#spawn(name, command, args, env);
    let result: T | undefined;
    const lines = createInterface({ input: tracked.child.stdout! });
    lines.on('line', (line) => {
      if (!line.startsWith('{')) return;
      try {
        const message = JSON.parse(line) as { result?: T };
        if (message.result !== undefined) result = message.result;
      } catch {
        // not one of ours
      }
    });
    const code = await new Promise<number | null>((resolve) => tracked.child.once('exit', (exitCode) => resolve(exitCode)));
    await tracked.exited;
    if (code !== 0 || result === undefined) {
      throw new Error(`${name} failed (exit ${code}): ${tracked.stderr.join('').trim() || 'no result line'}`);
    }
    return result;
  }

  /** SIGTERM to everything still running, SIGKILL after a grace period. */
  async stopAll(): Promise<void> {
    const running = [...this.#tracked];
    for (const { child } of running) signal(child, 'SIGTERM');
    const timer = setTimeout(() => this.killAllNow(), STOP_GRACE_MS);
    await Promise.all(running.map(({ exited }) => exited));
    clearTimeout(timer);
  }

  /** Synchronous SIGKILL of everything still running (for process 'exit' handlers). */
  killAllNow(): void {
    for (const { child } of this.#tracked) signal(child, 'SIGKILL');
  }

  #spawn(name: string, command: string, args: readonly string[], env?: NodeJS.ProcessEnv): Tracked {
    // stdin stays a pipe: our Node tools exit when it closes, so they die with this process even on SIGKILL.
    const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'], env: env ?? process.env });
    const tracked: Tracked = {
      name,
      child,
      stderr: [],
      exited: new Promise((resolve) => child.once('close', () => resolve())),
    };
    this.#tracked.add(tracked);
    void tracked.exited.then(() => this.#tracked.delete(tracked));
    child.once('error', (error) => tracked.stderr.push(`spawn error: ${error.message}\n`));
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (chunk: string) => {
      tracked.stderr.push(chunk);
      while (tracked.stderr.join('').length > STDERR_TAIL_BYTES && tracked.stderr.length > 1) tracked.stderr.shift();
    });
    if (child.pid !== undefined) appendFileSync(path.join(this.#runDir, 'pids'), `${child.pid} ${command}\n`);
    return tracked;
  }
}

function signal(child: ChildProcess, name: NodeJS.Signals): void {
  if (child.exitCode !== null || child.signalCode !== null) return;
  try {
    child.kill(name);
  } catch {
    // already gone
  }
}

function waitForReadyLine(tracked: Tracked, timeoutMs: number): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: tracked.child.stdout! });
    const timer = setTimeout(() => fail(new Error(`no ready line within ${timeoutMs} ms`)), timeoutMs);
    const onExit = (code: number | null): void => fail(new Error(`exited with ${code} before it was ready`));
    function fail(error: Error): void {
      clearTimeout(timer);
      tracked.child.off('exit', onExit);
      lines.close();
      reject(error);
    }
    tracked.child.once('exit', onExit);
    lines.on('line', (line) => {
      if (!line.startsWith('{"ready"')) return;
      clearTimeout(timer);
      tracked.child.off('exit', onExit);
      lines.close();
      // Keep draining stdout so a chatty child never blocks on a full pipe.
      tracked.child.stdout!.resume();
      resolve((JSON.parse(line) as { ready: Record<string, unknown> }).ready);
    });
  });
}

/** Polls /proc/net/tcp{,6} for a socket in LISTEN on `port` (no probe connection, so no side effects). */
async function waitForListen(port: number, timeoutMs: number, tracked: Tracked): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
  while (Date.now() < deadline) {
    if (tracked.child.exitCode !== null) throw new Error(`exited with ${tracked.child.exitCode} before it was ready`);
    for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
      const rows = existsSync(table) ? readFileSync(table, 'utf8').split('\n') : [];
      // Columns: sl local_address rem_address st ...; LISTEN is state 0A.
      if (rows.some((row) => { const cols = row.trim().split(/\s+/); return cols[1]?.endsWith(`:${hexPort}`) && cols[3] === '0A'; })) return;
    }
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  throw new Error(`port ${port} not listening within ${timeoutMs} ms`);
}

/**
 * Kills what earlier runs left behind (a run killed with SIGKILL cannot clean up): every pid listed in a stale
 * run directory whose command line still names that run's directory or one of our tools, then removes the dir.
 */
export function reapStaleRuns(): void {
  for (const entry of readdirSync(tmpdir())) {
    if (!entry.startsWith(RUN_DIR_PREFIX)) continue;
    const runDir = path.join(tmpdir(), entry);
    const ownerPid = Number(entry.slice(RUN_DIR_PREFIX.length).split('-')[0]);
    if (ownerPid && isAlive(ownerPid)) continue; // another run in progress
    const pidsFile = path.join(runDir, 'pids');
    if (existsSync(pidsFile)) {
      for (const line of readFileSync(pidsFile, 'utf8').split('\n')) {
        const pid = Number(line.split(' ')[0]);
        if (!pid || !isAlive(pid)) continue;
        const cmdline = safeRead(`/proc/${pid}/cmdline`).replaceAll('\0', ' ');
        if (cmdline.includes(runDir) || cmdline.includes('/bench/tools/')) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            // raced with its exit
          }
        }
      }
    }
    rmSync(runDir, { recursive: true, force: true });
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function safeRead(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}
