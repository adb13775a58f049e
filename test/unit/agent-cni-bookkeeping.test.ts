// Unit tests: the agent's side of CNI STATUS and GC (agent/cni-server.ts: input checks on its unix socket, with a
// recording PodCapture: the capture itself is tested on real namespaces in test/net/cni-lifecycle.test.ts), and the
// mesh state's node addresses (shared/mesh/mesh-state.ts: a pod's ADD IPs until its source has a status).
import test from 'ava';
import http from 'node:http';
import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { startCniServer, type PodCapture } from '../../agent/cni-server.ts';
import type { PodInfo } from '../../agent/inpod/pod-listeners.ts';
import { MeshState } from '../../shared/mesh/mesh-state.ts';
import type { Workload } from '../../shared/mesh/workload.ts';

function post(socketPath: string, urlPath: string, body: string, method = 'POST'): Promise<{ status: number; body: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const request = http.request({ socketPath, path: urlPath, method, agent: false }, (response) => {
      let text = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (text += chunk));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body: text === '' ? {} : (JSON.parse(text) as Record<string, unknown>) }));
    });
    request.on('error', reject);
    request.end(body);
  });
}

async function server(t: import('ava').ExecutionContext, capture: PodCapture, ready: () => boolean = () => true): Promise<string> {
  const socketPath = path.join(os.tmpdir(), `ambit-cni-server-${randomBytes(4).toString('hex')}.sock`);
  const started = await startCniServer({ socketPath, capture, ready });
  t.teardown(async () => {
    await started.close();
    await rm(socketPath, { force: true });
  });
  return socketPath;
}

function recordingCapture(): PodCapture & { added: PodInfo[]; collected: string[][] } {
  const added: PodInfo[] = [];
  const collected: string[][] = [];
  return {
    added,
    collected,
    add: async (pod) => void added.push(pod),
    del: async () => {},
    gc: async (valid) => {
      collected.push([...valid]);
      return ['shop/stale'];
    },
  };
}

test('STATUS: 200 {"ready":true} while the agent serves ADDs, 503 while it starts or stops; POST only', async (t) => {
  let ready = false;
  const socketPath = await server(t, recordingCapture(), () => ready);
  const starting = await post(socketPath, '/v1/status', '{}');
  t.is(starting.status, 503);
  t.regex(String(starting.body.error), /starting or stopping/);
  ready = true;
  t.deepEqual(await post(socketPath, '/v1/status', '{}'), { status: 200, body: { ready: true } });
  t.is((await post(socketPath, '/v1/status', '', 'GET')).status, 405);
});

test('GC: the valid container ids reach the capture as a set; bad lists get 400, an oversized body 413, and the server keeps serving', async (t) => {
  const capture = recordingCapture();
  const socketPath = await server(t, capture);
  const bad = [
    '{"validContainerIds": "abc"}',
    '{"validContainerIds": [1]}',
    '{"validContainerIds": [""]}',
    `{"validContainerIds": ["${'a'.repeat(257)}"]}`,
    '{}',
    '[]',
    '{"validContainerIds": [',
  ];
  for (const body of bad) t.is((await post(socketPath, '/v1/pod-gc', body)).status, 400, body);
  const huge = JSON.stringify({ validContainerIds: Array.from({ length: 20_000 }, (_, i) => `${i}`.padStart(64, '0')) });
  t.is((await post(socketPath, '/v1/pod-gc', huge)).status, 413, 'over 1 MiB');
  t.deepEqual(capture.collected, [], 'nothing collected on bad input');
  // A node's worth of sandboxes (500 containerd ids, 35 KB) fits.
  const many = Array.from({ length: 500 }, (_, i) => `${i}`.padStart(64, 'f'));
  t.deepEqual(await post(socketPath, '/v1/pod-gc', JSON.stringify({ validContainerIds: many })), { status: 200, body: { forgotten: ['shop/stale'] } });
  t.deepEqual(capture.collected, [many]);
  t.deepEqual(await post(socketPath, '/v1/status', '{}'), { status: 200, body: { ready: true } }, 'still serving');
});

test('pod-add hands the sandbox id to the capture (GC names attachments by it); an empty one is left out', async (t) => {
  const capture = recordingCapture();
  const socketPath = await server(t, capture);
  const request = { podName: 'web', podNamespace: 'shop', podUid: 'u1', containerId: 'c0ffee', netns: '/run/netns/x', ips: ['10.1.0.5'] };
  t.is((await post(socketPath, '/v1/pod-add', JSON.stringify(request))).status, 200);
  t.is((await post(socketPath, '/v1/pod-add', JSON.stringify({ ...request, containerId: '' }))).status, 200);
  t.is(capture.added[0]?.containerId, 'c0ffee');
  t.false('containerId' in (capture.added[1] ?? {}));
});

function workload(addresses: string[], uid = 'u1'): Workload {
  return {
    uid, name: 'web', namespace: 'shop', serviceAccount: 'web', trustDomain: 'cluster.local', node: 'n1', addresses,
    tunnelProtocol: 'HBONE', captureReason: 'namespace label', canonicalName: 'web', canonicalRevision: 'latest', workloadName: 'web', labels: {},
  };
}

test('node addresses: a pod without a status address is found by its ADD IP; the status wins once it has one; clearing drops the ADD IP', (t) => {
  const state = new MeshState();
  state.replaceAll([workload([])]);
  t.is(state.workloadByIp('10.1.0.5'), undefined);
  t.is(state.setNodeAddresses('shop', 'web', ['10.1.0.5']), undefined);
  t.is(state.workloadByIp('10.1.0.5')?.name, 'web', 'the ADD\'s IP is the workload\'s while the source has none');
  t.deepEqual(state.workloadByName('shop', 'web')?.addresses, ['10.1.0.5']);

  // A source re-read with nothing new changes nothing (no change event, the ADD's IP kept).
  const version = state.version;
  state.replaceAll([workload([])]);
  t.is(state.version, version);
  t.is(state.workloadByIp('10.1.0.5')?.name, 'web');

  // The status arrives with another address: it wins, the ADD's IP no longer routes to the pod.
  state.replaceAll([workload(['10.1.0.9'])]);
  t.is(state.workloadByIp('10.1.0.9')?.name, 'web');
  t.is(state.workloadByIp('10.1.0.5'), undefined);
  t.deepEqual(state.setNodeAddresses('shop', 'web', ['10.1.0.5']), ['10.1.0.9'], 'the disagreement is reported to the caller');

  state.replaceAll([workload([])]);
  t.is(state.workloadByIp('10.1.0.5')?.name, 'web', 'status gone again: back to the ADD\'s IP');
  state.clearNodeAddresses('shop', 'web');
  t.is(state.workloadByIp('10.1.0.5'), undefined);
  t.deepEqual(state.workloadByName('shop', 'web')?.addresses, []);
});

test('node addresses set before the pod is known apply when it appears; a removed pod leaves no address behind', (t) => {
  const state = new MeshState();
  state.setNodeAddresses('shop', 'web', ['10.1.0.5']);
  state.upsert(workload([]));
  t.is(state.workloadByIp('10.1.0.5')?.uid, 'u1');
  state.remove('u1');
  t.is(state.workloadByIp('10.1.0.5'), undefined);
  t.is(state.workloadByName('shop', 'web'), undefined);
});
