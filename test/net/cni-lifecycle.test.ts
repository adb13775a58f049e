/**
 * The real agent's bookkeeping of the pods the CNI plugin reports, driven as a container runtime with a spec 1.1.0
 * conflist would drive ambit-cni: a 1-node local mesh (agent in its node namespace, cluster directory, CA root on
 * disk), sandboxes that are real network namespaces made here, and the ambit-cni executable called with 1.1.0
 * configs and a 1.1.0 prevResult (Debian's reference plugins stop at 1.0.0, so a runtime's chain is played by
 * handing ambit-cni the result bridge would give). Pods created through the runtime's own 1.0.0 chain check that
 * older configs work unchanged.
 */
import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import http from 'node:http';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { namespaceObject, podFile, removePod, updatePodStatus, writeNamespace, writePod } from '../../runtime/cluster-store.ts';
import { createLocalMesh, type LocalMesh } from '../../runtime/local-mesh.ts';
import { AMBIT_CNI_DIR, type ClusterNode } from '../../runtime/index.ts';
import { run } from '../../runtime/exec.ts';
import { addNetns, deleteNetns, ipIn } from '../../runtime/netns.ts';
import type { PodObject } from '../../shared/k8s/objects.ts';

const PLUGIN = path.join(AMBIT_CNI_DIR, 'ambit-cni');
const ENROLLED = 'mesh11';
const AMBIENT = { 'istio.io/dataplane-mode': 'ambient' };
const PLAIN = 'plain11';

let mesh: LocalMesh;
let node: ClusterNode;
const sandboxes = new Set<string>();

test.before(async () => {
  mesh = await createLocalMesh({ nodes: 1, name: 'cnilife', controlPlane: false });
  node = mesh.cluster.node(0);
  await writeNamespace(mesh.cluster.clusterDir, namespaceObject(ENROLLED, AMBIENT));
  await writeNamespace(mesh.cluster.clusterDir, namespaceObject(PLAIN, {}));
});

test.after.always(async () => {
  for (const name of sandboxes) await deleteNetns(name).catch(() => undefined);
  await mesh?.destroy();
});

interface Sandbox {
  name: string;
  namespace: string;
  uid: string;
  containerId: string;
  netnsName: string;
  netnsPath: string;
  ip: string;
  prevResult: Record<string, unknown>;
  pod: PodObject;
}

let nextIp = 5;

/**
 * A pod as a runtime makes it before the CNI chain: its Pod object (no status yet: nothing here writes one) and a
 * network namespace whose eth0 holds the address bridge/host-local would have given it.
 */
async function sandbox(t: ExecutionContext, namespace: string, name: string): Promise<Sandbox> {
  const netnsName = `ambit-cnilife-${randomBytes(3).toString('hex')}-${name}`;
  sandboxes.add(netnsName);
  t.teardown(async () => {
    sandboxes.delete(netnsName);
    await deleteNetns(netnsName).catch(() => undefined);
  });
  await addNetns(netnsName);
  const ip = `10.250.0.${nextIp++}`;
  await ipIn(netnsName, ['link', 'set', 'lo', 'up']);
  await ipIn(netnsName, ['link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0p']);
  await ipIn(netnsName, ['addr', 'add', `${ip}/24`, 'dev', 'eth0']);
  await ipIn(netnsName, ['link', 'set', 'eth0', 'up']);
  await ipIn(netnsName, ['link', 'set', 'eth0p', 'up']);
  const uid = `uid-${randomBytes(6).toString('hex')}`;
  const pod: PodObject = { apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace, uid }, spec: { nodeName: node.name, serviceAccountName: name, containers: [{ name: 'app' }] } } as PodObject;
  await writePod(mesh.cluster.clusterDir, pod);
  t.teardown(() => removePod(mesh.cluster.clusterDir, namespace, name).catch(() => undefined));
  const netnsPath = `/run/netns/${netnsName}`;
  return {
    name, namespace, uid, containerId: randomBytes(32).toString('hex'), netnsName, netnsPath, ip, pod,
    prevResult: {
      cniVersion: '1.1.0',
      interfaces: [{ name: 'eth0', mac: '0a:58:0a:fa:00:05', sandbox: netnsPath }],
      ips: [{ address: `${ip}/24`, gateway: '10.250.0.1', interface: 0 }],
      routes: [{ dst: '0.0.0.0/0' }],
      dns: {},
    },
  };
}

function networkConfig(extra: Record<string, unknown> = {}): string {
  return JSON.stringify({ cniVersion: '1.1.0', name: 'pods', type: 'ambit-cni', agentSocket: node.agentSocket, clusterDir: mesh.cluster.clusterDir, ...extra });
}

interface PluginRun {
  code: number;
  stdout: string;
  json: Record<string, unknown> | undefined;
}

async function plugin(command: string, box: Sandbox | undefined, config: string): Promise<PluginRun> {
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, CNI_COMMAND: command, CNI_PATH: '/usr/lib/cni' };
  if (box) {
    Object.assign(env, {
      CNI_CONTAINERID: box.containerId,
      CNI_NETNS: box.netnsPath,
      CNI_IFNAME: 'eth0',
      CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=${box.namespace};K8S_POD_NAME=${box.name};K8S_POD_INFRA_CONTAINER_ID=${box.containerId};K8S_POD_UID=${box.uid}`,
    });
  }
  const result = await run(PLUGIN, [], { env, input: config, timeoutMs: 30_000 });
  let json: Record<string, unknown> | undefined;
  try {
    json = result.stdout.trim() === '' ? undefined : (JSON.parse(result.stdout) as Record<string, unknown>);
  } catch {
    json = undefined;
  }
  return { code: result.code, stdout: result.stdout + result.stderr, json };
}

const add = (box: Sandbox): Promise<PluginRun> => plugin('ADD', box, networkConfig({ prevResult: box.prevResult }));
const gc = (validContainerIds: string[]): Promise<PluginRun> =>
  plugin('GC', undefined, networkConfig({ 'cni.dev/valid-attachments': validContainerIds.map((containerID) => ({ containerID, ifname: 'eth0' })) }));

interface RecordedPod {
  uid: string;
  name: string;
  namespace: string;
  netns: string;
  ips: string[];
  containerId?: string;
}

async function record(kind: 'known-pods' | 'captured-pods'): Promise<RecordedPod[]> {
  const text = await readFile(path.join(path.dirname(node.agentSocket), `${kind}-${node.name}.json`), 'utf8').catch(() => '{"pods":[]}');
  return (JSON.parse(text) as { pods: RecordedPod[] }).pods;
}

const names = (pods: RecordedPod[]): string[] => pods.map((pod) => `${pod.namespace}/${pod.name}`).sort();

/** The agent's workload for a pod, from its admin config dump (the admin port listens in the node namespace). */
async function agentWorkload(namespace: string, name: string): Promise<{ addresses: string[]; tunnelProtocol: string } | undefined> {
  const script = `fetch('http://127.0.0.1:15000/config_dump').then((r) => r.json()).then((d) => { const w = d.workloads.find((x) => x.namespace === ${JSON.stringify(namespace)} && x.name === ${JSON.stringify(name)}); console.log(JSON.stringify(w ?? null)); })`;
  const result = await node.exec(process.execPath, ['-e', script]);
  return (JSON.parse(result.stdout) as { addresses: string[]; tunnelProtocol: string } | null) ?? undefined;
}

/** Polls `condition` (each poll a real read of agent state) until it holds or 15 s pass. */
async function eventually(what: string, condition: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    if (await condition()) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`never: ${what}`);
}

async function agentLog(): Promise<string> {
  return readFile(node.agentLogFile, 'utf8');
}

/** One exchange with the agent's CNI socket, timed (the agent's own STATUS answer, without a plugin process). */
function agentStatus(): Promise<{ status: number; ms: number }> {
  const started = process.hrtime.bigint();
  return new Promise((resolve, reject) => {
    const request = http.request({ socketPath: node.agentSocket, path: '/v1/status', method: 'POST', agent: false, headers: { 'content-type': 'application/json' } }, (response) => {
      response.resume();
      response.on('end', () => resolve({ status: response.statusCode ?? 0, ms: Number(process.hrtime.bigint() - started) / 1e6 }));
    });
    request.on('error', reject);
    request.end('{}');
  });
}

test.serial('a 1.1.0 ADD with a 1.1.0 prevResult captures the pod and answers in 1.1.0; the mesh takes the ADD\'s IP while the Pod has no status; CHECK passes', async (t) => {
  const box = await sandbox(t, ENROLLED, 'web11');
  const added = await add(box);
  t.is(added.code, 0, added.stdout);
  t.deepEqual(added.json, box.prevResult);
  const captured = (await record('captured-pods')).find((pod) => pod.uid === box.uid);
  t.deepEqual(captured?.ips, [box.ip]);
  const known = (await record('known-pods')).find((pod) => pod.uid === box.uid);
  t.is(known?.containerId, box.containerId, 'the sandbox id is recorded (GC names attachments by it)');
  t.like(await agentWorkload(ENROLLED, 'web11'), { addresses: [box.ip], tunnelProtocol: 'HBONE' }, 'the Pod has no status.podIP: the address is the ADD\'s');
  t.is((await plugin('CHECK', box, networkConfig({ prevResult: box.prevResult }))).code, 0);

  // The status arrives with another address: the status is what every node sees, so it wins, and the agent says so.
  await updatePodStatus(mesh.cluster.clusterDir, box.pod, { phase: 'Running', podIP: '10.250.9.9', podIPs: [{ ip: '10.250.9.9' }] });
  await eventually('the status address is the workload\'s', async () => (await agentWorkload(ENROLLED, 'web11'))?.addresses.join() === '10.250.9.9');
  t.regex(await agentLog(), /status addresses differ from those its CNI ADD gave it/);

  const deleted = await plugin('DEL', box, networkConfig({ prevResult: box.prevResult }));
  t.is(deleted.code, 0, deleted.stdout);
  // The DEL is answered once the release is queued; the records follow when it is done.
  await eventually('the released pod is in neither record', async () => !names([...await record('captured-pods'), ...await record('known-pods')]).includes(`${ENROLLED}/web11`));
  t.pass();
});

test.serial('a 1.1.0 STATUS succeeds while the agent runs (its answer in milliseconds) and fails with 50 while it is down', async (t) => {
  const up = await plugin('STATUS', undefined, networkConfig());
  t.is(up.code, 0, up.stdout);
  const answers = [];
  for (let i = 0; i < 5; i++) answers.push(await agentStatus());
  t.true(answers.every((answer) => answer.status === 200));
  const fastest = Math.min(...answers.map((answer) => answer.ms));
  t.log(`agent STATUS answers: ${answers.map((answer) => answer.ms.toFixed(1)).join(', ')} ms`);
  t.true(fastest < 50, `the agent answered STATUS in ${fastest} ms at best`);

  await node.stopAgent();
  t.teardown(() => node.startAgent());
  const down = await plugin('STATUS', undefined, networkConfig());
  t.is(down.json?.code, 50, down.stdout);
  t.regex(String(down.json?.msg), /cannot serve ADD for enrolled pods/);
  await node.startAgent();
  t.is((await plugin('STATUS', undefined, networkConfig())).code, 0);
});

test.serial('a 1.1.0 GC makes the agent release and forget the pods whose sandbox is not listed, and keep those listed; a pod from the runtime\'s 1.0.0 chain is kept by its container id', async (t) => {
  const stale = await sandbox(t, ENROLLED, 'stale11');
  const kept = await sandbox(t, ENROLLED, 'kept11');
  const seen = await sandbox(t, PLAIN, 'seen11');
  for (const box of [stale, kept, seen]) t.is((await add(box)).code, 0);
  const older = await mesh.cluster.createPod({ node: 0, namespace: ENROLLED, name: 'older10', namespaceLabels: AMBIENT });
  t.teardown(() => mesh.cluster.deletePod(older));
  t.true(names(await record('captured-pods')).includes(`${ENROLLED}/older10`), 'the 1.0.0 chain still captures');
  // A pod that is not enrolled is known at once; its record is written after the ADD's answer.
  const allKnown = [`${ENROLLED}/kept11`, `${ENROLLED}/older10`, `${ENROLLED}/stale11`, `${PLAIN}/seen11`];
  await eventually('every pod is in the known pods', async () => names(await record('known-pods')).join() === allKnown.join());

  const collected = await gc([kept.containerId, older.containerId]);
  t.is(collected.code, 0, collected.stdout);
  t.deepEqual(names(await record('known-pods')), [`${ENROLLED}/kept11`, `${ENROLLED}/older10`]);
  t.deepEqual(names(await record('captured-pods')), [`${ENROLLED}/kept11`, `${ENROLLED}/older10`]);
  // The stale pod's listeners are gone with it: nothing listens on the HBONE port in its namespace any more.
  const listening = await run('ip', ['netns', 'exec', stale.netnsName, 'ss', '-Htln', 'sport = :15008']);
  t.is(listening.stdout.trim(), '', 'no listener left in the released pod');
  t.regex(await agentLog(), /CNI GC: forgot pods whose sandbox is gone/);
});

test.serial('pods deleted while the agent is down are dropped from the known pods at its next start, with no capture error', async (t) => {
  const gone = await sandbox(t, ENROLLED, 'gone11');
  const plain = await sandbox(t, PLAIN, 'goneplain11');
  t.is((await add(gone)).code, 0);
  t.is((await add(plain)).code, 0);
  await node.stopAgent();
  t.teardown(() => node.startAgent());
  // The runtime tore the sandboxes down while no agent heard the DEL; the Pod objects are still there.
  await deleteNetns(gone.netnsName);
  await deleteNetns(plain.netnsName);
  const logBefore = (await agentLog()).length;
  await node.startAgent();
  t.false(names(await record('known-pods')).some((name) => name.endsWith('/gone11') || name.endsWith('/goneplain11')));
  t.false(names(await record('captured-pods')).includes(`${ENROLLED}/gone11`));
  const startLog = (await agentLog()).slice(logBefore);
  t.regex(startLog, /forgot known pods whose network namespace is gone/);
  t.notRegex(startLog, /changing the capture of a running pod failed/);
});

test.serial('a pod the mesh state deletes is forgotten from the known pods (not enrolled: nothing else would)', async (t) => {
  const box = await sandbox(t, PLAIN, 'removed11');
  t.is((await add(box)).code, 0);
  await eventually('the pod is in the known pods (written after the ADD\'s answer)', async () => names(await record('known-pods')).includes(`${PLAIN}/removed11`));
  // The mesh state must have had the pod for its removal to be an event: the ADD is now answered within
  // milliseconds, before the agent's cluster-directory source may have read the Pod object (a pod it never saw and
  // that is gone again is forgotten by its DEL or the runtime's CNI GC instead).
  await eventually("the agent's mesh state has the pod", async () => (await agentWorkload(PLAIN, 'removed11')) !== undefined);
  await removePod(mesh.cluster.clusterDir, PLAIN, 'removed11');
  await eventually('the known pods no longer list the deleted pod', async () => !names(await record('known-pods')).includes(`${PLAIN}/removed11`));
  t.pass();
});

/** Our chains in the namespace (iptables-save of the nf_tables backend the agent uses here), and its listening ports. */
async function capturedState(netnsName: string): Promise<{ chains: string[]; listening: string[]; fwmarkRules: string }> {
  const saved = await run('ip', ['netns', 'exec', netnsName, 'iptables-nft-save']);
  const chains = [...new Set(saved.stdout.match(/ISTIO_[A-Z_]+/g) ?? [])].sort();
  const ss = await run('ip', ['netns', 'exec', netnsName, 'ss', '-Htln']);
  const listening = [...new Set(ss.stdout.split('\n').map((line) => /:(\d+)\s/.exec(line)?.[1]).filter((port): port is string => port !== undefined))].sort();
  const rules = await run('ip', ['netns', 'exec', netnsName, 'ip', 'rule', 'show']);
  return { chains, listening, fwmarkRules: rules.stdout.split('\n').filter((line) => line.includes('fwmark')).join('\n') };
}

const uncaptured = (state: { chains: string[]; listening: string[]; fwmarkRules: string }): boolean =>
  state.chains.length === 0 && !state.listening.some((port) => ['15001', '15006', '15008'].includes(port)) && state.fwmarkRules === '';

test.serial('a DEL is answered before the release runs; once it is done, the pod (its namespace still there) has no rules, routing, listeners or records left', async (t) => {
  const box = await sandbox(t, ENROLLED, 'early11');
  t.is((await add(box)).code, 0);
  const before = await capturedState(box.netnsName);
  t.true(before.chains.length > 0 && before.listening.includes('15008') && before.fwmarkRules !== '', `captured: ${JSON.stringify(before)}`);

  // As containerd does: DEL with the namespace, then again without it; both succeed.
  const first = await plugin('DEL', box, networkConfig({ prevResult: box.prevResult }));
  t.is(first.code, 0, first.stdout);
  const second = await plugin('DEL', { ...box, netnsPath: '' }, networkConfig({ prevResult: box.prevResult }));
  t.is(second.code, 0, second.stdout);
  await eventually('the release removed rules, routing and listeners', async () => uncaptured(await capturedState(box.netnsName)));
  await eventually('the released pod is in neither record', async () => !names([...await record('captured-pods'), ...await record('known-pods')]).includes(`${ENROLLED}/early11`));
  t.notRegex(await agentLog(), /releasing a pod after its CNI DEL failed/);
});

/** The pod's ambient.istio.io/redirection annotation, as the agent left it in the Pod's file. */
async function redirection(box: Sandbox): Promise<string | undefined> {
  const object = parseYaml(await readFile(podFile(mesh.cluster.clusterDir, box.namespace, box.name), 'utf8')) as PodObject;
  return object.metadata.annotations?.['ambient.istio.io/redirection'];
}

test.serial('an ADD whose capture fails (port 15001 taken in the pod) fails, and takes back the record and the mark it made while the rules went in; the next ADD captures', async (t) => {
  const box = await sandbox(t, ENROLLED, 'taken11');
  // A socket without SO_REUSEPORT on 15001 in the pod: the agent's outbound listener cannot bind beside it.
  const holder = spawn('ip', ['netns', 'exec', box.netnsName, '/usr/bin/python3', '-c',
    'import socket,sys\ns=socket.socket()\ns.bind(("0.0.0.0",15001))\ns.listen()\nprint("ready",flush=True)\nsys.stdin.read()'], { stdio: ['pipe', 'pipe', 'inherit'] });
  const exited = new Promise((resolve) => holder.once('exit', resolve));
  t.teardown(async () => {
    holder.kill();
    await exited;
  });
  await new Promise((resolve, reject) => {
    holder.stdout.once('data', resolve);
    holder.once('exit', (code) => reject(new Error(`the port holder exited with ${code}`)));
  });

  const failed = await add(box);
  t.not(failed.code, 0, failed.stdout);
  t.regex(failed.stdout, /15001/);
  t.false((await record('captured-pods')).some((pod) => pod.uid === box.uid), 'the captured-pods record written during the capture was rewritten without the pod');
  t.is(await redirection(box), undefined, 'the mark set during the capture was taken off');
  const state = await capturedState(box.netnsName);
  t.deepEqual(state.chains, [], 'no rule of ours is left in the pod');
  t.is(state.fwmarkRules, '', 'nor its policy routing');

  holder.kill();
  await exited;
  const added = await add(box);
  t.is(added.code, 0, added.stdout);
  t.true((await record('captured-pods')).some((pod) => pod.uid === box.uid));
  t.is(await redirection(box), 'enabled');
  t.is((await plugin('DEL', box, networkConfig({ prevResult: box.prevResult }))).code, 0);
});

test.serial('a capture the agent starts before the plugin decides (its own state has the pod enrolled) is taken back before a failed ADD is answered', async (t) => {
  const box = await sandbox(t, ENROLLED, 'early-undo11');
  await eventually("the agent's mesh state has the pod", async () => (await agentWorkload(ENROLLED, 'early-undo11')) !== undefined);
  // The plugin is pointed at a cluster directory without the Pod: it fails the ADD (try again later) after the agent,
  // whose own state has the pod enrolled, has started its capture.
  const elsewhere = await mkdtemp(path.join(os.tmpdir(), 'ambit-cnilife-elsewhere-'));
  t.teardown(() => rm(elsewhere, { recursive: true, force: true }));
  await writeNamespace(elsewhere, namespaceObject(ENROLLED, AMBIENT));
  const failed = await plugin('ADD', box, networkConfig({ clusterDir: elsewhere, prevResult: box.prevResult }));
  t.is(failed.code, 1, failed.stdout);
  t.regex(failed.stdout, /not found in cluster directory/);
  // Nothing waits here: the answer came after the early capture was taken back.
  const state = await capturedState(box.netnsName);
  t.true(uncaptured(state), `nothing of the early capture is left: ${JSON.stringify(state)}`);
  t.false((await record('captured-pods')).some((pod) => pod.uid === box.uid));
  t.regex(await agentLog(), new RegExp(`"pod":"${ENROLLED}/early-undo11","reason":"deleted".*"msg":"pod released"`), 'the capture had started');

  // The same sandbox, the plugin reading the real directory: captured.
  t.is((await add(box)).code, 0);
  t.false(uncaptured(await capturedState(box.netnsName)));
  t.is((await plugin('DEL', box, networkConfig({ prevResult: box.prevResult }))).code, 0);
});

test.serial('a sandbox made again for the same pod right after its DEL is captured in the new namespace; the old release touches only the old one', async (t) => {
  const old = await sandbox(t, ENROLLED, 'again11');
  t.is((await add(old)).code, 0);
  t.is((await plugin('DEL', old, networkConfig({ prevResult: old.prevResult }))).code, 0);
  // The same Pod (same uid), a new sandbox: a new namespace, container id and address, ADDed at once.
  const netnsName = `ambit-cnilife-${randomBytes(3).toString('hex')}-again11b`;
  sandboxes.add(netnsName);
  t.teardown(async () => {
    sandboxes.delete(netnsName);
    await deleteNetns(netnsName).catch(() => undefined);
  });
  await addNetns(netnsName);
  const ip = `10.250.0.${nextIp++}`;
  await ipIn(netnsName, ['link', 'set', 'lo', 'up']);
  await ipIn(netnsName, ['link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0p']);
  await ipIn(netnsName, ['addr', 'add', `${ip}/24`, 'dev', 'eth0']);
  await ipIn(netnsName, ['link', 'set', 'eth0', 'up']);
  const netnsPath = `/run/netns/${netnsName}`;
  const again: Sandbox = {
    ...old, containerId: randomBytes(32).toString('hex'), netnsName, netnsPath, ip,
    prevResult: { ...old.prevResult, interfaces: [{ name: 'eth0', mac: '0a:58:0a:fa:00:06', sandbox: netnsPath }], ips: [{ address: `${ip}/24`, gateway: '10.250.0.1', interface: 0 }] },
  };
  const added = await add(again);
  t.is(added.code, 0, added.stdout);
  await eventually('the old namespace is released', async () => uncaptured(await capturedState(old.netnsName)));
  const now = await capturedState(netnsName);
  t.true(now.chains.length > 0 && now.listening.includes('15008') && now.fwmarkRules !== '', `the new namespace is captured: ${JSON.stringify(now)}`);
  const captured = (await record('captured-pods')).find((pod) => pod.uid === old.uid);
  t.is(captured?.netns, netnsPath, 'the record names the new namespace');
  t.is((await plugin('DEL', again, networkConfig({ prevResult: again.prevResult }))).code, 0);
});

test.serial('a DEL answered just before the agent stops is finished by that agent: the restarted one finds the pod released and does not capture it again', async (t) => {
  const box = await sandbox(t, ENROLLED, 'restart11');
  t.is((await add(box)).code, 0);
  t.is((await plugin('DEL', box, networkConfig({ prevResult: box.prevResult }))).code, 0);
  await node.stopAgent();
  t.teardown(() => node.startAgent());
  // Stopped: whatever the old agent left is what the next one starts from.
  t.false(names(await record('captured-pods')).includes(`${ENROLLED}/restart11`), 'the stopping agent finished the release, record included');
  t.true(uncaptured(await capturedState(box.netnsName)), 'and took the rules out of the namespace that is still there');
  await node.startAgent();
  // The restarted agent answers STATUS once its start-up (reconcile included) is done.
  t.is((await plugin('STATUS', undefined, networkConfig())).code, 0);
  t.true(uncaptured(await capturedState(box.netnsName)), 'the restarted agent did not capture the deleted pod again');
  t.false(names(await record('captured-pods')).includes(`${ENROLLED}/restart11`));
});

test.serial('a pod not enrolled at its ADD but captured later (its namespace labelled) has its rules removed by its DEL', async (t) => {
  await writeNamespace(mesh.cluster.clusterDir, namespaceObject('flip11', {}));
  t.teardown(() => writeNamespace(mesh.cluster.clusterDir, namespaceObject('flip11', {})));
  const box = await sandbox(t, 'flip11', 'flip11');
  t.is((await add(box)).code, 0);
  t.true(uncaptured(await capturedState(box.netnsName)), 'not enrolled: passed through');
  await writeNamespace(mesh.cluster.clusterDir, namespaceObject('flip11', AMBIENT));
  await eventually('the running pod is captured once its namespace is enrolled', async () => (await capturedState(box.netnsName)).listening.includes('15008'));
  t.is((await plugin('DEL', box, networkConfig({ prevResult: box.prevResult }))).code, 0);
  await eventually('the DEL removed the rules, routing and listeners', async () => uncaptured(await capturedState(box.netnsName)));
  t.pass();
});

test.serial('a DEL leaves the rules to the namespace\'s removal; a kept namespace ADDed again as not enrolled starts with none of them, and one left alone loses them after the wait', async (t) => {
  await writeNamespace(mesh.cluster.clusterDir, namespaceObject('kept11', AMBIENT));
  t.teardown(() => writeNamespace(mesh.cluster.clusterDir, namespaceObject('kept11', AMBIENT)));
  const box = await sandbox(t, 'kept11', 'kept11');
  t.is((await add(box)).code, 0);
  t.true((await capturedState(box.netnsName)).chains.length > 0, 'captured');
  t.is((await plugin('DEL', box, networkConfig({ prevResult: box.prevResult }))).code, 0);
  t.is((await plugin('DEL', { ...box, netnsPath: '' }, networkConfig({ prevResult: box.prevResult }))).code, 0);
  // The runtime keeps the namespace and ADDs the pod again, its namespace no longer enrolled (seen by the agent too,
  // so nothing captures it again behind the plugin's back).
  await writeNamespace(mesh.cluster.clusterDir, namespaceObject('kept11', {}));
  await eventually('the agent sees the pod as not enrolled', async () => (await agentWorkload('kept11', 'kept11'))?.tunnelProtocol !== 'HBONE');
  const again = await add(box);
  t.is(again.code, 0, again.stdout);
  t.true(uncaptured(await capturedState(box.netnsName)), 'the not-enrolled ADD answered with none of the rules the DEL left');
  // Enrolled again and DELed again, the namespace left in place: its rules go after the wait, with no ADD to ask.
  await writeNamespace(mesh.cluster.clusterDir, namespaceObject('kept11', AMBIENT));
  await eventually('the running pod is captured again once its namespace is enrolled', async () => (await capturedState(box.netnsName)).listening.includes('15008'));
  t.is((await plugin('DEL', box, networkConfig({ prevResult: box.prevResult }))).code, 0);
  await eventually('the kept namespace lost the rules the DEL left', async () => uncaptured(await capturedState(box.netnsName)));
});

test.serial('a pod never captured is deleted without touching its namespace; a DEL for a pod the agent never heard of still removes rules left in it', async (t) => {
  const plain = await sandbox(t, PLAIN, 'never11');
  t.is((await add(plain)).code, 0);
  t.is((await plugin('DEL', plain, networkConfig({ prevResult: plain.prevResult }))).code, 0);
  await eventually('the pod is forgotten', async () => !names(await record('known-pods')).includes(`${PLAIN}/never11`));
  // A namespace with capture rules whose pod this agent never saw (captured by a previous agent, say): its DEL
  // looks, and takes them out.
  const stranger = await sandbox(t, ENROLLED, 'stranger11');
  t.is((await add(stranger)).code, 0);
  await node.stopAgent();
  t.teardown(() => node.startAgent());
  await writeFile(path.join(path.dirname(node.agentSocket), `captured-pods-${node.name}.json`), '{"pods":[]}');
  await writeFile(path.join(path.dirname(node.agentSocket), `known-pods-${node.name}.json`), '{"pods":[]}');
  await node.startAgent();
  t.true((await capturedState(stranger.netnsName)).chains.length > 0, 'the rules of the previous agent are still there');
  t.is((await plugin('DEL', stranger, networkConfig({ prevResult: stranger.prevResult }))).code, 0);
  await eventually('the DEL removed the rules the agent did not know about', async () => (await capturedState(stranger.netnsName)).chains.length === 0);
  t.pass();
});
