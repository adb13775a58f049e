/**
 * Where a pod cycle's CNI milliseconds go inside the agent: a 1-node mesh (control plane, agent at debug), pods made
 * and removed one at a time as the podstart suite does (createPod, then deletePod: DEL with the netns, DEL without),
 * not enrolled then enrolled; then the agent's "cni call timing" records (agent/cni-trace.ts) are read back from its
 * log and summarised per kind of call: p50 of the agent's total and of each step, in milliseconds, beside the
 * cycle's own p50 as the runtime saw it.
 *
 *   node bench/cni-steps.ts [--pods 15]
 *
 * Owns: this measurement. Must not know about: how the agent captures a pod (it reads the agent's log).
 */
import { readFile } from 'node:fs/promises';
import { loadavg } from 'node:os';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { createLocalMesh } from '../runtime/local-mesh.ts';

const { values } = parseArgs({ options: { pods: { type: 'string', default: '15' } } });
const pods = Number(values.pods);

function p50(samples: number[]): number {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted.length === 0 ? Number.NaN : (sorted[Math.floor((sorted.length - 1) / 2)] as number);
}

const mesh = await createLocalMesh({ nodes: 1, name: 'bench-cnisteps', agentEnv: { AMBIT_LOG_LEVEL: 'debug' } });
const cycles: Record<string, number[]> = { plain: [], mesh: [] };
try {
  console.log(`load average ${loadavg().map((value) => value.toFixed(1)).join(' ')}`);
  for (const [prefix, labels] of [['plain', {}], ['mesh', { 'istio.io/dataplane-mode': 'ambient' }]] as const) {
    for (let index = -1; index < pods; index++) {
      const started = performance.now();
      const pod = await mesh.cluster.createPod({ node: 0, namespace: prefix === 'plain' ? 'plain' : 'shop', name: `${prefix}${index + 1}`, serviceAccount: `sa${index + 1}`, namespaceLabels: labels });
      await mesh.cluster.deletePod(pod);
      if (index >= 0) cycles[prefix]!.push(performance.now() - started);
    }
  }
  // The release work after a DEL's answer logs its own record: give it a moment to land in the log.
  await new Promise((resolve) => setTimeout(resolve, 500));
  const log = await readFile(mesh.cluster.nodes[0]!.agentLogFile, 'utf8');
  const byCall = new Map<string, { totals: number[]; steps: Map<string, number[]> }>();
  for (const line of log.split('\n')) {
    if (!line.includes('"cni call timing"')) continue;
    const record = JSON.parse(line) as { call: string; totalMs: number; steps: Record<string, number> };
    const entry = byCall.get(record.call) ?? { totals: [], steps: new Map<string, number[]>() };
    byCall.set(record.call, entry);
    entry.totals.push(record.totalMs);
    for (const [step, ms] of Object.entries(record.steps)) entry.steps.set(step, [...(entry.steps.get(step) ?? []), ms]);
  }
  console.log(`cycle p50: not enrolled ${p50(cycles.plain!).toFixed(1)} ms, enrolled ${p50(cycles.mesh!).toFixed(1)} ms (${pods} pods each)`);
  for (const [call, entry] of byCall) {
    const steps = [...entry.steps].map(([step, samples]) => `${step} ${p50(samples).toFixed(2)}`).join(', ');
    console.log(`${call} x${entry.totals.length}: total p50 ${p50(entry.totals).toFixed(2)} ms; ${steps}`);
  }
  console.log(`load average ${loadavg().map((value) => value.toFixed(1)).join(' ')}`);
} finally {
  await mesh.destroy();
}
