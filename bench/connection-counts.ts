/**
 * What one new connection costs each agent, counted rather than timed (issue 14, the storm step): the mesh suite's
 * two-node topology (bench/lib/mesh-cluster.ts), new connections one at a time from the mesh client pod to the
 * mesh server pod's echo target (`load.ts connect`: connect, `E` + one byte, first echo, close), and per connection
 * and per agent (node 1 = client side, node 2 = server side):
 *   - bytes the agent's V8 heap allocated (the sum of `allocated=` over the GCs `--trace-gc-nvp` logs in the window),
 *     scavenges and mark-compacts: what the garbage collector is given to do, whatever else runs on the machine;
 *   - CPU (user + system from /proc, ms): load-dependent, reported beside the counts;
 *   - syscalls by name (`strace -c -f` attached for a second window of the same size; strace slows the agent, so
 *     this window's CPU is not used).
 * A/B: run it from each tree in turn (`node bench/connection-counts.ts --count 2000`); the counts of one tree move
 * little between runs, unlike its CPU on a shared machine.
 *
 * Owns: nothing the suites use; a measuring tool. Must not know about: the agent's code.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CpuMeter } from './lib/cpu.ts';
import { APP_PORT, buildMeshTopology, inPod, startTarget } from './lib/mesh-cluster.ts';
import { ProcessGroup } from './lib/processes.ts';

const args = process.argv.slice(2);
const option = (name: string, fallback: number): number => {
  const index = args.indexOf(`--${name}`);
  return index >= 0 ? Number(args[index + 1]) : fallback;
};
const count = option('count', 2000);
const warmup = option('warmup', 1000);
const withStrace = !args.includes('--no-strace');
/** `--heap-sample DIR`: V8's sampling heap profile of each agent over the counted window (collected objects kept). */
const heapSampleIndex = args.indexOf('--heap-sample');
const heapSampleDir = heapSampleIndex >= 0 ? args[heapSampleIndex + 1] : undefined;

interface GcWindow {
  allocated: number;
  scavenges: number;
  markCompacts: number;
}

/** The GC lines `--trace-gc-nvp` wrote to an agent's log after byte `from`. */
function gcSince(logFile: string, from: number): GcWindow {
  const text = readFileSync(logFile).subarray(from).toString('latin1');
  const window: GcWindow = { allocated: 0, scavenges: 0, markCompacts: 0 };
  for (const line of text.split('\n')) {
    const kind = /\bgc=(\w+)/.exec(line)?.[1];
    if (kind === undefined) continue;
    const allocated = Number(/\ballocated=(\d+)/.exec(line)?.[1] ?? 0);
    // V8 prints a wrapped-around size_t when its counter went backwards (seen on a mark-compact): not a figure.
    if (allocated < 2 ** 40) window.allocated += allocated;
    if (kind === 's') window.scavenges++;
    else if (kind === 'ms' || kind === 'mc') window.markCompacts++;
  }
  return window;
}

async function strace(pids: number[], run: () => Promise<void>): Promise<Map<number, Map<string, number>>> {
  const outputs = pids.map((pid) => `/tmp/connection-counts-strace-${pid}.txt`);
  const tracers = pids.map((pid, index) => spawn('strace', ['-c', '-f', '-q', '-o', outputs[index]!, '-p', String(pid)], { stdio: 'ignore' }));
  await new Promise((resolve) => setTimeout(resolve, 1000));
  await run();
  await Promise.all(tracers.map((tracer) => new Promise((resolve) => { tracer.once('exit', resolve); tracer.kill('SIGINT'); })));
  const result = new Map<number, Map<string, number>>();
  pids.forEach((pid, index) => {
    const calls = new Map<string, number>();
    for (const line of readFileSync(outputs[index]!, 'utf8').split('\n')) {
      const fields = line.trim().split(/\s+/);
      // % time, seconds, usecs/call, calls, [errors], syscall
      if (fields.length < 5 || !/^\d/.test(fields[0]!)) continue;
      calls.set(fields[fields.length - 1]!, Number(fields[3]));
    }
    result.set(pid, calls);
  });
  return result;
}

const processes = new ProcessGroup(mkdtempSync(join(tmpdir(), 'ambit-connection-counts-')));
const log = (message: string): void => console.error(`[${new Date().toISOString().slice(11, 19)}] ${message}`);
// V8's GC trace is refused in NODE_OPTIONS: a wrapper puts it on the agents' node command line.
const wrapper = join(mkdtempSync(join(tmpdir(), 'ambit-connection-counts-node-')), 'node-trace-gc');
const heapSampler = heapSampleDir === undefined ? '' : ` --import ${join(import.meta.dirname, 'tools', 'heap-sample-on-signal.ts')}`;
const heapSamplerEnv = heapSampleDir === undefined ? '' : `AMBIT_HEAP_SAMPLE_DIR=${heapSampleDir} `;
writeFileSync(wrapper, `#!/bin/sh\nnode="$1"; shift; ${heapSamplerEnv}exec "$node" --trace-gc-nvp${heapSampler} "$@"\n`, { mode: 0o755 });
const topology = await buildMeshTopology({ logLevel: 'warn', log, agentCommandPrefix: [wrapper] });
try {
  await startTarget(processes, topology.meshServer);
  const connect = async (n: number): Promise<void> => {
    const command = inPod(topology.meshClient, 'load.ts', ['connect', '--count', String(n), '--warmup', '0', '--host', topology.meshServer.ip, '--port', String(APP_PORT)]);
    await processes.run('connections', command.command, command.args);
  };
  log(`warm-up: ${warmup} connections`);
  await connect(warmup);
  const pids = { client: topology.agentPids.node1, server: topology.agentPids.node2 };
  const logs = { client: topology.mesh.cluster.node(0).agentLogFile, server: topology.mesh.cluster.node(1).agentLogFile };
  const offsets = { client: statSync(logs.client).size, server: statSync(logs.server).size };
  const signalAgents = (): void => {
    if (heapSampleDir !== undefined) for (const pid of [pids.client, pids.server]) process.kill(pid, 'SIGUSR2');
  };
  signalAgents();
  const cpu = new CpuMeter(pids).start();
  log(`counted: ${count} connections`);
  await connect(count);
  const used = cpu.stop();
  signalAgents();
  const report: Record<string, unknown> = { count, load: readFileSync('/proc/loadavg', 'utf8').trim() };
  for (const side of ['client', 'server'] as const) {
    const gc = gcSince(logs[side], offsets[side]);
    report[side] = {
      allocatedKiBPerConnection: +(gc.allocated / 1024 / count).toFixed(2),
      scavengesPer1000: +((gc.scavenges * 1000) / count).toFixed(2),
      markCompactsPer1000: +((gc.markCompacts * 1000) / count).toFixed(2),
      cpuMsPer1000: +((used[side]! * 1e6) / count).toFixed(1),
    };
  }
  if (withStrace) {
    log(`strace: ${count} connections`);
    const calls = await strace([pids.client, pids.server], () => connect(count));
    for (const side of ['client', 'server'] as const) {
      const perConnection: Record<string, number> = {};
      let total = 0;
      for (const [name, n] of calls.get(pids[side]) ?? []) {
        if (name === 'total') continue;
        total += n;
        if (n / count >= 0.05) perConnection[name] = +(n / count).toFixed(2);
      }
      (report[side] as Record<string, unknown>).syscallsPerConnection = +(total / count).toFixed(2);
      (report[side] as Record<string, unknown>).syscalls = perConnection;
    }
  }
  console.log(JSON.stringify(report, null, 1));
} finally {
  await processes.stopAll();
  await topology.destroy();
}
