/**
 * Runs one-shot commands through `ambit-spawner` (agent/native/spawner.c), a small C process started once, so the
 * Node main thread never forks: libuv's spawn forks the whole Node process on the calling thread and waits there
 * for the exec (20-45 ms per command on a busy supervisor). Requests and answers are length-prefixed frames on the
 * spawner's stdin and stdout (the format is in spawner.c's top comment); many are in flight at once, matched by id.
 *
 * Two programs use it: the local runtime (every CNI plugin call, `ip`, ...) and the agent (the in-pod rules'
 * iptables-restore, entered into the pod's namespace by the spawner's child before exec: no nsenter, no shell).
 *
 * Owns: starting the spawner, the wire format's Node side, matching answers to requests, turning answers into
 * results and errors (a missing binary is an error naming it, as Node's spawn says it).
 * Must not know about: namespaces' names, CNI or pods.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { constants } from 'node:os';
import path from 'node:path';

/** What went wrong running a command through the spawner; `code` is always COMMAND_FAILED (as the runtime's errors). */
export class ProcessRunnerError extends Error {
  readonly code = 'COMMAND_FAILED';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ProcessRunnerError';
  }
}

/** Built by the same node-gyp build as ambit-cni (agent/native/binding.gyp). */
export const SPAWNER_PATH = path.resolve(import.meta.dirname, '..', 'agent', 'native', 'build', 'Release', 'ambit-spawner');
/** Per stream, as the spawner bounds it when asked for 0: far above any CNI result or `ip` listing. */
export const DEFAULT_MAX_OUTPUT_BYTES = 4 * 1024 * 1024;

const ANSWER_EXITED = 0;
const ANSWER_KILLED = 1;
const ANSWER_SPAWN_FAILED = 2;
const FLAG_TIMED_OUT = 1;
const FLAG_STDOUT_TRUNCATED = 2;
const FLAG_STDERR_TRUNCATED = 4;
/** An answer's fixed part before its fields: length, id, kind, value, flags. */
const ANSWER_HEADER_BYTES = 20;

export interface SpawnRequest {
  /** argv[0] is looked up on the request env's PATH, as Node's spawn does. */
  argv: string[];
  env: NodeJS.ProcessEnv;
  cwd?: string;
  input?: string | Buffer;
  /** The child's process group gets SIGKILL when this passes; the result says timedOut. */
  timeoutMs?: number;
  /** A network namespace file (e.g. /run/netns/NAME) the child enters with setns before exec. */
  netnsPath?: string;
  maxOutputBytes?: number;
}

export interface SpawnResult {
  code: number;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: Buffer;
  timedOut: boolean;
  stdoutTruncated: boolean;
  stderrTruncated: boolean;
}

interface Pending {
  command: string;
  resolve: (result: SpawnResult) => void;
  reject: (error: Error) => void;
}

const signalNames = new Map<number, NodeJS.Signals>(
  Object.entries(constants.signals).map(([name, number]) => [number, name as NodeJS.Signals]),
);
const errnoNames = new Map<number, string>(Object.entries(constants.errno).map(([name, number]) => [number, name]));

/** One request frame (exported for tests that speak to the spawner directly). */
export function encodeRequest(id: number, request: SpawnRequest): Buffer {
  const strings = (values: string[]): Buffer[] => values.map((value) => Buffer.from(value, 'utf8'));
  const argv = strings(request.argv);
  const env = strings(Object.entries(request.env).flatMap(([name, value]) => (value === undefined ? [] : [`${name}=${value}`])));
  const netns = Buffer.from(request.netnsPath ?? '', 'utf8');
  const cwd = Buffer.from(request.cwd ?? '', 'utf8');
  const input = typeof request.input === 'string' ? Buffer.from(request.input, 'utf8') : (request.input ?? Buffer.alloc(0));
  const fieldsLength = (buffers: Buffer[]): number => buffers.reduce((sum, buffer) => sum + 4 + buffer.length, 0);
  const rest = 12 + fieldsLength([netns, cwd]) + 4 + fieldsLength(argv) + 4 + fieldsLength(env) + 4 + input.length;
  const frame = Buffer.allocUnsafe(4 + rest);
  let offset = frame.writeUInt32LE(rest, 0);
  offset = frame.writeUInt32LE(id, offset);
  offset = frame.writeUInt32LE(request.timeoutMs ?? 0, offset);
  offset = frame.writeUInt32LE(request.maxOutputBytes ?? 0, offset);
  const putField = (buffer: Buffer): void => {
    offset = frame.writeUInt32LE(buffer.length, offset);
    offset += buffer.copy(frame, offset);
  };
  putField(netns);
  putField(cwd);
  offset = frame.writeUInt32LE(argv.length, offset);
  argv.forEach(putField);
  offset = frame.writeUInt32LE(env.length, offset);
  env.forEach(putField);
  putField(input);
  return frame;
}

/** One long-lived ambit-spawner and the requests in flight on it. */
export class ProcessRunner {
  readonly #binary: string;
  #spawner: ChildProcess | undefined;
  readonly #pending = new Map<number, Pending>();
  #nextId = 1;
  /** Answer bytes received and not yet parsed (an answer can span reads), and how many. */
  #chunks: Buffer[] = [];
  #chunkBytes = 0;

  constructor(binary = SPAWNER_PATH) {
    this.#binary = binary;
  }

  /** Whether the spawner executable is built (the runtime falls back to Node's spawn when it is not). */
  static available(binary = SPAWNER_PATH): boolean {
    return existsSync(binary);
  }

  /** The spawner's pid while it runs (tests kill it to see in-flight requests fail clearly). */
  get spawnerPid(): number | undefined {
    return this.#spawner?.pid;
  }

  run(request: SpawnRequest): Promise<SpawnResult> {
    const command = request.argv[0] ?? '';
    if (request.argv.length === 0) return Promise.reject(new ProcessRunnerError('cannot run an empty command'));
    const spawner = this.#start();
    const id = this.#nextId;
    this.#nextId = this.#nextId >= 0xffff_fff0 ? 1 : this.#nextId + 1;
    return new Promise<SpawnResult>((resolve, reject) => {
      this.#pending.set(id, { command, resolve, reject });
      if (this.#pending.size === 1) this.#hold(spawner, true);
      spawner.stdin!.write(encodeRequest(id, request));
    });
  }

  /** Stops the spawner (its running commands get SIGKILL: it kills their groups when its stdin closes). */
  close(): void {
    const spawner = this.#spawner;
    if (spawner === undefined) return;
    spawner.stdin!.end();
  }

  /**
   * close(), then waits until the spawner has exited and been reaped (SIGKILL after `graceMs`). A program that exits
   * right after close() leaves the spawner to be reaped by init, and an init that reaps nothing (a container's, this
   * machine's) keeps it as a zombie for good: the local runtime's teardown test found one per agent.
   */
  async stop(graceMs = 2_000): Promise<void> {
    const spawner = this.#spawner;
    if (spawner === undefined) return;
    if (spawner.exitCode !== null || spawner.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => spawner.once('exit', () => resolve()));
    spawner.ref();
    this.close();
    const timer = setTimeout(() => spawner.kill('SIGKILL'), graceMs);
    await exited;
    clearTimeout(timer);
  }

  #start(): ChildProcess {
    if (this.#spawner !== undefined) return this.#spawner;
    // The one fork this module makes: the spawner itself, once.
    const spawner = spawn(this.#binary, [String(process.pid)], { stdio: ['pipe', 'pipe', 'inherit'] });
    this.#spawner = spawner;
    this.#chunks = [];
    this.#chunkBytes = 0;
    spawner.stdin!.on('error', () => undefined); // an exit is reported by 'exit' below
    spawner.stdout!.on('data', (chunk: Buffer) => this.#onData(chunk));
    spawner.once('error', (error) => this.#failAll(spawner, `cannot start ${this.#binary}: ${error.message}`));
    spawner.once('exit', (code, signal) => this.#failAll(spawner, `${path.basename(this.#binary)} exited (${signal ?? `exit ${code}`})`));
    this.#hold(spawner, false);
    return spawner;
  }

  /** Keeps the event loop alive only while requests are in flight, so an idle spawner never holds a process open. */
  #hold(spawner: ChildProcess, busy: boolean): void {
    const handles = [spawner, spawner.stdin, spawner.stdout] as Array<{ ref(): void; unref(): void } | null>;
    for (const handle of handles) {
      if (busy) handle?.ref();
      else handle?.unref();
    }
  }

  #failAll(spawner: ChildProcess, why: string): void {
    if (this.#spawner !== spawner) return;
    this.#spawner = undefined;
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const request of pending) request.reject(new ProcessRunnerError(`cannot run ${request.command}: ${why}`));
  }

  #onData(chunk: Buffer): void {
    // A large answer arrives in many chunks: they are joined once its whole frame is here, not once per chunk.
    this.#chunks.push(chunk);
    this.#chunkBytes += chunk.length;
    if (this.#chunkBytes < 4) return;
    const head = this.#chunks[0]!.length >= 4 ? this.#chunks[0]! : Buffer.concat(this.#chunks);
    if (this.#chunkBytes < 4 + head.readUInt32LE(0)) return;
    const received = this.#chunks.length === 1 ? this.#chunks[0]! : Buffer.concat(this.#chunks, this.#chunkBytes);
    let offset = 0;
    while (received.length - offset >= 4) {
      const rest = received.readUInt32LE(offset);
      if (received.length - offset - 4 < rest) break;
      this.#onAnswer(received.subarray(offset + 4, offset + 4 + rest));
      offset += 4 + rest;
    }
    this.#chunks = offset === received.length ? [] : [received.subarray(offset)];
    this.#chunkBytes = received.length - offset;
    if (this.#pending.size === 0 && this.#spawner !== undefined) this.#hold(this.#spawner, false);
  }

  #onAnswer(answer: Buffer): void {
    const id = answer.readUInt32LE(0);
    const kind = answer.readUInt32LE(4);
    const value = answer.readInt32LE(8);
    const flags = answer.readUInt32LE(12);
    let offset = ANSWER_HEADER_BYTES - 4;
    const field = (): Buffer => {
      const length = answer.readUInt32LE(offset);
      const bytes = answer.subarray(offset + 4, offset + 4 + length);
      offset += 4 + length;
      return bytes;
    };
    // Copies: the answer's bytes belong to a chunk that later answers may be parsed from.
    const stdout = Buffer.from(field());
    const stderr = Buffer.from(field());
    const detail = field().toString('utf8');
    const pending = this.#pending.get(id);
    if (pending === undefined) return; // id 0: a request the spawner could not frame; ours never are
    this.#pending.delete(id);
    if (kind === ANSWER_EXITED || kind === ANSWER_KILLED) {
      pending.resolve({
        code: kind === ANSWER_EXITED ? value : -1,
        signal: kind === ANSWER_KILLED ? (signalNames.get(value) ?? 'SIGKILL') : null,
        stdout,
        stderr,
        timedOut: (flags & FLAG_TIMED_OUT) !== 0,
        stdoutTruncated: (flags & FLAG_STDOUT_TRUNCATED) !== 0,
        stderrTruncated: (flags & FLAG_STDERR_TRUNCATED) !== 0,
      });
    } else if (kind === ANSWER_SPAWN_FAILED) {
      const code = errnoNames.get(value) ?? `errno ${value}`;
      const syscall = detail === 'spawn' ? `spawn ${pending.command}` : `${detail} (starting ${pending.command})`;
      const cause = Object.assign(new Error(`${syscall} ${code}`), { code, errno: -value, syscall: detail });
      pending.reject(new ProcessRunnerError(`cannot run ${pending.command}: ${cause.message}`, { cause }));
    } else {
      pending.reject(new ProcessRunnerError(`cannot run ${pending.command}: the spawner refused the request (${detail})`));
    }
  }
}
