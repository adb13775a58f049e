/**
 * What an operator sees of a waypoint on a real local mesh (control plane reading the cluster directory, real agents,
 * a real waypoint process in its pod): `ambitctl waypoint apply` writes the Gateway the control plane then uses
 * (the Service's `waypoint` field in the agent's view names the waypoint once the Gateway carries its address),
 * `ambitctl waypoint status` lists the waypoint with its address, what is bound to it and the route's status, and
 * `ambitctl config-dump --node <the waypoint pod's netns>` shows the routes the waypoint received over xDS. And the
 * request the waypoint bench sends (a POST with a body, keep-alive) reaches the backend whole through the waypoint.
 */
import test from 'ava';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { parse, stringify } from 'yaml';
import { runAmbitctl } from '../../ambitctl/main.ts';
import type { WaypointStatusReport } from '../../ambitctl/waypoint.ts';
import { createLocalMesh, type LocalMesh } from '../../runtime/local-mesh.ts';
import { createWaypoint, gatewayFile, type LocalWaypoint } from '../../runtime/waypoint.ts';
import { startEchoServer, type Pod } from '../../runtime/index.ts';
import { until, writeAtomically } from './helpers/cluster-edits.ts';

const ENROLLED = { 'istio.io/dataplane-mode': 'ambient' };
const WEB_VIP = '10.240.3.10';

let mesh: LocalMesh;
let waypoint: LocalWaypoint;
let web: Pod;
let client: Pod;

async function ambitctl(argv: string[]) {
  let stdout = '';
  let stderr = '';
  const code = await runAmbitctl(argv, { stdout: (text) => (stdout += text), stderr: (text) => (stderr += text) }, {});
  return { code, stdout, stderr };
}

test.before(async () => {
  mesh = await createLocalMesh({ nodes: 2, name: 'wpops' });
  web = await mesh.cluster.createPod({ node: 1, namespace: 'shop', name: 'web-a', serviceAccount: 'web', labels: { app: 'web' }, namespaceLabels: ENROLLED });
  client = await mesh.cluster.createPod({ node: 0, namespace: 'shop', name: 'client', serviceAccount: 'client' });
  await startEchoServer(web, { port: 8080, http: true, name: web.name });
});

test.after.always(async () => {
  await mesh?.destroy();
});

test.serial('waypoint apply writes the Gateway the control plane reads; the waypoint pod makes it addressable; status and config-dump show it', async (t) => {
  const clusterDir = mesh.cluster.clusterDir;
  const applied = await ambitctl(['waypoint', 'apply', '-n', 'shop', '--name', 'wp', '--cluster-dir', clusterDir]);
  t.is(applied.code, 0, applied.stderr);
  const written = parse(await readFile(gatewayFile(clusterDir, 'shop', 'wp'), 'utf8')) as { spec: { gatewayClassName: string } };
  t.is(written.spec.gatewayClassName, 'istio-waypoint', 'the same file the local runtime\'s waypoint writes');
  // The local runtime's deployment controller part: the pod, and the Gateway's address in status.
  waypoint = await createWaypoint(mesh, { node: 1, namespace: 'shop', name: 'wp' });
  await writeAtomically(
    path.join(clusterDir, 'services', 'web.yaml'),
    stringify({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: 'shop', labels: { 'istio.io/use-waypoint': 'wp' } }, spec: { clusterIP: WEB_VIP, selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 8080 }] } }),
  );
  await writeAtomically(
    path.join(clusterDir, 'routes', 'web.yaml'),
    stringify({
      apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name: 'web', namespace: 'shop' },
      spec: { parentRefs: [{ group: '', kind: 'Service', name: 'web', port: 80 }], rules: [{ matches: [{ path: { type: 'PathPrefix', value: '/api' } }], backendRefs: [{ name: 'web', port: 80 }] }] },
    }),
  );
  await writeAtomically(
    path.join(clusterDir, 'routes', 'orphan.yaml'),
    stringify({ apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name: 'orphan', namespace: 'shop' }, spec: { parentRefs: [{ group: '', kind: 'Service', name: 'nowhere' }], rules: [{ backendRefs: [{ name: 'web', port: 80 }] }] } }),
  );

  // config-dump of the waypoint, reached in its pod's network namespace: the route arrives over xDS.
  let dump = { code: 1, stdout: '', stderr: '' };
  await until('the route in the waypoint config dump', async () => {
    dump = await ambitctl(['config-dump', '--node', waypoint.pod.netnsName, '-o', 'json']);
    return dump.code === 0 && JSON.stringify((JSON.parse(dump.stdout) as { routes: object }).routes).includes('/api');
  });
  const document = JSON.parse(dump.stdout) as { gateway: string; routes: Record<string, { route: string }[]> };
  t.is(document.gateway, 'shop/wp');
  t.deepEqual(Object.keys(document.routes), ['shop/web.shop.svc.cluster.local']);
  const table = await ambitctl(['config-dump', '--node', waypoint.pod.netnsName]);
  t.is(table.code, 0, table.stderr);
  t.regex(table.stdout, /^WAYPOINT shop\/wp \(identity spiffe:\/\/cluster\.local\/ns\/shop\/sa\/wp\)/);
  t.regex(table.stdout, /shop\/web\.shop\.svc\.cluster\.local +80 +shop\/web +\/api\* +shop\/web\.shop\.svc\.cluster\.local:80 w1/);

  // status: from the directory the control plane reads, as it sees it.
  const status = await ambitctl(['waypoint', 'status', '--cluster-dir', clusterDir, '-o', 'json']);
  t.is(status.code, 0, status.stderr);
  const report = JSON.parse(status.stdout) as WaypointStatusReport;
  t.like(report.waypoints[0], { namespace: 'shop', name: 'wp', address: waypoint.pod.ip, bound: ['service/shop/web'] });
  const byName = new Map(report.routes.map((route) => [route.name, route.parents[0]!.conditions[0]!]));
  t.like(byName.get('web'), { status: 'True', reason: 'Accepted' });
  t.like(byName.get('orphan'), { status: 'False', reason: 'NoMatchingParent' });
  t.regex(byName.get('orphan')!.message, /parent Service shop\/nowhere not found/);
});

/** Two POSTs of `bytes` each over one keep-alive connection from the client pod; status and what the backend received. */
const POST_SCRIPT = `
const http = require('node:http');
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
const [host, bytes] = [process.argv[1], Number(process.argv[2])];
const once = () => new Promise((resolve) => {
  const request = http.request({ host, port: 80, method: 'POST', path: '/api/upload', agent, headers: { 'content-length': bytes } }, (response) => {
    let text = '';
    response.on('data', (chunk) => (text += chunk));
    response.on('end', () => { let body = text; try { body = JSON.parse(text); } catch {} resolve({ status: response.statusCode, reused: request.reusedSocket, body }); });
  });
  request.on('error', (error) => resolve({ status: 0, error: error.message }));
  // Headers first, the body later: as a client streaming an upload.
  request.flushHeaders();
  setTimeout(() => request.end(Buffer.alloc(bytes, 'z')), 50);
});
(async () => { const results = [await once(), await once()]; agent.destroy(); process.stdout.write(JSON.stringify(results)); })();
`;

test.serial('a POST with a body goes through the waypoint whole, twice on one keep-alive connection', async (t) => {
  const result = await client.exec(process.execPath, ['-e', POST_SCRIPT, WEB_VIP, String(64 * 1024)]);
  t.is(result.code, 0, result.stderr);
  const answers = JSON.parse(result.stdout) as { status: number; reused: boolean; body: { method?: string; bytesReceived?: number; peer?: string } }[];
  t.deepEqual(answers.map((answer) => answer.status), [200, 200], JSON.stringify(answers));
  t.deepEqual(answers.map((answer) => answer.body.bytesReceived), [64 * 1024, 64 * 1024], 'the backend received each body whole');
  t.deepEqual(answers.map((answer) => answer.body.method), ['POST', 'POST']);
  t.true(answers[1]!.reused, 'the second request reused the connection');
  t.is(answers[0]!.body.peer, waypoint.pod.ip, 'through the waypoint');
});
