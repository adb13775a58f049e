/**
 * VirtualService through a real waypoint on a 2-node local mesh (control plane reading the cluster directory, real
 * agents, a real waypoint process in its own pod, backends web-a (version v1) and web-b (v2) on different nodes),
 * in the shape of Istio's traffic-management tasks: fault delay and abort at a percentage over 1,000 requests (counted
 * by the access log's DI / FI flags, the aborted ones never reaching the backend), retries that turn a backend failing
 * every other request into successes, a per-try timeout retried (or not, by retryOn), a request timeout answered 504,
 * DestinationRule subsets routing to the right version (an undefined one 503 NC), mirror, redirect, rewrite, header
 * operations seen at the backend and the client, and the newer matches (regex uri, method, withoutHeaders).
 */
import test from 'ava';
import type { ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { stringify } from 'yaml';
import { createLocalMesh, type LocalMesh } from '../../runtime/local-mesh.ts';
import { createWaypoint, type LocalWaypoint } from '../../runtime/waypoint.ts';
import type { Pod } from '../../runtime/index.ts';
import { until, writeAtomically } from './helpers/cluster-edits.ts';

const ENROLLED = { 'istio.io/dataplane-mode': 'ambient' };
const BACKEND_PORT = 8080;
const WEB_VIP = '10.240.3.10';
const WEB_KEY = 'shop/web.shop.svc.cluster.local';
const ROUTE_BACKEND = path.join(import.meta.dirname, 'helpers', 'route-backend.ts');
const ROUTE_CLIENT = path.join(import.meta.dirname, 'helpers', 'route-client.ts');
/** The fault task's shares, small enough that 3 points are 3 standard deviations over 1,000 requests. */
const DELAY_PERCENT = 10;
const ABORT_PERCENT = 10;
const DELAY_MS = 40;
const FAULT_REQUESTS = 1000;

let mesh: LocalMesh;
let waypoint: LocalWaypoint;
let client: Pod;
let webA: Pod;
let webB: Pod;

function startBackend(pod: Pod): Promise<ChildProcess> {
  const child = pod.spawn(process.execPath, [ROUTE_BACKEND, '--port', String(BACKEND_PORT), '--name', pod.name], { stdio: ['ignore', 'pipe', 'pipe'] });
  return new Promise((resolve, reject) => {
    let stdout = '';
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
      if (stdout.includes('"listening"')) resolve(child);
    });
    child.once('exit', (code) => reject(new Error(`backend in ${pod.name} exited (${code})`)));
  });
}

interface Received {
  path: string;
  status: number;
  headers: Record<string, string>;
  body: { name?: string; url?: string; method?: string; headers?: Record<string, string> } | string;
  error?: string;
}

/** Requests from the client pod, in order over one keep-alive connection to web's VIP. */
async function send(requests: { path: string; method?: string; headers?: Record<string, string>; repeat?: number }[]): Promise<Received[]> {
  const result = await client.exec(process.execPath, [ROUTE_CLIENT, JSON.stringify({ host: WEB_VIP, port: 80, requests })]);
  if (result.code !== 0) throw new Error(`route-client failed: ${result.stderr}`);
  return JSON.parse(result.stdout) as Received[];
}

const servedBy = (result: Received): string | undefined => (typeof result.body === 'object' ? result.body.name : undefined);
const bodyOf = (result: Received): Exclude<Received['body'], string> => (typeof result.body === 'object' ? result.body : {});

async function inPod(pod: Pod, url: string): Promise<string> {
  const script = `fetch(${JSON.stringify(url)}).then((r) => r.text()).then((text) => process.stdout.write(text))`;
  const result = await pod.exec(process.execPath, ['-e', script]);
  if (result.code !== 0) throw new Error(`fetch ${url} in ${pod.name} failed: ${result.stderr}`);
  return result.stdout;
}

/** Every request a backend received, as it recorded them. */
async function seenBy(pod: Pod): Promise<{ method: string; url: string; headers: Record<string, string> }[]> {
  return JSON.parse(await inPod(pod, `http://127.0.0.1:${BACKEND_PORT}/__seen`)) as { method: string; url: string; headers: Record<string, string> }[];
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- log lines are free-form JSON read by assertions
type LogLine = Record<string, any>;

/** The waypoint's access-log lines of one VirtualService rule. */
async function logLinesOf(ruleName: string): Promise<LogLine[]> {
  const text = await readFile(waypoint.logFile, 'utf8').catch(() => '');
  return text.split('\n').filter((line) => line.startsWith('{')).map((line) => JSON.parse(line) as LogLine).filter((line) => line.msg === 'request' && line.rule_name === ruleName);
}

/** Waits until the waypoint logged `count` requests of the rule (lines are written as requests end). */
async function loggedRequests(ruleName: string, count: number): Promise<LogLine[]> {
  let lines: LogLine[] = [];
  await until(`${count} access-log lines of rule ${ruleName}`, async () => (lines = await logLinesOf(ruleName)).length >= count);
  return lines;
}

async function configDump(): Promise<{ routes: Record<string, { route: string; ruleName: string }[]>; destinationRules: { policies: Record<string, { subsets: { name: string; pods: string[] }[] }> } } | undefined> {
  const text = await inPod(waypoint.pod, 'http://127.0.0.1:15000/config_dump').catch(() => '');
  return text ? JSON.parse(text) : undefined;
}

const to = (host: string, extra: object = {}): object[] => [{ destination: { host, ...extra } }];
const prefix = (value: string): object[] => [{ uri: { prefix: value } }];

const VIRTUAL_SERVICE = {
  apiVersion: 'networking.istio.io/v1', kind: 'VirtualService', metadata: { name: 'web', namespace: 'shop' },
  spec: {
    hosts: ['web'],
    http: [
      { name: 'faults', match: prefix('/fault'), fault: { delay: { fixedDelay: `${DELAY_MS}ms`, percentage: { value: DELAY_PERCENT } }, abort: { httpStatus: 503, percentage: { value: ABORT_PERCENT } } }, route: to('web-v1') },
      { name: 'teapot', match: prefix('/teapot'), fault: { abort: { httpStatus: 418 } }, route: to('web-v1') },
      { name: 'flaky-retried', match: prefix('/flaky/retried'), retries: { attempts: 3, retryOn: '5xx' }, route: to('web-v1') },
      { name: 'flaky-off', match: prefix('/flaky/off'), retries: { attempts: 0 }, route: to('web-v1') },
      { name: 'per-try', match: prefix('/per-try/retried'), retries: { attempts: 2, perTryTimeout: '500ms', retryOn: 'gateway-error' }, route: to('web-v1') },
      { name: 'per-try-connect-only', match: prefix('/per-try/connect-only'), retries: { attempts: 2, perTryTimeout: '500ms', retryOn: 'connect-failure' }, route: to('web-v1') },
      { name: 'timeout', match: prefix('/timeout'), timeout: '500ms', route: to('web-v1') },
      { name: 'subset-v1', match: prefix('/subset/v1'), route: to('web', { subset: 'v1' }) },
      { name: 'subset-v2', match: prefix('/subset/v2'), route: to('web', { subset: 'v2' }) },
      { name: 'subset-undefined', match: prefix('/subset/v3'), route: to('web', { subset: 'v3' }) },
      { name: 'mirrored', match: prefix('/mirror'), mirror: { host: 'web-v2' }, mirrorPercentage: { value: 100 }, route: to('web-v1') },
      { name: 'moved', match: prefix('/old'), redirect: { uri: '/new', authority: 'elsewhere.example', redirectCode: 308 } },
      { name: 'rewritten', match: prefix('/v1/'), rewrite: { uri: '/api/', authority: 'api.internal' }, route: to('web-v1') },
      {
        name: 'headers',
        match: prefix('/headers'),
        headers: { request: { set: { 'x-set': 'rule' }, add: { 'x-added': 'mesh' }, remove: ['x-drop'] }, response: { set: { 'x-answered': 'rule' }, remove: ['x-backend-secret'] } },
        route: [{ destination: { host: 'web-v1' }, headers: { request: { set: { 'x-destination': 'v1' } }, response: { add: { 'x-from': 'v1' } } } }],
      },
      { name: 'matched', match: [{ uri: { regex: '/items/[0-9]+' }, method: { exact: 'POST' }, withoutHeaders: { 'x-skip': { exact: '1' } } }], route: to('web-v2') },
      { name: 'rest', route: to('web-v1') },
    ],
  },
};

test.before(async () => {
  mesh = await createLocalMesh({ nodes: 2, name: 'vs' });
  webA = await mesh.cluster.createPod({ node: 1, namespace: 'shop', name: 'web-a', serviceAccount: 'web', labels: { app: 'web', version: 'v1' }, namespaceLabels: ENROLLED });
  webB = await mesh.cluster.createPod({ node: 0, namespace: 'shop', name: 'web-b', serviceAccount: 'web', labels: { app: 'web', version: 'v2' } });
  client = await mesh.cluster.createPod({ node: 0, namespace: 'shop', name: 'client', serviceAccount: 'client' });
  await Promise.all([startBackend(webA), startBackend(webB)]);
  waypoint = await createWaypoint(mesh, { node: 1, namespace: 'shop', name: 'wp' });
  const writeService = (name: string, vip: string, selector: Record<string, string>, labels: Record<string, string> = {}): Promise<void> =>
    writeAtomically(
      path.join(mesh.cluster.clusterDir, 'services', `${name}.yaml`),
      stringify({ apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: 'shop', labels }, spec: { clusterIP: vip, selector, ports: [{ name: 'http', port: 80, targetPort: BACKEND_PORT }] } }),
    );
  await writeService('web', WEB_VIP, { app: 'web' }, { 'istio.io/use-waypoint': 'wp' });
  await writeService('web-v1', '10.240.3.11', { app: 'web', version: 'v1' });
  await writeService('web-v2', '10.240.3.12', { app: 'web', version: 'v2' });
  await writeAtomically(
    path.join(mesh.cluster.clusterDir, 'destinationrules', 'web.yaml'),
    stringify({ apiVersion: 'networking.istio.io/v1', kind: 'DestinationRule', metadata: { name: 'web', namespace: 'shop' }, spec: { host: 'web', subsets: [{ name: 'v1', labels: { version: 'v1' } }, { name: 'v2', labels: { version: 'v2' } }] } }),
  );
  await writeAtomically(path.join(mesh.cluster.clusterDir, 'virtualservices', 'web.yaml'), stringify(VIRTUAL_SERVICE));
  await until('the waypoint has the VirtualService and the subsets with their pods', async () => {
    const dump = await configDump();
    const subsets = dump?.destinationRules.policies[WEB_KEY]?.subsets ?? [];
    return (dump?.routes[WEB_KEY] ?? []).some((entry) => entry.ruleName === 'rest') && subsets.length === 2 && subsets.every((subset) => subset.pods.length === 1);
  }, 60_000);
});

test.after.always(async () => {
  await mesh?.destroy();
});

test.serial(`fault: delay ${DELAY_PERCENT}% and abort ${ABORT_PERCENT}% over ${FAULT_REQUESTS} requests, each within 3 points; aborted ones never reach the backend`, async (t) => {
  const results = await send([{ path: '/fault/ratings', repeat: FAULT_REQUESTS }]);
  const lines = await loggedRequests('faults', FAULT_REQUESTS);
  const flagged = (flag: string): LogLine[] => lines.filter((line) => String(line.response_flags).split(',').includes(flag));
  const delayed = flagged('DI');
  const aborted = flagged('FI');
  const percent = (count: number): number => (100 * count) / FAULT_REQUESTS;
  t.log(`delayed ${percent(delayed.length)}%, aborted ${percent(aborted.length)}%`);
  t.true(Math.abs(percent(delayed.length) - DELAY_PERCENT) <= 3, `delayed ${delayed.length} of ${FAULT_REQUESTS}`);
  t.true(Math.abs(percent(aborted.length) - ABORT_PERCENT) <= 3, `aborted ${aborted.length} of ${FAULT_REQUESTS}`);
  const answered503 = results.filter((result) => result.status === 503);
  t.is(answered503.length, aborted.length, 'the client got an abort for each FI line');
  t.true(answered503.every((result) => result.body === 'fault filter abort'), "Envoy's abort body");
  t.true(results.every((result) => result.status === 200 || result.status === 503));
  t.true(aborted.every((line) => line.response_code === 503 && line.upstream_host === '-'), 'an aborted request has no upstream');
  t.true(delayed.every((line) => line.duration >= DELAY_MS - 1), 'every DI request took the delay');
  const delayedOnly = delayed.filter((line) => line.response_flags === 'DI');
  t.true(delayedOnly.length > 0 && delayedOnly.every((line) => line.response_code === 200 && line.upstream_host !== '-'), 'a delayed request still goes upstream');
  const reached = (await seenBy(webA)).filter((request) => request.url.startsWith('/fault/')).length;
  t.is(reached, FAULT_REQUESTS - aborted.length, 'the backend saw every request but the aborted ones');
});

test.serial('fault: an abort at 100% answers every request and the backend sees none', async (t) => {
  const results = await send([{ path: '/teapot', repeat: 20 }]);
  t.deepEqual([...new Set(results.map((result) => `${result.status} ${String(result.body)}`))], ['418 fault filter abort']);
  t.true((await loggedRequests('teapot', 20)).every((line) => line.response_flags === 'FI'));
  t.is((await seenBy(webA)).filter((request) => request.url.startsWith('/teapot')).length, 0);
});

test.serial('retries turn a backend failing every other request into successes; attempts 0 lets the 503s through', async (t) => {
  const retried = await send([{ path: '/flaky/retried', headers: { 'x-test-flaky': '1' }, repeat: 100 }]);
  t.is(retried.filter((result) => result.status === 200).length, 100, 'every request succeeded');
  const lines = await loggedRequests('flaky-retried', 100);
  t.true(lines.every((line) => line.attempts === 2), 'each took a failed try and a retry');
  const off = await send([{ path: '/flaky/off', headers: { 'x-test-flaky': '1' }, repeat: 100 }]);
  t.is(off.filter((result) => result.status === 503).length, 50, 'without retries every other request fails');
  t.true((await loggedRequests('flaky-off', 100)).every((line) => line.attempts === 1));
});

test.serial('perTryTimeout: a try that hangs is cut and retried under gateway-error; under connect-failure only, the client gets 504 UT', async (t) => {
  const [retried] = await send([{ path: '/per-try/retried', headers: { 'x-test-hold-first': 'per-try-a', 'x-request-id': 'per-try-a' } }]);
  t.is(retried!.status, 200);
  t.is(bodyOf(retried!).url, '/per-try/retried');
  const [line] = await loggedRequests('per-try', 1);
  t.is(line!.attempts, 2);
  const [cut] = await send([{ path: '/per-try/connect-only', headers: { 'x-test-hold-first': 'per-try-b', 'x-request-id': 'per-try-b' } }]);
  t.is(cut!.status, 504);
  const [cutLine] = await loggedRequests('per-try-connect-only', 1);
  t.is(cutLine!.response_flags, 'UT');
  t.is(cutLine!.attempts, 1);
});

test.serial('timeout: no response within the route timeout is answered 504 UT', async (t) => {
  const [result] = await send([{ path: '/timeout', headers: { 'x-test-hold': 'timeout' } }]);
  t.is(result!.status, 504, 'the backend holds the answer until released: only the timeout can end the request');
  const [line] = await loggedRequests('timeout', 1);
  t.is(line!.response_flags, 'UT');
  t.true(line!.duration >= 490, `took ${line!.duration} ms`);
  await inPod(webA, `http://127.0.0.1:${BACKEND_PORT}/__release?key=timeout`);
});

test.serial('subsets: each goes to the version its DestinationRule subset selects; an undefined subset is 503 NC', async (t) => {
  const results = await send([{ path: '/subset/v1', repeat: 20 }, { path: '/subset/v2', repeat: 20 }, { path: '/subset/v3' }]);
  t.deepEqual([...new Set(results.slice(0, 20).map(servedBy))], ['web-a']);
  t.deepEqual([...new Set(results.slice(20, 40).map(servedBy))], ['web-b']);
  t.is(results[40]!.status, 503);
  t.is((await loggedRequests('subset-undefined', 1))[0]!.response_flags, 'NC');
});

test.serial('mirror: web-v2 gets a copy with -shadow on its Host; the client gets web-v1', async (t) => {
  const [result] = await send([{ path: '/mirror/copy', headers: { 'x-request-id': 'mirror-1' } }]);
  t.is(servedBy(result!), 'web-a');
  let copies: { headers: Record<string, string> }[] = [];
  await until('the mirror copy at web-b', async () => (copies = (await seenBy(webB)).filter((request) => request.headers['x-request-id'] === 'mirror-1')).length === 1);
  t.regex(copies[0]!.headers.host!, /-shadow$/);
});

test.serial('redirect: answered by the waypoint with the code and Location; rewrite: the backend sees the new path and Host', async (t) => {
  const [moved, rewritten] = await send([{ path: '/old/page?x=1' }, { path: '/v1/items?y=2' }]);
  t.is(moved!.status, 308);
  t.is(moved!.headers.location, 'http://elsewhere.example/new?x=1');
  t.is(bodyOf(rewritten!).url, '/api/items?y=2');
  t.is(bodyOf(rewritten!).headers?.host, 'api.internal');
});

test.serial('headers: request set/add/remove on the rule and the destination seen by the backend; response set/add/remove seen by the client', async (t) => {
  const [result] = await send([{ path: '/headers', headers: { 'x-drop': 'secret', 'x-added': 'client', 'x-set': 'client' } }]);
  const seen = bodyOf(result!).headers!;
  t.is(seen['x-set'], 'rule');
  t.is(seen['x-added'], 'client,mesh');
  t.is(seen['x-drop'], undefined);
  t.is(seen['x-destination'], 'v1');
  t.is(result!.headers['x-answered'], 'rule');
  t.is(result!.headers['x-from'], 'v1');
  t.is(result!.headers['x-backend-secret'], undefined);
  t.is(result!.headers['x-backend'], 'web-a');
});

test.serial('matches: a uri regex with method POST and without x-skip: 1 goes to web-v2; otherwise the catch-all', async (t) => {
  const results = await send([
    { path: '/items/42', method: 'POST' },
    { path: '/items/42', method: 'GET' },
    { path: '/items/42', method: 'POST', headers: { 'x-skip': '1' } },
    { path: '/items/42/x', method: 'POST' },
  ]);
  t.deepEqual(results.map(servedBy), ['web-b', 'web-a', 'web-a', 'web-a']);
});

// Last: the new pod also backs web-v2, which earlier tests expect to be web-b alone.
test.serial('a pod started later with a subset label joins that subset (the control plane lists it), and takes its requests', async (t) => {
  const webC = await mesh.cluster.createPod({ node: 1, namespace: 'shop', name: 'web-c', serviceAccount: 'web', labels: { app: 'web', version: 'v2' } });
  await startBackend(webC);
  await until('web-c in subset v2 at the waypoint', async () => {
    const subsets = (await configDump())?.destinationRules.policies[WEB_KEY]?.subsets ?? [];
    return subsets.find((subset) => subset.name === 'v2')?.pods.includes('shop/web-c') === true;
  });
  const subsets = (await configDump())!.destinationRules.policies[WEB_KEY]!.subsets;
  t.deepEqual(subsets.map((subset) => [subset.name, subset.pods]), [['v1', ['shop/web-a']], ['v2', ['shop/web-b', 'shop/web-c']]]);
  let names = new Set<string | undefined>();
  await until('web-c serves subset v2 requests', async () => {
    names = new Set((await send([{ path: '/subset/v2', repeat: 20 }])).map(servedBy));
    return names.has('web-c');
  });
  t.false(names.has('web-a'), 'v1 never serves subset v2');
});
