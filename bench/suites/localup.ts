/**
 * Suite "localup": how long `ambitctl local up -f DIR` takes from the command to every pod Ready, for a directory of
 * one enrolled namespace and a Deployment of busybox pods (a process each, no readiness probe: Ready once running),
 * spread over the nodes. Run as a user runs it (the real command line, its detached supervisor, the real CNI chain
 * with ambit-cni, the agents capturing each pod and getting its certificate from the control plane's CA), then
 * `ambitctl local down`.
 *
 * The supervisor's state file gives the split: nodes, control plane and agents up; then the pods, made 4 at a time
 * (CREATE_CONCURRENCY in runtime/workloads/supervisor.ts), each timed as a whole and for its CNI ADD (every plugin of
 * the chain, ambit-cni's wait for the agent's capture included). "CNI busy" is the wall time during which at least
 * one pod's CNI ADD ran, as a share of the time from `up` to all Ready.
 *
 * Must not know about: how the supervisor makes pods (it reads the state file a user's `ambitctl local status` reads).
 */
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { run as runCommand } from '../../runtime/exec.ts';
import type { LocalState } from '../../runtime/workloads/local-state.ts';
import { formatNumber } from '../lib/report.ts';
import { summarizeLatencies, type LatencySummary } from '../lib/stats.ts';
import type { Goal, Suite, SuiteContext, SuiteResult } from '../lib/suite.ts';

const AMBITCTL = path.resolve(import.meta.dirname, '..', '..', 'ambitctl', 'ambitctl');

interface Size {
  nodes: number;
  pods: number;
}

const FULL: Size[] = [
  { nodes: 2, pods: 20 },
  { nodes: 5, pods: 100 },
];
const QUICK: Size[] = [{ nodes: 2, pods: 6 }];
/** The issue's goal: 100 pods Ready in under 30 s on a 2-core machine. */
const GOAL_PODS = 100;
const GOAL_SECONDS = 30;
const UP_TIMEOUT_S = 900;

interface Figures {
  size: Size;
  /** `up` run to exit (every pod Ready), s. */
  totalS?: number;
  /** Supervisor start to nodes, control plane and agents up, s. */
  meshS?: number;
  /** Nodes up to the last pod Ready, s. */
  podsS?: number;
  createMs?: LatencySummary;
  cniMs?: LatencySummary;
  /** Wall time with at least one CNI ADD running, s, and its share of totalS. */
  cniBusyS?: number;
  cniShare?: number;
  /** `down`, s. */
  downS?: number;
  loadAverage: number;
  error?: string;
}

export const localupSuite: Suite = {
  name: 'localup',
  summary: 'ambitctl local up: time from the command to every pod Ready (2 nodes x 20 pods, 5 nodes x 100 pods), with the CNI chain\'s share',
  run,
};

function manifests(pods: number): string {
  return `apiVersion: v1
kind: Namespace
metadata:
  name: bench
  labels: {istio.io/dataplane-mode: ambient}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: sleep, namespace: bench}
spec:
  replicas: ${pods}
  selector: {matchLabels: {app: sleep}}
  template:
    metadata: {labels: {app: sleep}}
    spec:
      containers:
      - {name: sleep, image: busybox}
`;
}

/** Total length of the union of [start, end] intervals (ms). */
function unionLength(intervals: [number, number][]): number {
  const sorted = [...intervals].sort((a, b) => a[0] - b[0]);
  let total = 0;
  let current: [number, number] | undefined;
  for (const interval of sorted) {
    if (current === undefined || interval[0] > current[1]) {
      if (current !== undefined) total += current[1] - current[0];
      current = [...interval];
    } else {
      current[1] = Math.max(current[1], interval[1]);
    }
  }
  if (current !== undefined) total += current[1] - current[0];
  return total;
}

async function measure(context: SuiteContext, size: Size): Promise<Figures> {
  const figures: Figures = { size, loadAverage: Number((await readFile('/proc/loadavg', 'utf8')).split(' ')[0]) };
  const dir = path.join(context.runDir, `localup-${size.nodes}x${size.pods}`);
  const runDir = path.join(context.runDir, `localup-run-${size.nodes}x${size.pods}`);
  await mkdir(dir, { recursive: true });
  await writeFile(path.join(dir, 'bench.yaml'), manifests(size.pods));
  const ctl = (...args: string[]) => runCommand(AMBITCTL, ['local', ...args, '--run-dir', runDir], { timeoutMs: (UP_TIMEOUT_S + 60) * 1000 });
  try {
    const started = performance.now();
    const up = await ctl('up', '-f', dir, '--nodes', String(size.nodes), '--timeout', String(UP_TIMEOUT_S));
    const total = performance.now() - started;
    if (up.code !== 0) throw new Error(`ambitctl local up exited ${up.code}: ${up.stderr.trim().split('\n').slice(-5).join(' / ')}`);
    const state = JSON.parse(await readFile(path.join(runDir, 'state.json'), 'utf8')) as LocalState;
    const pods = state.pods.filter((pod) => pod.readyAt !== undefined && pod.createStartedAt !== undefined && pod.createMs !== undefined && pod.cniMs !== undefined);
    if (pods.length !== size.pods) throw new Error(`${pods.length} of ${size.pods} pods have start-up timings`);
    const lastReady = Math.max(...pods.map((pod) => pod.readyAt!));
    figures.totalS = total / 1000;
    figures.meshS = (state.meshUpAt! - state.startedAt) / 1000;
    figures.podsS = (lastReady - state.meshUpAt!) / 1000;
    figures.createMs = summarizeLatencies(pods.map((pod) => pod.createMs!));
    figures.cniMs = summarizeLatencies(pods.map((pod) => pod.cniMs!));
    const busy = unionLength(pods.map((pod) => [pod.createStartedAt! + pod.createMs! - pod.cniMs!, pod.createStartedAt! + pod.createMs!]));
    figures.cniBusyS = busy / 1000;
    figures.cniShare = busy / total;
  } catch (error) {
    figures.error = (error as Error).message;
    context.log(`${size.nodes} nodes x ${size.pods} pods failed: ${figures.error}`);
  } finally {
    const downStarted = performance.now();
    const down = await ctl('down');
    figures.downS = (performance.now() - downStarted) / 1000;
    if (down.code !== 0) context.log(`ambitctl local down exited ${down.code}: ${down.stderr.trim()}`);
    await rm(runDir, { recursive: true, force: true });
  }
  return figures;
}

async function run(context: SuiteContext): Promise<SuiteResult> {
  if (process.getuid?.() !== 0) throw new Error('the localup suite builds network namespaces: it needs root');
  const results: Figures[] = [];
  for (const size of context.quick ? QUICK : FULL) {
    context.log(`ambitctl local up: ${size.nodes} nodes x ${size.pods} pods`);
    results.push(await measure(context, size));
  }
  const goalRun = results.find((figures) => figures.size.pods === GOAL_PODS);
  const goals: Goal[] = goalRun
    ? [
        {
          name: `${GOAL_PODS} pods Ready after \`up\`: ${GOAL_SECONDS} s ÷ measured`,
          value: goalRun.totalS === undefined ? undefined : GOAL_SECONDS / goalRun.totalS,
          target: '≥ 1x',
          met: goalRun.totalS === undefined ? undefined : goalRun.totalS < GOAL_SECONDS,
        },
      ]
    : [];
  return {
    suite: 'localup',
    tables: [
      {
        title: 'ambitctl local up to every pod Ready (s unless marked)',
        columns: ['nodes x pods', 'up to all Ready', 'nodes + control plane + agents', 'pods (to last Ready)', 'rest', 'pod create p50 / p99 (ms)', 'CNI ADD p50 / p99 (ms)', 'CNI busy (share)', 'down', 'load (1 min)'],
        rows: results.map((figures) => [
          `${figures.size.nodes} x ${figures.size.pods}`,
          formatNumber(figures.totalS),
          formatNumber(figures.meshS),
          formatNumber(figures.podsS),
          formatNumber(figures.totalS === undefined ? undefined : figures.totalS - figures.meshS! - figures.podsS!),
          `${formatNumber(figures.createMs?.p50)} / ${formatNumber(figures.createMs?.p99)}`,
          `${formatNumber(figures.cniMs?.p50)} / ${formatNumber(figures.cniMs?.p99)}`,
          `${formatNumber(figures.cniBusyS)} (${figures.cniShare === undefined ? '—' : `${Math.round(figures.cniShare * 100)}%`})`,
          formatNumber(figures.downS),
          figures.loadAverage.toFixed(1),
        ]),
        notes: [
          'One ambient namespace, a Deployment of busybox pods (sleep; Ready once running), spread over the nodes; run and read as a user would (`ambitctl local up`, its state file).',
          'Pod create: the supervisor\'s createPod (Pod object, network namespace, resolv.conf, CNI ADD); CNI ADD: loopback, bridge + host-local, ambit-cni (waits for the agent\'s capture: rules, listeners, certificate).',
          'CNI busy: wall time with at least one CNI ADD running, and its share of `up` to all Ready. Rest: `up` to all Ready minus the two phases before it (the supervisor\'s Node start-up and planning, publishing Namespaces and objects, `up` noticing through its 250 ms poll).',
          ...results.filter((figures) => figures.error !== undefined).map((figures) => `failed (${figures.size.nodes} x ${figures.size.pods}): ${figures.error}`),
        ],
      },
    ],
    goals,
    data: results,
  };
}
