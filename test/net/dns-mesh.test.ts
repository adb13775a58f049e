/**
 * DNS end to end on the local runtime: the real agent process (agent/main.ts) with its control plane, a pod
 * captured through the real CNI chain, glibc's resolver inside the pod. A Service and a headless Service written to
 * the cluster directory reach the agent over delta xDS; the pod resolves them by name through the agent's 15053.
 * The pod's resolv.conf names a resolver that does not exist (the kubelet would name kube-dns), so every answer the
 * pod gets came through the agent.
 */
import test from 'ava';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { createLocalMesh, type LocalMesh } from '../../runtime/local-mesh.ts';
import type { Pod } from '../../runtime/index.ts';
import { serviceYaml, writeManifest } from '../helpers/xds-harness.ts';

const ENROLLED = { 'istio.io/dataplane-mode': 'ambient' };
const SERVER_VIP = '10.96.7.20';
/** On no network of the cluster: an answer can only come from the agent. */
const NO_RESOLVER = '10.255.255.53';

let mesh: LocalMesh;
let client: Pod;
let server: Pod;

test.before(async () => {
  mesh = await createLocalMesh({ nodes: 1, name: 'dnstest' });
  server = await mesh.cluster.createPod({ node: 0, namespace: 'shop', name: 'server', serviceAccount: 'server', labels: { app: 'server' }, namespaceLabels: ENROLLED });
  client = await mesh.cluster.createPod({ node: 0, namespace: 'shop', name: 'client', serviceAccount: 'client' });
  const dir = path.join(mesh.cluster.clusterDir, 'services');
  await mkdir(dir, { recursive: true });
  await writeManifest(dir, 'shop.server.yaml', serviceYaml({ name: 'server', namespace: 'shop', vip: SERVER_VIP, selector: { app: 'server' } }));
  await writeManifest(dir, 'shop.server-pods.yaml', serviceYaml({ name: 'server-pods', namespace: 'shop', vip: 'None', selector: { app: 'server' } }));
  // What a kubelet writes for ClusterFirst (the runtime writes its own once it runs a cluster DNS).
  const etc = `/etc/netns/${client.netnsName}`;
  await mkdir(etc, { recursive: true });
  await writeFile(path.join(etc, 'resolv.conf'), `nameserver ${NO_RESOLVER}\nsearch shop.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5 timeout:1 attempts:1\n`);
});

test.after.always(async () => {
  if (client) await rm(`/etc/netns/${client.netnsName}`, { recursive: true, force: true });
  await mesh?.destroy();
});

async function resolve(name: string, database = 'ahostsv4'): Promise<string[]> {
  const result = await client.exec('getent', [database, name]);
  return [...new Set(result.stdout.split('\n').filter((line) => line !== '').map((line) => line.split(/\s+/)[0]!))].sort();
}

/** The Service reaches the agent asynchronously (directory watch, control plane, xDS): wait for its answer. */
async function resolveEventually(name: string, expected: string[]): Promise<string[]> {
  const deadline = Date.now() + 20_000;
  let last: string[] = [];
  while (Date.now() < deadline) {
    last = await resolve(name);
    if (JSON.stringify(last) === JSON.stringify(expected)) return last;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  return last;
}

test.serial('a captured pod resolves a Service by every name form, and a headless Service to its pod IP, through the agent', async (t) => {
  t.deepEqual(await resolveEventually('server.shop.svc.cluster.local', [SERVER_VIP]), [SERVER_VIP]);
  for (const name of ['server', 'server.shop', 'server.shop.svc']) t.deepEqual(await resolve(name), [SERVER_VIP], name);
  t.deepEqual(await resolveEventually('server-pods', [server.ip]), [server.ip], 'headless: the endpoint pod\'s IP');
  t.deepEqual(await resolve('nosuch.shop.svc.cluster.local'), [], 'unknown Service: forwarded, NXDOMAIN from the cluster DNS');
  // The agent's admin endpoint counts what it answered.
  const script = "fetch('http://127.0.0.1:15000/config_dump').then((r) => r.json()).then((d) => console.log(JSON.stringify(d.dns)))";
  const dump = await mesh.cluster.node(0).exec(process.execPath, ['-e', script]);
  const dns = JSON.parse(dump.stdout) as { stats: { answered: number; forwarded: number } };
  t.true(dns.stats.answered >= 5, dump.stdout);
  t.true(dns.stats.forwarded >= 1, dump.stdout);
});

test.serial('the agent\'s DNS rules are in the captured pod only', async (t) => {
  const captured = await client.exec('iptables-save', ['-t', 'nat']);
  t.regex(captured.stdout, /--dport 53 .*REDIRECT --to-ports 15053/);
  const outside = await mesh.cluster.createPod({ node: 0, namespace: 'legacy', name: 'outside' });
  t.teardown(() => mesh.cluster.deletePod(outside));
  const rules = await outside.exec('iptables-save', ['-t', 'nat']);
  t.notRegex(rules.stdout, /15053/);
});
