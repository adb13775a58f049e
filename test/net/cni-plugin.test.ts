// The ambit-cni executable as a container runtime runs it: real process, CNI_* environment, config on stdin,
// result or spec error on stdout. The agent side of the wire is played by test/helpers/cni-protocol-server.ts,
// which only checks the plugin's wire behaviour; the real agent's side is tested in the agent's tests.
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { copyFile, mkdir, readdir, symlink } from 'node:fs/promises';
import { readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { parse, stringify } from 'yaml';
import { createCluster, AMBIT_CNI_DIR, CniPluginError } from '../../runtime/index.ts';
import { run } from '../../runtime/exec.ts';
import { podNetnsName } from '../../runtime/topology.ts';
import { cniEnvironment, cniFixture, type CniFixture } from '../helpers/cni-environment.ts';
import { contractReply, startProtocolServer, type ProtocolServer } from '../helpers/cni-protocol-server.ts';

const PLUGIN = path.join(AMBIT_CNI_DIR, 'ambit-cni');
const PREV_RESULT = {
  cniVersion: '1.0.0',
  interfaces: [{ name: 'eth0', mac: '0a:58:0a:f4:00:05', sandbox: '/run/netns/x' }],
  ips: [{ address: '10.244.0.5/24', gateway: '10.244.0.1', interface: 0 }],
  routes: [{ dst: '0.0.0.0/0' }],
  dns: {},
};

const fixture = (t: import('ava').ExecutionContext) => cniFixture(t, 'ambit-cni-test-');

function config(f: CniFixture, extra: Record<string, unknown> = {}): string {
  return JSON.stringify({ cniVersion: '1.0.0', name: 'pods', type: 'ambit-cni', agentSocket: f.socket, clusterDir: f.clusterDir, prevResult: PREV_RESULT, ...extra });
}

function env(command: string, namespace = 'mesh', overrides: Record<string, string> = {}): NodeJS.ProcessEnv {
  return cniEnvironment(command, { namespace }, overrides);
}

async function invoke(environment: NodeJS.ProcessEnv, stdin: string): Promise<{ code: number; json: Record<string, unknown> | undefined; stdout: string }> {
  const result = await run(PLUGIN, [], { env: environment, input: stdin });
  let json: Record<string, unknown> | undefined;
  try {
    json = result.stdout === '' ? undefined : (JSON.parse(result.stdout) as Record<string, unknown>);
  } catch {
    json = undefined;
  }
  return { code: result.code, json, stdout: result.stdout };
}

async function server(t: import('ava').ExecutionContext, socket: string, status = 200, body: unknown = { captured: true }): Promise<ProtocolServer> {
  const started = await startProtocolServer(socket, (request) => (request.path === '/v1/pod-add' ? { status, body } : { status: 200, body: {} }));
  t.teardown(() => started.close());
  return started;
}

test('VERSION reports 1.1.0 and the versions it accepts', async (t) => {
  const { code, json } = await invoke({ CNI_COMMAND: 'VERSION' }, '{"cniVersion":"1.0.0"}');
  t.is(code, 0);
  t.deepEqual(json, { cniVersion: '1.1.0', supportedVersions: ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] });
});

test('ambit-cni symlinked into a CNI bin dir runs its code (the link is resolved); a copy without its code answers a CNI error naming the installer', async (t) => {
  const f = await fixture(t);
  const binDir = path.join(f.dir, 'bin');
  await mkdir(binDir);
  await symlink(PLUGIN, path.join(binDir, 'ambit-cni'));
  await copyFile(PLUGIN, path.join(binDir, 'copied-cni'));
  const agent = await server(t, f.socket);
  const linked = await run(path.join(binDir, 'ambit-cni'), [], { env: env('ADD'), input: config(f) });
  t.is(linked.code, 0, linked.stdout + linked.stderr);
  t.deepEqual(JSON.parse(linked.stdout), PREV_RESULT);
  t.deepEqual(agent.requests.map((request) => request.path), ['/v1/pod-add'], 'the ADD reached the agent');
  const copied = await run(path.join(binDir, 'copied-cni'), [], { env: env('ADD'), input: config(f) });
  t.not(copied.code, 0);
  const error = JSON.parse(copied.stdout) as Record<string, unknown>;
  t.is(error.code, 5);
  t.regex(String(error.msg), /the Node plugin ambit-cni-node is not beside this executable: install the plugin with the installer \(node cni\/install\.ts/);
});

test('bad input gives a spec error JSON on stdout and a non-zero exit, never a stack trace', async (t) => {
  const f = await fixture(t);
  const cases: [string, NodeJS.ProcessEnv, string, number, RegExp][] = [
    ['malformed stdin', env('ADD'), '{"cniVersion":', 6, /cannot decode the network config/],
    ['unsupported cniVersion', env('ADD'), config(f, { cniVersion: '0.2.0' }), 1, /cniVersion "0\.2\.0" is not supported/],
    ['a newer cniVersion than ours', env('ADD'), config(f, { cniVersion: '1.2.0' }), 1, /cniVersion "1\.2\.0" is not supported by ambit-cni, which supports 0\.3\.0, 0\.3\.1, 0\.4\.0, 1\.0\.0, 1\.1\.0/],
    ['missing CNI_COMMAND', { ...env('ADD'), CNI_COMMAND: undefined }, config(f), 4, /CNI_COMMAND is not set/],
    ['missing CNI_NETNS on ADD', env('ADD', 'mesh', { CNI_NETNS: '' }), config(f), 4, /CNI_NETNS is not set/],
    ['missing prevResult on ADD', env('ADD'), config(f, { prevResult: undefined }), 7, /chained plugin.*after the primary network plugin/],
    ['bad agentSocket', env('ADD'), config(f, { agentSocket: 'x.sock' }), 7, /"agentSocket" must be an absolute path/],
    ['kubernetes mode without a readable kubeconfig', env('ADD'), config(f, { clusterDir: undefined, kubeconfig: '/etc/k' }), 7, /kubeconfig \/etc\/k: cannot be read/],
    ['pod not published', env('ADD', 'nowhere'), config(f), 11, /pod nowhere\/web not found in cluster directory/],
  ];
  for (const [what, environment, stdin, expectedCode, message] of cases) {
    const { code, json, stdout } = await invoke(environment, stdin);
    t.not(code, 0, what);
    t.is(json?.code, expectedCode, `${what}: ${stdout}`);
    t.regex(String(json?.msg), message, what);
    t.is(typeof json?.cniVersion, 'string', what);
    t.false(stdout.includes('    at '), `${what}: no stack trace`);
  }
});

test('ADD for a pod that is not enrolled prints prevResult unchanged and only tells the agent it exists', async (t) => {
  const f = await fixture(t);
  const agent = await server(t, f.socket);
  const { code, json } = await invoke(env('ADD', 'plain'), config(f));
  t.is(code, 0);
  t.deepEqual(json, PREV_RESULT);
  t.deepEqual(agent.requests.map((request) => request.path), ['/v1/pod-seen'], 'no capture request, only the best-effort notice');
});

test('ADD for a pod that is not enrolled succeeds when the agent is unreachable', async (t) => {
  const f = await fixture(t);
  const { code, json } = await invoke(env('ADD', 'plain'), config(f));
  t.is(code, 0);
  t.deepEqual(json, PREV_RESULT);
});

test('ADD for a container that is not a Kubernetes pod passes through', async (t) => {
  const f = await fixture(t);
  const { code, json } = await invoke(env('ADD', 'mesh', { CNI_ARGS: 'IgnoreUnknown=1' }), config(f));
  t.is(code, 0);
  t.deepEqual(json, PREV_RESULT);
});

test('ADD for an enrolled pod sends pod-add with the contract fields and passes prevResult through on 200', async (t) => {
  const f = await fixture(t);
  const agent = await server(t, f.socket);
  const { code, json } = await invoke(env('ADD'), config(f, { someOtherPluginField: true }));
  t.is(code, 0);
  t.deepEqual(json, PREV_RESULT);
  t.deepEqual(agent.requests, [
    {
      method: 'POST',
      path: '/v1/pod-add',
      body: { podName: 'web', podNamespace: 'mesh', podUid: 'uid-mesh', containerId: 'c0ffee', netns: '/run/netns/ambit-test-web', ips: ['10.244.0.5'] },
    },
  ]);
});

test('ADD fails closed when the agent refuses (its message shown) or is not there (try again later, 11)', async (t) => {
  const f = await fixture(t);
  const missing = await invoke(env('ADD'), config(f));
  t.not(missing.code, 0);
  t.is(missing.json?.code, 11);
  t.is(missing.json?.msg, `ambit node agent not reachable at ${f.socket}: is the ambit agent DaemonSet running on this node?`);

  const agent = await server(t, f.socket, 500, { error: 'iptables-restore failed: table nat missing' });
  const refused = await invoke(env('ADD'), config(f));
  t.not(refused.code, 0);
  t.is(refused.json?.code, 999);
  t.regex(String(refused.json?.msg), /refused to capture pod mesh\/web \(HTTP 500\): iptables-restore failed: table nat missing/);
  t.is(agent.requests.length, 1);
});

test('ADD fails closed when the agent answers 200 without captured:true', async (t) => {
  const f = await fixture(t);
  await server(t, f.socket, 200, { ok: 1 });
  const { code, json } = await invoke(env('ADD'), config(f));
  t.not(code, 0);
  t.regex(String(json?.msg), /without \{"captured":true\}/);
});

test('DEL succeeds twice, with an empty CNI_NETNS, with the netns gone, and with no agent', async (t) => {
  const f = await fixture(t);
  const gone = `/run/netns/ambit-${randomBytes(4).toString('hex')}-gone`;
  const variants: Record<string, string>[] = [{}, {}, { CNI_NETNS: '' }, { CNI_NETNS: gone }];
  for (const overrides of variants) {
    const result = await invoke(env('DEL', 'mesh', overrides), config(f, { prevResult: undefined }));
    t.is(result.code, 0, result.stdout);
    t.is(result.stdout, '');
  }
  const agent = await server(t, f.socket);
  t.is((await invoke(env('DEL', 'mesh', { CNI_NETNS: '' }), config(f))).code, 0);
  t.deepEqual(agent.requests.map((r) => [r.path, r.body.netns, r.body.podUid]), [['/v1/pod-del', '', 'uid-mesh']]);
});

test('CHECK passes with prevResult and an answering agent, fails without either', async (t) => {
  const f = await fixture(t);
  t.is((await invoke(env('CHECK', 'plain'), config(f))).code, 0, 'not enrolled: no agent needed');
  const noAgent = await invoke(env('CHECK'), config(f));
  t.is(noAgent.json?.code, 11);
  await server(t, f.socket);
  t.is((await invoke(env('CHECK'), config(f))).code, 0);
  t.is((await invoke(env('CHECK'), config(f, { prevResult: undefined }))).json?.code, 7);
});

/** A frozen agent: the kernel accepts connections on its socket (backlog), nothing ever answers. */
async function frozenAgent(t: import('ava').ExecutionContext, socket: string): Promise<void> {
  const held: net.Socket[] = [];
  const frozen = net.createServer((connection) => held.push(connection));
  await new Promise<void>((resolve) => frozen.listen(socket, resolve));
  t.teardown(() => {
    for (const connection of held) connection.destroy();
    frozen.close();
  });
}

const PREV_RESULT_11 = { ...PREV_RESULT, cniVersion: '1.1.0' };

test('spec 1.1.0: ADD with a 1.1.0 prevResult captures and answers it in 1.1.0; CHECK and DEL pass; a 1.0.0 prevResult under a 1.1.0 config is answered as 1.1.0', async (t) => {
  const f = await fixture(t);
  const agent = await server(t, f.socket);
  const added = await invoke(env('ADD'), config(f, { cniVersion: '1.1.0', prevResult: PREV_RESULT_11 }));
  t.is(added.code, 0, added.stdout);
  t.deepEqual(added.json, PREV_RESULT_11);
  t.deepEqual(agent.requests.map((request) => [request.path, request.body.ips]), [['/v1/pod-add', ['10.244.0.5']]]);
  const relabelled = await invoke(env('ADD'), config(f, { cniVersion: '1.1.0', prevResult: PREV_RESULT }));
  t.deepEqual(relabelled.json, PREV_RESULT_11, 'a 1.0.0 result is a valid 1.1.0 one: re-labelled');
  const withMtu = { ...PREV_RESULT_11, interfaces: [{ name: 'eth0', mac: '0a:58:0a:f4:00:05', mtu: 1450 }] };
  const older = await invoke(env('ADD'), config(f, { cniVersion: '1.0.0', prevResult: withMtu }));
  t.deepEqual(older.json, withMtu, 'a 1.1.0 result (it may hold 1.1.0-only fields) is never re-labelled 1.0.0');
  t.is((await invoke(env('CHECK'), config(f, { cniVersion: '1.1.0', prevResult: PREV_RESULT_11 }))).code, 0);
  const deleted = await invoke(env('DEL'), config(f, { cniVersion: '1.1.0', prevResult: PREV_RESULT_11 }));
  t.is(deleted.code, 0, deleted.stdout);
  t.is(deleted.stdout, '');
  t.deepEqual(agent.requests.map((request) => request.path), ['/v1/pod-add', '/v1/pod-add', '/v1/pod-add', '/v1/pod-del']);
});

test('spec 1.1.0: STATUS succeeds when the agent answers ready, else fails with 50 (not available); needs a 1.1.0 config', async (t) => {
  const f = await fixture(t);
  const statusEnv = { PATH: process.env.PATH, CNI_COMMAND: 'STATUS', CNI_PATH: '/usr/lib/cni' };
  const statusConfig = config(f, { cniVersion: '1.1.0', prevResult: undefined });
  const down = await invoke(statusEnv, statusConfig);
  t.not(down.code, 0);
  t.is(down.json?.code, 50, down.stdout);
  t.is(down.json?.cniVersion, '1.1.0');
  t.regex(String(down.json?.msg), /cannot serve ADD for enrolled pods: ambit node agent not reachable at/);
  t.is((await invoke(statusEnv, config(f, { cniVersion: '1.1.0', prevResult: undefined, statusRequiresAgent: false }))).code, 0, 'opted out: ready without the agent');

  let answer = { status: 503, body: { error: 'the agent is starting or stopping' } as unknown };
  const agent = await startProtocolServer(f.socket, () => answer);
  t.teardown(() => agent.close());
  const starting = await invoke(statusEnv, statusConfig);
  t.is(starting.json?.code, 50);
  t.regex(String(starting.json?.msg), /not ready \(HTTP 503\): the agent is starting or stopping/);
  answer = { status: 200, body: { ready: true } };
  const up = await invoke(statusEnv, statusConfig);
  t.is(up.code, 0, up.stdout);
  t.is(up.stdout, '');
  t.deepEqual(agent.requests.map((request) => request.path), ['/v1/status', '/v1/status']);
  t.is((await invoke(statusEnv, config(f, { prevResult: undefined }))).json?.code, 1, 'STATUS under a 1.0.0 config: incompatible version');
});

test('spec 1.1.0: GC sends the valid attachments\' container ids to the agent; without the list it is refused, never "forget everything"', async (t) => {
  const f = await fixture(t);
  const agent = await startProtocolServer(f.socket, () => ({ status: 200, body: { forgotten: ['mesh/old'] } }));
  t.teardown(() => agent.close());
  const gcEnv = { PATH: process.env.PATH, CNI_COMMAND: 'GC', CNI_PATH: '/usr/lib/cni' };
  const attachments = [{ containerID: 'c0ffee', ifname: 'eth0' }, { containerID: 'beef', ifname: 'eth0' }];
  const collected = await invoke(gcEnv, config(f, { cniVersion: '1.1.0', prevResult: undefined, 'cni.dev/valid-attachments': attachments }));
  t.is(collected.code, 0, collected.stdout);
  t.deepEqual(agent.requests, [{ method: 'POST', path: '/v1/pod-gc', body: { validContainerIds: ['c0ffee', 'beef'] } }]);
  const noList = await invoke(gcEnv, config(f, { cniVersion: '1.1.0', prevResult: undefined }));
  t.is(noList.json?.code, 7);
  t.regex(String(noList.json?.msg), /GC without "cni\.dev\/valid-attachments"/);
  t.is(agent.requests.length, 1, 'nothing sent without the list');
});

test.serial('a frozen agent: DEL gives up fast and succeeds; ADD fails once, after its one deadline', async (t) => {
  const f = await fixture(t);
  // The same DEL with no agent at all (refused at once): what starting the plugin costs on this machine right now.
  const baselineStarted = Date.now();
  t.is((await invoke(env('DEL'), config(f))).code, 0);
  const baselineMs = Date.now() - baselineStarted;
  await frozenAgent(t, f.socket);
  const started = Date.now();
  const deleted = await invoke(env('DEL'), config(f));
  const delMs = Date.now() - started;
  t.is(deleted.code, 0, deleted.stdout);
  t.log(`DEL: ${delMs} ms against a frozen agent, ${baselineMs} ms with no agent`);
  // POD_DEL_TIMEOUT_MS (2 s) over the baseline; it waited the 10 s ADD deadline before.
  t.true(delMs - baselineMs < 6000, `DEL took ${delMs} ms (no agent: ${baselineMs} ms)`);
  const addStarted = Date.now();
  const added = await invoke(env('ADD'), config(f));
  const addMs = Date.now() - addStarted;
  t.log(`ADD: ${addMs} ms against a frozen agent`);
  t.is(added.json?.code, 11, added.stdout);
  t.regex(String(added.json?.msg), /not reachable/);
  t.true(addMs - baselineMs < 16_000, `ADD took ${addMs} ms (no agent: ${baselineMs} ms)`);
});

test('through the local runtime: an enrolled pod starts once pod-add answers 200, with the real pod netns and IP; DEL reaches the agent twice', async (t) => {
  const cluster = await createCluster({ nodes: 1 });
  t.teardown(() => cluster.destroy());
  const node = cluster.node(0);
  const agent = await server(t, node.agentSocket);
  const pod = await cluster.createPod({ node: 0, namespace: 'mesh', name: 'web', namespaceLabels: { 'istio.io/dataplane-mode': 'ambient' } });
  t.regex(pod.ip, /^10\.\d+\.0\.\d+$/);
  t.deepEqual(agent.requests[0]?.body, {
    podName: 'web',
    podNamespace: 'mesh',
    podUid: pod.uid,
    containerId: pod.containerId,
    netns: pod.netnsPath,
    ips: [pod.ip],
  });
  await cluster.checkPod(pod);
  await cluster.deletePod(pod);
  t.deepEqual(agent.requests.slice(1).map((r) => [r.path, r.body.netns]), [
    ['/v1/pod-del', pod.netnsPath],
    ['/v1/pod-del', ''],
  ]);
});

test('through the local runtime: an agent refusal fails createPod with the plugin error and leaves nothing behind', async (t) => {
  const cluster = await createCluster({ nodes: 1 });
  t.teardown(() => cluster.destroy());
  await server(t, cluster.node(0).agentSocket, 503, { error: 'pod namespace not ready' });
  const error = await t.throwsAsync(
    cluster.createPod({ node: 0, namespace: 'mesh', name: 'web', labels: { 'istio.io/dataplane-mode': 'ambient' } }),
    { instanceOf: CniPluginError },
  );
  t.is(error?.plugin, 'ambit-cni');
  t.is(error?.cniError.code, 999);
  t.regex(error?.message ?? '', /pod namespace not ready/);
  const { stdout } = await run('ip', ['netns', 'list']);
  t.false(stdout.includes(podNetnsName(cluster.runId, 'mesh', 'web')));
  t.deepEqual(await readdir(path.join(cluster.clusterDir, 'pods')), []);
  const reserved = await readdir(path.join(cluster.node(0).dir, 'ipam', cluster.networkName)).catch(() => []);
  t.deepEqual(reserved.filter((name) => /^\d+\.\d+\.\d+\.\d+$/.test(name)), [], 'the IP was released');
});

test('through the local runtime: CHECK fails once the agent is gone; an annotation the agent adds during ADD survives the status update', async (t) => {
  const cluster = await createCluster({ nodes: 1 });
  t.teardown(() => cluster.destroy());
  const podFile = path.join(cluster.clusterDir, 'pods', 'mesh.web.yaml');
  // Stands in for the agent marking the pod captured (the real agent's annotation is tested in its own tests).
  const agent = await startProtocolServer(cluster.node(0).agentSocket, (request) => {
    if (request.path === '/v1/pod-add') {
      const object = parse(readFileSync(podFile, 'utf8')) as { metadata: { annotations?: Record<string, string> } };
      object.metadata.annotations = { ...object.metadata.annotations, 'ambient.istio.io/redirection': 'enabled' };
      writeFileSync(podFile, stringify(object));
    }
    return contractReply(request.path);
  });
  t.teardown(() => agent.close());
  const pod = await cluster.createPod({ node: 0, namespace: 'mesh', name: 'web', labels: { 'istio.io/dataplane-mode': 'ambient' } });
  const published = parse(readFileSync(podFile, 'utf8')) as { metadata: { annotations: Record<string, string> }; status: { podIP: string } };
  t.is(published.metadata.annotations['ambient.istio.io/redirection'], 'enabled');
  t.is(published.status.podIP, pod.ip);
  await cluster.checkPod(pod);
  await agent.close();
  const error = await t.throwsAsync(cluster.checkPod(pod), { instanceOf: CniPluginError });
  t.is(error?.cniError.code, 11);
});
