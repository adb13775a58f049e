/**
 * `GET /authz/check` on the admin endpoint: would a connection from one pod to another (or to a Service: `svc/ns/name`
 * or its cluster IP) be allowed by the policies this agent enforces now, and which policy decides (for a Service,
 * at each endpoint the connection could be sent to, on its target port). The same answer `ambitctl authz check` gives from a cluster
 * directory, but from the agent's own view (the workloads and policies the control plane pushed), so it works in
 * Kubernetes, where there is no directory to read. Ask the agent on the destination's node: it enforces.
 *
 * Owns: turning two pod names (or a pod and a Service) and a port into the connection(s) the enforcer would see.
 * Must not know about: HTTP (admin.ts), how policies are compiled (policy-store.ts).
 */
import { isIP } from 'node:net';
import {
  decideConnection,
  decideServiceConnection,
  podRef,
  serviceRefOf,
  type AnyAuthzCheckResult,
  type EndpointCandidate,
  type PodView,
} from '../../shared/policy/check-result.ts';
import type { MeshState } from '../../shared/mesh/mesh-state.ts';
import { targetPortOf, type Service } from '../../shared/mesh/service.ts';
import { isEnrolled, workloadIdentity, type Workload } from '../../shared/mesh/workload.ts';
import type { PolicyStore } from './policy-store.ts';

export interface AuthzQuery {
  /** `namespace/name` or `name` (then in `namespace`). */
  source: string;
  destination: string;
  port: number;
  namespace: string;
}

/** A query naming a pod (or Service) this agent does not know: the admin endpoint answers 404 with the message. */
export class UnknownPodError extends Error {
  readonly code = 'UNKNOWN_POD';
}

type StateView = Pick<MeshState, 'workloadByName' | 'workloads' | 'services' | 'serviceByVip' | 'endpointsOf'>;

/** The Service a destination names (`svc/ns/name`, or one of its cluster IPs), undefined when it names a pod. */
function findService(state: StateView, text: string, namespace: string): Service | undefined {
  const ref = serviceRefOf(text, namespace);
  if (ref === undefined) {
    if (isIP(text) === 0) return undefined;
    const byVip = state.serviceByVip(text);
    if (byVip) return byVip;
    throw new UnknownPodError(`${text} is no Service cluster IP this agent knows (name a pod as namespace/name)`);
  }
  const found = state.services().find((service) => service.namespace === ref.namespace && service.name === ref.name);
  if (found) return found;
  const known = state.services().map((service) => `svc/${service.namespace}/${service.name}`).sort();
  throw new UnknownPodError(`this agent knows no Service ${ref.namespace}/${ref.name}${known.length ? ` (services: ${known.slice(0, 10).join(', ')}${known.length > 10 ? ', ...' : ''})` : ''}`);
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
  sources: { nodeName: string; state: StateView; policies: Pick<PolicyStore, 'policyListFor'> },
  query: AuthzQuery,
): AnyAuthzCheckResult {
  const source = podView(find(sources.state, query.source, query.namespace));
  const service = findService(sources.state, query.destination, query.namespace);
  if (service) {
    // Every endpoint the client's agent could pick for this port, each decided as its own agent would.
    const candidates: EndpointCandidate[] = sources.state.endpointsOf(service).map((endpoint) => {
      const view = podView(endpoint.workload);
      return {
        view,
        targetPort: targetPortOf(service, endpoint, query.port),
        healthy: endpoint.workload.status !== 'UNHEALTHY',
        inScope: view.inMesh ? sources.policies.policyListFor(endpoint.workload) : [],
      };
    });
    const view = { namespace: service.namespace, name: service.name, hostname: service.hostname, vips: service.vips.map((vip) => vip.address) };
    const waypoint = service.waypoint ? { waypoint: `${service.waypoint.address}:${service.waypoint.hboneMtlsPort}` } : {};
    return decideServiceConnection(source, { ...view, ...waypoint }, query.port, candidates, { problems: [], decidedBy: `agent on ${sources.nodeName}` });
  }
  const destinationWorkload = find(sources.state, query.destination, query.namespace);
  const destination = podView(destinationWorkload);
  const inScope = destination.inMesh ? sources.policies.policyListFor(destinationWorkload) : [];
  return decideConnection(source, destination, query.port, inScope, { problems: [], decidedBy: `agent on ${sources.nodeName}` });
}
