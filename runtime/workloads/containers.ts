/**
 * Runs a planned pod's containers as processes in its network namespace, as the kubelet would: env (the downward
 * API included) and workingDir, stdout and stderr appended to one log file per container, restartPolicy with
 * exponential back-off, and Ready from the readiness check.
 *
 * Owns: container processes, their logs and restarts, readiness checks.
 * Must not know about: how the pod got its network or what the manifests looked like.
 */
import { closeSync, openSync } from 'node:fs';
import type { ChildProcess } from 'node:child_process';
import path from 'node:path';
import type { Pod } from '../pod.ts';
import type { ContainerPlan, EnvValue, PodPlan } from './manifests.ts';

const BACKOFF_START_MS = 1_000;
const BACKOFF_MAX_MS = 30_000;
/** A container that ran this long before exiting starts its back-off afresh. */
const BACKOFF_RESET_AFTER_MS = 10_000;
const PROBE_TIMEOUT_MS = 2_000;

export function containerLogFile(logDir: string, namespace: string, pod: string, container: string): string {
  return path.join(logDir, 'pods', `${namespace}_${pod}_${container}.log`);
}

function envValue(value: EnvValue, pod: Pod): string {
  if ('value' in value) return value.value;
  switch (value.field) {
    case 'metadata.name':
      return pod.name;
    case 'metadata.namespace':
      return pod.namespace;
    case 'status.podIP':
      return pod.ip;
    case 'spec.nodeName':
      return pod.node.name;
    case 'spec.serviceAccountName':
      return pod.serviceAccount;
  }
}

interface ContainerState {
  plan: ContainerPlan;
  child: ChildProcess | undefined;
  restarts: number;
  /** Exit code of the last run; undefined while running or before the first exit. */
  lastExit: number | undefined;
  startedAt: number;
  backoffMs: number;
  timer: NodeJS.Timeout | undefined;
}

/** A pod's running containers. */
export class PodContainers {
  readonly pod: Pod;
  readonly #plan: PodPlan;
  readonly #logDir: string;
  readonly #containers: ContainerState[];
  #stopped = false;

  constructor(pod: Pod, plan: PodPlan, logDir: string) {
    this.pod = pod;
    this.#plan = plan;
    this.#logDir = logDir;
    this.#containers = plan.containers.map((container) => ({ plan: container, child: undefined, restarts: 0, lastExit: undefined, startedAt: 0, backoffMs: BACKOFF_START_MS, timer: undefined }));
  }

  start(): void {
    for (const container of this.#containers) this.#run(container);
  }

  #run(state: ContainerState): void {
    if (this.#stopped) return;
    const { plan } = state;
    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin',
      HOSTNAME: this.pod.name,
      ...Object.fromEntries(plan.env.map(([name, value]) => [name, envValue(value, this.pod)])),
    };
    const log = openSync(containerLogFile(this.#logDir, this.pod.namespace, this.pod.name, plan.name), 'a');
    let child: ChildProcess;
    try {
      child = this.pod.spawn(plan.argv[0]!, plan.argv.slice(1), { stdio: ['ignore', log, log], env, ...(plan.workingDir !== undefined ? { cwd: plan.workingDir } : {}) });
    } finally {
      closeSync(log);
    }
    state.child = child;
    state.lastExit = undefined;
    state.startedAt = Date.now();
    child.once('error', () => undefined); // a missing cwd or command: reported as the exit below
    child.once('exit', (code, signal) => {
      state.child = undefined;
      state.lastExit = code ?? (signal !== null ? 128 : -1);
      if (this.#stopped) return;
      const policy = this.#plan.restartPolicy;
      if (policy === 'Never' || (policy === 'OnFailure' && state.lastExit === 0)) return;
      if (Date.now() - state.startedAt > BACKOFF_RESET_AFTER_MS) state.backoffMs = BACKOFF_START_MS;
      state.timer = setTimeout(() => {
        state.timer = undefined;
        state.restarts++;
        this.#run(state);
      }, state.backoffMs);
      state.backoffMs = Math.min(state.backoffMs * 2, BACKOFF_MAX_MS);
    });
  }

  /** How often the pod is probed once Ready: its most frequent container's readinessProbe.periodSeconds. */
  get probePeriodMs(): number {
    return Math.min(...this.#containers.map((container) => container.plan.probePeriodMs));
  }

  get restarts(): number {
    return this.#containers.reduce((sum, container) => sum + container.restarts, 0);
  }

  /** Running, Succeeded (every container exited 0 and none restarts), Failed, or Waiting (back-off). */
  get phase(): string {
    if (this.#containers.some((container) => container.child !== undefined)) return 'Running';
    if (this.#containers.some((container) => container.timer !== undefined)) return 'Waiting';
    return this.#containers.every((container) => container.lastExit === 0) ? 'Succeeded' : 'Failed';
  }

  /** Whether every container is running and passes its readiness check. */
  async ready(): Promise<boolean> {
    const checks = await Promise.all(this.#containers.map((container) => (container.child === undefined ? false : this.#check(container.plan))));
    return checks.every(Boolean);
  }

  async #check(plan: ContainerPlan): Promise<boolean> {
    const readiness = plan.readiness;
    const options = { timeoutMs: PROBE_TIMEOUT_MS };
    switch (readiness.kind) {
      case 'listening': {
        if (readiness.ports.length === 0) return true;
        const result = await this.pod.exec('ss', ['-ltnH'], options);
        const listening = new Set(result.stdout.split('\n').map((line) => Number(line.trim().split(/\s+/)[3]?.split(':').pop())));
        return readiness.ports.every((port) => listening.has(port));
      }
      case 'tcpSocket':
        return (await this.pod.exec('bash', ['-c', `exec 3<>/dev/tcp/${this.pod.ip}/${readiness.port}`], options)).code === 0;
      case 'httpGet': {
        const url = `http://${this.pod.ip}:${readiness.port}${readiness.path}`;
        const result = await this.pod.exec('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '2', url], options);
        const status = Number(result.stdout);
        return status >= 200 && status < 400;
      }
      case 'exec':
        return (await this.pod.exec(readiness.command[0]!, readiness.command.slice(1), options)).code === 0;
    }
  }

  /** Stops every container and cancels pending restarts. */
  async stop(): Promise<void> {
    this.#stopped = true;
    for (const container of this.#containers) if (container.timer !== undefined) clearTimeout(container.timer);
    await this.pod.stopProcesses();
  }
}
