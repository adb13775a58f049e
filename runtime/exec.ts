/**
 * Runs commands and tracks long-lived processes for the local runtime.
 *
 * Owns: one-shot command execution with captured output, spawning in a fresh process group, and killing every
 * tracked group (asynchronously on destroy, synchronously if the process exits first).
 * Must not know about: namespaces, CNI or pods.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { RuntimeError } from './errors.ts';
import { DEFAULT_MAX_OUTPUT_BYTES, ProcessRunner } from '../shared/process-runner.ts';

/** How long a SIGTERMed process group gets before SIGKILL: our apps and the agent drain well inside this. */
export const KILL_GRACE_MS = 2_000;

export interface RunResult {
  code: number;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  input?: string;
  env?: NodeJS.ProcessEnv;
  timeoutMs?: number;
}

/** The shared spawner, made on first use; null when it is not built or AMBIT_SPAWNER=node asks for Node's spawn. */
let sharedRunner: ProcessRunner | null | undefined;

function processRunner(): ProcessRunner | null {
  sharedRunner ??= process.env.AMBIT_SPAWNER !== 'node' && ProcessRunner.available() ? new ProcessRunner() : null;
  return sharedRunner;
}

/**
 * Runs a command to completion with its output captured. Through ambit-spawner (shared/process-runner.ts) when built, so
 * the main thread never forks; a timeout then SIGKILLs the command's process group (Node's spawn SIGTERMs only the
 * command). With AMBIT_SPAWNER=node, or no spawner built, Node's own spawn.
 */
export async function run(cmd: string, args: string[], options: RunOptions = {}): Promise<RunResult> {
  const runner = processRunner();
  if (runner === null) return runWithNodeSpawn(cmd, args, options);
  const result = await runner.run({
    argv: [cmd, ...args],
    env: options.env ?? process.env,
    ...(options.input !== undefined ? { input: options.input } : {}),
    ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
  });
  if (result.stdoutTruncated || result.stderrTruncated) {
    throw new RuntimeError('COMMAND_FAILED', `${cmd} ${args.join(' ')} printed more than ${DEFAULT_MAX_OUTPUT_BYTES} bytes on ${result.stdoutTruncated ? 'stdout' : 'stderr'}`);
  }
  return { code: result.code, signal: result.signal, stdout: result.stdout.toString('utf8'), stderr: result.stderr.toString('utf8') };
}

function runWithNodeSpawn(cmd: string, args: string[], options: RunOptions): Promise<RunResult> {
  return new Promise<RunResult>((resolve, reject) => {
    const child = spawn(cmd, args, { env: options.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'], timeout: options.timeoutMs });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.once('error', (error) => reject(new RuntimeError('COMMAND_FAILED', `cannot run ${cmd}: ${error.message}`, { cause: error })));
    child.once('close', (code, signal) => resolve({ code: code ?? -1, signal, stdout, stderr }));
    child.stdin.on('error', () => undefined); // a command that exits without reading stdin is not our failure
    child.stdin.end(options.input ?? '');
  });
}

/** Runs a command that must succeed; the error names the command and carries its stderr. */
export async function runOk(cmd: string, args: string[], options: RunOptions = {}): Promise<string> {
  const result = await run(cmd, args, options);
  if (result.code !== 0) {
    throw new RuntimeError('COMMAND_FAILED', `${cmd} ${args.join(' ')} failed (exit ${result.code}): ${result.stderr.trim() || result.stdout.trim()}`);
  }
  return result.stdout;
}

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // already gone
  }
}

function exited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

/** Waits for a child to exit; resolves false when the deadline passed first. */
export function waitForExit(child: ChildProcess, timeoutMs: number): Promise<boolean> {
  if (exited(child)) return Promise.resolve(true);
  return new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), timeoutMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

/** Stops a process group: SIGTERM, then SIGKILL after the grace period. */
export async function stopGroup(child: ChildProcess, graceMs = KILL_GRACE_MS): Promise<void> {
  if (child.pid === undefined) return;
  if (!exited(child)) signalGroup(child.pid, 'SIGTERM');
  if (!(await waitForExit(child, graceMs))) {
    signalGroup(child.pid, 'SIGKILL');
    await waitForExit(child, graceMs);
  }
  // Children the leader left behind in its group.
  signalGroup(child.pid, 'SIGKILL');
}

/** Every long-lived process the runtime started, each the leader of its own process group. */
export class ProcessTracker {
  readonly #children = new Set<ChildProcess>();

  spawn(cmd: string, args: string[], options: SpawnOptions = {}): ChildProcess {
    const child = spawn(cmd, args, { ...options, detached: true });
    this.#children.add(child);
    child.once('exit', () => {
      // Keep tracking until the group's stragglers are killed on stop; the set only holds exited leaders briefly.
      if (child.pid !== undefined) signalGroup(child.pid, 'SIGKILL');
      this.#children.delete(child);
    });
    child.once('error', () => this.#children.delete(child));
    return child;
  }

  async stop(child: ChildProcess, graceMs = KILL_GRACE_MS): Promise<void> {
    await stopGroup(child, graceMs);
    this.#children.delete(child);
  }

  /** Stops every tracked process group; resolves with how many there were. */
  async stopAll(): Promise<number> {
    const children = [...this.#children];
    await Promise.all(children.map((child) => this.stop(child)));
    return children.length;
  }

  /** Last resort when the process is exiting and cannot wait: SIGKILL every group now. */
  killAllNow(): void {
    for (const child of this.#children) if (child.pid !== undefined) signalGroup(child.pid, 'SIGKILL');
    this.#children.clear();
  }
}
