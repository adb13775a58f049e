/**
 * Suite "podstart": what the mesh adds to starting a pod. A pod's network is made by the real CNI chain, as a
 * container runtime runs it (loopback, bridge + host-local, then ambit-cni); the figure is the time from "make the
 * sandbox" to "the chain answered", measured by the local runtime's createPod for pods made one at a time:
 *
 *   reference chain    a cluster without ambit-cni: Debian's Go plugins alone (the anchor)
 *   not enrolled       ambit-cni chained: it reads the pod and its namespace, tells the agent it exists, passes through
 *   enrolled           ambit-cni chained: the agent installs the in-pod rules, opens the listeners, has the
 *                      pod's certificate signed (control plane CA), then the plugin answers
 *
 * plus the ambit-cni process alone (VERSION: Node start-up and loading the plugin's modules) with and without
 * Node's compile cache, which the installed wrapper turns on.
 * Must not know about: how the agent captures a pod.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createCluster, REFERENCE_PLUGINS_DIR, AMBIT_CNI_DIR, type Cluster } from '../../runtime/index.ts';
import { createLocalMesh, type LocalMesh } from '../../runtime/local-mesh.ts';
import { run as runCommand } from '../../runtime/exec.ts';
import { formatNumber, formatRatio } from '../lib/report.ts';
import { summarizeLatencies, type LatencySummary } from '../lib/stats.ts';
import type { Suite, SuiteContext, SuiteResult } from '../lib/suite.ts';

interface Sizes {
  pods: number;
  versions: number;
}

const FULL: Sizes = { pods: 30, versions: 20 };
const QUICK: Sizes = { pods: 5, versions: 5 };

type Variant = 'reference' | 'notEnrolled' | 'enrolled';
const LABELS: Record<Variant, string> = {
  reference: 'reference chain only (loopback, bridge + host-local)',
  notEnrolled: 'with ambit-cni, pod not enrolled',
  enrolled: 'with ambit-cni, pod enrolled (captured by the agent)',
};

interface Figures {
  podStart: Partial<Record<Variant, LatencySummary>>;
  /** Run, stop and remove: createPod then deletePod (ADD, then DEL twice), one pod at a time. */
  podCycle: Partial<Record<Variant, LatencySummary>>;
  pluginAlone: { cached?: LatencySummary; uncached?: LatencySummary };
  errors: string[];
}

export const podstartSuite: Suite = {
  name: 'podstart',
  summary: 'time to start a pod\'s network through the real CNI chain: reference plugins alone vs with ambit-cni, enrolled or not',
  run,
};

async function timePods(cluster: Cluster, count: number, namespace: string, namespaceLabels: Record<string, string>, prefix: string): Promise<{ start: LatencySummary; cycle: LatencySummary }> {
  const starts: number[] = [];
  const cycles: number[] = [];
  // One warm-up pod: the first start also pays for the namespace object and, enrolled, the first certificate path.
  for (let index = -1; index < count; index++) {
    const started = performance.now();
    const pod = await cluster.createPod({ node: 0, namespace, name: `${prefix}${index + 1}`, serviceAccount: `sa${index + 1}`, namespaceLabels });
    const up = performance.now();
    // Stop and remove as containerd does: DEL with the netns, DEL again without, then the netns and the Pod go.
    await cluster.deletePod(pod);
    if (index >= 0) {
      starts.push(up - started);
      cycles.push(performance.now() - started);
    }
  }
  return { start: summarizeLatencies(starts), cycle: summarizeLatencies(cycles) };
}

async function timePluginVersion(count: number, cache: boolean): Promise<LatencySummary> {
  const samples: number[] = [];
  const env = { PATH: process.env.PATH, CNI_COMMAND: 'VERSION', ...(cache ? {} : { NODE_DISABLE_COMPILE_CACHE: '1' }) };
  for (let index = -1; index < count; index++) {
    const started = performance.now();
    const result = await runCommand(join(AMBIT_CNI_DIR, 'ambit-cni'), [], { env, input: '{"cniVersion":"1.0.0"}' });
    if (result.code !== 0) throw new Error(`ambit-cni VERSION failed: ${result.stdout}${result.stderr}`);
    if (index >= 0) samples.push(performance.now() - started);
  }
  return summarizeLatencies(samples);
}

async function run(context: SuiteContext): Promise<SuiteResult> {
  const sizes = context.quick ? QUICK : FULL;
  if (process.getuid?.() !== 0 || !existsSync(join(REFERENCE_PLUGINS_DIR, 'bridge'))) {
    throw new Error(`the podstart suite builds network namespaces with the reference CNI plugins: it needs root and ${REFERENCE_PLUGINS_DIR}/bridge`);
  }
  const figures: Figures = { podStart: {}, podCycle: {}, pluginAlone: {}, errors: [] };
  let baseline: Cluster | undefined;
  let mesh: LocalMesh | undefined;
  try {
    context.log(`reference chain: ${sizes.pods} pods`);
    baseline = await createCluster({ nodes: 1, name: 'bench-podstart-ref', ambitCni: false });
    ({ start: figures.podStart.reference, cycle: figures.podCycle.reference } = await timePods(baseline, sizes.pods, 'plain', {}, 'ref'));
    await baseline.destroy();
    baseline = undefined;

    context.log(`mesh (1 node, control plane): ${sizes.pods} pods not enrolled, then ${sizes.pods} enrolled`);
    mesh = await createLocalMesh({ nodes: 1, name: 'bench-podstart', agentEnv: { AMBIT_LOG_LEVEL: 'warn' } });
    ({ start: figures.podStart.notEnrolled, cycle: figures.podCycle.notEnrolled } = await timePods(mesh.cluster, sizes.pods, 'plain', {}, 'plain'));
    ({ start: figures.podStart.enrolled, cycle: figures.podCycle.enrolled } = await timePods(mesh.cluster, sizes.pods, 'shop', { 'istio.io/dataplane-mode': 'ambient' }, 'mesh'));
  } catch (error) {
    figures.errors.push((error as Error).message);
    context.log(`pod starts failed: ${(error as Error).message}`);
  } finally {
    await baseline?.destroy();
    await mesh?.destroy();
  }
  context.log(`ambit-cni alone: ${sizes.versions} VERSION runs with the compile cache, ${sizes.versions} without`);
  figures.pluginAlone.cached = await timePluginVersion(sizes.versions, true);
  figures.pluginAlone.uncached = await timePluginVersion(sizes.versions, false);
  return buildResult(sizes, figures);
}

function buildResult(sizes: Sizes, figures: Figures): SuiteResult {
  const rowsOf = (table: Partial<Record<Variant, LatencySummary>>): string[][] => (['reference', 'notEnrolled', 'enrolled'] as const).map((variant) => {
    const summary = table[variant];
    const reference = table.reference;
    return [
      LABELS[variant],
      formatNumber(summary?.p50),
      formatNumber(summary?.p99),
      variant === 'reference' ? '—' : formatNumber(summary && reference ? summary.p50 - reference.p50 : undefined),
      variant === 'reference' ? '—' : formatRatio(summary && reference ? summary.p50 / reference.p50 : undefined),
    ];
  });
  const rows = rowsOf(figures.podStart);
  const { cached, uncached } = figures.pluginAlone;
  return {
    suite: 'podstart',
    tables: [
      {
        title: `Pod start through the CNI chain (${sizes.pods} pods one at a time, ms)`,
        columns: ['chain', 'p50', 'p99', 'added at p50', '÷ reference'],
        rows,
        notes: [
          'From making the sandbox to the chain\'s answer (createPod: netns, CNI ADD of every plugin, the Pod object). Enrolled includes the agent\'s capture (rules, listeners, certificate).',
          ...figures.errors.map((error) => `failed: ${error}`),
        ],
      },
      {
        title: `Pod run, stop and remove through the CNI chain (${sizes.pods} pods one at a time, ms)`,
        columns: ['chain', 'p50', 'p99', 'added at p50', '÷ reference'],
        rows: rowsOf(figures.podCycle),
        notes: ['createPod, then deletePod as containerd does (stop, DEL with the netns, DEL again without, netns and Pod removed): every CNI call a pod costs. The goal of issue 14: ambit-cni adds at most 50 ms at p50.'],
      },
      {
        title: `ambit-cni process alone (VERSION, ${sizes.versions} runs, ms)`,
        columns: ['', 'p50', 'p99'],
        rows: [
          ['no agent: the forwarder runs the Node plugin, with Node\'s compile cache (the wrapper\'s default)', formatNumber(cached?.p50), formatNumber(cached?.p99)],
          ['no agent, without the compile cache (NODE_DISABLE_COMPILE_CACHE=1)', formatNumber(uncached?.p50), formatNumber(uncached?.p99)],
        ],
        notes: ['Run after the mesh is gone, so the native forwarder finds no agent and takes its slow path: Node start-up and loading the plugin\'s modules, what every CNI call paid before the forwarder and still pays when the agent is down.'],
      },
    ],
    goals: [],
    data: { sizes, ...figures },
  };
}
