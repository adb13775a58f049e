/**
 * bench/lib/cpu.ts, the meter behind every suite's CPU rows, and the mesh suite's "in the kernel" row (the request
 * rows' system time): a process busy in system calls reads mostly kernel time, one busy in its own code reads
 * almost none, and the kernel part never exceeds the whole. Real processes, real /proc readings.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { CpuMeter } from '../../bench/lib/cpu.ts';

/** Meters `command` for 1.5 s of wall time (it runs until killed): user + system and system CPU seconds. */
async function meter(command: string, args: string[]): Promise<{ all: number; system: number }> {
  const child = spawn(command, args, { stdio: 'ignore' });
  try {
    await once(child, 'spawn');
    const all = new CpuMeter({ work: child.pid! }).start();
    const system = new CpuMeter({ work: child.pid! }, 'system').start();
    await new Promise((resolve) => setTimeout(resolve, 1500));
    return { system: system.stop()['work']!, all: all.stop()['work']! };
  } finally {
    child.kill('SIGKILL');
    if (child.exitCode === null && child.signalCode === null) await once(child, 'exit');
  }
}

test('a process busy in system calls reads mostly kernel time, one busy in its own loop almost none', async (t) => {
  // 64 KiB reads of /dev/zero: the kernel fills each buffer; dd's own code is a loop around read(2)/write(2).
  const syscalls = await meter('dd', ['if=/dev/zero', 'of=/dev/null', 'bs=64k']);
  // A shell's empty loop: its own code, no system call per turn.
  const loop = await meter('sh', ['-c', 'while :; do :; done']);
  t.log(`dd bs=64k: ${syscalls.all.toFixed(2)} s, ${syscalls.system.toFixed(2)} in the kernel; sh loop: ${loop.all.toFixed(2)} s, ${loop.system.toFixed(2)} in the kernel`);
  // At least a few ticks each, or the shares below say nothing (even on a loaded machine 1.5 s gets some CPU).
  t.true(syscalls.all >= 0.1 && loop.all >= 0.1, 'both ran');
  t.true(syscalls.system <= syscalls.all && loop.system <= loop.all, 'the kernel part is part of the whole');
  t.true(syscalls.system >= 0.4 * syscalls.all, 'system calls: largely kernel time (0.58-0.67 of it here)');
  t.true(loop.system <= 0.2 * loop.all, 'a loop in user space: hardly any kernel time');
});
