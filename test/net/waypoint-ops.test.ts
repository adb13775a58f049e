/**
 * What an operator sees of a waypoint on a real local mesh (control plane reading the cluster directory, real agents,
 * a real waypoint process in its pod): `ambitctl waypoint apply` writes the Gateway the control plane then uses
 * (the Service's `waypoint` field in the agent's view names the waypoint once the Gateway carries its address),
 * `ambitctl waypoint status` lists the waypoint with its address, what is bound to it and the route's status, and
 * `ambitctl config-dump --node <the waypoint pod's netns>` shows the routes the waypoint received over xDS.
 */
import test from 'ava';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parse, stringify } from 'yaml';
import { runAmbitctl } from '../../ambitctl/main.ts';
import type { WaypointStatusReport } from '../../ambitctl/waypoint.ts';
import { createLocalMesh, type LocalMesh } from '../../runtime/local-mesh.ts';
import { createWaypoint, gatewayFile, type LocalWaypoint } from '../../runtime/waypoint.ts';
import { startEchoServer, type Pod } from '../../runtime/index.ts';

const ENROLLED = { 'istio.io/dataplane-mode': 'ambient' };
const WEB_VIP = '10.240.3.10';

let mesh: LocalMesh;
let waypoint: LocalWaypoint;
let web: Pod;

async function writeAtomically(file: string, text: string): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  const temporary = path.join(path.dirname(file), `.${path.basename(file)}.tmp`);
  await writeFile(temporary, text);
  await rename(temporary, file);
}

async function ambitctl(argv: string[]) {
  let stdout = '';
  let stderr = '';
  const code = await runAmbitctl(argv, { stdout: (text) => (stdout += text), stderr: (text) => (stderr += text) }, {});
  return { code, stdout, stderr };
}

async function until(what: string, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`not seen in 20 s: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

test.before(async () => {
  mesh = await createLocalMesh({ nodes: 2, name: 'wpops' });
  web = await mesh.cluster.createPod({ node: 1, namespace: 'shop', name: 'web-a', serviceAccount: 'web', labels: { app: 'web' }, namespaceLabels: ENROLLED });
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
