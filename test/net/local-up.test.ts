/**
 * `ambitctl local` as a user meets it, through the real command line: a directory with two namespaces each holding
 * a pod named `sleep`, a Deployment of 3 replicas and a Service (fixtures/local-up/) comes up across 2 nodes;
 * `get pods` shows every pod Ready with an IP; the container saw its downward-API env and workingDir; `exec` from a
 * pod reaches the Service's endpoints (over the mesh: foo is ambient); a bad document and an image with no command
 * are reported with file and line and create nothing. Then live changes to the directory: scaling the Deployment to
 * 4 adds one pod and keeps the three; labelling namespace bar ambient enrolls bar/sleep; a bad edit is reported and
 * changes nothing; a new file's pod whose container keeps failing is restarted with back-off. `exec` runs with the
 * pod's resolv.conf (the Service answers by its short name). Deleting a replica makes a new one under a new name;
 * deleting a file's Pod makes it again; scaling down keeps the survivors; a template edit replaces every replica
 * (new pod-template-hash); deleting a file deletes its pod. `down` leaves nothing behind: no namespace, no process
 * that ran in one, no rule added to the root namespace, no file outside the run directory, no CA key.
 */
import test from 'ava';
import { existsSync } from 'node:fs';
import { cp, mkdtemp, readdir, readFile, rm, unlink, writeFile } from 'node:fs/promises';
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

/** The root namespace's rules, counters left out: `down` must leave them as `up` found them. */
async function rootRules(): Promise<Set<string>> {
  const [nft, iptables, ip6tables] = await Promise.all([run('nft', ['list', 'ruleset']), run('iptables-save', []), run('ip6tables-save', [])]);
  const lines = [nft.stdout, iptables.stdout, ip6tables.stdout].join('\n').split('\n');
  return new Set(lines.map((line) => line.replace(/\[\d+:\d+\]/g, '').trim()).filter((line) => line !== '' && !line.startsWith('#')));
}

/** Processes alive now among `pids` (each with the start time it had), so a reused pid does not count. */
function stillAlive(pids: Map<number, string>): number[] {
  return [...pids].filter(([pid, started]) => processStartTime(pid) === started).map(([pid]) => pid);
}

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

  const rulesBefore = await rootRules();
  const up = await ctl('up', '-f', dir, '--nodes', '2', '--timeout', String(UP_TIMEOUT_S));
  t.log(up.stdout, up.stderr);
  // The problems make the exit status 1, but everything else came up.
  t.is(up.code, 1, up.stderr);
  t.regex(up.stdout, /nodes 2\/2 up/);
  t.regex(up.stdout, /pods ready 5\/5/);
  t.regex(up.stderr, /bad\.yaml:11: /, 'the syntax error is reported with its file and line');
  t.regex(up.stderr, /bad\.yaml:1: pod foo\/noimage, container app: image "nginx" has no command/);
  t.is(up.stderr.match(/^error: /gm)?.length, 2, 'nothing else is reported');

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
  t.regex(svc.stdout, /foo\s+echo\s+10\.240\.0\.80\s+80->8080\/TCP\s+app=echo\s+3/);

  // exec runs with the pod's resolv.conf, as a kubelet writes it: the Service answers by its short name.
  const resolvConf = await ctl('exec', 'sleep', '-n', 'foo', '--', 'cat', '/etc/resolv.conf');
  t.regex(resolvConf.stdout, /^search foo\.svc\.cluster\.local svc\.cluster\.local cluster\.local$/m);
  const byName = await ctl('exec', 'sleep', '-n', 'foo', '--', 'getent', 'hosts', 'echo');
  t.regex(byName.stdout, /^10\.240\.0\.80\s/, byName.stderr);
  const viaService = await ctl('exec', 'sleep', '-n', 'foo', '--', 'curl', '-s', '--max-time', '10', 'http://echo/by-name');
  t.like(JSON.parse(viaService.stdout || '{}'), { url: '/by-name' }, viaService.stderr);

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
  // Between two exits the restarted container runs for a moment and, with no readiness probe, is ready then (as in a cluster).
  t.regex(crashRow, /crash\s+(False\s+(Waiting|Running)|True\s+Running)\s+[2-9]/);

  // Deleting a replica: the Deployment makes a new one, under a new name (same hash), and the old one is gone.
  const before = echoPods(await readState());
  const victim = before[0]!;
  const deleted = await ctl('delete', 'pod', victim.name, '-n', 'foo');
  t.is(deleted.code, 0, deleted.stderr);
  const replacement = /replaced by foo\/(echo-\S+)/.exec(deleted.stdout)?.[1];
  t.truthy(replacement, deleted.stdout);
  t.not(replacement, victim.name);
  t.is(replacement!.split('-')[1], victim.name.split('-')[1], 'the same template: the same pod-template-hash');
  const replaced = await waitFor('4 echo pods Ready after a deletion', (current) => echoPods(current).length === 4 && echoPods(current).every((pod) => pod.ready));
  t.false(echoPods(replaced).some((pod) => pod.name === victim.name), 'the deleted pod is gone');
  t.true(echoPods(replaced).some((pod) => pod.name === replacement));
  t.false((await listNetns()).includes(victim.netns), 'its network namespace went through CNI DEL and was deleted');
  const missing = await ctl('delete', 'pod', 'nosuch', '-n', 'foo');
  t.is(missing.code, 1);
  t.regex(missing.stderr, /no pod foo\/nosuch/);

  // Deleting a file's Pod: the file still says it runs, so it is made again (a static pod's rule).
  const barSleep = (await readState()).pods.find((pod) => pod.namespace === 'bar' && pod.name === 'sleep')!;
  const again = await ctl('delete', 'pod', 'sleep', '-n', 'bar');
  t.regex(again.stdout, /pod bar\/sleep deleted; made again from its file/);
  const remade = await waitFor('bar/sleep made again', (current) => current.pods.some((pod) => pod.namespace === 'bar' && pod.name === 'sleep' && pod.ready && pod.createStartedAt !== barSleep.createStartedAt));
  t.is(remade.pods.find((pod) => pod.namespace === 'bar' && pod.name === 'sleep')!.node, 'ambit-node1', 'spec.nodeName still holds');

  // Scaling down keeps two of the running replicas; a template edit replaces them all (a new hash).
  await writeFile(path.join(dir, 'echo.yaml'), echoYaml.replace('replicas: 3', 'replicas: 2'));
  const scaledDown = await waitFor('2 echo pods', (current) => echoPods(current).length === 2);
  t.true(echoPods(scaledDown).every((pod) => echoPods(replaced).some((old) => old.name === pod.name)), 'scaling down keeps running replicas');
  await writeFile(path.join(dir, 'echo.yaml'), echoYaml.replace('replicas: 3', 'replicas: 2').replace('labels: {app: echo}}', 'labels: {app: echo, version: v2}}'));
  const rolled = await waitFor('2 new-template echo pods Ready', (current) => echoPods(current).length === 2 && echoPods(current).every((pod) => pod.ready && pod.name.split('-')[1] !== hash));
  const newHash = echoPods(rolled)[0]!.name.split('-')[1]!;
  const rolledPod = parse(await readFile(path.join(state.clusterDir!, 'pods', `foo.${echoPods(rolled)[0]!.name}.yaml`), 'utf8')) as PodObject;
  t.like(rolledPod.metadata.labels, { app: 'echo', version: 'v2', 'pod-template-hash': newHash });
  await waitFor('the Service has the 2 new endpoints', (current) => current.services.find((service) => service.name === 'echo')?.endpoints === 2);

  // Deleting a file deletes what it defined.
  await unlink(path.join(dir, 'crash.yaml'));
  await waitFor('crash deleted with its file', (current) => !current.pods.some((pod) => pod.name === 'crash'));

  const status = await ctl('status');
  t.regex(status.stdout, new RegExp(`CA directory:\\s+${state.caDir}`));
  t.true(existsSync(path.join(state.caDir!, 'ca-key.pem')));

  // Every process of the run: those in its namespaces (agents, control plane, dnsmasq, containers) and the supervisor.
  const prefix = state.nodes[0]!.netns.replace(/n0$/, '');
  const runPids = new Map<number, string>([[state.pid, state.pidStartTime]]);
  for (const name of (await listNetns()).filter((candidate) => candidate.startsWith(prefix))) {
    for (const pid of (await run('ip', ['netns', 'pids', name])).stdout.split('\n').filter((line) => line.trim() !== '').map(Number)) {
      const started = processStartTime(pid);
      if (started !== undefined) runPids.set(pid, started);
    }
  }
  t.true(runPids.size > 6, `the run's processes were found (${runPids.size})`);

  const down = await ctl('down');
  t.is(down.code, 0, down.stderr);
  t.regex(down.stdout, /removed 4 pods/);
  t.is(processStartTime(state.pid), undefined, 'the supervisor is gone');
  t.deepEqual(stillAlive(runPids), [], 'no process of the run is left');
  const runNetns = (await listNetns()).filter((name) => name.startsWith(prefix));
  t.deepEqual(runNetns, []);
  t.deepEqual([...(await rootRules())].filter((line) => !rulesBefore.has(line)), [], 'no rule was left in the root namespace');
  t.deepEqual((await readdir('/etc/netns').catch(() => [])).filter((name) => name.startsWith(prefix)), [], 'no pod resolv.conf left');
  t.deepEqual((await readdir('/run/ambit-runtime').catch(() => [])).filter((name) => prefix.includes(name.replace(/\.json$/, ''))), [], 'no run record left');
  t.deepEqual((await readdir(os.tmpdir())).filter((name) => name.startsWith(prefix)), [], 'no temp dir of the run left');
  t.false(existsSync(state.tmpDir!), 'the run temp dir (CA key included) is gone');
  t.false(existsSync(runDir), 'the run directory is gone');
  const after = await ctl('get', 'pods');
  t.is(after.code, 1);
  t.regex(after.stderr, /no local mesh is running/);
});
