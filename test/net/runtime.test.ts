// The local runtime on real namespaces: nodes, pods wired by the real CNI chain, cleanup and crash recovery.
// No agent runs here except the protocol stand-in process in the lifecycle test (see test/helpers).
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parse } from 'yaml';
import { createCluster, CniPluginError, runClient, startEchoServer, type Cluster } from '../../runtime/index.ts';
import { run } from '../../runtime/exec.ts';
import { addNetns, deleteNetns, listNetns } from '../../runtime/netns.ts';
import { processStartTime, recordFile, REGISTRY_DIR, writeRecord } from '../../runtime/run-registry.ts';
import { runPrefix } from '../../runtime/topology.ts';

const HELPER_AGENT = path.resolve(import.meta.dirname, '..', 'helpers', 'cni-protocol-server.ts');
const AMBIENT = { 'istio.io/dataplane-mode': 'ambient' };

async function cluster(t: import('ava').ExecutionContext, options: Parameters<typeof createCluster>[0]): Promise<Cluster> {
  const created = await createCluster(options);
  t.teardown(() => created.destroy());
  return created;
}

async function ourNamespaces(runId: string): Promise<string[]> {
  return (await listNetns()).filter((name) => name.startsWith(runPrefix(runId)));
}

test('pods on the same node and on different nodes reach each other, unNATed, with nothing routed in the root namespace', async (t) => {
  const c = await cluster(t, { nodes: 2 });
  const [client, local, remote] = await Promise.all([
    c.createPod({ node: 0, name: 'client' }),
    c.createPod({ node: 0, name: 'local' }),
    c.createPod({ node: 1, name: 'remote' }),
  ]);
  t.not(client.node, remote.node);
  await Promise.all([startEchoServer(local, { port: 8080 }), startEchoServer(remote, { port: 8080, http: true })]);
  const sameNode = await runClient(client, { host: local.ip, port: 8080, count: 3, size: 4096 });
  t.true(sameNode.ok, JSON.stringify(sameNode));
  t.is(sameNode.bytesReceived, 3 * 4096);
  const crossNode = await runClient(client, { host: remote.ip, port: 8080, http: true });
  t.true(crossNode.ok, JSON.stringify(crossNode));
  t.like(crossNode.response?.body, { peer: client.ip }, 'the server sees the client pod IP (no masquerade)');
  const rootRoutes = await run('ip', ['route', 'show', 'table', 'all']);
  t.false(rootRoutes.stdout.includes(c.nodes[0]?.podCidr.split('.').slice(0, 2).join('.') + '.'), 'no pod routes in the root namespace');
});

test("a pod's lo is up, brought up by the chain's loopback plugin (the runtime no longer does it itself), and a server on 127.0.0.1 answers", async (t) => {
  const c = await cluster(t, { nodes: 1 });
  const pod = await c.createPod({ node: 0, name: 'loopy' });
  const link = await run('ip', ['-n', pod.netnsName, '-o', 'link', 'show', 'lo']);
  t.regex(link.stdout, /[<,]UP[,>]/, link.stdout);
  await startEchoServer(pod, { port: 8080 });
  const local = await runClient(pod, { host: '127.0.0.1', port: 8080, count: 1, size: 64 });
  t.true(local.ok, JSON.stringify(local));
});

test('the Pod object is published with node, service account and IP', async (t) => {
  const c = await cluster(t, { nodes: 1 });
  const pod = await c.createPod({ node: 0, namespace: 'shop', name: 'web', serviceAccount: 'web-sa', labels: { app: 'web' } });
  const object = parse(await readFile(path.join(c.clusterDir, 'pods', 'shop.web.yaml'), 'utf8'));
  t.like(object, {
    kind: 'Pod',
    metadata: { name: 'web', namespace: 'shop', uid: pod.uid, labels: { app: 'web' } },
    spec: { nodeName: c.node(0).name, serviceAccountName: 'web-sa', hostNetwork: false },
    status: { phase: 'Running', podIP: pod.ip, podIPs: [{ ip: pod.ip }] },
  });
  t.like(parse(await readFile(path.join(c.clusterDir, 'namespaces', 'shop.yaml'), 'utf8')), { kind: 'Namespace', metadata: { name: 'shop' } });
});

test('an enrolled pod with no agent running fails closed and leaves nothing behind; non-enrolled pods start', async (t) => {
  const c = await cluster(t, { nodes: 1 });
  const error = await t.throwsAsync(c.createPod({ node: 0, namespace: 'mesh', name: 'enrolled', namespaceLabels: AMBIENT }), { instanceOf: CniPluginError });
  t.is(error?.cniError.code, 11);
  t.regex(error?.message ?? '', /ambit node agent not reachable at .*cni\.sock: is the ambit agent DaemonSet running on this node\?/);
  t.deepEqual(await ourNamespaces(c.runId).then((names) => names.filter((n) => n.endsWith('-enrolled'))), []);
  t.false(existsSync(path.join(c.clusterDir, 'pods', 'mesh.enrolled.yaml')));
  t.deepEqual(c.pods, []);

  const optedOut = await c.createPod({ node: 0, namespace: 'mesh', name: 'opted-out', labels: { 'istio.io/dataplane-mode': 'none' } });
  const plain = await c.createPod({ node: 0, namespace: 'plain', name: 'plain' });
  t.truthy(optedOut.ip);
  t.truthy(plain.ip);
  const server = await startEchoServer(plain, { port: 9000 });
  t.truthy(server.pid);
  t.true((await runClient(optedOut, { host: plain.ip, port: 9000 })).ok);
});

test('deletePod runs DEL (twice) and removes the namespace, the object and the IP reservation', async (t) => {
  const c = await cluster(t, { nodes: 1, ambitCni: false });
  const pod = await c.createPod({ node: 0, name: 'short-lived' });
  const ipamDir = path.join(c.node(0).dir, 'ipam', c.networkName);
  t.true((await readdir(ipamDir)).includes(pod.ip));
  await c.deletePod(pod);
  t.false((await readdir(ipamDir)).includes(pod.ip));
  t.false((await listNetns()).includes(pod.netnsName));
  t.false(existsSync(path.join(c.clusterDir, 'pods', 'default.short-lived.yaml')));
  await c.deletePod(pod); // a second delete is a no-op
  const again = await c.createPod({ node: 0, name: 'short-lived' });
  t.truthy(again.ip, 'the name can be reused');
});

test('ambitCni: false builds a mesh-less baseline where enrolled namespaces start without any agent', async (t) => {
  const c = await cluster(t, { nodes: 2, ambitCni: false });
  const a = await c.createPod({ node: 0, namespace: 'mesh', name: 'a', namespaceLabels: AMBIENT });
  const b = await c.createPod({ node: 1, namespace: 'mesh', name: 'b' });
  await startEchoServer(b, { port: 7000 });
  t.true((await runClient(a, { host: b.ip, port: 7000 })).ok);
});

test('agents: started per node with their environment before pods; stop refuses enrolled pods; start and restart bring it back', async (t) => {
  const c = await cluster(t, {
    nodes: 2,
    agentCommand: () => ({ cmd: process.execPath, args: [HELPER_AGENT] }),
  });
  for (const node of c.nodes) {
    t.truthy(node.agent?.pid);
    const firstLine = (await readFile(node.agentLogFile, 'utf8')).split('\n')[0] ?? '';
    t.deepEqual(JSON.parse(firstLine), { env: { AMBIT_NODE_NAME: node.name, AMBIT_CLUSTER_DIR: c.clusterDir, AMBIT_CNI_SOCKET: node.agentSocket } });
    const inNodeNetns = await run('ip', ['netns', 'identify', String(node.agent?.pid)]);
    t.is(inNodeNetns.stdout.trim(), node.netnsName, 'the agent runs inside its node namespace');
  }
  const node = c.node(1);
  t.truthy(await c.createPod({ node, namespace: 'mesh', name: 'm1', namespaceLabels: AMBIENT }));
  await node.stopAgent();
  t.is(node.agent, undefined);
  const refused = await t.throwsAsync(c.createPod({ node, namespace: 'mesh', name: 'm2' }), { instanceOf: CniPluginError });
  t.is(refused?.cniError.code, 11);
  await node.startAgent();
  t.truthy(await c.createPod({ node, namespace: 'mesh', name: 'm2' }));
  const before = node.agent?.pid;
  await node.restartAgent();
  t.not(node.agent?.pid, before);
  t.truthy(await c.createPod({ node, namespace: 'mesh', name: 'm3' }));
  const old = node.agent;
  await node.restartAgent({ overlap: true });
  t.not(node.agent, old);
  t.not(old?.exitCode ?? old?.signalCode ?? null, null, 'the old agent was stopped after the new one answered');
  t.truthy(await c.createPod({ node, namespace: 'mesh', name: 'm4' }));
});

test('destroy removes every namespace, process and directory of the run, and is idempotent', async (t) => {
  const c = await createCluster({ nodes: 2 });
  t.teardown(() => c.destroy());
  const pod = await c.createPod({ node: 1, name: 'p' });
  const server = await startEchoServer(pod, { port: 8080 });
  t.true((await ourNamespaces(c.runId)).length >= 4);
  await Promise.all([c.destroy(), c.destroy()]);
  await c.destroy();
  t.deepEqual(await ourNamespaces(c.runId), []);
  t.not(server.exitCode ?? server.signalCode, null, 'the pod process was stopped');
  t.false(existsSync(c.tmpDir));
  t.false(existsSync(recordFile(c.runId)));
  await t.throwsAsync(c.createPod({ node: 0, name: 'late' }), { message: /destroyed/ });
});

test("a crashed run's namespaces, processes and temp dir are removed by the next createCluster", async (t) => {
  const runId = `dead${randomBytes(2).toString('hex')}`;
  const netns = `${runPrefix(runId)}n0`;
  const tmpDir = await mkdtemp(path.join(os.tmpdir(), runPrefix(runId)));
  t.teardown(async () => {
    await deleteNetns(netns);
    await import('node:fs/promises').then((fs) => fs.rm(tmpDir, { recursive: true, force: true }));
  });
  await mkdir(path.join(tmpDir, 'n0'));
  await writeFile(path.join(tmpDir, 'n0', 'agent.log'), 'left behind');
  // A pod's resolv.conf (what `ip netns exec` mounts), outside the temp dir.
  const podEtc = `/etc/netns/${runPrefix(runId)}pod`;
  await mkdir(podEtc, { recursive: true });
  await writeFile(path.join(podEtc, 'resolv.conf'), 'nameserver 10.240.0.10\n');
  t.teardown(() => import('node:fs/promises').then((fs) => fs.rm(podEtc, { recursive: true, force: true })));
  // And one of a run whose record is gone (a reaper predating /etc/netns entries removed the rest).
  const orphanEtc = `/etc/netns/${runPrefix(`lost${randomBytes(2).toString('hex')}`)}pod`;
  await mkdir(orphanEtc, { recursive: true });
  await writeFile(path.join(orphanEtc, 'resolv.conf'), 'nameserver 10.240.0.10\n');
  t.teardown(() => import('node:fs/promises').then((fs) => fs.rm(orphanEtc, { recursive: true, force: true })));
  await addNetns(netns);
  // A process the crashed run left running inside its namespace, outside any process group we track.
  const orphan = spawn('ip', ['netns', 'exec', netns, 'sleep', '600'], { detached: true, stdio: 'ignore' });
  t.teardown(() => {
    if (orphan.exitCode === null && orphan.signalCode === null) orphan.kill('SIGKILL');
  });
  // The crashed creator: a process that has exited (its pid is dead).
  const creator = spawn('true');
  const creatorPid = creator.pid ?? 0;
  await new Promise((resolve) => creator.once('exit', resolve));
  // Written last so a concurrent reaper never sees a record before its namespace exists.
  await writeRecord({ runId, pid: creatorPid, pidStartTime: 'gone', tmpDir, createdAt: new Date().toISOString() });
  t.is(processStartTime(creatorPid), undefined);

  const orphanExit = new Promise((resolve) => orphan.once('exit', resolve));
  // Two clusters starting at once both find the dead run: exactly one reaps it, neither fails.
  await Promise.all([cluster(t, { nodes: 1 }), cluster(t, { nodes: 1 })]);
  await orphanExit;
  t.deepEqual(await ourNamespaces(runId), []);
  t.false(existsSync(tmpDir));
  t.false(existsSync(podEtc), 'its pods\' /etc/netns entries are removed');
  t.false(existsSync(orphanEtc), 'and those of a run with no record and no namespace left');
  t.false(existsSync(recordFile(runId)));
  t.deepEqual((await readdir(REGISTRY_DIR)).filter((name) => name.includes(runId)), [], 'no record or reap claim is left');
});
