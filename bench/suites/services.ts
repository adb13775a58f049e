/**
 * Suite "services" (issue 10): what a connection to a Service VIP costs the agent next to one to the pod's IP.
 * One 2-node local mesh (bench/lib/mesh-cluster.ts, agents reading the cluster directory) with a Service in the
 * cluster directory whose one endpoint is the mesh-server pod:
 *
 *   mesh-client (node 1) ─connect VIP:80─> agent node 1 (VIP -> endpoint, target port 8080) ══HBONE══> agent node 2 -> target
 *   mesh-client (node 1) ─connect podIP:8080─> agent node 1 ══HBONE══> agent node 2 -> target
 *
 * Measures, in rounds that alternate the two (pod IP, VIP, pod IP, VIP, ...): new connections one at a time, each
 * to its first echoed byte, and the CPU both agents used per 1,000 of them.
 * Must not know about: how the agent resolves a VIP.
 */
import { existsSync } from 'node:fs';
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { REFERENCE_PLUGINS_DIR } from '../../runtime/index.ts';
import { CpuMeter, type CpuByRole } from '../lib/cpu.ts';
import { APP_PORT, buildMeshTopology, inPod, MESH_SERVER_LABELS, startTarget, type MeshTopology } from '../lib/mesh-cluster.ts';
import { formatNumber, formatRatio, goalMark } from '../lib/report.ts';
import { median, type LatencySummary } from '../lib/stats.ts';
import type { Goal, Suite, SuiteContext, SuiteResult } from '../lib/suite.ts';

/** Issue 10: a VIP connection costs at most 1.1x the agent CPU of a pod-IP one. */
const AT_MOST = 1.1;
const SERVICE_VIP = '10.96.0.10';
const SERVICE_PORT = 80;

export interface Sizes {
  rounds: number;
  connections: number;
}

const FULL: Sizes = { rounds: 4, connections: 1_000 };
const QUICK: Sizes = { rounds: 2, connections: 200 };

export type Variant = 'pod' | 'vip';
const VARIANTS: Variant[] = ['pod', 'vip'];
const LABELS: Record<Variant, string> = { pod: 'pod IP', vip: 'Service VIP' };

interface ConnectRun extends LatencySummary {
  connectionsPerSecond: number;
  operations: number;
  cpu: CpuByRole;
}

export interface VariantFigures {
  runs: ConnectRun[];
  errors: string[];
}

export const servicesSuite: Suite = {
  name: 'services',
  summary: 'new connections to a Service VIP vs to the pod IP: agent CPU per connection, interleaved (issue 10)',
  run,
};

async function run(outer: SuiteContext): Promise<SuiteResult> {
  const began = Date.now();
  const context: SuiteContext = { ...outer, log: (message) => outer.log(`[${((Date.now() - began) / 1000).toFixed(0).padStart(3)} s] ${message}`) };
  const sizes = context.quick ? QUICK : FULL;
  if (process.getuid?.() !== 0 || !existsSync(join(REFERENCE_PLUGINS_DIR, 'bridge'))) {
    throw new Error(`the services suite builds network namespaces with the reference CNI plugins: it needs root and ${REFERENCE_PLUGINS_DIR}/bridge (Debian's containernetworking-plugins)`);
  }
  const figures: Record<Variant, VariantFigures> = { pod: { runs: [], errors: [] }, vip: { runs: [], errors: [] } };
  let topology: MeshTopology | undefined;
  try {
    // Agents at warn: no access-log line per connection, as in the mesh suite's data-path figures.
    topology = await buildMeshTopology({ logLevel: 'warn', log: context.log });
    await startTarget(context.processes, topology.meshServer);
    await publishService(topology);
    await untilAgentKnowsService(topology);
    context.log(`service ${SERVICE_VIP}:${SERVICE_PORT} -> mesh-server:${APP_PORT} known to the client's agent`);
    await measure(context, sizes, topology, figures);
  } finally {
    await context.processes.stopAll();
    await topology?.destroy();
  }
  return buildResult(sizes, figures);
}

async function publishService(topology: MeshTopology): Promise<void> {
  const dir = join(topology.mesh.cluster.clusterDir, 'services');
  await mkdir(dir, { recursive: true });
  const selector = Object.entries(MESH_SERVER_LABELS).map(([key, value]) => `    ${key}: ${value}`);
  const yaml = [
    'apiVersion: v1', 'kind: Service', 'metadata:', '  name: bench-server', `  namespace: ${topology.meshServer.namespace}`, 'spec:', `  clusterIP: ${SERVICE_VIP}`,
    '  selector:', ...selector, '  ports:', `  - port: ${SERVICE_PORT}`, `    targetPort: ${APP_PORT}`, '',
  ].join('\n');
  await writeFile(join(dir, '.bench-server.yaml.tmp'), yaml);
  await rename(join(dir, '.bench-server.yaml.tmp'), join(dir, 'bench-server.yaml'));
}

/** The client's agent (node 1) lists the service with its endpoint in its config dump. */
async function untilAgentKnowsService(topology: MeshTopology): Promise<void> {
  const script = "fetch('http://127.0.0.1:15000/config_dump').then((r) => r.json()).then((d) => process.exit(d.services.some((s) => s.name === 'bench-server' && s.endpoints.length === 1) ? 0 : 1), () => process.exit(1))";
  const deadline = Date.now() + 30_000;
  while ((await topology.mesh.cluster.node(0).exec(process.execPath, ['-e', script])).code !== 0) {
    if (Date.now() > deadline) throw new Error('the client\'s agent did not learn the service in 30 s');
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

async function measure(context: SuiteContext, sizes: Sizes, topology: MeshTopology, figures: Record<Variant, VariantFigures>): Promise<void> {
  const target = (variant: Variant): string[] => (variant === 'vip' ? ['--host', SERVICE_VIP, '--port', String(SERVICE_PORT)] : ['--host', topology.meshServer.ip, '--port', String(APP_PORT)]);
  const connects = async (variant: Variant, count: number): Promise<ConnectRun> => {
    const warmup = Math.round(count / 10);
    const cpu = new CpuMeter({ client: topology.agentPids.node1, server: topology.agentPids.node2 }).start();
    const command = inPod(topology.meshClient, 'load.ts', ['connect', '--count', String(count), '--warmup', String(warmup), ...target(variant)]);
    const result = await context.processes.run<LatencySummary & { connectionsPerSecond: number }>(`connections to the ${LABELS[variant]}`, command.command, command.args);
    return { ...result, operations: count + warmup, cpu: cpu.stop() };
  };
  const attempt = async (variant: Variant, body: () => Promise<void>): Promise<void> => {
    try {
      await body();
    } catch (error) {
      const message = `connections to the ${LABELS[variant]} failed: ${((error as Error).message ?? String(error)).split('\n')[0]}`;
      figures[variant].errors.push(message);
      context.log(message);
    }
  };
  // Warm-up: JIT in both agents, the HBONE pool's connection, certificates.
  for (const variant of VARIANTS) await attempt(variant, async () => void (await connects(variant, Math.round(sizes.connections / 4))));
  for (let round = 1; round <= sizes.rounds; round++) {
    // Alternate which goes first, so a trend in the machine's load does not favour one.
    const order = round % 2 === 1 ? VARIANTS : [...VARIANTS].reverse();
    for (const variant of order) {
      await attempt(variant, async () => {
        const result = await connects(variant, sizes.connections);
        figures[variant].runs.push(result);
        context.log(`round ${round}/${sizes.rounds}, ${LABELS[variant]}: ${formatNumber(result.connectionsPerSecond)}/s, p50 ${formatNumber(result.p50)} µs, client agent ${formatNumber((result.cpu.client ?? 0) * 1e6 / result.operations)} µs CPU per connection`);
      });
    }
  }
}

function ratio(numerator: number | undefined, denominator: number | undefined): number | undefined {
  return numerator === undefined || denominator === undefined || denominator === 0 ? undefined : numerator / denominator;
}

/** CPU milliseconds per 1,000 connections of the role(s), summed over every round. */
function cpuPerThousand(runs: readonly ConnectRun[], roles: readonly string[]): number | undefined {
  if (runs.length === 0) return undefined;
  const cpu = runs.reduce((sum, r) => sum + roles.reduce((inner, role) => inner + (r.cpu[role] ?? 0), 0), 0);
  const count = runs.reduce((sum, r) => sum + r.operations, 0);
  return count === 0 ? undefined : (cpu * 1e3 * 1000) / count;
}

/** Exported so a run's table can be rendered again from its JSON (`data.sizes`, `data.figures`). */
export function buildResult(sizes: Sizes, figures: Record<Variant, VariantFigures>): SuiteResult {
  type Values = Record<Variant, number | undefined>;
  const pick = (select: (f: VariantFigures) => number | undefined): Values => ({ pod: select(figures.pod), vip: select(figures.vip) });
  const medianOf = (values: number[]): number | undefined => (values.length === 0 ? undefined : median(values));
  const rate = pick((f) => medianOf(f.runs.map((r) => r.connectionsPerSecond)));
  const p50 = pick((f) => medianOf(f.runs.map((r) => r.p50)));
  const p99 = pick((f) => medianOf(f.runs.map((r) => r.p99)));
  const clientCpu = pick((f) => cpuPerThousand(f.runs, ['client']));
  const bothCpu = pick((f) => cpuPerThousand(f.runs, ['client', 'server']));

  const goal: Goal = { name: 'agent CPU per new connection (client side, where the VIP is resolved): VIP ÷ pod IP', value: ratio(clientCpu.vip, clientCpu.pod), target: `≤ ${formatNumber(AT_MOST)}x`, met: undefined };
  goal.met = goal.value === undefined ? undefined : goal.value <= AT_MOST + 1e-9;
  const rows: { label: string; values: Values; goal?: Goal }[] = [
    { label: `new connections one at a time (${sizes.connections}): rate, median of ${sizes.rounds} (/s)`, values: rate },
    { label: 'new connection, p50 to first echo, median (µs)', values: p50 },
    { label: 'new connection, p99 to first echo, median (µs)', values: p99 },
    { label: 'client-side agent CPU per 1,000 new connections (ms)', values: clientCpu, goal },
    { label: 'both agents\' CPU per 1,000 new connections (ms)', values: bothCpu },
  ];
  const notes = [
    'One 2-node local mesh (network namespaces, a real ambit agent per node reading the cluster directory, pods by the real CNI chain). ' +
      `A Service (clusterIP ${SERVICE_VIP}, port ${SERVICE_PORT} -> ${APP_PORT}) selects the one enrolled server pod on node 2; the load runs in the enrolled client pod on node 1.`,
    `A warm-up of each, then ${sizes.rounds} rounds alternating which goes first; each runs load.ts connect: ${sizes.connections} new connections one at a time after ${Math.round(sizes.connections / 10)} warm-up, ` +
      'each timed to its first echoed byte, to the pod IP:8080 or to the VIP:80 (the agent picks the endpoint and maps the port).',
    'CPU: user + system seconds of the agent processes from /proc over all rounds, per 1,000 connections (warm-up connections of each run included in the count). ' +
      `Goal (issue 10): the client-side agent's CPU for a VIP connection at most ${formatNumber(AT_MOST)}x that of a pod-IP connection.`,
  ];
  for (const variant of VARIANTS) for (const error of figures[variant].errors) notes.push(`**${LABELS[variant]}**: ${error}`);
  return {
    suite: 'services',
    tables: [{
      title: 'New connections to a Service VIP vs to the pod IP (2-node local runtime, interleaved)',
      columns: ['measure', 'pod IP', 'Service VIP', 'VIP ÷ pod IP', 'goal'],
      rows: rows.map((row) => [row.label, formatNumber(row.values.pod), formatNumber(row.values.vip), formatRatio(ratio(row.values.vip, row.values.pod)), row.goal ? goalMark(row.goal) : '']),
      notes,
    }],
    goals: [goal],
    data: { sizes, figures },
  };
}
