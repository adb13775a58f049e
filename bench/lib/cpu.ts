/**
 * CPU time and memory of processes, read from /proc, so a suite can say what each relay cost.
 *
 * Owns: reading a process's user+system CPU seconds (all its threads) and resident memory, and a meter that
 * snapshots a named set of processes before and after a measured section.
 * Must not know about: which processes they are or what load ran; suites divide by their own units of work
 * (per GiB, per round trip, per 1,000 requests).
 */
import { readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';

/** Kernel clock ticks per second (USER_HZ); /proc reports CPU time in these. */
const CLOCK_TICKS_PER_SECOND = readClockTicks();

function readClockTicks(): number {
  try {
    const value = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
    return Number.isFinite(value) && value > 0 ? value : 100;
  } catch {
    return 100; // Linux's USER_HZ on every mainstream architecture
  }
}

/** Which CPU time a reading counts: user + system (the default everywhere), or the kernel's share alone. */
export type CpuKind = 'all' | 'system';

/** User + system CPU seconds the process (every thread of it) has used so far, or only the system part. */
export function processCpuSeconds(pid: number, kind: CpuKind = 'all'): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The command name (field 2) is in parentheses and may hold spaces; fields after it are space-separated.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // After the name: state is field 3, so utime (14) and stime (15) are at indices 11 and 12.
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  return (kind === 'system' ? stime : utime + stime) / CLOCK_TICKS_PER_SECOND;
}

/** Resident set size in bytes (VmRSS), or undefined when the process is gone. */
export function processRssBytes(pid: number): number | undefined {
  try {
    const match = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match ? Number(match[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** Resident memory split as the kernel counts it: anonymous (heaps, stacks) and file-backed (the binary's pages, shared). */
export interface ResidentMemory {
  rss: number;
  anon: number;
  file: number;
}

/** VmRSS, RssAnon and RssFile in bytes, or undefined when the process is gone. */
export function processResidentMemory(pid: number): ResidentMemory | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kib = (field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+)\\s+kB`, 'm').exec(status)?.[1] ?? NaN) * 1024;
    const memory = { rss: kib('VmRSS'), anon: kib('RssAnon'), file: kib('RssFile') };
    return Number.isFinite(memory.rss) ? memory : undefined;
  } catch {
    return undefined;
  }
}

export type CpuByRole = Record<string, number>;

/**
 * Snapshots CPU seconds of named processes; `stop()` returns what each used since `start()`.
 * Resolution is one clock tick (10 ms), so measure sections that last at least a second or so.
 */
export class CpuMeter {
  readonly #pids: ReadonlyMap<string, number>;
  readonly #kind: CpuKind;
  #before = new Map<string, number>();

  constructor(pidsByRole: Record<string, number>, kind: CpuKind = 'all') {
    this.#pids = new Map(Object.entries(pidsByRole));
    this.#kind = kind;
  }

  start(): this {
    this.#before = new Map([...this.#pids].map(([role, pid]) => [role, processCpuSeconds(pid, this.#kind)]));
    return this;
  }

  stop(): CpuByRole {
    const used: CpuByRole = {};
    for (const [role, pid] of this.#pids) used[role] = processCpuSeconds(pid, this.#kind) - (this.#before.get(role) ?? 0);
    return used;
  }
}

/** Sum of the CPU seconds of every role. */
export function totalCpu(used: CpuByRole): number {
  return Object.values(used).reduce((sum, seconds) => sum + seconds, 0);
}
