// The ambit-cni executable in Kubernetes mode, as a container runtime runs it: it reads the pod and its namespace
// from an API server with the kubeconfig the installer wrote from a service account, and fails closed.
// The API server is test/helpers/kube-api-server.ts (a STAND-IN built to the real protocol, HTTPS + bearer token:
// no Kubernetes runs here); the agent side of the wire is test/helpers/cni-protocol-server.ts.
import test from 'ava';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { stringify } from 'yaml';
import { readKubeconfig } from '../../cni/kubeconfig.ts';
import { writePluginKubeconfig, uninstall } from '../../cni/install.ts';
import { AMBIT_CNI_DIR } from '../../runtime/index.ts';
import { run } from '../../runtime/exec.ts';
import { cniEnvironment } from '../helpers/cni-environment.ts';
import { startProtocolServer, type ProtocolServer } from '../helpers/cni-protocol-server.ts';
import { FakeKubeApiServer } from '../helpers/kube-api-server.ts';

const PLUGIN = path.join(AMBIT_CNI_DIR, 'ambit-cni');
const PREV_RESULT = {
  cniVersion: '1.0.0',
  interfaces: [{ name: 'eth0', mac: '0a:58:0a:f4:00:05', sandbox: '/run/netns/x' }],
  ips: [{ address: '10.244.0.5/24', gateway: '10.244.0.1', interface: 0 }],
};

interface Fixture {
  api: FakeKubeApiServer;
  dir: string;
  confDir: string;
  socket: string;
  agent: ProtocolServer;
  /** The kubeconfig the installer wrote from the fake service account. */
  kubeconfig: string;
  serviceAccountDir: string;
  env: NodeJS.ProcessEnv;
}

async function fixture(t: import('ava').ExecutionContext): Promise<Fixture> {
  const api = await FakeKubeApiServer.start();
  t.teardown(() => api.close());
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ambit-cni-k8s-test-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  api.apply({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'mesh', labels: { 'istio.io/dataplane-mode': 'ambient' } } });
  api.apply({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'plain' } });
  for (const namespace of ['mesh', 'plain']) {
    api.apply({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'web', namespace, uid: `uid-${namespace}` }, spec: { containers: [{ name: 'app' }] } });
  }
  // A pod's service account mount, as the kubelet makes it; the installer turns it into the plugin's kubeconfig.
  const serviceAccountDir = path.join(dir, 'serviceaccount');
  await mkdir(serviceAccountDir);
  await writeFile(path.join(serviceAccountDir, 'token'), `${api.clientToken}\n`);
  await writeFile(path.join(serviceAccountDir, 'ca.crt'), api.caPem);
  const confDir = path.join(dir, 'net.d');
  await mkdir(confDir);
  const url = new URL(api.url);
  const env = { KUBERNETES_SERVICE_HOST: url.hostname, KUBERNETES_SERVICE_PORT: url.port };
  const { file } = await writePluginKubeconfig(confDir, env, serviceAccountDir);
  const socket = path.join(dir, 'cni.sock');
  const agent = await startProtocolServer(socket);
  t.teardown(() => agent.close());
  return { api, dir, confDir, socket, agent, kubeconfig: file, serviceAccountDir, env };
}

function config(f: Fixture, kubeconfig = f.kubeconfig): string {
  return JSON.stringify({ cniVersion: '1.0.0', name: 'pods', type: 'ambit-cni', agentSocket: f.socket, kubeconfig, prevResult: PREV_RESULT });
}

function cniEnv(command: string, namespace: string, name = 'web'): NodeJS.ProcessEnv {
  return cniEnvironment(command, { namespace, name });
}

async function invoke(environment: NodeJS.ProcessEnv, stdin: string): Promise<{ code: number; json: Record<string, unknown> }> {
  const result = await run(PLUGIN, [], { env: environment, input: stdin });
  return { code: result.code, json: JSON.parse(result.stdout) as Record<string, unknown> };
}

const podAdds = (f: Fixture) => f.agent.requests.filter((request) => request.path === '/v1/pod-add');

test('the installer writes a 0600 kubeconfig from the service account that the plugin and client-node both read', async (t) => {
  const f = await fixture(t);
  t.is((await stat(f.kubeconfig)).mode & 0o777, 0o600, 'it holds a token: owner-only');
  const credentials = await readKubeconfig(f.kubeconfig);
  t.is(credentials.server, f.api.url);
  t.is(credentials.token, f.api.clientToken);
  t.is(credentials.ca?.toString(), f.api.caPem);
  // A kubeconfig exported by the official client reads the same.
  const exported = path.join(f.dir, 'exported.yaml');
  await writeFile(exported, f.api.kubeConfigYaml());
  const fromClient = await readKubeconfig(exported);
  t.is(fromClient.server, f.api.url);
  t.is(fromClient.token, f.api.clientToken);
});

test('ADD of a pod in an enrolled namespace asks the agent to capture it, with what the API server says', async (t) => {
  const f = await fixture(t);
  const { code, json } = await invoke(cniEnv('ADD', 'mesh'), config(f));
  t.is(code, 0, JSON.stringify(json));
  t.deepEqual(json, PREV_RESULT, 'prevResult passes through unchanged');
  t.is(podAdds(f).length, 1);
  t.like(podAdds(f)[0]!.body, { podName: 'web', podNamespace: 'mesh', podUid: 'uid-mesh', ips: ['10.244.0.5'] });
  t.true(f.api.requests.includes('GET /api/v1/namespaces/mesh/pods/web'));
  t.true(f.api.requests.includes('GET /api/v1/namespaces/mesh'));
});

test('a pod label opts in and out; a pod outside enrolled namespaces starts without capture', async (t) => {
  const f = await fixture(t);
  t.is((await invoke(cniEnv('ADD', 'plain'), config(f))).code, 0);
  t.is(podAdds(f).length, 0, 'not enrolled: no capture');
  f.api.apply({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'opted-in', namespace: 'plain', labels: { 'istio.io/dataplane-mode': 'ambient' } } });
  f.api.apply({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'opted-out', namespace: 'mesh', labels: { 'istio.io/dataplane-mode': 'none' } } });
  t.is((await invoke(cniEnv('ADD', 'plain', 'opted-in'), config(f))).code, 0);
  t.is((await invoke(cniEnv('ADD', 'mesh', 'opted-out'), config(f))).code, 0);
  t.deepEqual(podAdds(f).map((request) => request.body.podName), ['opted-in']);
});

test('fails closed: an unknown pod, refused credentials, a bad kubeconfig each give a CNI error and no capture', async (t) => {
  const f = await fixture(t);
  const missing = await invoke(cniEnv('ADD', 'mesh', 'ghost'), config(f));
  t.is(missing.code, 1);
  t.is(missing.json.code, 11, 'try again later: the runtime retries the sandbox');
  t.regex(String(missing.json.msg), /pod mesh\/ghost not found in the API server/);

  // The token rotated on the API server but the kubeconfig still holds the old one.
  await writeFile(path.join(f.serviceAccountDir, 'token'), 'revoked-token\n');
  await writePluginKubeconfig(f.confDir, f.env, f.serviceAccountDir);
  const refused = await invoke(cniEnv('ADD', 'mesh'), config(f));
  t.is(refused.json.code, 5);
  t.regex(String(refused.json.msg), /refused the kubeconfig's credentials \(401 Unauthorized\)/);

  const badKubeconfig = path.join(f.dir, 'exec.yaml');
  await writeFile(badKubeconfig, stringify({ 'current-context': 'c', contexts: [{ name: 'c', context: { cluster: 'k', user: 'u' } }], clusters: [{ name: 'k', cluster: { server: f.api.url } }], users: [{ name: 'u', user: { exec: { command: 'aws' } } }] }));
  const unsupported = await invoke(cniEnv('ADD', 'mesh'), config(f, badKubeconfig));
  t.is(unsupported.json.code, 7);
  t.regex(String(unsupported.json.msg), /user "u" uses "exec", which ambit-cni does not support/);

  const absent = await invoke(cniEnv('ADD', 'mesh'), config(f, path.join(f.dir, 'nope.yaml')));
  t.is(absent.json.code, 7);
  t.regex(String(absent.json.msg), /kubeconfig .*nope\.yaml: cannot be read/);
  t.is(podAdds(f).length, 0, 'no pod was captured on any failure');
});

test('an API server outage is retried: ADD succeeds when it returns within the deadline, fails closed when it does not', async (t) => {
  const f = await fixture(t);
  f.api.fail(503);
  const recovered = setTimeout(() => f.api.recover(), 700);
  t.teardown(() => clearTimeout(recovered));
  const during = await invoke(cniEnv('ADD', 'mesh'), config(f));
  t.is(during.code, 0, JSON.stringify(during.json));
  t.is(podAdds(f).length, 1);

  f.api.fail(503);
  const started = Date.now();
  const down = await invoke(cniEnv('ADD', 'mesh'), config(f));
  t.is(down.json.code, 11);
  t.regex(String(down.json.msg), /cannot read pod mesh\/web from the API server .* \(retried for \d+\.\d s\): answered 503/);
  t.true(Date.now() - started < 20_000, 'bounded by the retry deadline');
  t.is(podAdds(f).length, 1, 'the pod was not captured while the API server was down');
});

test('one deadline per ADD: API server retries and the call to a frozen agent share the 10 s budget (each step had its own 10 s before)', async (t) => {
  const f = await fixture(t);
  // A frozen agent: connections are accepted (the kernel's backlog), nothing answers.
  const frozenSocket = path.join(f.dir, 'frozen.sock');
  const held: net.Socket[] = [];
  const frozen = net.createServer((connection) => held.push(connection));
  await new Promise<void>((resolve) => frozen.listen(frozenSocket, resolve));
  t.teardown(() => {
    for (const connection of held) connection.destroy();
    frozen.close();
  });
  // The API server is away for the first 4 s of the ADD's lookup (counted from the plugin's first request).
  f.api.fail(503);
  const podPath = 'GET /api/v1/namespaces/mesh/pods/web';
  const before = f.api.requests.filter((request) => request === podPath).length;
  let recovered: NodeJS.Timeout | undefined;
  const watch = setInterval(() => {
    if (recovered === undefined && f.api.requests.filter((request) => request === podPath).length > before) {
      recovered = setTimeout(() => f.api.recover(), 4000);
    }
  }, 20);
  t.teardown(() => {
    clearInterval(watch);
    clearTimeout(recovered);
  });
  const started = Date.now();
  const added = await invoke(cniEnv('ADD', 'mesh'), JSON.stringify({ ...JSON.parse(config(f)), agentSocket: frozenSocket }));
  t.log(`ADD: ${Date.now() - started} ms (API server away 4 s, agent frozen)`);
  t.is(added.json.code, 11, JSON.stringify(added.json));
  t.regex(String(added.json.msg), /not reachable at .*frozen\.sock/);
  // The agent call got what the retries left of the 10 s (at most 6 s, at least 3 s), not 10 s of its own.
  const agentMs = Number(/no answer within (\d+) ms/.exec(String(added.json.details))?.[1]);
  t.log(`the agent call's share: ${agentMs} ms`);
  t.true(agentMs >= 3000 && agentMs <= 6500, `the agent call waited ${agentMs} ms`);
});

test('the service account kubeconfig is rewritten when the token rotates, and removed on uninstall', async (t) => {
  const f = await fixture(t);
  t.false((await writePluginKubeconfig(f.confDir, f.env, f.serviceAccountDir)).changed, 'unchanged token: no write');
  await writeFile(path.join(f.serviceAccountDir, 'token'), 'rotated\n');
  t.true((await writePluginKubeconfig(f.confDir, f.env, f.serviceAccountDir)).changed);
  t.is((await readKubeconfig(f.kubeconfig)).token, 'rotated');
  await t.throwsAsync(writePluginKubeconfig(f.confDir, {}, f.serviceAccountDir), { message: /KUBERNETES_SERVICE_HOST is not set/ });
  await t.throwsAsync(writePluginKubeconfig(f.confDir, f.env, path.join(f.dir, 'none')), { message: /cannot read the service account's token/ });
  const binDir = path.join(f.dir, 'bin');
  await mkdir(binDir);
  await writeFile(path.join(f.confDir, '10-bridge.conflist'), JSON.stringify({ cniVersion: '1.0.0', name: 'n', plugins: [{ type: 'bridge' }] }));
  await uninstall(binDir, f.confDir);
  await t.throwsAsync(readFile(f.kubeconfig), { code: 'ENOENT' });
});

test('a kubeconfig whose server has a path (an API server behind a proxy, as Rancher serves clusters) is read under that path', async (t) => {
  const api = await FakeKubeApiServer.start({ pathPrefix: '/k8s/clusters/c-m-4x2' });
  t.teardown(() => api.close());
  api.apply({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'mesh', labels: { 'istio.io/dataplane-mode': 'ambient' } } });
  api.apply({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'web', namespace: 'mesh', uid: 'uid-mesh' }, spec: { containers: [{ name: 'app' }] } });
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ambit-cni-k8s-test-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const kubeconfig = path.join(dir, 'kubeconfig');
  await writeFile(kubeconfig, api.kubeConfigYaml());
  const socket = path.join(dir, 'cni.sock');
  const agent = await startProtocolServer(socket);
  t.teardown(() => agent.close());

  const { code, json } = await invoke(cniEnv('ADD', 'mesh'), JSON.stringify({ cniVersion: '1.0.0', name: 'pods', type: 'ambit-cni', agentSocket: socket, kubeconfig, prevResult: PREV_RESULT }));
  t.is(code, 0, JSON.stringify(json));
  t.deepEqual(agent.requests.filter((request) => request.path === '/v1/pod-add').map((request) => request.body.podName), ['web'], 'the enrolled pod was captured');
  t.true(api.requests.includes('GET /k8s/clusters/c-m-4x2/api/v1/namespaces/mesh/pods/web'), api.requests.join('\n'));
});
