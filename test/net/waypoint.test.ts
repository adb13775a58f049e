/**
 * The waypoint on a real 2-node local mesh (control plane reading the cluster directory, real agents, a real
 * waypoint process in its own pod). A Service bound with `istio.io/use-waypoint` is reached through the waypoint:
 * the client's agent sends HBONE to the waypoint's 15008 under the client's identity, the waypoint picks an endpoint
 * and opens HBONE to it under its own identity, so the endpoint sees the waypoint's address and the destination
 * agent the waypoint's identity. A Service without a waypoint, or with `istio.io/use-waypoint: none` under a
 * namespace that names one, is reached straight.
 */
import test from 'ava';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { stringify } from 'yaml';
import { createLocalMesh, type LocalMesh } from '../../runtime/local-mesh.ts';
import { createWaypoint, type LocalWaypoint } from '../../runtime/waypoint.ts';
import { runClient, startEchoServer, type Pod } from '../../runtime/index.ts';

const ENROLLED = { 'istio.io/dataplane-mode': 'ambient' };
const HTTP_PORT = 8080;
const TCP_PORT = 9090;
const WEB_VIP = '10.96.1.10';
const DIRECT_VIP = '10.96.1.11';
const OPTOUT_VIP = '10.96.1.12';
const WAYPOINT_IDENTITY = 'spiffe://cluster.local/ns/shop/sa/wp';
const CLIENT_IDENTITY = 'spiffe://cluster.local/ns/shop/sa/client';

let mesh: LocalMesh;
let waypoint: LocalWaypoint;
let client: Pod;
let webA: Pod;
let webB: Pod;

async function writeAtomically(file: string, text: string): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  const temporary = path.join(path.dirname(file), `.${path.basename(file)}.tmp`);
  await writeFile(temporary, text);
  await rename(temporary, file);
}

async function writeService(name: string, vip: string, labels: Record<string, string> = {}): Promise<void> {
  await writeAtomically(
    path.join(mesh.cluster.clusterDir, 'services', `${name}.yaml`),
    stringify({
      apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: 'shop', labels },
      spec: { clusterIP: vip, selector: { app: 'web' }, ports: [{ name: 'web', port: 80, targetPort: HTTP_PORT }, { name: 'tcp-echo', port: 81, targetPort: TCP_PORT }] },
    }),
  );
}

interface ServiceView {
  name: string;
  waypoint?: { address: string };
  endpoints: unknown[];
}

/** The services a process in `where` knows, from its admin config dump (agent: in the node; waypoint: in its pod). */
async function servicesSeenBy(where: { exec: Pod['exec'] }): Promise<Map<string, ServiceView>> {
  const script = "fetch('http://127.0.0.1:15000/config_dump').then((r) => r.json()).then((d) => process.stdout.write(JSON.stringify(d.services)))";
  const result = await where.exec(process.execPath, ['-e', script]);
  const services = result.code === 0 ? (JSON.parse(result.stdout) as ServiceView[]) : [];
  return new Map(services.map((service) => [service.name, service]));
}

async function until(what: string, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`not seen in 20 s: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- log lines are free-form JSON read by assertions
type LogLine = Record<string, any>;

async function logLines(file: string): Promise<LogLine[]> {
  const text = await readFile(file, 'utf8').catch(() => '');
  return text.split('\n').filter((line) => line.startsWith('{')).map((line) => JSON.parse(line) as LogLine);
}

/** Inbound access-log lines of both agents for connections to the web pods, from `since` on (counts per node). */
async function inboundLines(since: number[]): Promise<LogLine[]> {
  const lines: LogLine[] = [];
  for (const node of [0, 1]) {
    const all = (await logLines(mesh.cluster.node(node).agentLogFile)).filter((line) => line.msg === 'connection closed' && line.direction === 'inbound');
    lines.push(...all.slice(since[node]));
  }
  return lines;
}

async function inboundCounts(): Promise<number[]> {
  return Promise.all([0, 1].map(async (node) => (await logLines(mesh.cluster.node(node).agentLogFile)).filter((line) => line.msg === 'connection closed' && line.direction === 'inbound').length));
}

/** `count` HTTP requests (one connection each) to `vip`; the peers the web pods saw and the inbound access-log principals. */
async function request(vip: string, count: number): Promise<{ peers: string[]; principals: string[] }> {
  const before = await inboundCounts();
  const peers: string[] = [];
  for (let i = 0; i < count; i++) {
    const result = await runClient(client, { host: vip, port: 80, http: true, timeoutMs: 15_000 });
    if (!result.ok) throw new Error(`request to ${vip} failed: ${result.errors.join('; ')}`);
    peers.push((result.response!.body as { peer: string }).peer);
  }
  let lines: LogLine[] = [];
  await until(`${count} inbound access-log lines`, async () => (lines = await inboundLines(before)).length >= count);
  return { peers, principals: lines.map((line) => line.src.principal as string) };
}

test.before(async () => {
  mesh = await createLocalMesh({ nodes: 2, name: 'wp' });
  webA = await mesh.cluster.createPod({ node: 1, namespace: 'shop', name: 'web-a', serviceAccount: 'web', labels: { app: 'web' }, namespaceLabels: ENROLLED });
  webB = await mesh.cluster.createPod({ node: 0, namespace: 'shop', name: 'web-b', serviceAccount: 'web', labels: { app: 'web' } });
  client = await mesh.cluster.createPod({ node: 0, namespace: 'shop', name: 'client', serviceAccount: 'client' });
  for (const pod of [webA, webB]) {
    await startEchoServer(pod, { port: HTTP_PORT, http: true });
    await startEchoServer(pod, { port: TCP_PORT });
  }
  waypoint = await createWaypoint(mesh, { node: 1, namespace: 'shop', name: 'wp' });
  await writeService('web', WEB_VIP, { 'istio.io/use-waypoint': 'wp' });
  await writeService('direct', DIRECT_VIP);
  await writeService('optout', OPTOUT_VIP, { 'istio.io/use-waypoint': 'none' });
  await until('the agent and the waypoint know the services and the waypoint binding', async () => {
    const agent = await servicesSeenBy(mesh.cluster.node(0));
    const atWaypoint = await servicesSeenBy(waypoint.pod);
    return agent.get('web')?.waypoint?.address === waypoint.pod.ip && agent.get('direct')?.waypoint === undefined && agent.has('optout') && atWaypoint.get('web')?.endpoints.length === 2;
  });
});

test.after.always(async () => {
  await mesh?.destroy();
});

test.serial('a Service bound to the waypoint is reached through it: the endpoint sees the waypoint, its agent the waypoint identity', async (t) => {
  const waypointLogBefore = (await logLines(waypoint.logFile)).length;
  const { peers, principals } = await request(WEB_VIP, 6);
  t.deepEqual([...new Set(peers)], [waypoint.pod.ip], 'every request arrived from the waypoint pod');
  t.deepEqual([...new Set(principals)], [WAYPOINT_IDENTITY], 'the destination agents saw the waypoint identity');
  const forwarded = (await logLines(waypoint.logFile)).slice(waypointLogBefore).filter((line) => line.msg === 'connection closed');
  t.true(forwarded.length >= 6);
  t.true(forwarded.every((line) => line.src === CLIENT_IDENTITY && line.authority === `${WEB_VIP}:80` && line.error === undefined), JSON.stringify(forwarded));
  // Both endpoints, on both nodes, are used.
  t.deepEqual(new Set(forwarded.map((line) => line.endpoint)).size, 2);
});

test.serial('TCP through the waypoint carries the bytes both ways', async (t) => {
  const result = await runClient(client, { host: WEB_VIP, port: 81, count: 5, size: 256 * 1024, timeoutMs: 20_000 });
  t.true(result.ok, result.errors.join('; '));
  t.is(result.bytesReceived, 5 * 256 * 1024);
});

test.serial('a Service without a waypoint is reached straight', async (t) => {
  const { peers, principals } = await request(DIRECT_VIP, 3);
  t.deepEqual([...new Set(peers)], [client.ip]);
  t.deepEqual([...new Set(principals)], [CLIENT_IDENTITY]);
});

test.serial('the namespace names the waypoint: its Services use it, except one labelled use-waypoint none', async (t) => {
  await mesh.cluster.setNamespaceLabels('shop', { ...ENROLLED, 'istio.io/use-waypoint': 'wp' });
  await until('direct bound to the waypoint through its namespace', async () => (await servicesSeenBy(mesh.cluster.node(0))).get('direct')?.waypoint?.address === waypoint.pod.ip);
  const viaNamespace = await request(DIRECT_VIP, 3);
  t.deepEqual([...new Set(viaNamespace.peers)], [waypoint.pod.ip]);
  t.deepEqual([...new Set(viaNamespace.principals)], [WAYPOINT_IDENTITY]);
  t.is((await servicesSeenBy(mesh.cluster.node(0))).get('optout')?.waypoint, undefined);
  const optedOut = await request(OPTOUT_VIP, 3);
  t.deepEqual([...new Set(optedOut.peers)], [client.ip]);
  t.deepEqual([...new Set(optedOut.principals)], [CLIENT_IDENTITY]);
  await mesh.cluster.setNamespaceLabels('shop', ENROLLED);
});
