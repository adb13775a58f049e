/**
 * A proxy worker that speaks agent/workers/protocol.ts but opens no listener: it records what it is told and
 * exits when told to, so test/unit/proxy-workers.test.ts can exercise the main thread's side (replication order,
 * requests, certificate relay, restart of a dead worker) without network namespaces. The real worker
 * (agent/workers/proxy-worker.ts) is exercised on real namespaces by test/net/proxy-workers.test.ts.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { FromWorker, ToWorker, WorkerInit } from '../../agent/workers/protocol.ts';

const port = parentPort!;
const init = workerData as WorkerInit;
const pods: string[] = [];
const seen: string[] = [`init workloads=${init.workloads.length} services=${init.services.length} local=${init.localPolicies?.length ?? 'none'} xds=${init.xdsPolicies.length}`];
const send = (message: FromWorker): void => port.postMessage(message);

port.on('message', (message: ToWorker) => {
  switch (message.type) {
    case 'workload-upsert':
      seen.push(`upsert ${message.workload.uid}`);
      return;
    case 'workload-remove':
      seen.push(`remove ${message.uid}`);
      return;
    case 'service-upsert':
      seen.push(`service ${message.service.namespace}/${message.service.hostname} vips=${message.service.vips.map((vip) => vip.address).join(',')}`);
      return;
    case 'service-remove':
      seen.push(`service-remove ${message.key}`);
      return;
    case 'policies-local':
      seen.push(`local ${message.policies.length}`);
      return;
    case 'policies-xds':
      seen.push(`xds +${message.added.map((update) => update.name).join(',')} -${message.removed.join(',')}`);
      return;
    case 'log-level':
      // The test's way to make this worker die as a crashing one would.
      if (message.level === 'crash') process.exit(3);
      seen.push(`level ${message.level}`);
      return;
    case 'certificate':
      seen.push(`certificate ${message.certificate?.identity.uri ?? message.error}`);
      return;
    case 'request': {
      const { request } = message;
      let result: unknown;
      if (request.op === 'add-pod') {
        pods.push(request.pod.uid);
        // Ask for the pod's certificate as the real worker does before it listens.
        send({ type: 'certificate-request', id: 1, identity: { trustDomain: 'cluster.local', namespace: request.pod.namespace, serviceAccount: 'sa', uri: `spiffe://cluster.local/ns/${request.pod.namespace}/sa/sa` } });
      } else if (request.op === 'del-pod') {
        pods.splice(pods.indexOf(request.uid), 1);
      } else if (request.op === 'metrics') {
        // The test reads the worker's record through the metrics request.
        result = [{ index: init.index, pods: [...pods], seen: [...seen] }];
      }
      send({ type: 'reply', id: message.id, result });
      return;
    }
  }
});
send({ type: 'ready' });
