/**
 * DestinationRule through a real waypoint on a 2-node local mesh (control plane reading the cluster directory, real
 * agents, a real waypoint process in its own pod, two backend pods on different nodes): consistent hash by header
 * keeps a key on one endpoint over 1,000 requests; a connectionPool limit answers the overflow 503 with Envoy's
 * `UO` flag (and `x-envoy-overloaded`); an endpoint answering 5xx is ejected by outlierDetection (visible in
 * /config_dump and the metrics), then brought back once it answers again. A rule with a bad field is refused by
 * the control plane with the field's path. A VirtualService routes the same Service (rules in written order) until an
 * HTTPRoute is attached to it, which makes the control plane refuse the VirtualService.
 */
import test from 'ava';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { stringify } from 'yaml';
import { createLocalMesh, type LocalMesh } from '../../runtime/local-mesh.ts';
import { createWaypoint, type LocalWaypoint } from '../../runtime/waypoint.ts';
import type { Pod } from '../../runtime/index.ts';
import { until, writeAtomically } from './helpers/cluster-edits.ts';

const ENROLLED = { 'istio.io/dataplane-mode': 'ambient' };
const HTTP_PORT = 8080;
const WEB_VIP = '10.240.3.10';
const WEB_KEY = 'shop/web.shop.svc.cluster.local';
const HTTP_REQUESTS = path.join(import.meta.dirname, 'helpers', 'http-requests.ts');
const CONCURRENT_REQUESTS = path.join(import.meta.dirname, 'helpers', 'concurrent-requests.ts');
const BACKEND = path.join(import.meta.dirname, 'helpers', 'dr-backend.ts');

let mesh: LocalMesh;
let waypoint: LocalWaypoint;
let client: Pod;
let failDir: string;

function startBackend(pod: Pod): Promise<void> {
  const child = pod.spawn(process.execPath, [BACKEND, String(HTTP_PORT), pod.name, failDir], { stdio: ['ignore', 'pipe', 'pipe'] });
  return new Promise((resolve, reject) => {
    let stdout = '';
    let stderr = '';
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
      if (stdout.includes('"listening"')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`backend in ${pod.name} exited (${code}): ${stderr}`)));
  });
}

interface HttpResult {
  status: number;
  body: { name?: string } | string;
}
const served = (result: HttpResult): string | undefined => (typeof result.body === 'object' && result.body !== null ? result.body.name : undefined);

async function httpRequests(requests: { path: string; headers?: Record<string, string>; repeat?: number }[]): Promise<HttpResult[]> {
  const result = await client.exec(process.execPath, [HTTP_REQUESTS, JSON.stringify({ host: WEB_VIP, port: 80, requests })]);
  if (result.code !== 0) throw new Error(`http-requests failed: ${result.stderr}`);
  return JSON.parse(result.stdout) as HttpResult[];
}

async function fromWaypoint(url: string): Promise<string> {
  const script = `fetch(${JSON.stringify(url)}).then((r) => r.text()).then((text) => process.stdout.write(text))`;
  const result = await waypoint.pod.exec(process.execPath, ['-e', script]);
  return result.code === 0 ? result.stdout : '';
}

interface DestinationDump {
  policies: Record<string, { rule: string; loadBalancer: { simple: string }; connectionPool: { maxConnections: number }; outlierDetection?: object }>;
  traffic: Record<string, { ejected: { endpoint: string; ejections: number }[]; ejectionsTotal: number; overflows: number }>;
}

async function destinationDump(): Promise<DestinationDump> {
  const text = await fromWaypoint('http://127.0.0.1:15000/config_dump');
  return text ? ((JSON.parse(text) as { destinationRules: DestinationDump }).destinationRules) : { policies: {}, traffic: {} };
}

const RULE_FILE = (): string => path.join(mesh.cluster.clusterDir, 'destinationrules', 'web.yaml');

/** Writes the DestinationRule for `web` and waits until the waypoint serves it (`ready` says when). */
async function applyRule(trafficPolicy: object, ready: (policy: DestinationDump['policies'][string]) => boolean): Promise<void> {
  await writeAtomically(RULE_FILE(), stringify({ apiVersion: 'networking.istio.io/v1', kind: 'DestinationRule', metadata: { name: 'web', namespace: 'shop' }, spec: { host: 'web', trafficPolicy } }));
  await until('the waypoint has the DestinationRule', async () => {
    const policy = (await destinationDump()).policies[WEB_KEY];
    return policy !== undefined && ready(policy);
  });
}

test.before(async () => {
  failDir = await mkdtemp(path.join(os.tmpdir(), 'ambit-dr-'));
  mesh = await createLocalMesh({ nodes: 2, name: 'dr' });
  const webA = await mesh.cluster.createPod({ node: 1, namespace: 'shop', name: 'web-a', serviceAccount: 'web', labels: { app: 'web', version: 'v1' }, namespaceLabels: ENROLLED });
  const webB = await mesh.cluster.createPod({ node: 0, namespace: 'shop', name: 'web-b', serviceAccount: 'web', labels: { app: 'web', version: 'v2' } });
  client = await mesh.cluster.createPod({ node: 0, namespace: 'shop', name: 'client', serviceAccount: 'client' });
  await Promise.all([startBackend(webA), startBackend(webB)]);
  waypoint = await createWaypoint(mesh, { node: 1, namespace: 'shop', name: 'wp' });
  const writeService = (name: string, vip: string, selector: Record<string, string>, labels: Record<string, string> = {}): Promise<void> =>
    writeAtomically(
      path.join(mesh.cluster.clusterDir, 'services', `${name}.yaml`),
      stringify({ apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: 'shop', labels }, spec: { clusterIP: vip, selector, ports: [{ name: 'http', port: 80, targetPort: HTTP_PORT }] } }),
    );
  await writeService('web', WEB_VIP, { app: 'web' }, { 'istio.io/use-waypoint': 'wp' });
  await writeService('web-v1', '10.240.3.11', { app: 'web', version: 'v1' });
  await writeService('web-v2', '10.240.3.12', { app: 'web', version: 'v2' });
  await until('the waypoint knows web and both endpoints', async () => {
    const text = await fromWaypoint('http://127.0.0.1:15000/config_dump');
    const services = text ? (JSON.parse(text) as { services: { name: string; endpoints: unknown[] }[] }).services : [];
    return services.find((service) => service.name === 'web')?.endpoints.length === 2;
  });
});

test.after.always(async () => {
  await mesh?.destroy();
  if (failDir) await rm(failDir, { recursive: true, force: true });
});

test.serial('consistent hash by header: 1,000 requests with one key land on one endpoint; other keys use both', async (t) => {
  await applyRule({ loadBalancer: { consistentHash: { httpHeaderName: 'x-user' } } }, (policy) => policy.loadBalancer.simple === 'CONSISTENT_HASH');
  const alice = await httpRequests([{ path: '/', headers: { 'x-user': 'alice' }, repeat: 1000 }]);
  t.is(alice.filter((result) => result.status === 200).length, 1000);
  const endpoints = new Set(alice.map(served));
  t.is(endpoints.size, 1, `alice went to ${[...endpoints].join(', ')}`);
  const users = await httpRequests(Array.from({ length: 40 }, (_, i) => ({ path: '/', headers: { 'x-user': `user-${i}` }, repeat: 3 })));
  const byUser = new Map<string, Set<string | undefined>>();
  users.forEach((result, index) => {
    const user = `user-${Math.floor(index / 3)}`;
    byUser.set(user, (byUser.get(user) ?? new Set()).add(served(result)));
  });
  t.true([...byUser.values()].every((names) => names.size === 1), 'each user keeps its endpoint');
  t.deepEqual([...new Set(users.map(served))].sort(), ['web-a', 'web-b'], 'the keys spread over both endpoints');
});

test.serial('connectionPool: one connection and one pending request; the rest is answered 503 UO', async (t) => {
  await applyRule({ loadBalancer: { simple: 'ROUND_ROBIN' }, connectionPool: { tcp: { maxConnections: 1 }, http: { http1MaxPendingRequests: 1 } } }, (policy) => policy.connectionPool.maxConnections === 1);
  const metricsBefore = await fromWaypoint('http://127.0.0.1:15020/metrics');
  const result = await client.exec(process.execPath, [CONCURRENT_REQUESTS, JSON.stringify({ host: WEB_VIP, port: 80, path: '/slow?ms=8000', count: 6 })]);
  const results = JSON.parse(result.stdout) as { status: number; overloaded?: string; body: string }[];
  t.log(results.map((r) => `${r.status}${r.overloaded ? ' overloaded' : ''}`).join(', '));
  t.is(results.filter((r) => r.status === 200).length, 2, 'the one in flight and the one waiting were served');
  const overflowed = results.filter((r) => r.status === 503);
  t.is(overflowed.length, 4);
  t.true(overflowed.every((r) => r.overloaded === 'true' && r.body.includes('upstream overflow')), JSON.stringify(overflowed));
  const metrics = await fromWaypoint('http://127.0.0.1:15020/metrics');
  const count = (text: string): number =>
    text.split('\n').filter((line) => line.startsWith('istio_requests_total{') && line.includes('response_flags="UO"') && line.includes('response_code="503"')).reduce((sum, line) => sum + Number(line.split(' ').pop()), 0);
  t.is(count(metrics) - count(metricsBefore), 4, 'istio_requests_total counts the overflows with flag UO');
  t.regex(metrics, /envoy_cluster_upstream_rq_pending_overflow\{cluster_name="shop\/web.shop.svc.cluster.local"\} 4/);
  const idle = async (): Promise<boolean> => {
    const traffic = (await destinationDump()).traffic[WEB_KEY] as unknown as { active: number; pending: number } | undefined;
    return traffic?.active === 0 && traffic.pending === 0;
  };
  await until('every slot back', idle);
  // Clients that give up, one holding the slot and one waiting for it: both slots come back.
  const aborted = await client.exec(process.execPath, [CONCURRENT_REQUESTS, JSON.stringify({ host: WEB_VIP, port: 80, path: '/slow?ms=30000', count: 2, timeoutMs: 1000 })]);
  t.deepEqual((JSON.parse(aborted.stdout) as { status: number }[]).map((r) => r.status), [0, 0], 'both gave up');
  // Well before the backend answers (30 s): the slots come back when the clients go, not when the backend is done.
  await until('the slots of the clients that gave up are back', idle, 10_000);
  const [after] = await httpRequests([{ path: '/' }]);
  t.is(after!.status, 200);
});

test.serial('outlierDetection: an endpoint answering 503 is ejected, then brought back once it answers again', async (t) => {
  await applyRule(
    { loadBalancer: { simple: 'ROUND_ROBIN' }, outlierDetection: { consecutive5xxErrors: 2, interval: '1s', baseEjectionTime: '20s', maxEjectionPercent: 100 } },
    (policy) => policy.outlierDetection !== undefined,
  );
  const failFile = path.join(failDir, 'fail-web-b');
  await writeFile(failFile, '');
  const failing = await httpRequests([{ path: '/', repeat: 30 }]);
  // Istio's default retry policy (2 retries on 503, another host preferred) hides web-b's two 503s from the client:
  // every request is answered by web-a, and outlier detection still heard both tries that web-b failed.
  t.true(failing.every((result) => result.status === 200 && served(result) === 'web-a'), JSON.stringify(failing.filter((result) => result.status !== 200 || served(result) !== 'web-a')));
  // Read at once: the ejection lasts 20 s (10 s was outlasted by the 30 requests at load 30 before these reads).
  const [dump, metrics] = await Promise.all([destinationDump(), fromWaypoint('http://127.0.0.1:15020/metrics')]);
  // One ejection on a quiet machine; on a loaded one the 30 requests can outlast the 20 s and eject web-b again.
  t.is(dump.traffic[WEB_KEY]?.ejected.length, 1, JSON.stringify(dump.traffic));
  t.true((dump.traffic[WEB_KEY]?.ejected[0]?.ejections ?? 0) >= 1, JSON.stringify(dump.traffic));
  t.true(dump.traffic[WEB_KEY]?.ejected[0]?.endpoint.endsWith('web-b'));
  t.regex(metrics, /envoy_cluster_outlier_detection_ejections_active\{cluster_name="shop\/web.shop.svc.cluster.local"\} 1/);
  t.regex(metrics, /envoy_cluster_outlier_detection_ejections_enforced_total\{cluster_name="shop\/web.shop.svc.cluster.local"\} [1-9]/);
  await rm(failFile);
  // The signal: the waypoint itself says the ejection is over (20 s plus up to one 1 s sweep).
  await until('web-b back in', async () => ((await destinationDump()).traffic[WEB_KEY]?.ejected.length ?? 1) === 0, 45_000);
  const back = await httpRequests([{ path: '/', repeat: 10 }]);
  t.true(back.every((result) => result.status === 200), JSON.stringify(back.filter((result) => result.status !== 200)));
  t.deepEqual([...new Set(back.map(served))].sort(), ['web-a', 'web-b']);
});

test.serial('a DestinationRule with a bad field is refused by the control plane with the field path', async (t) => {
  await writeAtomically(
    path.join(mesh.cluster.clusterDir, 'destinationrules', 'bad.yaml'),
    stringify({ apiVersion: 'networking.istio.io/v1', kind: 'DestinationRule', metadata: { name: 'bad', namespace: 'shop' }, spec: { host: 'web', trafficPolicy: { outlierDetection: { interval: 'often' } } } }),
  );
  let log = '';
  await until('the problem in the control plane log', async () => (log = await readFile(mesh.controlPlaneLogFile!, 'utf8')).includes('DestinationRule shop/bad not served'));
  t.regex(log, /DestinationRule shop\/bad not served: spec\.trafficPolicy\.outlierDetection\.interval: must be a duration/);
  // The served rule is unchanged.
  t.is((await destinationDump()).policies[WEB_KEY]?.rule, 'shop/web');
});

test.serial('VirtualService on the waypoint: rules in written order; refused once an HTTPRoute routes the same Service', async (t) => {
  await rm(RULE_FILE(), { force: true });
  const vsFile = path.join(mesh.cluster.clusterDir, 'virtualservices', 'web.yaml');
  await writeAtomically(
    vsFile,
    stringify({
      apiVersion: 'networking.istio.io/v1', kind: 'VirtualService', metadata: { name: 'web', namespace: 'shop' },
      spec: {
        hosts: ['web'],
        http: [
          { match: [{ headers: { 'x-canary': { exact: 'yes' } } }], route: [{ destination: { host: 'web-v2' } }] },
          { match: [{ uri: { prefix: '/v1' } }], route: [{ destination: { host: 'web-v1', port: { number: 80 } } }] },
        ],
      },
    }),
  );
  const routesAtWaypoint = async (): Promise<{ route: string }[]> => {
    const text = await fromWaypoint('http://127.0.0.1:15000/config_dump');
    return text ? ((JSON.parse(text) as { routes: Record<string, { route: string }[]> }).routes[WEB_KEY] ?? []) : [];
  };
  await until('the waypoint has the VirtualService routes', async () => (await routesAtWaypoint()).some((entry) => entry.route === 'VirtualService/shop/web'));
  const results = await httpRequests([
    { path: '/v1/x', headers: { 'x-canary': 'yes' }, repeat: 20 },
    { path: '/v1/x', repeat: 20 },
    { path: '/other' },
  ]);
  t.true(results.slice(0, 20).every((result) => result.status === 200 && served(result) === 'web-b'), 'the header rule is written first and wins');
  t.true(results.slice(20, 40).every((result) => result.status === 200 && served(result) === 'web-a'));
  t.is(results[40]!.status, 404, 'no rule matches: 404');
  const routeFile = path.join(mesh.cluster.clusterDir, 'routes', 'web.yaml');
  await writeAtomically(
    routeFile,
    stringify({ apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name: 'web', namespace: 'shop' }, spec: { parentRefs: [{ group: '', kind: 'Service', name: 'web' }], rules: [{ backendRefs: [{ name: 'web-v1', port: 80 }] }] } }),
  );
  let log = '';
  await until('the mixing refused in the control plane log', async () => (log = await readFile(mesh.controlPlaneLogFile!, 'utf8')).includes('VirtualService shop/web not served'));
  t.regex(log, /VirtualService shop\/web not served: spec\.hosts\[0\]: shop\/web\.shop\.svc\.cluster\.local already has an HTTPRoute attached; mixing/);
  await until('the HTTPRoute serves', async () => (await routesAtWaypoint()).every((entry) => entry.route === 'shop/web'));
  const [after] = await httpRequests([{ path: '/other' }]);
  t.is(served(after!), 'web-a', 'the HTTPRoute, not the VirtualService, routes web');
  await rm(routeFile, { force: true });
  await rm(vsFile, { force: true });
});
