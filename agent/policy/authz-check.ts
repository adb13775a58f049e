/**
 * `GET /authz/check` on the admin endpoint: would a connection from one pod to another be allowed by the policies
 * this agent enforces now, and which policy decides. The same answer `ambitctl authz check` gives from a cluster
 * directory, but from the agent's own view (the workloads and policies the control plane pushed), so it works in
 * Kubernetes, where there is no directory to read. Ask the agent on the destination's node: it enforces.
 *
 * Owns: turning two pod names and a port into the connection the enforcer would see, and explaining the decision.
 * Must not know about: HTTP (admin.ts), how policies are compiled (policy-store.ts).
 */
import { decideConnection, podRef, type AuthzCheckResult, type PodView } from '../../shared/policy/check-result.ts';
import type { MeshState } from '../../shared/mesh/mesh-state.ts';
import { isEnrolled, workloadIdentity, type Workload } from '../../shared/mesh/workload.ts';
import type { PolicyStore } from './policy-store.ts';

export interface AuthzQuery {
  /** `namespace/name` or `name` (then in `namespace`). */
  source: string;
  destination: string;
  port: number;
  namespace: string;
}

/** A query naming a pod this agent does not know: the admin endpoint answers 404 with the message. */
export class UnknownPodError extends Error {
  readonly code = 'UNKNOWN_POD';
}

function find(state: Pick<MeshState, 'workloadByName' | 'workloads'>, text: string, namespace: string): Workload {
  const ref = podRef(text, namespace);
  const workload = state.workloadByName(ref.namespace, ref.name);
  if (workload) return workload;
  const known = state.workloads().map((candidate) => `${candidate.namespace}/${candidate.name}`).sort();
  throw new UnknownPodError(`this agent knows no pod ${ref.namespace}/${ref.name}${known.length ? ` (pods: ${known.slice(0, 10).join(', ')}${known.length > 10 ? ', ...' : ''})` : ''}`);
}

function podView(workload: Workload): PodView {
  const view: PodView = {
    namespace: workload.namespace,
    name: workload.name,
    ip: workload.addresses[0] ?? '',
    serviceAccount: workload.serviceAccount,
    inMesh: isEnrolled(workload),
    captureReason: workload.captureReason,
  };
  if (view.inMesh) view.principal = workloadIdentity(workload).uri;
  return view;
}

export function checkAuthorization(
  sources: { nodeName: string; state: Pick<MeshState, 'workloadByName' | 'workloads'>; policies: Pick<PolicyStore, 'policyListFor'> },
  query: AuthzQuery,
): AuthzCheckResult {
  const source = podView(find(sources.state, query.source, query.namespace));
  const destinationWorkload = find(sources.state, query.destination, query.namespace);
  const destination = podView(destinationWorkload);
  const inScope = destination.inMesh ? sources.policies.policyListFor(destinationWorkload) : [];
  return decideConnection(source, destination, query.port, inScope, { problems: [], decidedBy: `agent on ${sources.nodeName}` });
}
