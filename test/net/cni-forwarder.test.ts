// The native ambit-cni forwarder (cni/native/forwarder.c) as a container runtime runs it: the fast path through the
// agent's real CNI endpoint (agent/cni-server.ts with agent/cni-call.ts running cni/plugin.ts in-process), and the
// slow path (the Node plugin ambit-cni-node) when the agent is down, answers garbage or dies mid-answer. The
// endpoint's PodCapture records what it is asked: capturing for real is the agent's (test/net/cni-lifecycle.test.ts
// runs the whole agent through this same executable).
import test from 'ava';
import net from 'node:net';
import path from 'node:path';
import { AMBIT_CNI_DIR } from '../../runtime/index.ts';
import { run } from '../../runtime/exec.ts';
import { startCniServer, type CniServer, type PodCapture } from '../../agent/cni-server.ts';
import { CaptureError } from '../../agent/inpod/errors.ts';
import { createCniCallRunner } from '../../agent/cni-call.ts';
import type { PodInfo } from '../../agent/inpod/pod-listeners.ts';
import { cniEnvironment, cniFixture, type CniFixture } from '../helpers/cni-environment.ts';
import { namespaceObject, writeNamespace, writePod } from '../../runtime/cluster-store.ts';

const PLUGIN = path.join(AMBIT_CNI_DIR, 'ambit-cni');
const PREV_RESULT = {
  cniVersion: '1.0.0',
  interfaces: [{ name: 'eth0', mac: '0a:58:0a:f4:00:05', sandbox: '/run/netns/x' }],
  ips: [{ address: '10.244.0.5/24', gateway: '10.244.0.1', interface: 0 }],
  routes: [{ dst: '0.0.0.0/0' }],
  dns: {},
};
const SLOW_PATH_NOTE = /running the Node plugin/;

const fixture = (t: import('ava').ExecutionContext) => cniFixture(t, 'ambit-cni-fwd-test-');

function config(f: CniFixture): string {
  return JSON.stringify({ cniVersion: '1.0.0', name: 'pods', type: 'ambit-cni', agentSocket: f.socket, clusterDir: f.clusterDir, prevResult: PREV_RESULT });
}

async function agent(t: import('ava').ExecutionContext, f: CniFixture, failAdd?: Error): Promise<{ server: CniServer; added: PodInfo[]; deleted: string[] }> {
  const added: PodInfo[] = [];
  const deleted: string[] = [];
  const capture: PodCapture = {
    add: async (pod) => {
      if (failAdd) throw failAdd;
      added.push(pod);
    },
    seen: async () => undefined,
    del: async (ref) => { deleted.push(ref.uid); },
  };
  // As the agent wires it: the plugin's questions of a forwarded call answered by the same capture, in-process.
  const server = await startCniServer({ socketPath: f.socket, cniCall: createCniCallRunner(f.socket, { capture }), capture });
  t.teardown(() => server.close());
  return { server, added, deleted };
}

/** As agent(), also recording the pods the endpoint is told it saw (not enrolled). */
async function agentSeeing(t: import('ava').ExecutionContext, f: CniFixture): Promise<{ added: PodInfo[]; seen: string[] }> {
  const added: PodInfo[] = [];
  const seen: string[] = [];
  const capture: PodCapture = {
    add: async (pod) => { added.push(pod); },
    seen: async (pod) => { seen.push(pod.uid); },
    del: async () => undefined,
  };
  const server = await startCniServer({ socketPath: f.socket, cniCall: createCniCallRunner(f.socket, { capture }), capture });
  t.teardown(() => server.close());
  return { added, seen };
}

async function invoke(command: string, namespace: string, stdin: string): Promise<{ code: number; stdout: string; stderr: string; ms: number }> {
  const started = performance.now();
  const result = await run(PLUGIN, [], { env: cniEnvironment(command, { namespace }), input: stdin });
  return { code: result.code, stdout: result.stdout, stderr: result.stderr, ms: performance.now() - started };
}

test.serial('fast path: the agent runs the call in-process; ADD of an enrolled pod is captured and prevResult passed through, DEL reaches it, VERSION answers, with no Node started', async (t) => {
  const f = await fixture(t);
  const { added, deleted } = await agent(t, f);
  const add = await invoke('ADD', 'mesh', config(f));
  t.is(add.code, 0, add.stdout + add.stderr);
  t.deepEqual(JSON.parse(add.stdout), PREV_RESULT);
  t.notRegex(add.stderr, SLOW_PATH_NOTE, 'answered by the agent, not by the Node plugin');
  t.is(added.length, 1);
  t.like(added[0], { name: 'web', namespace: 'mesh', uid: 'uid-mesh', ips: ['10.244.0.5'] });
  const del = await invoke('DEL', 'mesh', config(f));
  t.is(del.code, 0, del.stdout + del.stderr);
  t.is(del.stdout, '');
  t.deepEqual(deleted, ['uid-mesh']);
  const version = await run(PLUGIN, [], { env: { CNI_COMMAND: 'VERSION' }, input: config(f) });
  t.is(version.code, 0);
  t.is((JSON.parse(version.stdout) as { cniVersion: string }).cniVersion, '1.1.0');
  t.log(`ADD ${add.ms.toFixed(0)} ms, DEL ${del.ms.toFixed(0)} ms through the agent`);
});

test.serial('fast path: the agent keeps the cluster directory parsed across calls and follows every change (a namespace enrolled after a first ADD, a pod written later)', async (t) => {
  const f = await fixture(t);
  const { added, seen } = await agentSeeing(t, f);
  const first = await invoke('ADD', 'plain', config(f));
  t.is(first.code, 0, first.stdout + first.stderr);
  t.is(added.length, 0, 'not enrolled: passed through');
  t.deepEqual(seen, ['uid-plain']);
  // Enrolled now: the next ADD must capture (an agent answering from a stale parse would start the pod uncaptured).
  await writeNamespace(f.clusterDir, namespaceObject('plain', { 'istio.io/dataplane-mode': 'ambient' }));
  const second = await invoke('ADD', 'plain', config(f));
  t.is(second.code, 0, second.stdout + second.stderr);
  t.deepEqual(added.map((pod) => pod.uid), ['uid-plain'], 'captured after the label change');
  const missing = await run(PLUGIN, [], { env: cniEnvironment('ADD', { namespace: 'mesh', name: 'late' }), input: config(f) });
  t.is(missing.code, 1);
  t.is((JSON.parse(missing.stdout) as { code: number }).code, 11, 'a pod not written yet: try again later');
  await writePod(f.clusterDir, { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'late', namespace: 'mesh', uid: 'uid-late' }, spec: { containers: [{ name: 'app' }] } });
  const late = await run(PLUGIN, [], { env: cniEnvironment('ADD', { namespace: 'mesh', name: 'late' }), input: config(f) });
  t.is(late.code, 0, late.stdout + late.stderr);
  t.is(added.length, 2, 'the pod written after the first lookups is found and captured');
});

test.serial('fast path: a capture that fails fails the enrolled pod\'s ADD (fail closed) with the agent\'s reason, as the socket answers it; the agent keeps serving', async (t) => {
  const f = await fixture(t);
  await agent(t, f, new CaptureError('RULES_FAILED', 'iptables-restore failed: table nat missing'));
  const add = await invoke('ADD', 'mesh', config(f));
  t.is(add.code, 1, add.stdout + add.stderr);
  t.notRegex(add.stderr, SLOW_PATH_NOTE, 'answered by the agent, not by the Node plugin');
  const error = JSON.parse(add.stdout) as { code: number; msg: string };
  t.regex(error.msg, /refused to capture pod mesh\/web \(HTTP 500\): iptables-restore failed: table nat missing/);
  const plain = await invoke('ADD', 'plain', config(f));
  t.is(plain.code, 0, `a pod that is not enrolled still starts: ${plain.stdout}`);
});

test.serial('fast path: bad input gets the same spec errors as from the Node plugin, and the agent keeps serving', async (t) => {
  const f = await fixture(t);
  const { added } = await agent(t, f);
  const malformed = await invoke('ADD', 'mesh', `{"cniVersion":"1.0.0","agentSocket":"${f.socket}",`);
  t.is(malformed.code, 1);
  t.is((JSON.parse(malformed.stdout) as { code: number }).code, 6, malformed.stdout);
  t.notRegex(malformed.stderr, SLOW_PATH_NOTE);
  const unknownCommand = await run(PLUGIN, [], { env: cniEnvironment('FROB', { namespace: 'mesh' }), input: config(f) });
  t.is((JSON.parse(unknownCommand.stdout) as { code: number }).code, 4, unknownCommand.stdout);
  const add = await invoke('ADD', 'mesh', config(f));
  t.is(add.code, 0, add.stdout + add.stderr);
  t.is(added.length, 1, 'only the valid ADD captured');
});

test.serial('a config over 4 MiB on stdin is an I/O error (5) on stdout, not a crash', async (t) => {
  const f = await fixture(t);
  await agent(t, f);
  const huge = `{"cniVersion":"1.0.0","pad":"${'x'.repeat(5 * 1024 * 1024)}"}`;
  const result = await invoke('ADD', 'mesh', huge);
  t.is(result.code, 1);
  const error = JSON.parse(result.stdout) as { code: number; msg: string };
  t.is(error.code, 5);
  t.regex(error.msg, /over 4 MiB/);
});

test.serial('slow path, agent down: an enrolled pod is refused (try again later), a pod that is not enrolled passes through', async (t) => {
  const f = await fixture(t);
  const enrolled = await invoke('ADD', 'mesh', config(f));
  t.is(enrolled.code, 1, enrolled.stdout);
  const error = JSON.parse(enrolled.stdout) as { code: number; msg: string };
  t.is(error.code, 11);
  t.regex(error.msg, /not reachable/);
  t.regex(enrolled.stderr, SLOW_PATH_NOTE);
  const plain = await invoke('ADD', 'plain', config(f));
  t.is(plain.code, 0, plain.stdout + plain.stderr);
  t.deepEqual(JSON.parse(plain.stdout), PREV_RESULT);
  const del = await invoke('DEL', 'mesh', config(f));
  t.is(del.code, 0, del.stdout);
});

test.serial('an agent that dies mid-answer (a truncated 200) is never taken as success: the Node plugin decides (enrolled: refused)', async (t) => {
  const f = await fixture(t);
  let connections = 0;
  // Reads the request, then sends a 200 with exit code 0 whose body stops short of its length, and closes.
  const dying = net.createServer((socket) => {
    connections++;
    socket.once('data', () => {
      socket.end('HTTP/1.1 200 OK\r\nambit-cni-exit: 0\r\ncontent-length: 400\r\n\r\n{"cniVersion":"1.0.0","interfaces"');
    });
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => dying.listen(f.socket, resolve));
  t.teardown(() => new Promise<void>((resolve) => dying.close(() => resolve())));
  const enrolled = await invoke('ADD', 'mesh', config(f));
  t.is(enrolled.code, 1, enrolled.stdout);
  t.regex(enrolled.stderr, /incomplete.*running the Node plugin/s);
  t.true(connections >= 2, 'the forwarder asked, then the Node plugin asked again');
  const plain = await invoke('ADD', 'plain', config(f));
  t.is(plain.code, 0, plain.stdout + plain.stderr);
  t.deepEqual(JSON.parse(plain.stdout), PREV_RESULT);
});

test.serial('a call the agent cannot run as the host would (its pod source is not visible to the agent) goes to the Node plugin', async (t) => {
  const f = await fixture(t);
  const { added } = await agent(t, f);
  const hidden = JSON.stringify({ cniVersion: '1.0.0', name: 'pods', type: 'ambit-cni', agentSocket: f.socket, clusterDir: '/nonexistent/ambit-cluster', prevResult: PREV_RESULT });
  const result = await invoke('ADD', 'mesh', hidden);
  t.regex(result.stderr, /HTTP 421.*running the Node plugin/s);
  t.is(result.code, 1, 'the Node plugin cannot read the cluster directory either: the same error as before the forwarder');
  t.deepEqual(added, []);
});
