/**
 * The messages between the agent's main thread and its proxy worker threads.
 *
 * The main thread owns every input (mesh state, policies, certificates, which pods are captured) and replicates
 * them to the workers in order on one MessagePort: a workload change always arrives before the pod add that
 * needs it. Workers ask for nothing on the hot path; a certificate is asked for once per identity and renewal.
 *
 * Owns: the message shapes. Must not know about: how either side acts on them.
 */
import type { SpiffeId, WorkloadCertificate } from '../../shared/identity/index.ts';
import type { AgentConfig } from '../config.ts';
import type { PodInfo } from '../inpod/pod-listeners.ts';
import type { AuthorizationUpdate, LocalPolicy } from '../policy/policy-store.ts';
import type { Service } from '../../shared/mesh/service.ts';
import type { Workload } from '../../shared/mesh/workload.ts';

/** What a worker is started with (`workerData`). */
export interface WorkerInit {
  index: number;
  config: AgentConfig;
  rootsPem: string[];
  workloads: Workload[];
  services: Service[];
  localPolicies: LocalPolicy[] | undefined;
  xdsPolicies: AuthorizationUpdate[];
}

/** Operations the main thread waits for; the worker answers each with a `reply` of the same id. */
export type WorkerRequest =
  | { op: 'add-pod'; pod: PodInfo }
  | { op: 'del-pod'; uid: string }
  | { op: 'metrics' }
  | { op: 'stop' };

export type ToWorker =
  | { type: 'workload-upsert'; workload: Workload }
  | { type: 'workload-remove'; uid: string }
  | { type: 'service-upsert'; service: Service }
  /** `key` is the service's `<namespace>/<hostname>`. */
  | { type: 'service-remove'; key: string }
  | { type: 'policies-local'; policies: LocalPolicy[] }
  | { type: 'policies-xds'; added: AuthorizationUpdate[]; removed: string[] }
  | { type: 'log-level'; level: string }
  | { type: 'request'; id: number; request: WorkerRequest }
  | { type: 'certificate'; id: number; certificate?: WorkloadCertificate; rootsPem: string[]; error?: string };

export type FromWorker =
  | { type: 'ready' }
  | { type: 'reply'; id: number; result?: unknown; error?: string }
  | { type: 'certificate-request'; id: number; identity: SpiffeId };
