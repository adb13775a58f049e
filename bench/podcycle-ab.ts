/**
 * Interleaved A/B of a pod's run-stop-remove cycle through the CNI chain, for a machine too busy for the podstart
 * suite's one-variant-after-another order (its reference chain alone moved 2.5x between two runs at load 35-50): a
 * reference cluster (no ambit-cni), a 1-node mesh built from another checkout (`--base`, e.g. an export of the commit
 * before a change) and one from this tree, side by side; each iteration runs one pod cycle of every variant in turn
 * (createPod, then deletePod as containerd does: DEL with the netns, DEL without), so every variant sees the same load.
 * Prints p50 per variant and what each adds over the reference chain at p50, with the load average.
 *
 *   node bench/podcycle-ab.ts --base /tmp/base-checkout [--pods 15]
 *
 * Owns: this measurement. Must not know about: how the agent captures a pod.
 */
import { loadavg } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { createCluster } from '../runtime/index.ts';
import { createLocalMesh } from '../runtime/local-mesh.ts';
// @ts-expect-error -- a plain ES module without types: one function, importFromCheckout(checkout, file)
import { importFromCheckout } from './load-checkout.mjs';

const { values } = parseArgs({ options: { base: { type: 'string' }, pods: { type: 'string', default: '15' } } });
if (values.base === undefined) throw new Error('--base <checkout> is required');
const pods = Number(values.pods);
const base = path.resolve(values.base);

interface PodCluster {
  createPod(options: { node: number; namespace: string; name: string; serviceAccount: string; namespaceLabels: Record<string, string> }): Promise<unknown>;
  deletePod(pod: unknown): Promise<void>;
  destroy(): Promise<unknown>;
}
type MeshModule = { createLocalMesh(options: object): Promise<{ cluster: PodCluster; destroy(): Promise<unknown> }> };

const load = (): string => loadavg().map((value) => value.toFixed(1)).join(' ');
const p50 = (samples: number[]): number => [...samples].sort((a, b) => a - b)[Math.floor((samples.length - 1) / 2)] ?? Number.NaN;

const baseMesh = (await (importFromCheckout as (checkout: string, file: string) => Promise<unknown>)(base, 'runtime/local-mesh.ts')) as MeshModule;
const AMBIENT = { 'istio.io/dataplane-mode': 'ambient' };

console.log(`load average at start ${load()}`);
const reference = await createCluster({ nodes: 1, name: 'ab-ref', ambitCni: false });
const before = await baseMesh.createLocalMesh({ nodes: 1, name: 'ab-base', agentEnv: { AMBIT_LOG_LEVEL: 'warn' } });
const after = await createLocalMesh({ nodes: 1, name: 'ab-here', agentEnv: { AMBIT_LOG_LEVEL: 'warn' } });
const variants: { name: string; cluster: PodCluster; namespace: string; labels: Record<string, string> }[] = [
  { name: 'reference chain', cluster: reference as PodCluster, namespace: 'plain', labels: {} },
  { name: 'not enrolled, before', cluster: before.cluster, namespace: 'plain', labels: {} },
  { name: 'not enrolled, after', cluster: after.cluster as PodCluster, namespace: 'plain', labels: {} },
  { name: 'enrolled, before', cluster: before.cluster, namespace: 'shop', labels: AMBIENT },
  { name: 'enrolled, after', cluster: after.cluster as PodCluster, namespace: 'shop', labels: AMBIENT },
];
const samples = new Map(variants.map((variant) => [variant.name, [] as number[]]));
try {
  for (let index = -1; index < pods; index++) {
    for (const variant of variants) {
      const started = performance.now();
      const pod = await variant.cluster.createPod({ node: 0, namespace: variant.namespace, name: `${variant.namespace}${index + 1}`, serviceAccount: `sa${index + 1}`, namespaceLabels: variant.labels });
      await variant.cluster.deletePod(pod);
      if (index >= 0) samples.get(variant.name)!.push(performance.now() - started);
    }
  }
  const anchor = p50(samples.get('reference chain')!);
  console.log(`| run, stop and remove, p50 (ms) | cycle | added over the reference chain |\n|---|---:|---:|`);
  for (const variant of variants) {
    const value = p50(samples.get(variant.name)!);
    console.log(`| ${variant.name} | ${value.toFixed(0)} | ${variant.name === 'reference chain' ? '—' : (value - anchor).toFixed(0)} |`);
  }
  console.log(`${pods} iterations after one warm-up; load average at end ${load()}`);
} finally {
  await after.destroy();
  await before.destroy();
  await reference.destroy();
}
