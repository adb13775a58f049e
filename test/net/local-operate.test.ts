/**
 * Operating `ambitctl local` as a user does, for what the other local tests leave out: an image given its command by
 * the user's own image map (`--image-map`), readiness from an `exec` and a `tcpSocket` probe, a namespace the
 * directory does not define (the runtime writes it, unenrolled, and `up` says so while the directory stays as the
 * user wrote it), `get nodes`, `logs -c` choosing a container, `logs -f` following a container's output as it is written, `status` naming paths that
 * exist, and `down --keep-logs`: the agents', control plane's and containers' logs kept as plain files, and nothing
 * else: no state, no kubeconfig (its token), no CA directory, no private key anywhere under the run directory.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { lstat, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { run } from '../../runtime/exec.ts';
import { reapDeadRuns } from '../../runtime/run-registry.ts';
import type { LocalState } from '../../runtime/workloads/local-state.ts';

const REPO = path.resolve(import.meta.dirname, '..', '..');
const AMBITCTL = path.join(REPO, 'ambitctl', 'ambitctl');
const UP_TIMEOUT_S = 240;

const IMAGE_MAP = `example/ticker:
  command: [sh, -c, 'i=0; while true; do i=$((i+1)); echo "tick $i"; sleep 0.3; done']
`;

const PODS = `apiVersion: v1
kind: Pod
metadata: {name: ticker, namespace: extra}
spec:
  containers:
  - name: ticker
    image: example/ticker
    readinessProbe: {exec: {command: ["true"]}, periodSeconds: 1}
  - name: side
    image: busybox
    command: [sh, -c, 'echo "side car $POD_NAME"; exec sleep infinity']
    env: [{name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: extra}
spec:
  containers:
  - name: web
    image: python
    command: [python3, -m, http.server, "9000", --bind, 0.0.0.0]
    readinessProbe: {tcpSocket: {port: 9000}}
`;

async function filesUnder(dir: string): Promise<string[]> {
  return (await readdir(dir, { recursive: true })).map((entry) => path.join(dir, entry));
}

test('operating a local mesh: image map, exec and tcpSocket readiness, a runtime-made namespace, logs -f, status, down --keep-logs', async (t) => {
  t.timeout((UP_TIMEOUT_S + 180) * 1000);
  const runDir = await mkdtemp(path.join(os.tmpdir(), 'ambit-operate-run-'));
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ambit-operate-manifests-'));
  const mapDir = await mkdtemp(path.join(os.tmpdir(), 'ambit-operate-map-'));
  await writeFile(path.join(dir, 'pods.yaml'), PODS);
  await writeFile(path.join(mapDir, 'images.yaml'), IMAGE_MAP);
  const env = { ...process.env, AMBIT_LOCAL_RUN_DIR: runDir };
  const ctl = (...args: string[]) => run(AMBITCTL, ['local', ...args], { env, timeoutMs: (UP_TIMEOUT_S + 30) * 1000 });
  t.teardown(async () => {
    await ctl('down');
    await reapDeadRuns();
    for (const made of [runDir, dir, mapDir]) await rm(made, { recursive: true, force: true });
  });

  const up = await ctl('up', '-f', dir, '--nodes', '2', '--timeout', String(UP_TIMEOUT_S), '--image-map', path.join(mapDir, 'images.yaml'));
  t.is(up.code, 0, `${up.stdout}\n${up.stderr}`);
  t.regex(up.stdout, /^nodes 2\/2 up, control plane and agents ready$/m);
  t.regex(up.stdout, new RegExp(`^note: namespace extra is not in ${dir}: created with no labels \\(not enrolled\\)$`, 'm'));
  t.regex(up.stdout, /^pods ready 2\/2$/m, 'Ready from an exec probe and a tcpSocket probe');
  t.deepEqual(await readdir(dir), ['pods.yaml'], 'the runtime wrote its Namespace into the cluster, not into the directory');
  const state = JSON.parse(await readFile(path.join(runDir, 'state.json'), 'utf8')) as LocalState;
  t.like(await run(AMBITCTL, ['local', 'exec', 'web', '-n', 'extra', '--', 'curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', 'http://127.0.0.1:9000/'], { env }), { stdout: '200' });

  const nodes = await ctl('get', 'nodes');
  t.regex(nodes.stdout, /^NAME\s+PODS\s+NETNS\n/);
  t.regex(nodes.stdout, new RegExp(`^ambit-node0\\s+\\d\\s+${state.nodes[0]!.netns}$`, 'm'));
  t.is([...nodes.stdout.matchAll(/^ambit-node\d\s+(\d)\s/gm)].reduce((sum, match) => sum + Number(match[1]), 0), 2);
  t.regex((await ctl('get', 'pods', '-n', 'extra')).stdout, /^extra\s+ticker\s+True\s+Running\s+0\s+\S+\s+\S+\s+example\/ticker,busybox$/m, 'the images are recorded and shown');
  t.like(await ctl('logs', 'ticker', '-n', 'extra', '-c', 'side'), { code: 0, stdout: 'side car ticker\n' });
  const noSuch = await ctl('logs', 'ticker', '-n', 'extra', '-c', 'nosuch');
  t.is(noSuch.code, 1);
  t.regex(noSuch.stderr, /pod extra\/ticker has no container nosuch \(ticker, side\)/);

  // logs -f: lines written after it started arrive while it runs.
  const follower = spawn(AMBITCTL, ['local', 'logs', 'ticker', '-n', 'extra', '-f'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => follower.kill());
  let followed = '';
  follower.stdout.setEncoding('utf8').on('data', (chunk: string) => (followed += chunk));
  const waitFollowed = async (pattern: RegExp): Promise<void> => {
    const deadline = Date.now() + 30_000;
    while (!pattern.test(followed)) {
      if (Date.now() > deadline) throw new Error(`logs -f never printed ${pattern}: ${followed.slice(-200)}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  };
  await waitFollowed(/tick \d+\n/);
  const lastSeen = Math.max(...[...followed.matchAll(/tick (\d+)/g)].map((match) => Number(match[1])));
  await waitFollowed(new RegExp(`tick ${lastSeen + 3}\\n`));
  t.is(follower.exitCode, null, 'logs -f keeps following');
  follower.kill();

  const status = (await ctl('status')).stdout;
  for (const [label, where] of [
    ['run directory', runDir],
    ['logs', state.logDir],
    ['CA directory', state.caDir!],
    ['cluster state', state.clusterDir!],
    ['kubeconfig', state.kubeconfig!],
  ] as const) {
    t.regex(status, new RegExp(`^${label}:\\s+${where}\\s`, 'm'), label);
    t.true(existsSync(where), `${label} exists`);
  }
  t.regex(status, /^control plane:\s+reads the Kubernetes API below and writes status through it; log \S+controlplane\.log$/m);
  t.true(existsSync(path.join(state.caDir!, 'ca-key.pem')));

  const down = await ctl('down', '--keep-logs');
  t.is(down.code, 0, down.stderr);
  t.regex(down.stdout, new RegExp(`^logs kept in ${runDir}$`, 'm'));
  t.deepEqual((await readdir(runDir)).sort(), ['logs', 'supervisor.log']);
  const kept = await filesUnder(runDir);
  for (const name of ['agent-ambit-node0.log', 'agent-ambit-node1.log', 'controlplane.log', 'pods/extra_ticker_ticker.log', 'pods/extra_ticker_side.log', 'pods/extra_web_web.log']) {
    const file = path.join(runDir, 'logs', name);
    t.true((await lstat(file).catch(() => undefined))?.isFile() === true, `${name} kept as a file`);
  }
  t.regex(await readFile(path.join(runDir, 'logs', 'pods', 'extra_ticker_ticker.log'), 'utf8'), /tick 1\n/);
  t.regex(await readFile(path.join(runDir, 'logs', 'agent-ambit-node0.log'), 'utf8'), /"msg":/);
  for (const file of kept) {
    if ((await lstat(file)).isFile()) t.notRegex(await readFile(file, 'utf8'), /PRIVATE KEY/, `no private key in ${file}`);
  }
  t.false(existsSync(state.caDir!), 'the CA directory (root key) is gone');
  t.false(existsSync(state.kubeconfig!), 'the kubeconfig (its token) is gone');
});
