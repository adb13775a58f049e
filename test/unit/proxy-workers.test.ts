/**
 * The main thread's side of the proxy workers (agent/workers/proxy-workers.ts) with real worker threads running a
 * scripted worker (test/helpers/scripted-proxy-worker.ts): what a worker is started with, that changes reach it in
 * order, that its certificate requests are answered from the main thread's certificates, and that a worker that
 * dies is started again with the current state and the captured pods.
 */
import test from 'ava';
import type { SpiffeId, WorkloadCertificate } from '../../shared/identity/index.ts';
import { configFromEnv } from '../../agent/config.ts';
import type { PodInfo } from '../../agent/inpod/pod-listeners.ts';
import { MeshState } from '../../shared/mesh/mesh-state.ts';
import type { Service } from '../../shared/mesh/service.ts';
import type { Workload } from '../../shared/mesh/workload.ts';
import { ProxyWorkers } from '../../agent/workers/proxy-workers.ts';

const SCRIPTED_WORKER = new URL('../helpers/scripted-proxy-worker.ts', import.meta.url);

interface WorkerRecord {
  index: number;
  pods: string[];
  seen: string[];
}

function workload(uid: string): Workload {
  return {
    uid, name: uid, namespace: 'shop', serviceAccount: 'sa', trustDomain: 'cluster.local', node: 'n1', addresses: ['10.0.0.1'],
    tunnelProtocol: 'HBONE', captureReason: 'test', canonicalName: uid, canonicalRevision: 'latest', workloadName: uid,
  };
}

function service(name: string, vip: string): Service {
  return { name, namespace: 'shop', hostname: `${name}.shop.svc.cluster.local`, vips: [{ network: '', address: vip }], ports: [{ servicePort: 80, targetPort: 8080 }], subjectAltNames: [], ipFamilies: 'AUTOMATIC' };
}

function fixture(captured: PodInfo[] = []) {
  const state = new MeshState();
  state.upsert(workload('w1'));
  state.upsertService(service('web', '10.96.0.10'));
  const errors: string[] = [];
  const asked: string[] = [];
  const certificates = {
    certificateFor: (identity: SpiffeId): WorkloadCertificate => {
      asked.push(identity.uri);
      return { identity, certPem: 'cert', keyPem: 'key', chainPem: [], rootsPem: ['root'], notBefore: new Date(), notAfter: new Date(Date.now() + 3_600_000) };
    },
    rootsPem: () => ['root'],
  };
  const log = { info: () => {}, warn: () => {}, error: (object: unknown, message: string) => void errors.push(`${message} ${JSON.stringify(object)}`) };
  const config = configFromEnv({ AMBIT_NODE_NAME: 'n1', AMBIT_CLUSTER_DIR: '/nonexistent', AMBIT_LOCAL_CA_DIR: '/nonexistent', AMBIT_DRAIN_MS: '100' });
  const workers = new ProxyWorkers({
    count: 1, config, state, certificates, log: log as never, capturedPods: () => captured, workerMain: SCRIPTED_WORKER, restartDelayMs: 50,
  });
  return { state, workers, errors, asked };
}

async function record(workers: ProxyWorkers): Promise<WorkerRecord> {
  const results = (await workers.metrics()) as unknown as WorkerRecord[][];
  return results[0]![0]!;
}

const pod: PodInfo = { uid: 'p1', name: 'p1', namespace: 'shop', netns: '/run/netns/p1', ips: ['10.0.0.1'] };

test('a worker starts with the current state and policies, then gets every change in order', async (t) => {
  const { state, workers } = fixture();
  workers.setLocalPolicies([]);
  workers.applyXdsPolicies([{ name: 'shop/deny', resource: { name: 'deny' } }], []);
  await workers.start();
  t.teardown(() => workers.stop());
  state.upsert(workload('w2'));
  state.upsertService(service('api', '10.96.0.11'));
  workers.applyXdsPolicies([{ name: 'shop/allow', resource: {} }], ['shop/deny']);
  state.removeService('shop/web.shop.svc.cluster.local');
  state.remove('w1');
  workers.setLogLevel('debug');
  const { seen } = await record(workers);
  t.deepEqual(seen, [
    'init workloads=1 services=1 local=0 xds=1',
    'upsert w2',
    'service shop/api.shop.svc.cluster.local vips=10.96.0.11',
    'xds +shop/allow -shop/deny',
    'service-remove shop/web.shop.svc.cluster.local',
    'remove w1',
    'level debug',
  ]);
});

test('a pod add reaches the worker, whose certificate request the main thread answers', async (t) => {
  const { workers, asked } = fixture();
  await workers.start();
  t.teardown(() => workers.stop());
  await workers.addPod(pod);
  const first = await record(workers);
  t.deepEqual(first.pods, ['p1']);
  t.deepEqual(asked, ['spiffe://cluster.local/ns/shop/sa/sa']);
  t.true(first.seen.includes('certificate spiffe://cluster.local/ns/shop/sa/sa'));
  await workers.delPod('p1');
  t.deepEqual((await record(workers)).pods, []);
});

test('a worker that dies is started again with the current state and every captured pod', async (t) => {
  const { state, workers, errors } = fixture([pod]);
  await workers.start();
  t.teardown(() => workers.stop());
  await workers.addPod(pod);
  state.upsert(workload('w2'));
  state.upsertService(service('api', '10.96.0.11'));
  workers.setLogLevel('crash');
  const deadline = Date.now() + 10_000;
  let after: WorkerRecord | undefined;
  while (Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    after = await record(workers).catch(() => undefined);
    if (after?.seen[0]?.startsWith('init') && after.pods.length > 0 && errors.length > 0) break;
  }
  t.truthy(after, 'a worker answers again');
  t.is(after!.seen[0], 'init workloads=2 services=2 local=none xds=0', 'the new worker starts from the state as it is now');
  t.deepEqual(after!.pods, ['p1'], 'the captured pod is added to the new worker');
  t.regex(errors[0]!, /^proxy worker died; starting it again .*"reason":"exit code 3"/);
});

test('with no workers every call is a no-op', async (t) => {
  const { state } = fixture();
  const config = configFromEnv({ AMBIT_NODE_NAME: 'n1', AMBIT_CLUSTER_DIR: '/x', AMBIT_LOCAL_CA_DIR: '/x' });
  const none = new ProxyWorkers({ count: 0, config, state, certificates: { certificateFor: () => { throw new Error('not asked'); }, rootsPem: () => [] }, log: console, capturedPods: () => [] });
  await none.start();
  await none.addPod(pod);
  await none.delPod('p1');
  t.deepEqual(await none.metrics(), []);
  t.is(none.count, 0);
  await none.stop();
});
