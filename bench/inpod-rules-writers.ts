/**
 * A fresh pod's IPv4 capture rules written two ways, alternated in fresh network namespaces: as one nf_tables netlink
 * batch from this process (agent/inpod/nftables.ts, what the agent does with the nf_tables backend) and by
 * iptables-nft-restore run through the agent's spawner into the namespace (what it did before, and still does for
 * the legacy backend). Prints p50 wall time of each and, for the batch, this process's CPU time (user + system: the
 * kernel applies the batch inside the sendmsg, on this thread), with the load average. For the restore's own CPU,
 * `perf stat -e task-clock` of the same command (BENCHMARKS.md).
 *
 *   node bench/inpod-rules-writers.ts [--rounds 30]
 *
 * Owns: this measurement. Must not know about: pods, the agent.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { loadavg } from 'node:os';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { applyFreshRulesOverNetlink } from '../agent/inpod/nftables.ts';
import { renderFreshInstall } from '../agent/inpod/rules.ts';
import { ProcessRunner } from '../shared/process-runner.ts';

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '30' } } });
const rounds = Number(values.rounds);
const load = (): string => loadavg().map((value) => value.toFixed(1)).join(' ');
const p50 = (samples: number[]): number => [...samples].sort((a, b) => a - b)[Math.floor((samples.length - 1) / 2)] ?? Number.NaN;

const text = renderFreshInstall({ inbound: 'tproxy', dnsCapture: true }, 4);
const runner = new ProcessRunner();
const prefix = `ambit-bw${randomBytes(3).toString('hex')}-`;
const netlinkWall: number[] = [];
const netlinkCpu: number[] = [];
const restoreWall: number[] = [];
console.log(`load average at start ${load()}`);
try {
  for (let round = -1; round < rounds; round++) {
    const [a, b] = [`${prefix}a${round + 1}`, `${prefix}b${round + 1}`];
    execFileSync('ip', ['netns', 'add', a]);
    execFileSync('ip', ['netns', 'add', b]);
    try {
      const cpu = process.cpuUsage();
      let started = performance.now();
      const result = applyFreshRulesOverNetlink(`/run/netns/${a}`, text);
      const wall = performance.now() - started;
      const used = process.cpuUsage(cpu);
      if (!result.applied) throw new Error(`batch refused: ${result.reason}`);
      started = performance.now();
      const restored = await runner.run({ argv: ['iptables-nft-restore', '--noflush'], env: process.env, netnsPath: `/run/netns/${b}`, input: text, timeoutMs: 5_000, maxOutputBytes: 1 << 20 });
      const restoreMs = performance.now() - started;
      if (restored.code !== 0) throw new Error(`iptables-nft-restore exited ${restored.code}: ${restored.stderr.toString()}`);
      if (round >= 0) {
        netlinkWall.push(wall);
        netlinkCpu.push((used.user + used.system) / 1000);
        restoreWall.push(restoreMs);
      }
    } finally {
      execFileSync('ip', ['netns', 'del', a]);
      execFileSync('ip', ['netns', 'del', b]);
    }
  }
} finally {
  await runner.stop();
}
console.log(`${rounds} rounds, load average at end ${load()}`);
console.log(`netlink batch: wall p50 ${p50(netlinkWall).toFixed(3)} ms, CPU (this thread, user+system) p50 ${p50(netlinkCpu).toFixed(3)} ms`);
console.log(`iptables-nft-restore through the spawner: wall p50 ${p50(restoreWall).toFixed(2)} ms`);
