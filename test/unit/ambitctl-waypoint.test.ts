// `ambitctl waypoint apply` and `ambitctl waypoint status`: the Gateway written into a directory the control plane
// reads and into the stand-in API server through a kubeconfig, and the status report (waypoints with their address
// and what is bound to them; each route's parents with Accepted/ResolvedRefs and why) from both.
import test from 'ava';
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import path from 'node:path';
import { parse, stringify } from 'yaml';
import { runAmbitctl } from '../../ambitctl/main.ts';
import type { WaypointStatusReport } from '../../ambitctl/waypoint.ts';
import { FakeKubeApiServer } from '../helpers/kube-api-server.ts';
import { namespaceObject, serviceObject, tempDir } from '../helpers/xds-harness.ts';

async function ambitctl(argv: string[], env: NodeJS.ProcessEnv = {}) {
  let stdout = '';
  let stderr = '';
  const code = await runAmbitctl(argv, { stdout: (text) => (stdout += text), stderr: (text) => (stderr += text) }, env);
  return { code, stdout, stderr };
}

const ROUTE = {
  apiVersion: 'gateway.networking.k8s.io/v1',
  kind: 'HTTPRoute',
  metadata: { name: 'web-route', namespace: 'shop' },
  spec: { parentRefs: [{ group: '', kind: 'Service', name: 'web', port: 80 }], rules: [{ backendRefs: [{ name: 'web', port: 80 }, { name: 'web-v2', port: 80 }] }] },
};

test('local: apply writes the Gateway where the control plane reads it; status shows the waypoint, what uses it and why a route does not attach', async (t) => {
  const dir = await tempDir(t);
  await mkdir(path.join(dir, 'app'));
  await writeFile(path.join(dir, 'app', 'objects.yaml'), [namespaceObject('shop'), serviceObject({ name: 'web', namespace: 'shop', vip: '10.240.0.5', selector: { app: 'web' } }), ROUTE].map((object) => stringify(object)).join('---\n'));

  let result = await ambitctl(['waypoint', 'status', '--cluster-dir', dir, '-o', 'json']);
  t.is(result.code, 0, result.stderr);
  let report = JSON.parse(result.stdout) as WaypointStatusReport;
  t.deepEqual(report.waypoints, []);
  const accepted = () => report.routes[0]!.parents[0]!.conditions[0]!;
  t.like(accepted(), { status: 'False', reason: 'NoMatchingParent' });
  t.regex(accepted().message, /Service shop\/web is not bound to a waypoint/);

  result = await ambitctl(['waypoint', 'apply', '-n', 'shop', '--cluster-dir', dir]);
  t.is(result.code, 0, result.stderr);
  const gateway = parse(await readFile(path.join(dir, 'gateways', 'shop-waypoint.yaml'), 'utf8')) as { metadata: { labels: Record<string, string> }; spec: { gatewayClassName: string; listeners: unknown[] } };
  t.is(gateway.spec.gatewayClassName, 'istio-waypoint');
  t.deepEqual(gateway.spec.listeners, [{ name: 'mesh', port: 15008, protocol: 'HBONE' }]);
  t.is(gateway.metadata.labels['istio.io/waypoint-for'], 'service');

  // The Service opts in; the route then attaches, and its missing second backend is what is left.
  await writeFile(path.join(dir, 'app', 'objects.yaml'), [namespaceObject('shop'), serviceObject({ name: 'web', namespace: 'shop', vip: '10.240.0.5', selector: { app: 'web' }, labels: { 'istio.io/use-waypoint': 'waypoint' } }), ROUTE].map((object) => stringify(object)).join('---\n'));
  result = await ambitctl(['waypoint', 'status', '--cluster-dir', dir, '-o', 'json']);
  report = JSON.parse(result.stdout) as WaypointStatusReport;
  t.like(report.waypoints[0], { namespace: 'shop', name: 'waypoint', for: 'service', bound: ['service/shop/web'] });
  t.like(accepted(), { status: 'True', reason: 'Accepted' });
  t.like(report.routes[0]!.parents[0]!.conditions[1], { type: 'ResolvedRefs', status: 'False', reason: 'BackendNotFound' });

  result = await ambitctl(['waypoint', 'status', '--cluster-dir', dir]);
  t.regex(result.stdout, /WAYPOINTS \(1\)\nNAMESPACE +NAME +FOR +ADDRESS +PROGRAMMED +BOUND\nshop +waypoint +service +- +False \(no address yet\) +service\/shop\/web/);
  t.regex(result.stdout, /HTTPRoute +shop +web-route +Service\/web:80 +True \(Accepted\) +False \(BackendNotFound\) +rule 0: backend Service shop\/web-v2/);

  t.is((await ambitctl(['waypoint', 'apply', '--cluster-dir', dir])).code, 2, '-n is required');
  t.is((await ambitctl(['waypoint', 'apply', '-n', 'shop', '--for', 'everything', '--cluster-dir', dir])).code, 2);
});

test('Kubernetes: apply creates the Gateway through the kubeconfig (and updates it the second time); status reads the cluster', async (t) => {
  const api = await FakeKubeApiServer.start();
  t.teardown(() => api.close());
  const kubeconfig = path.join(await tempDir(t), 'kubeconfig');
  await writeFile(kubeconfig, api.kubeConfigYaml());
  api.apply(namespaceObject('shop', { 'istio.io/use-waypoint': 'wp' }));
  api.apply(serviceObject({ name: 'web', namespace: 'shop', vip: '10.96.0.5', selector: { app: 'web' } }));
  api.apply(ROUTE);

  let result = await ambitctl(['waypoint', 'apply', '-n', 'shop', '--name', 'wp', '--for', 'all'], { KUBECONFIG: kubeconfig });
  t.is(result.code, 0, result.stderr);
  t.like(api.get('Gateway', 'shop', 'wp'), { spec: { gatewayClassName: 'istio-waypoint' }, metadata: { labels: { 'istio.io/waypoint-for': 'all' } } });
  result = await ambitctl(['waypoint', 'apply', '-n', 'shop', '--name', 'wp', '--for', 'service', '--kubeconfig', kubeconfig]);
  t.is(result.code, 0, result.stderr);
  t.is(api.get('Gateway', 'shop', 'wp')?.metadata?.labels?.['istio.io/waypoint-for'], 'service', 'applied again: updated, not refused');

  // What the control plane writes once it made the waypoint's Service.
  const stored = api.get('Gateway', 'shop', 'wp')!;
  api.apply({ ...stored, status: { addresses: [{ type: 'IPAddress', value: '10.96.0.77' }], conditions: [{ type: 'Programmed', status: 'True', reason: 'Programmed', message: '' }] } });
  result = await ambitctl(['waypoint', 'status', '-n', 'shop', '-o', 'json', '--kubeconfig', kubeconfig]);
  t.is(result.code, 0, result.stderr);
  const report = JSON.parse(result.stdout) as WaypointStatusReport;
  t.like(report.waypoints[0], { name: 'wp', address: '10.96.0.77', programmed: 'True (Programmed)', bound: ['namespace/shop'] });
  t.like(report.routes[0]!.parents[0]!.conditions[0], { status: 'True', reason: 'Accepted' });
});

test('without a cluster to use, waypoint says how to name one', async (t) => {
  const result = await ambitctl(['waypoint', 'status', '--run-dir', path.join(await tempDir(t), 'none')]);
  t.is(result.code, 2);
  t.regex(result.stderr, /--kubeconfig FILE .*--cluster-dir DIR.*ambitctl local up/);
});
