// Decoding the native forwarder's /v1/cni-call body (agent/cni-call.ts): what a peer sends is checked, never trusted;
// and a capture the agent starts before the plugin decides is settled by the plugin's decision, before the answer.
import test, { type ExecutionContext } from 'ava';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { CniCallDecodeError, createCniCallRunner, decodeCniCall } from '../../agent/cni-call.ts';
import type { PodInfo } from '../../agent/inpod/pod-listeners.ts';

const body = (text: string): Buffer => Buffer.from(text, 'utf8');

test('the CNI_* environment and the config are split at the empty entry', (t) => {
  const decoded = decodeCniCall(body('CNI_COMMAND=ADD\0CNI_ARGS=A=1;B=2\0\0{"cniVersion":"1.0.0"}'));
  t.deepEqual(decoded.env, { CNI_COMMAND: 'ADD', CNI_ARGS: 'A=1;B=2' });
  t.is(decoded.stdin, '{"cniVersion":"1.0.0"}');
  t.deepEqual(decodeCniCall(body('CNI_COMMAND=VERSION\0\0')), { env: { CNI_COMMAND: 'VERSION' }, stdin: '' });
});

test('a body that is not from the forwarder is a typed error, not a crash', (t) => {
  for (const bad of ['', 'CNI_COMMAND=ADD', 'CNI_COMMAND=ADD\0', 'PATH=/bin\0\0{}', 'CNI_COMMAND\0\0{}', '=x\0\0', `${'CNI_X=1\0'.repeat(65)}\0`]) {
    const error = t.throws(() => decodeCniCall(body(bad)), { instanceOf: CniCallDecodeError }, JSON.stringify(bad.slice(0, 40)));
    t.is(error?.code, 'CNI_CALL_MALFORMED');
  }
});

/** A cluster directory with one Namespace (enrolled or not) and, unless `withoutPod`, the Pod `web`. */
async function clusterDir(t: ExecutionContext, options: { enrolled: boolean; withoutPod?: boolean }): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ambit-cni-call-test-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const labels = options.enrolled ? '\n  labels:\n    istio.io/dataplane-mode: ambient' : '';
  await writeFile(path.join(dir, 'ns.yaml'), `apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop${labels}\n`);
  if (!options.withoutPod) await writeFile(path.join(dir, 'web.yaml'), 'apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: shop\n  uid: u-web\nspec:\n  nodeName: n1\n  containers:\n  - name: app\n');
  return dir;
}

function addCall(dir: string, socket: string, args = 'IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web;K8S_POD_UID=u-web'): Buffer {
  const config = { cniVersion: '1.0.0', name: 'pods', type: 'ambit-cni', agentSocket: socket, clusterDir: dir, prevResult: { cniVersion: '1.0.0', ips: [{ address: '10.0.0.5/24' }] } };
  const env = ['CNI_COMMAND=ADD', 'CNI_CONTAINERID=c1', 'CNI_NETNS=/run/netns/web', 'CNI_IFNAME=eth0', 'CNI_PATH=/usr/lib/cni', `CNI_ARGS=${args}`];
  return Buffer.from(`${env.join('\0')}\0\0${JSON.stringify(config)}`);
}

test('a capture started early is settled before the answer: kept only when the plugin\'s pod-add was answered 200', async (t) => {
  const socket = path.join(os.tmpdir(), 'ambit-cni-call-test.sock');
  const run = async (dir: string, addFails: boolean, args?: string): Promise<{ exitCode: number; started: PodInfo[]; settled: boolean[]; settledBeforeAnswer: boolean }> => {
    const started: PodInfo[] = [];
    const settled: boolean[] = [];
    let answered = false;
    let settledBeforeAnswer = true;
    const runner = createCniCallRunner(socket, {
      capture: {
        add: () => (addFails ? Promise.reject(new Error('rules failed')) : Promise.resolve()),
        seen: () => Promise.resolve(),
        del: () => Promise.resolve(),
      },
      startAdd: (pod) => {
        started.push(pod);
        return { settle: async (captured) => {
          await new Promise((resolve) => setTimeout(resolve, 20)); // a release takes a while: the answer waits for it
          if (answered) settledBeforeAnswer = false;
          settled.push(captured);
        } };
      },
    });
    const answer = await runner(addCall(dir, socket, args));
    answered = true;
    return { exitCode: 'exitCode' in answer ? answer.exitCode : -1, started, settled, settledBeforeAnswer };
  };
  const enrolled = await clusterDir(t, { enrolled: true });
  const captured = await run(enrolled, false);
  t.is(captured.exitCode, 0);
  t.like(captured.started[0], { uid: 'u-web', name: 'web', namespace: 'shop', netns: '/run/netns/web', ips: ['10.0.0.5'], containerId: 'c1' });
  t.deepEqual(captured.settled, [true]);
  t.true(captured.settledBeforeAnswer);

  const refused = await run(enrolled, true);
  t.is(refused.exitCode, 1, 'the agent refused the capture: the ADD fails');
  t.deepEqual(refused.settled, [false]);
  t.true(refused.settledBeforeAnswer, 'what started early is taken back before the ADD is answered');

  const notEnrolled = await run(await clusterDir(t, { enrolled: false }), false);
  t.is(notEnrolled.exitCode, 0);
  t.deepEqual(notEnrolled.settled, [false], 'the plugin\'s own lookup says not enrolled: taken back');

  const missing = await run(await clusterDir(t, { enrolled: true, withoutPod: true }), false);
  t.is(missing.exitCode, 1);
  t.deepEqual(missing.settled, [false]);

  const noUid = await run(enrolled, false, 'IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web');
  t.deepEqual(noUid.started, [], 'without K8S_POD_UID the call does not name the pod the plugin will: nothing starts early');
});
