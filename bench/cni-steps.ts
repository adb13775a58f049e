/**
 * Where a pod cycle's milliseconds go, per CNI call and per step, on both chains: a reference cluster (Debian's
 * plugins alone) and a 1-node mesh (control plane, agent at debug). Pods are made and removed one at a time as the
 * podstart suite does (createPod, then deletePod: DEL with the netns, DEL without, then the netns goes), the three
 * variants interleaved so each sees the same load. Printed per variant: the cycle's p50, each plugin process's p50
 * per call (ADD, first DEL, second DEL; as the runtime timed the process), and the rest of the cycle (netns add and
 * removal, the Pod object); then the agent's own "cni call timing" records (agent/cni-trace.ts), read back from its
 * log: p50 of the agent's total and of each step per kind of call.
 *
 *   node bench/cni-steps.ts [--pods 15]
 *
 * Owns: this measurement. Must not know about: how the agent captures a pod (it reads the agent's log).
 */
import { readFile } from 'node:fs/promises';
import { loadavg } from 'node:os';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { createCluster } from '../runtime/index.ts';
import { createLocalMesh } from '../runtime/local-mesh.ts';
import { observeCniPluginRuns } from '../runtime/cni-chain.ts';

const { values } = parseArgs({ options: { pods: { type: 'string', default: '15' } } });
const pods = Number(values.pods);

function p50(samples: number[]): number {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted.length === 0 ? Number.NaN : (sorted[Math.floor((sorted.length - 1) / 2)] as number);
}
const load = (): string => loadavg().map((value) => value.toFixed(1)).join(' ');

/** Per variant: the cycle's samples and, per "<plugin> <call>", the plugin process's samples. */
interface VariantSamples { cycles: number[]; rest: number[]; calls: Map<string, number[]> }

const reference = await createCluster({ nodes: 1, name: 'bench-cnisteps-ref', ambitCni: false });
const mesh = await createLocalMesh({ nodes: 1, name: 'bench-cnisteps', agentEnv: { AMBIT_LOG_LEVEL: 'debug' } });
const variants: { name: string; cluster: typeof reference; namespace: string; labels: Record<string, string> }[] = [
  { name: 'reference chain', cluster: reference, namespace: 'plain', labels: {} },
  { name: 'not enrolled', cluster: mesh.cluster, namespace: 'plain', labels: {} },
  { name: 'enrolled', cluster: mesh.cluster, namespace: 'shop', labels: { 'istio.io/dataplane-mode': 'ambient' } },
];
const samples = new Map<string, VariantSamples>(variants.map((variant) => [variant.name, { cycles: [], rest: [], calls: new Map() }]));
try {
  console.log(`load average at start ${load()}`);
  for (let index = -1; index < pods; index++) {
    for (const variant of variants) {
      const runs: { key: string; ms: number }[] = [];
      let phase = 'ADD';
      observeCniPluginRuns((run) => {
        if (run.command === 'DEL') phase = run.netnsPath === '' ? 'DEL 2' : 'DEL 1';
        runs.push({ key: `${run.type} ${phase}`, ms: run.ms });
      });
      const started = performance.now();
      const pod = await variant.cluster.createPod({ node: 0, namespace: variant.namespace, name: `${variant.namespace}${index + 1}`, serviceAccount: `sa${index + 1}`, namespaceLabels: variant.labels });
      await variant.cluster.deletePod(pod);
      const cycle = performance.now() - started;
      observeCniPluginRuns(undefined);
      if (index < 0) continue;
      const entry = samples.get(variant.name)!;
      entry.cycles.push(cycle);
      entry.rest.push(cycle - runs.reduce((sum, run) => sum + run.ms, 0));
      const perKey = new Map<string, number>();
      for (const run of runs) perKey.set(run.key, (perKey.get(run.key) ?? 0) + run.ms);
      for (const [key, ms] of perKey) entry.calls.set(key, [...(entry.calls.get(key) ?? []), ms]);
    }
  }
  console.log(`load average after the cycles ${load()}; ${pods} pods per variant after one warm-up, interleaved`);
  for (const [name, entry] of samples) {
    const calls = [...entry.calls].map(([key, list]) => `${key} ${p50(list).toFixed(1)}`).join(', ');
    console.log(`${name}: cycle p50 ${p50(entry.cycles).toFixed(1)} ms; rest (netns, objects) ${p50(entry.rest).toFixed(1)}; ${calls}`);
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
  console.log('in the agent:');
  for (const [call, entry] of byCall) {
    const steps = [...entry.steps].map(([step, list]) => `${step} ${p50(list).toFixed(2)}${list.length === entry.totals.length ? '' : ` (in ${list.length})`}`).join(', ');
    console.log(`  ${call} x${entry.totals.length}: total p50 ${p50(entry.totals).toFixed(2)} ms; ${steps}`);
  }
  console.log(`load average at end ${load()}`);
} finally {
  await mesh.destroy();
  await reference.destroy();
}
