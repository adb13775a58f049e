/**
 * A real proxy worker thread (agent/workers/proxy-worker.ts, through test/helpers/crashable-proxy-worker.ts) dies
 * and the main thread's side (agent/workers/proxy-workers.ts) starts it again: the dead thread's listeners in the
 * pod's network namespace go with it, and the new worker opens them again for every captured pod, with its
 * certificate from the main thread. The pod is a network namespace this test makes.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { configFromEnv } from '../../agent/config.ts';
import type { PodInfo } from '../../agent/inpod/pod-listeners.ts';
import { MeshState } from '../../shared/mesh/mesh-state.ts';
import type { Workload } from '../../shared/mesh/workload.ts';
import { ProxyWorkers } from '../../agent/workers/proxy-workers.ts';
import { CertificateAuthority, type SpiffeId } from '../../shared/identity/index.ts';
import { CRASH_WORKLOAD_UID } from '../helpers/crashable-proxy-worker.ts';

const run = promisify(execFile);
const CRASHABLE_WORKER = new URL('../helpers/crashable-proxy-worker.ts', import.meta.url);
const NETNS = `ambit-pwcrash-${process.pid}`;

async function listenerPorts(): Promise<string[]> {
  const { stdout } = await run('ip', ['netns', 'exec', NETNS, 'ss', '-Hltn']);
  return stdout.split('\n').filter((line) => line.trim() !== '').map((line) => line.trim().split(/\s+/)[3]!).sort();
}

/** A worker thread loads the agent's modules afresh: on a loaded machine that alone takes seconds. */
const WAIT_MS = 30_000;

async function waitFor(condition: () => Promise<boolean>, what: string, log: string[]): Promise<void> {
  for (const deadline = Date.now() + WAIT_MS; !(await condition()); await new Promise((resolve) => setTimeout(resolve, 200))) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; the main thread logged: ${log.join(' | ')}`);
  }
}

test('a real proxy worker that dies takes its listeners with it, and is started again listening in every captured pod', async (t) => {
  await run('ip', ['netns', 'add', NETNS]);
  t.teardown(() => run('ip', ['netns', 'del', NETNS]).catch(() => undefined));
  await run('ip', ['-n', NETNS, 'link', 'set', 'lo', 'up']);

  const ca = await CertificateAuthority.createRoot({ trustDomain: 'cluster.local' });
  const workload: Workload = {
    uid: 'shop-p1', name: 'p1', namespace: 'shop', serviceAccount: 'p1', trustDomain: 'cluster.local', node: 'n1', addresses: ['127.0.0.1'],
    tunnelProtocol: 'HBONE', captureReason: 'test', canonicalName: 'p1', canonicalRevision: 'latest', workloadName: 'p1',
  };
  const state = new MeshState();
  state.upsert(workload);
  const pod: PodInfo = { uid: 'shop-p1', name: 'p1', namespace: 'shop', netns: `/run/netns/${NETNS}`, ips: ['127.0.0.1'] };
  const asked: string[] = [];
  const errors: string[] = [];
  const logged: string[] = [];
  const workers = new ProxyWorkers({
    count: 1,
    config: configFromEnv({ AMBIT_NODE_NAME: 'n1', AMBIT_CLUSTER_DIR: '/nonexistent', AMBIT_LOCAL_CA_DIR: '/nonexistent', AMBIT_DRAIN_MS: '100', AMBIT_LOG_LEVEL: 'warn' }),
    state,
    certificates: {
      certificateFor: (identity: SpiffeId) => {
        asked.push(identity.uri);
        return ca.issueWorkloadCertificate(identity);
      },
      rootsPem: () => [ca.rootCertPem],
    },
    log: {
      info: (object: object, message: string) => void logged.push(`${Date.now()} ${message} ${JSON.stringify(object)}`),
      warn: (object: object, message: string) => void logged.push(`${message} ${JSON.stringify(object)}`),
      error: (object: object, message: string) => {
        errors.push(`${message} ${JSON.stringify(object)}`);
        logged.push(`${Date.now()} ${message} ${JSON.stringify(object)}`);
      },
    } as never,
    capturedPods: () => [pod],
    workerMain: CRASHABLE_WORKER,
    // Long enough to see the dead worker's listeners gone before the new one opens its own.
    restartDelayMs: 1_000,
  });
  const startedAt = Date.now();
  await workers.start();
  t.teardown(() => workers.stop());
  await workers.addPod(pod);
  const firstListening = Date.now() - startedAt;
  const ports = ['0.0.0.0:15006', '0.0.0.0:15008', '127.0.0.1:15001'];
  t.deepEqual(await listenerPorts(), ports, 'the worker listens in the pod');
  t.deepEqual(asked, ['spiffe://cluster.local/ns/shop/sa/p1']);

  const crashedAt = Date.now();
  state.upsert({ ...workload, uid: CRASH_WORKLOAD_UID, name: 'crash', addresses: ['127.0.0.9'] });
  await waitFor(async () => (await listenerPorts()).length === 0, 'the dead worker\'s listeners to close', logged);
  await waitFor(async () => errors.length > 0, 'the main thread to see the worker die', logged);
  t.regex(errors[0] ?? '', /^proxy worker died; starting it again .*"reason":"exit code 3"/);
  await waitFor(async () => (await listenerPorts()).length === 3, 'the new worker to listen in the pod', logged);
  t.log(`first worker listening after ${firstListening} ms; the new one ${Date.now() - crashedAt} ms after the crash`);
  t.deepEqual(await listenerPorts(), ports);
  t.deepEqual(asked, ['spiffe://cluster.local/ns/shop/sa/p1', 'spiffe://cluster.local/ns/shop/sa/p1'], 'the new worker asked the main thread for the pod\'s certificate');
  // The new worker is the real one and answers: its registry carries the TCP metrics.
  const metrics = JSON.stringify(await workers.metrics());
  t.true(metrics.includes('istio_tcp_connections_opened_total'));
  t.is(errors.length, 1, errors.join('\n'));
});
