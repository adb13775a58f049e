/**
 * The waypoint on a real 2-node local mesh (control plane reading the cluster directory, real agents, a real
 * waypoint process in its own pod). A Service bound with `istio.io/use-waypoint` is reached through the waypoint:
 * the client's agent sends HBONE to the waypoint's 15008 under the client's identity, the waypoint picks an endpoint
 * and opens HBONE to it under its own identity, so the endpoint sees the waypoint's address and the destination
 * agent the waypoint's identity. A Service without a waypoint, or with `istio.io/use-waypoint: none` under a
 * namespace that names one, is reached straight. On an http port the waypoint serves HTTP/1.1 (keep-alive) and
 * routes by the HTTPRoutes attached to the Service (GAMMA), as the control plane compiles them: path and header
 * matches with the spec's precedence, RequestHeaderModifier, weighted backends, 404 when nothing matches; invalid
 * routes are reported by the control plane with a reason; Istio's request metrics on the waypoint's 15020.
 */
import test from 'ava';
import { readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { stringify } from 'yaml';
import { createLocalMesh, type LocalMesh } from '../../runtime/local-mesh.ts';
import { createWaypoint, type LocalWaypoint } from '../../runtime/waypoint.ts';
import { runClient, startEchoServer, type Pod } from '../../runtime/index.ts';
import { until, writeAtomically } from './helpers/cluster-edits.ts';

const ENROLLED = { 'istio.io/dataplane-mode': 'ambient' };
const HTTP_PORT = 8080;
const TCP_PORT = 9090;
const WEB_VIP = '10.240.2.10';
const DIRECT_VIP = '10.240.2.11';
const OPTOUT_VIP = '10.240.2.12';
const V1_VIP = '10.240.2.13';
const V2_VIP = '10.240.2.14';
const WAYPOINT_IDENTITY = 'spiffe://cluster.local/ns/shop/sa/wp';
const CLIENT_IDENTITY = 'spiffe://cluster.local/ns/shop/sa/client';

let mesh: LocalMesh;
let waypoint: LocalWaypoint;
let client: Pod;
let webA: Pod;
let webB: Pod;

async function writeService(name: string, vip: string, labels: Record<string, string> = {}, selector: Record<string, string> = { app: 'web' }): Promise<void> {
  await writeAtomically(
    path.join(mesh.cluster.clusterDir, 'services', `${name}.yaml`),
    stringify({
      apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: 'shop', labels },
      spec: { clusterIP: vip, selector, ports: [{ name: 'http', port: 80, targetPort: HTTP_PORT }, { name: 'tcp-echo', port: 81, targetPort: TCP_PORT }] },
    }),
  );
}

const HTTP_REQUESTS = path.join(import.meta.dirname, 'helpers', 'http-requests.ts');

interface HttpResult {
  path: string;
  status: number;
  reused: boolean;
  body: { name?: string; peer?: string; headers?: Record<string, string> } | string;
  error?: string;
}

/** Requests from the client pod over one keep-alive connection to `vip`:80. */
async function httpRequests(vip: string, requests: { path: string; headers?: Record<string, string>; repeat?: number }[]): Promise<HttpResult[]> {
  const result = await client.exec(process.execPath, [HTTP_REQUESTS, JSON.stringify({ host: vip, port: 80, requests })]);
  if (result.code !== 0) throw new Error(`http-requests failed: ${result.stderr}`);
  return JSON.parse(result.stdout) as HttpResult[];
}

const served = (result: HttpResult): string | undefined => (typeof result.body === 'object' ? result.body.name : undefined);

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

async function waypointStreamsClosed(): Promise<boolean> {
  const script = "fetch('http://127.0.0.1:15000/config_dump').then((r) => r.json()).then((d) => process.stdout.write(JSON.stringify(d.upstreamConnections)))";
  const result = await waypoint.pod.exec(process.execPath, ['-e', script]);
  const pools = result.code === 0 ? (JSON.parse(result.stdout) as Record<string, { open: number; idle: number }>) : { unknown: { open: 1, idle: 0 } };
  return Object.values(pools).every((pool) => pool.open + pool.idle === 0);
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
  // The waypoint keeps its streams to endpoints alive for the next requests: one inbound line per stream, logged
  // when the idle stream closes. Wait for that, so no line of these requests lands among a later test's.
  const viaWaypoint = peers.every((peer) => peer === waypoint.pod.ip);
  if (viaWaypoint) await until('the waypoint closed its idle streams to endpoints', waypointStreamsClosed);
  await until(`inbound access-log lines of ${count} requests`, async () => (lines = await inboundLines(before)).length >= (viaWaypoint ? 1 : count));
  return { peers, principals: lines.map((line) => line.src.principal as string) };
}

test.before(async () => {
  mesh = await createLocalMesh({ nodes: 2, name: 'wp' });
  webA = await mesh.cluster.createPod({ node: 1, namespace: 'shop', name: 'web-a', serviceAccount: 'web', labels: { app: 'web', version: 'v1' }, namespaceLabels: ENROLLED });
  webB = await mesh.cluster.createPod({ node: 0, namespace: 'shop', name: 'web-b', serviceAccount: 'web', labels: { app: 'web', version: 'v2' } });
  client = await mesh.cluster.createPod({ node: 0, namespace: 'shop', name: 'client', serviceAccount: 'client' });
  for (const pod of [webA, webB]) {
    await startEchoServer(pod, { port: HTTP_PORT, http: true, name: pod.name });
    await startEchoServer(pod, { port: TCP_PORT });
  }
  waypoint = await createWaypoint(mesh, { node: 1, namespace: 'shop', name: 'wp' });
  await writeService('web', WEB_VIP, { 'istio.io/use-waypoint': 'wp' });
  await writeService('direct', DIRECT_VIP);
  await writeService('optout', OPTOUT_VIP, { 'istio.io/use-waypoint': 'none' });
  await writeService('web-v1', V1_VIP, {}, { app: 'web', version: 'v1' });
  await writeService('web-v2', V2_VIP, {}, { app: 'web', version: 'v2' });
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
  const { peers, principals } = await request(WEB_VIP, 6);
  t.deepEqual([...new Set(peers)], [waypoint.pod.ip], 'every request arrived from the waypoint pod');
  t.deepEqual([...new Set(principals)], [WAYPOINT_IDENTITY], 'the destination agents saw the waypoint identity');
});

test.serial('TCP through the waypoint carries the bytes both ways', async (t) => {
  const waypointLogBefore = (await logLines(waypoint.logFile)).length;
  const result = await runClient(client, { host: WEB_VIP, port: 81, count: 5, size: 256 * 1024, timeoutMs: 20_000 });
  t.true(result.ok, result.errors.join('; '));
  t.is(result.bytesReceived, 5 * 256 * 1024);
  // The waypoint saw the client's identity and the VIP:port as :authority, and reached an endpoint each time.
  let forwarded: LogLine[] = [];
  await until('5 connections in the waypoint log', async () => (forwarded = (await logLines(waypoint.logFile)).slice(waypointLogBefore).filter((line) => line.msg === 'connection closed')).length >= 5);
  t.true(forwarded.every((line) => line.src === CLIENT_IDENTITY && line.authority === `${WEB_VIP}:81` && line.error === undefined && line.endpoint?.startsWith('shop/web-')), JSON.stringify(forwarded));
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

/** The HTTPRoute of the routing tests; rules listed out of precedence order on purpose. */
const WEB_ROUTE = {
  apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name: 'web', namespace: 'shop' },
  spec: {
    parentRefs: [{ group: '', kind: 'Service', name: 'web', port: 80 }],
    rules: [
      { matches: [{ path: { type: 'PathPrefix', value: '/api' } }], backendRefs: [{ name: 'web-v1', port: 80 }] },
      { matches: [{ path: { type: 'PathPrefix', value: '/api' }, headers: [{ name: 'X-Canary', value: 'yes' }] }], backendRefs: [{ name: 'web-v2', port: 80 }] },
      {
        name: 'exact',
        matches: [{ path: { type: 'Exact', value: '/exact' } }],
        filters: [{ type: 'RequestHeaderModifier', requestHeaderModifier: { set: [{ name: 'x-route', value: 'exact' }], add: [{ name: 'x-added', value: 'b' }], remove: ['x-drop'] } }],
        backendRefs: [{ name: 'web-v2', port: 80 }],
      },
      { matches: [{ path: { type: 'PathPrefix', value: '/split' } }], backendRefs: [{ name: 'web-v1', port: 80, weight: 80 }, { name: 'web-v2', port: 80, weight: 20 }] },
    ],
  },
};

async function waypointRoutes(): Promise<Record<string, unknown[]>> {
  const script = "fetch('http://127.0.0.1:15000/config_dump').then((r) => r.json()).then((d) => process.stdout.write(JSON.stringify(d.routes)))";
  const result = await waypoint.pod.exec(process.execPath, ['-e', script]);
  return result.code === 0 ? (JSON.parse(result.stdout) as Record<string, unknown[]>) : {};
}

test.serial('HTTPRoute on the Service: precedence of path and header matches, header modifier, 404, keep-alive', async (t) => {
  await writeAtomically(path.join(mesh.cluster.clusterDir, 'routes', 'web.yaml'), stringify(WEB_ROUTE));
  await until('the waypoint has the routes', async () => ((await waypointRoutes())['shop/web.shop.svc.cluster.local']?.length ?? 0) === 4);
  const results = await httpRequests(WEB_VIP, [
    { path: '/api/items' },
    { path: '/api/items', headers: { 'x-canary': 'yes' } },
    { path: '/api' },
    { path: '/apix' },
    { path: '/exact', headers: { 'x-added': 'a', 'x-drop': 'secret', 'x-route': 'client' } },
    { path: '/exact/more' },
    { path: '/other' },
  ]);
  t.deepEqual(results.map((result) => result.status), [200, 200, 200, 404, 200, 404, 404], JSON.stringify(results));
  t.deepEqual(results.map(served), ['web-a', 'web-b', 'web-a', undefined, 'web-b', undefined, undefined]);
  const exact = results[4]!.body as { headers: Record<string, string>; peer: string };
  t.is(exact.headers['x-route'], 'exact', 'set replaces the client value');
  t.is(exact.headers['x-added'], 'a,b', 'add appends');
  t.is(exact.headers['x-drop'], undefined, 'remove drops it');
  t.is(exact.peer, waypoint.pod.ip);
  t.true(results.slice(1).every((result) => result.reused), 'every request after the first rode the same client connection');
});

test.serial('weighted backends: an 80/20 split over 400 requests', async (t) => {
  const results = await httpRequests(WEB_VIP, [{ path: '/split', repeat: 400 }]);
  t.true(results.every((result) => result.status === 200), JSON.stringify(results.filter((result) => result.status !== 200).slice(0, 3)));
  const v2 = results.filter((result) => served(result) === 'web-b').length / results.length;
  t.log(`web-v2 share: ${(v2 * 100).toFixed(1)} % of 400 (weight 20 %)`);
  // Binomial sd for p = 0.2, n = 400 is 2 points: 3.5 sd either side.
  t.true(v2 > 0.13 && v2 < 0.27, `v2 share ${v2}`);
});

test.serial('invalid routes are reported by the control plane with a reason', async (t) => {
  await writeAtomically(
    path.join(mesh.cluster.clusterDir, 'routes', 'bad.yaml'),
    [
      stringify({ apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name: 'regex', namespace: 'shop' }, spec: { parentRefs: [{ group: '', kind: 'Service', name: 'web' }], rules: [{ matches: [{ path: { type: 'RegularExpression', value: '/a(' } }], backendRefs: [{ name: 'web-v1', port: 80 }] }] } }),
      stringify({ apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name: 'orphan', namespace: 'shop' }, spec: { parentRefs: [{ group: '', kind: 'Service', name: 'nothing' }], rules: [{ backendRefs: [{ name: 'web-v1', port: 80 }] }] } }),
    ].join('---\n'),
  );
  let log = '';
  await until('both problems in the control plane log', async () => {
    log = await readFile(mesh.controlPlaneLogFile!, 'utf8');
    return log.includes('HTTPRoute shop/regex: Accepted False (UnsupportedValue)') && log.includes('HTTPRoute shop/orphan: Accepted False (NoMatchingParent)');
  });
  t.regex(log, /shop\/regex.*is not a valid RE2 regular expression/);
  t.regex(log, /shop\/orphan.*parent Service shop\/nothing does not exist/);
  // The valid route still serves.
  const [result] = await httpRequests(WEB_VIP, [{ path: '/api' }]);
  t.is(served(result!), 'web-a');
});

test.serial("Istio's request metrics on the waypoint's 15020", async (t) => {
  const script = "fetch('http://127.0.0.1:15020/metrics').then((r) => r.text()).then((text) => process.stdout.write(text))";
  const result = await waypoint.pod.exec(process.execPath, ['-e', script]);
  const lines = result.stdout.split('\n');
  const count = (predicate: (line: string) => boolean): number =>
    lines.filter((line) => line.startsWith('istio_requests_total{') && predicate(line)).reduce((sum, line) => sum + Number(line.split(' ').pop()), 0);
  const notFound = count((line) => line.includes('response_code="404"') && line.includes('response_flags="NR"') && line.includes('reporter="waypoint"'));
  t.true(notFound >= 3, `404s counted: ${notFound}`);
  const toV2 = count((line) => line.includes('destination_service="web-v2.shop.svc.cluster.local"') && line.includes('response_code="200"') && line.includes(`source_principal="${CLIENT_IDENTITY}"`) && line.includes('source_workload="client"'));
  t.true(toV2 >= 2, `200s to web-v2: ${toV2}`);
  t.true(lines.some((line) => line.startsWith('istio_request_duration_milliseconds_bucket{') && line.includes('le="0.5"')), 'Istio buckets');
});

test.serial('a selector policy at the destination sees the waypoint as the source', async (t) => {
  const policyFile = path.join(mesh.cluster.clusterDir, 'policies', 'only-waypoint.yaml');
  await writeAtomically(
    policyFile,
    stringify({
      apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'only-waypoint', namespace: 'shop' },
      spec: { selector: { matchLabels: { app: 'web' } }, action: 'ALLOW', rules: [{ from: [{ source: { principals: ['cluster.local/ns/shop/sa/wp'] } }] }] },
    }),
  );
  try {
    // The signal that the policy is in force: the client's own identity is refused on the direct path.
    await until('the direct path refused', async () => !(await runClient(client, { host: OPTOUT_VIP, port: 80, http: true, timeoutMs: 5_000 })).ok);
    const results = await httpRequests(WEB_VIP, [{ path: '/api', repeat: 4 }]);
    t.deepEqual(results.map((result) => result.status), [200, 200, 200, 200], JSON.stringify(results));
  } finally {
    await rm(policyFile, { force: true });
  }
});
