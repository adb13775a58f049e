/**
 * `ambitctl local` as a user meets it, through the real command line: a directory with two namespaces each holding
 * a pod named `sleep`, a Deployment of 3 replicas and a Service (fixtures/local-up/) comes up across 2 nodes;
 * `get pods` shows every pod Ready with an IP; the container saw its downward-API env and workingDir; `exec` from a
 * pod reaches the Service's endpoints (over the mesh: foo is ambient); a bad document and an image with no command
 * are reported with file and line and create nothing. Then live changes to the directory: scaling the Deployment to
 * 4 adds one pod and keeps the three; labelling namespace bar ambient enrolls bar/sleep; a bad edit is reported and
 * changes nothing; a new file's pod whose container keeps failing is restarted with back-off. `down` leaves no namespace, no process, no CA key.
 */
import test from 'ava';
import { existsSync } from 'node:fs';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parse } from 'yaml';
import { run } from '../../runtime/exec.ts';
import { listNetns } from '../../runtime/netns.ts';
import { processStartTime, reapDeadRuns } from '../../runtime/run-registry.ts';
import type { LocalState } from '../../runtime/workloads/local-state.ts';
import type { PodObject } from '../../shared/k8s/objects.ts';

const REPO = path.resolve(import.meta.dirname, '..', '..');
const AMBITCTL = path.join(REPO, 'ambitctl', 'ambitctl');
const FIXTURE = path.join(import.meta.dirname, 'fixtures', 'local-up');
/** Two nodes, the control plane, five pods through the CNI chain: slow on a loaded 2-core box. */
const UP_TIMEOUT_S = 240;

test('ambitctl local: a user directory comes up across 2 nodes, is operated, and goes down leaving nothing', async (t) => {
  t.timeout((UP_TIMEOUT_S + 120) * 1000);
  const runDir = await mkdtemp(path.join(os.tmpdir(), 'ambit-local-test-'));
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ambit-local-manifests-'));
  await cp(FIXTURE, dir, { recursive: true });
  const ctl = (...args: string[]) => run(AMBITCTL, ['local', ...args], { env: { ...process.env, AMBIT_LOCAL_RUN_DIR: runDir }, timeoutMs: (UP_TIMEOUT_S + 30) * 1000 });
  t.teardown(async () => {
    await ctl('down'); // a failed test must not leave the mesh up
    await reapDeadRuns();
    await rm(runDir, { recursive: true, force: true });
    await rm(dir, { recursive: true, force: true });
  });

  const up = await ctl('up', '-f', dir, '--nodes', '2', '--timeout', String(UP_TIMEOUT_S));
  t.log(up.stdout);
  // The problems make the exit status 1, but everything else came up.
  t.is(up.code, 1, up.stderr);
  t.regex(up.stdout, /nodes 2\/2 up/);
  t.regex(up.stdout, /pods ready 5\/5/);
  t.regex(up.stderr, /bad\.yaml:11: /, 'the syntax error is reported with its file and line');
  t.regex(up.stderr, /bad\.yaml:1: pod foo\/noimage, container app: image "nginx" has no command/);

  const state = JSON.parse(await readFile(path.join(runDir, 'state.json'), 'utf8')) as LocalState;
  const pods = await ctl('get', 'pods');
  t.is(pods.code, 0, pods.stderr);
  const rows = pods.stdout.trim().split('\n').slice(1).map((line) => line.split(/\s+/));
  t.is(rows.length, 5, pods.stdout);
  for (const [namespace, name, ready, phase, , ip, node] of rows) {
    t.is(ready, 'True', `${namespace}/${name}`);
    t.is(phase, 'Running');
    t.regex(ip!, /^10\.\d+\.\d+\.\d+$/);
    t.regex(node!, /^ambit-node[01]$/);
  }
  t.truthy(rows.find((row) => row[0] === 'foo' && row[1] === 'sleep'));
  t.truthy(rows.find((row) => row[0] === 'bar' && row[1] === 'sleep' && row[6] === 'ambit-node1'), 'spec.nodeName is honoured');
  t.false(pods.stdout.includes('noimage'), 'the pod that cannot run was not made');
  const echoRows = rows.filter((row) => row[1]!.startsWith('echo-'));
  t.is(echoRows.length, 3);
  for (const row of echoRows) t.regex(row[1]!, /^echo-[bcdfghjklmnpqrstvwxz2456789]{10}-[bcdfghjklmnpqrstvwxz2456789]{5}$/);
  t.is(new Set(rows.map((row) => row[6])).size, 2, 'pods are spread over both nodes');
  t.not(state.pods.find((pod) => pod.namespace === 'foo' && pod.name === 'sleep')!.netns, state.pods.find((pod) => pod.namespace === 'bar' && pod.name === 'sleep')!.netns);

  // What the mesh reads: the Deployment's pods carry the hash label and owner, and status is written back.
  const published = parse(await readFile(path.join(state.clusterDir!, 'pods', `foo.${echoRows[0]![1]}.yaml`), 'utf8')) as PodObject & { metadata: { ownerReferences: { kind: string; name: string }[] } };
  const hash = echoRows[0]![1]!.split('-')[1]!;
  t.is(published.metadata.labels?.['pod-template-hash'], hash);
  t.like(published.metadata.ownerReferences[0], { kind: 'ReplicaSet', name: `echo-${hash}` });
  t.is(published.status?.podIP, echoRows[0]![5]);
  t.deepEqual(published.status?.conditions, [{ type: 'Ready', status: 'True' }]);
  // User files win: foo's Namespace is the user's (ambient), and the runtime wrote none over it.
  const namespace = parse(await readFile(path.join(state.clusterDir!, 'namespaces', 'foo.yaml'), 'utf8')) as { metadata: { labels: Record<string, string> } };
  t.is(namespace.metadata.labels['istio.io/dataplane-mode'], 'ambient');

  const svc = await ctl('get', 'svc');
  t.regex(svc.stdout, /foo\s+echo\s+10\.96\.0\.10\s+80->8080\/TCP\s+app=echo/);

  const fooSleepIp = rows.find((row) => row[0] === 'foo' && row[1] === 'sleep')![5]!;
  const logs = await ctl('logs', 'sleep', '-n', 'foo');
  t.is(logs.code, 0, logs.stderr);
  t.is(logs.stdout.trim(), `I am sleep in foo at ${fooSleepIp} in /tmp`);

  // The Service's endpoints (its selector's pods), from a pod; the echo server reports the caller it saw.
  for (const row of echoRows) {
    const reply = await ctl('exec', 'sleep', '-n', 'foo', '--', 'curl', '-s', '--max-time', '10', `http://${row[5]}:8080/from-sleep`);
    t.is(reply.code, 0, reply.stderr);
    t.like(JSON.parse(reply.stdout), { peer: fooSleepIp, url: '/from-sleep' });
  }
  const enrolled = await run(AMBITCTL, ['workloads', '-n', 'foo', '--node', state.nodes[0]!.netns]);
  t.is(enrolled.stdout.match(/HBONE/g)?.length, 4, `foo is ambient: its pods use HBONE\n${enrolled.stdout}`);

  // Live changes. Each wait ends on what the supervisor publishes after applying (or rejecting) the change.
  const readState = async () => JSON.parse(await readFile(path.join(runDir, 'state.json'), 'utf8')) as LocalState;
  const waitFor = async (what: string, done: (current: LocalState) => boolean | Promise<boolean>): Promise<LocalState> => {
    const deadline = Date.now() + 180_000;
    for (;;) {
      const current = await readState().catch(() => undefined);
      if (current !== undefined && (await done(current))) return current;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  };
  const echoPods = (current: LocalState) => current.pods.filter((pod) => pod.name.startsWith('echo-'));
  const echoYaml = await readFile(path.join(dir, 'echo.yaml'), 'utf8');
  await writeFile(path.join(dir, 'echo.yaml'), echoYaml.replace('replicas: 3', 'replicas: 4'));
  const scaled = await waitFor('4 echo pods Ready', (current) => echoPods(current).length === 4 && echoPods(current).every((pod) => pod.ready));
  t.deepEqual(echoRows.map((row) => row[1]).filter((name) => echoPods(scaled).some((pod) => pod.name === name)).length, 3, 'scaling up keeps the running pods');

  const nsYaml = await readFile(path.join(dir, 'ns.yaml'), 'utf8');
  await writeFile(path.join(dir, 'ns.yaml'), nsYaml.replace('  name: bar', '  name: bar\n  labels:\n    istio.io/dataplane-mode: ambient'));
  await waitFor('bar/sleep enrolled', async () => {
    const workloads = await run(AMBITCTL, ['workloads', '-n', 'bar', '--node', state.nodes[1]!.netns]);
    return /bar\s+sleep\s+\S+\s+\S+\s+HBONE/.test(workloads.stdout);
  });

  await writeFile(path.join(dir, 'echo.yaml'), echoYaml.replace('replicas: 3', 'replicas: 1') + '---\nkind: Pod\nmetadata: {name: half-written\n');
  const rejected = await waitFor('the bad edit reported', (current) => current.problems.some((problem) => problem.includes('echo.yaml')));
  t.is(echoPods(rejected).length, 4, 'a bad edit changes nothing');
  const podsAfter = await ctl('get', 'pods', '-n', 'foo');
  t.is(podsAfter.stdout.match(/^foo\s+echo-/gm)?.length, 4);

  // Fixing the bad edit (back to 4 replicas) lets changes apply again. A new file: its pod comes up; its container exits 1 every time and restartPolicy Always restarts it with back-off.
  await writeFile(path.join(dir, 'echo.yaml'), echoYaml.replace('replicas: 3', 'replicas: 4'));
  await writeFile(
    path.join(dir, 'crash.yaml'),
    'apiVersion: v1\nkind: Pod\nmetadata: {name: crash, namespace: bar}\nspec:\n  restartPolicy: Always\n  containers:\n  - {name: c, image: busybox, command: [sh, -c, "echo started; exit 1"]}\n',
  );
  await waitFor('crash restarted twice', (current) => (current.pods.find((pod) => pod.name === 'crash')?.restarts ?? 0) >= 2);
  const crashLogs = await ctl('logs', 'crash', '-n', 'bar');
  t.true((crashLogs.stdout.match(/started/g)?.length ?? 0) >= 3, crashLogs.stdout);
  const crashRow = (await ctl('get', 'pods', '-n', 'bar')).stdout.split('\n').find((line) => line.includes('crash'))!;
  t.regex(crashRow, /crash\s+False\s+(Waiting|Running)\s+[2-9]/);

  const status = await ctl('status');
  t.regex(status.stdout, new RegExp(`CA directory:\\s+${state.caDir}`));
  t.true(existsSync(path.join(state.caDir!, 'ca-key.pem')));

  const down = await ctl('down');
  t.is(down.code, 0, down.stderr);
  t.regex(down.stdout, /removed 7 pods/);
  t.is(processStartTime(state.pid), undefined, 'the supervisor is gone');
  const runNetns = (await listNetns()).filter((name) => state.nodes.some((node) => name.startsWith(node.netns.replace(/n0$|n1$/, ''))));
  t.deepEqual(runNetns, []);
  t.false(existsSync(state.tmpDir!), 'the run temp dir (CA key included) is gone');
  t.false(existsSync(runDir), 'the run directory is gone');
  const after = await ctl('get', 'pods');
  t.is(after.code, 1);
  t.regex(after.stderr, /no local mesh is running/);
});
