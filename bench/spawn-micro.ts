/**
 * Micro-benchmark: N one-shot starts of a real CNI plugin (`/usr/lib/cni/loopback`, CNI_COMMAND=VERSION, a config on
 * stdin: a Go binary's start, as the CNI chain pays per call), C at a time, from Node's `child_process.spawn` versus
 * through ambit-spawner (shared/process-runner.ts). Rounds alternate so both see the same load. Reports wall time
 * and how long the main thread was blocked: the summed duration of the synchronous spawn()/run() calls and the
 * event loop's delay (perf_hooks' histogram). The process holds a heap ballast like a busy supervisor's (a fork
 * copies its page tables: the bigger the process, the longer Node's spawn blocks).
 *
 *   node bench/spawn-micro.ts [--count 200] [--concurrency 8] [--rounds 3] [--ballast-mb 150]
 *
 * Owns: this measurement. Must not know about: pods or the runtime's callers.
 */
import { spawn } from 'node:child_process';
import { loadavg } from 'node:os';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { ProcessRunner } from '../shared/process-runner.ts';

const PLUGIN = '/usr/lib/cni/loopback';
const CONFIG = JSON.stringify({ cniVersion: '1.0.0', name: 'bench', type: 'loopback' });
const ENV = { PATH: process.env.PATH, CNI_COMMAND: 'VERSION' };

const { values } = parseArgs({
  options: {
    count: { type: 'string', default: '200' },
    concurrency: { type: 'string', default: '8' },
    rounds: { type: 'string', default: '3' },
    'ballast-mb': { type: 'string', default: '150' },
  },
});
const count = Number(values.count);
const concurrency = Number(values.concurrency);
const rounds = Number(values.rounds);

// Touched memory, as a supervisor's heap is: 1 MiB arrays of numbers.
const ballast: Float64Array[] = [];
for (let i = 0; i < Number(values['ballast-mb']); i++) ballast.push(new Float64Array(131_072).fill(i));

let blockedMs = 0;

function viaNode(): Promise<void> {
  return new Promise((resolve, reject) => {
    const start = performance.now();
    const child = spawn(PLUGIN, [], { env: ENV, stdio: ['pipe', 'pipe', 'pipe'] });
    blockedMs += performance.now() - start;
    let stdout = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.resume();
    child.once('error', reject);
    child.once('close', (code) => (code === 0 && stdout.includes('cniVersion') ? resolve() : reject(new Error(`exit ${code}`))));
    child.stdin.end(CONFIG);
  });
}

const runner = new ProcessRunner();
async function viaSpawner(): Promise<void> {
  const start = performance.now();
  const pending = runner.run({ argv: [PLUGIN], env: ENV, input: CONFIG });
  blockedMs += performance.now() - start;
  const result = await pending;
  if (result.code !== 0 || !result.stdout.includes('cniVersion')) throw new Error(`exit ${result.code}`);
}

async function measure(name: string, one: () => Promise<void>): Promise<void> {
  blockedMs = 0;
  const delay = monitorEventLoopDelay({ resolution: 5 });
  delay.enable();
  const load = loadavg()[0]!.toFixed(1);
  const start = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < count) {
        next++;
        await one();
      }
    }),
  );
  const wallMs = performance.now() - start;
  delay.disable();
  console.log(
    `${name.padEnd(8)} ${count} starts, ${concurrency} at a time: wall ${(wallMs / 1000).toFixed(2)} s, ` +
      `${((count * 1000) / wallMs).toFixed(0)}/s, blocked in spawn ${blockedMs.toFixed(0)} ms ` +
      `(${(blockedMs / count).toFixed(2)} ms each), event-loop delay p50 ${(delay.percentile(50) / 1e6).toFixed(1)} ms ` +
      `p99 ${(delay.percentile(99) / 1e6).toFixed(1)} ms max ${(delay.max / 1e6).toFixed(0)} ms, load ${load}`,
  );
}

await viaSpawner(); // the spawner's own start is once per process, not per command
for (let round = 0; round < rounds; round++) {
  await measure('node', viaNode);
  await measure('spawner', viaSpawner);
}
runner.close();
console.log(`ballast ${ballast.length} MiB, rss ${(process.memoryUsage().rss / 2 ** 20).toFixed(0)} MiB`);
