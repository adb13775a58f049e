/**
 * `ambitctl waypoint apply` against a running `ambitctl local` mesh, through the real command line: the Gateway lands
 * in the user's directory, the local runtime (its supervisor, playing the deployment controller) makes the waypoint's
 * pod, and `ambitctl waypoint status` then shows the waypoint with the pod's address and the Service bound to it.
 * A request to the Service from an enrolled pod goes through the waypoint. Then L7 policy and routes, as files of the
 * directory, read by the control plane through the local cluster's Kubernetes API (its default source) and given
 * their status through it, as in a cluster: an AuthorizationPolicy targeting the Service refuses DELETE at the
 * waypoint (403) and lets GET through, and kubectl shows it Accepted; an HTTPRoute on the Service is Accepted by its
 * parent; a LocalRateLimitPolicy with a bad unit is Invalid with the field's path and limits nothing.
 */
import test from 'ava';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { run } from '../../runtime/exec.ts';
import { reapDeadRuns } from '../../runtime/run-registry.ts';
import type { WaypointStatusReport } from '../../ambitctl/waypoint.ts';

const REPO = path.resolve(import.meta.dirname, '..', '..');
const AMBITCTL = path.join(REPO, 'ambitctl', 'ambitctl');
const UP_TIMEOUT_S = 240;
const KUBECTL = '/usr/bin/kubectl';

const L7_OBJECTS = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: web-no-delete, namespace: shop}
spec:
  targetRefs: [{kind: Service, group: "", name: web}]
  action: DENY
  rules: [{to: [{operation: {methods: [DELETE]}}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: shop}
spec:
  parentRefs: [{kind: Service, group: "", name: web, port: 80}]
  rules: [{backendRefs: [{name: web, port: 80}]}]
---
apiVersion: policy.ambit.dev/v1alpha1
kind: LocalRateLimitPolicy
metadata: {name: broken, namespace: shop}
spec:
  targetRefs: [{kind: Service, group: "", name: web}]
  limits: [{requests: 1, unit: Fortnight}]
`;

const MANIFESTS = `apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec:
  containers:
  - name: echo
    image: ambit/echo-server:1.0
    ports: [{containerPort: 8080}]
    readinessProbe: {httpGet: {port: 8080, path: /}}
---
apiVersion: v1
kind: Pod
metadata: {name: sleep, namespace: shop}
spec:
  containers:
  - {name: sleep, image: busybox, command: [sh, -c, 'exec sleep infinity']}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop, labels: {istio.io/use-waypoint: wp}}
spec:
  clusterIP: 10.240.9.10
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
`;

test('waypoint apply on a local mesh: the runtime deploys it, status shows it, traffic to the bound Service goes through it', async (t) => {
  t.timeout((UP_TIMEOUT_S + 180) * 1000);
  const runDir = await mkdtemp(path.join(os.tmpdir(), 'ambit-local-wp-test-'));
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ambit-local-wp-manifests-'));
  await writeFile(path.join(dir, 'app.yaml'), MANIFESTS);
  const env = { ...process.env, AMBIT_LOCAL_RUN_DIR: runDir };
  const ctl = (...args: string[]) => run(AMBITCTL, args, { env, timeoutMs: (UP_TIMEOUT_S + 30) * 1000 });
  t.teardown(async () => {
    await ctl('local', 'down');
    await reapDeadRuns();
    await rm(runDir, { recursive: true, force: true });
    await rm(dir, { recursive: true, force: true });
  });
  const up = await ctl('local', 'up', '-f', dir, '--nodes', '2', '--timeout', String(UP_TIMEOUT_S));
  t.is(up.code, 0, `${up.stdout}\n${up.stderr}`);

  const status = async () => JSON.parse((await ctl('waypoint', 'status', '-o', 'json')).stdout) as WaypointStatusReport;
  const before = await status();
  t.deepEqual(before.waypoints, []);

  const applied = await ctl('waypoint', 'apply', '-n', 'shop', '--name', 'wp');
  t.is(applied.code, 0, applied.stderr);
  t.regex(applied.stdout, new RegExp(`applied \\(for service\\): ${dir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/waypoint-shop-wp\\.yaml`));
  let report: WaypointStatusReport;
  const deadline = Date.now() + 120_000;
  while (!(report = await status()).waypoints[0]?.address) {
    if (Date.now() > deadline) t.fail(`the waypoint got no address in 120 s: ${JSON.stringify(report)}\n${await readFile(path.join(runDir, 'supervisor.log'), 'utf8').catch(() => '')}`);
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
  t.like(report.waypoints[0], { namespace: 'shop', name: 'wp', for: 'service', bound: ['service/shop/web'] });
  const address = report.waypoints[0]!.address;
  t.regex(address, /^10\.\d+\.\d+\.\d+$/);

  // A request from sleep to the Service arrives from the waypoint.
  let peer = '';
  const until = Date.now() + 60_000;
  while (Date.now() < until) {
    const result = await ctl('local', 'exec', 'sleep', '-n', 'shop', '--', process.execPath, '-e', `fetch('http://10.240.9.10/').then((r) => r.json()).then((b) => process.stdout.write(String(b.peer)), (e) => process.stdout.write('error ' + e.message))`);
    peer = result.stdout.trim().replace(/^::ffff:/, '');
    if (peer === address) break;
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
  t.is(peer, address, 'the echo server saw the waypoint as its peer');

  // L7 policy and a route, as files; the control plane reads them through the API and writes their status back.
  const requestStatus = async (method: string): Promise<string> =>
    (await ctl('local', 'exec', 'sleep', '-n', 'shop', '--', process.execPath, '-e', `fetch('http://10.240.9.10/items', { method: '${method}' }).then((r) => process.stdout.write(String(r.status)), (e) => process.stdout.write('error ' + e.message))`)).stdout.trim();
  await writeFile(path.join(dir, 'l7.yaml'), L7_OBJECTS);
  const cacheDir = await mkdtemp(path.join(os.tmpdir(), 'ambit-local-wp-cache-'));
  t.teardown(() => rm(cacheDir, { recursive: true, force: true }));
  const kubectl = async (...args: string[]): Promise<string> => (await run(KUBECTL, ['--cache-dir', cacheDir, ...args], { env: { ...process.env, KUBECONFIG: path.join(runDir, 'kubeconfig') }, timeoutMs: 60_000 })).stdout;
  const waitFor = async (what: string, done: () => Promise<boolean>): Promise<void> => {
    const until = Date.now() + 120_000;
    while (!(await done())) {
      if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  };
  await waitFor('DELETE refused at the waypoint', async () => (await requestStatus('DELETE')) === '403');
  t.is(await requestStatus('GET'), '200', 'GET still goes through');
  const condition = (kind: string, name: string, path = '.status.conditions') => kubectl('get', kind, name, '-n', 'shop', '-o', `jsonpath={${path}[?(@.type=="Accepted")].status} {${path}[?(@.type=="Accepted")].reason} {${path}[?(@.type=="Accepted")].message}`);
  await waitFor('the policy Accepted', async () => (await condition('authorizationpolicy', 'web-no-delete')).startsWith('True Accepted'));
  await waitFor('the route Accepted by its parent', async () => (await condition('httproute', 'web', '.status.parents[0].conditions')).startsWith('True Accepted'));
  await waitFor('the bad rate limit Invalid', async () => (await condition('localratelimitpolicy', 'broken')).startsWith('False Invalid'));
  t.regex(await condition('localratelimitpolicy', 'broken'), /spec\.limits\[0\]\.unit/);
  t.is(await requestStatus('GET'), '200', 'the invalid limit limits nothing');
  t.notRegex(await readFile(path.join(dir, 'l7.yaml'), 'utf8'), /status/, 'status is not written into the user\'s file');
});
