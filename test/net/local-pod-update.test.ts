/**
 * A running Pod's labels change in place on `ambitctl local`, as on a Kubernetes cluster: by editing its file and by
 * `kubectl label pod`. Pod `web` (an echo server) in ambient namespace `shop`, with `sleep` calling it and an
 * AuthorizationPolicy that denies anything to pods labelled `locked=true`. Labelling web `locked=true` in its file
 * makes sleep's calls fail (the destination agent now applies the policy to it); `kubectl label pod web locked-`
 * lets them through again and is written into the file; `kubectl label pod web istio.io/dataplane-mode=none` takes
 * web out of the mesh (the agent releases it and removes its redirection annotation) and removing the label in the
 * file brings it back. Through all of it web keeps its IP, network namespace and processes. A spec change through
 * kubectl is refused as Kubernetes refuses it (the file unchanged); the same change made in the file makes the pod
 * again (new processes), and the supervisor's log says why.
 */
import test from 'ava';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { run } from '../../runtime/exec.ts';
import { reapDeadRuns } from '../../runtime/run-registry.ts';
import type { LocalPodState, LocalState } from '../../runtime/workloads/local-state.ts';

const REPO = path.resolve(import.meta.dirname, '..', '..');
const AMBITCTL = path.join(REPO, 'ambitctl', 'ambitctl');
const KUBECTL = '/usr/bin/kubectl';
const UP_TIMEOUT_S = 240;
const WAIT_MS = 120_000;

const NAMESPACE_AND_POLICY = `apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Pod
metadata: {name: sleep, namespace: shop}
spec:
  nodeName: ambit-node0
  containers:
  - {name: sleep, image: busybox}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-locked, namespace: shop}
spec:
  selector: {matchLabels: {locked: "true"}}
  action: DENY
  rules: [{}]
`;

const web = (labels: string, greeting = 'hello'): string => `apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: shop
  labels: {${labels}}
spec:
  nodeName: ambit-node1
  containers:
  - name: echo
    image: ambit/echo-server:1.0
    ports: [{containerPort: 8080}]
    readinessProbe: {httpGet: {port: 8080, path: /}}
    env: [{name: GREETING, value: ${greeting}}]
`;

test('a running pod relabelled by file edit and by kubectl keeps its IP and processes, and the mesh follows the labels', async (t) => {
  t.timeout((UP_TIMEOUT_S + 600) * 1000);
  const runDir = await mkdtemp(path.join(os.tmpdir(), 'ambit-pod-update-run-'));
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ambit-pod-update-manifests-'));
  const cacheDir = await mkdtemp(path.join(os.tmpdir(), 'ambit-pod-update-cache-'));
  await writeFile(path.join(dir, 'shop.yaml'), NAMESPACE_AND_POLICY);
  await writeFile(path.join(dir, 'web.yaml'), web('app: web'));
  const ctl = (...args: string[]) => run(AMBITCTL, ['local', ...args], { env: { ...process.env, AMBIT_LOCAL_RUN_DIR: runDir }, timeoutMs: (UP_TIMEOUT_S + 30) * 1000 });
  t.teardown(async () => {
    await ctl('down');
    await reapDeadRuns();
    for (const made of [runDir, dir, cacheDir]) await rm(made, { recursive: true, force: true });
  });

  const up = await ctl('up', '-f', dir, '--nodes', '2', '--timeout', String(UP_TIMEOUT_S));
  t.is(up.code, 0, `${up.stdout}\n${up.stderr}`);
  const kubeconfig = path.join(runDir, 'kubeconfig');
  const kubectl = (...args: string[]) => run(KUBECTL, ['--cache-dir', cacheDir, '--request-timeout', '60s', ...args], { env: { ...process.env, KUBECONFIG: kubeconfig }, timeoutMs: WAIT_MS });
  const readState = async () => JSON.parse(await readFile(path.join(runDir, 'state.json'), 'utf8')) as LocalState;
  const state = await readState();
  t.is(state.controlPlaneSource, 'kubernetes', 'the control plane reads the local API by default');
  const webState = (current: LocalState): LocalPodState => current.pods.find((pod) => pod.name === 'web')!;
  const sleepIp = state.pods.find((pod) => pod.name === 'sleep')!.ip;
  const webNode = state.nodes.find((node) => node.name === 'ambit-node1')!;
  const waitFor = async (what: string, done: () => Promise<boolean>): Promise<void> => {
    const deadline = Date.now() + WAIT_MS;
    while (!(await done())) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  };
  /** sleep's call to web: the peer web's echo server saw, or '' when the call failed. */
  const call = async (ip = webState(state).ip): Promise<string> => {
    const result = await ctl('exec', 'sleep', '-n', 'shop', '--', 'curl', '-s', '--max-time', '5', `http://${ip}:8080/`);
    try {
      return String((JSON.parse(result.stdout) as { peer?: string }).peer ?? '');
    } catch {
      return '';
    }
  };
  /** The processes in web's network namespace: its container (the agent's listeners are sockets, not processes). */
  const webPids = async (): Promise<string> => (await run('ip', ['netns', 'pids', webState(await readState()).netns])).stdout.split('\n').filter(Boolean).sort().join(',');
  const redirection = async (): Promise<string> => (await kubectl('get', 'pod', 'web', '-n', 'shop', '-o', 'jsonpath={.metadata.annotations.ambient\\.istio\\.io/redirection}')).stdout;
  const isHbone = async (): Promise<boolean> => /\sweb\s+\S+\s+\S+\s+HBONE\b/.test((await run(AMBITCTL, ['workloads', '-n', 'shop', '--node', webNode.netns])).stdout);
  const unchanged = async (when: string): Promise<void> => {
    const now = webState(await readState());
    t.is(now.ip, webState(state).ip, `${when}: same IP`);
    t.is(now.netns, webState(state).netns, `${when}: same network namespace`);
    t.is(now.createStartedAt, webState(state).createStartedAt, `${when}: not made again`);
    // The agent's rule commands run inside the pod's namespace for a moment (an opt-out takes the rules out through
    // iptables-restore there), so the namespace's processes are compared once those have exited; a container made
    // again has other pids and never matches.
    await waitFor(`${when}: the pod's own processes only`, async () => (await webPids()) === pidsAtStart).catch(() => undefined);
    t.is(await webPids(), pidsAtStart, `${when}: same processes`);
  };

  const pidsAtStart = await webPids();
  t.not(pidsAtStart, '');
  t.is(await call(), sleepIp, 'sleep reaches web through the mesh');
  t.is(await redirection(), 'enabled');

  // By file edit: a label the DENY policy selects. The policy now applies to web; sleep's calls are refused.
  await writeFile(path.join(dir, 'web.yaml'), web('app: web, locked: "true"'));
  await waitFor('calls to the locked web refused', async () => (await call()) === '');
  t.regex(await readFile(path.join(runDir, 'supervisor.log'), 'utf8'), /pod shop\/web: labels \{"app":"web","locked":"true"\}.*updated in place/);
  t.regex((await kubectl('get', 'pod', 'web', '-n', 'shop', '--show-labels')).stdout, /locked=true/);
  await unchanged('labelled in its file');

  // By kubectl: the label removed (written into the file, the one source of truth); calls go through again.
  const unlocked = await kubectl('label', 'pod', 'web', '-n', 'shop', 'locked-');
  t.is(unlocked.code, 0, unlocked.stderr);
  t.regex(unlocked.stdout, /pod\/web unlabeled/);
  t.notRegex(await readFile(path.join(dir, 'web.yaml'), 'utf8'), /locked/);
  await waitFor('calls to web allowed again', async () => (await call()) === sleepIp);
  await unchanged('unlabelled by kubectl');

  // By kubectl: out of the mesh. The agent releases web (annotation gone, no longer an HBONE workload); it still answers.
  const optedOut = await kubectl('label', 'pod', 'web', '-n', 'shop', 'istio.io/dataplane-mode=none');
  t.is(optedOut.code, 0, optedOut.stderr);
  await waitFor('web released from the mesh', async () => (await redirection()) === '' && !(await isHbone()));
  t.is(await call(), sleepIp, 'web still answers, as a pod outside the mesh');
  await unchanged('opted out by kubectl');

  // By file edit: back in the mesh.
  await writeFile(path.join(dir, 'web.yaml'), web('app: web'));
  await waitFor('web captured again', async () => (await redirection()) === 'enabled' && (await isHbone()));
  t.is(await call(), sleepIp);
  await unchanged('opted in by file edit');

  // A spec change: kubectl is refused as a cluster refuses it, and the file is left as it was.
  const fileBefore = await readFile(path.join(dir, 'web.yaml'), 'utf8');
  const respec = await kubectl('patch', 'pod', 'web', '-n', 'shop', '--type', 'json', '-p', '[{"op":"replace","path":"/spec/containers/0/env/0/value","value":"bye"}]');
  t.is(respec.code, 1);
  t.regex(respec.stderr, /Forbidden: pod updates may not change fields other than metadata\.labels and metadata\.annotations/);
  t.is(await readFile(path.join(dir, 'web.yaml'), 'utf8'), fileBefore);
  await unchanged('a refused spec change');

  // ...while the same change in the file is the user's new pod: made again, and the log says why.
  await writeFile(path.join(dir, 'web.yaml'), web('app: web', 'bye'));
  await waitFor('web made again with the new spec', async () => {
    // Between the old pod's removal and the new one's creation the state file has no web at all.
    const now = (await readState()).pods.find((pod) => pod.name === 'web');
    return now !== undefined && now.createStartedAt !== webState(state).createStartedAt && now.ready;
  });
  t.regex(await readFile(path.join(runDir, 'supervisor.log'), 'utf8'), /pod shop\/web deleted: its spec changed in \S+web\.yaml \(Kubernetes cannot change it on a running pod\), so it is made again/);
  t.not(await webPids(), pidsAtStart, 'new processes');
  const remade = webState(await readState());
  await waitFor('the new web reachable', async () => (await call(remade.ip)) === sleepIp);
});
