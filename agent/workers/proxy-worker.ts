/**
 * A proxy worker thread: one more data plane (agent/data-plane.ts) over the node's captured pods, on its own
 * event loop and core. It opens its own SO_REUSEPORT listeners in every captured pod's namespace, next to the
 * main thread's, so the kernel spreads new connections across the threads; each thread has its own HBONE pools.
 *
 * Owns: keeping its replicas (mesh state, policies) as the main thread sends them, answering the main thread's
 * requests (add/del pod, metrics, stop), and getting certificates from the main thread, which alone talks to
 * the CA.
 * Must not know about: rules, CNI, sources, the admin endpoints.
 */
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import { pino } from 'pino';
import type { SpiffeId, WorkloadCertificate } from '../../shared/identity/index.ts';
import { createDataPlane } from '../data-plane.ts';
import { CertificateManager } from '../../shared/ca/certificate-manager.ts';
import type { CertificateSource } from '../../shared/ca/certificate-source.ts';
import { PolicyStore } from '../policy/policy-store.ts';
import { MeshState } from '../../shared/mesh/mesh-state.ts';
import { workloadIdentity } from '../../shared/mesh/workload.ts';
import { AgentMetrics } from '../telemetry/metrics.ts';
import { startHeapRelease } from '../../shared/memory/heap-release.ts';
import { batchedStdout } from '../telemetry/log-destination.ts';
import type { FromWorker, ToWorker, WorkerInit, WorkerRequest } from './protocol.ts';

/** Certificates come from the main thread's certificate manager (which renews them); roots ride along. */
class MainThreadCertificateSource implements CertificateSource {
  readonly #port: MessagePort;
  readonly #pending = new Map<number, { resolve: (certificate: WorkloadCertificate) => void; reject: (error: Error) => void }>();
  #roots: string[];
  #nextId = 1;

  constructor(port: MessagePort, rootsPem: string[]) {
    this.#port = port;
    this.#roots = rootsPem;
  }

  fetch(identity: SpiffeId): Promise<WorkloadCertificate> {
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      send(this.#port, { type: 'certificate-request', id, identity: { ...identity } });
    });
  }

  rootsPem(): string[] {
    return this.#roots;
  }

  answer(message: Extract<ToWorker, { type: 'certificate' }>): void {
    const pending = this.#pending.get(message.id);
    if (!pending) return;
    this.#pending.delete(message.id);
    if (message.rootsPem.length > 0) this.#roots = message.rootsPem;
    if (message.certificate) pending.resolve(message.certificate);
    else pending.reject(new Error(message.error ?? 'the main thread has no certificate'));
  }
}

function send(port: MessagePort, message: FromWorker): void {
  port.postMessage(message);
}

function runWorker(port: MessagePort, init: WorkerInit): void {
  const { config } = init;
  const log = pino({ level: config.logLevel, base: { node: config.nodeName, worker: init.index } }, batchedStdout());
  const state = new MeshState();
  state.replaceAll(init.workloads, init.services);
  const policies = new PolicyStore({ log });
  if (init.localPolicies) policies.setLocal(init.localPolicies);
  if (init.xdsPolicies.length > 0) policies.applyXds(init.xdsPolicies, []);
  const certificateSource = new MainThreadCertificateSource(port, init.rootsPem);
  const certificates = new CertificateManager(certificateSource, {
    onError: (identity, error) => log.error({ identity: identity.uri, err: error.message }, 'certificate fetch failed'),
  });
  const metrics = new AgentMetrics({ processMetrics: false, buildInfo: false });
  const dataPlane = createDataPlane({ config, state, policies, certificates, metrics, log, listenersOnly: true });
  // Each thread is an isolate with its own heap: each gives its memory back after a burst (agent/memory/).
  const heapRelease = startHeapRelease();

  const handle = async (request: WorkerRequest): Promise<unknown> => {
    switch (request.op) {
      case 'add-pod': {
        // The certificate first, so the pod's first connection on this thread does not wait for it.
        const workload = state.workloadByName(request.pod.namespace, request.pod.name);
        if (workload) await certificates.certificateFor(workloadIdentity(workload));
        await dataPlane.capture.add(request.pod);
        return undefined;
      }
      case 'del-pod':
        await dataPlane.capture.del({ uid: request.uid });
        return undefined;
      case 'metrics':
        return metrics.json();
      case 'stop':
        heapRelease.stop();
        await dataPlane.stop();
        certificates.close();
        return undefined;
    }
  };

  port.on('message', (message: ToWorker) => {
    switch (message.type) {
      case 'workload-upsert':
        state.upsert(message.workload);
        return;
      case 'workload-remove':
        state.remove(message.uid);
        return;
      case 'service-upsert':
        state.upsertService(message.service);
        return;
      case 'service-remove':
        state.removeService(message.key);
        return;
      case 'policies-local':
        policies.setLocal(message.policies);
        return;
      case 'policies-xds':
        policies.applyXds(message.added, message.removed);
        return;
      case 'log-level':
        log.level = message.level;
        return;
      case 'certificate':
        certificateSource.answer(message);
        return;
      case 'request':
        handle(message.request).then(
          (result) => send(port, { type: 'reply', id: message.id, result }),
          (error: unknown) => send(port, { type: 'reply', id: message.id, error: error instanceof Error ? error.message : String(error) }),
        );
        return;
    }
  });
  send(port, { type: 'ready' });
}

if (parentPort) runWorker(parentPort, workerData as WorkerInit);
