/**
 * The mesh state as admin endpoints show it (the agent's and the waypoint's `/config_dump`).
 *
 * Owns: the JSON shape of services with their endpoints. Must not know about: HTTP, where the state comes from.
 */
import type { MeshState } from './mesh-state.ts';

/** A service as the config dump shows it: the service, and its endpoints with their health and target ports. */
export function servicesView(state: Pick<MeshState, 'services' | 'endpointsOf'>): object[] {
  return state
    .services()
    .map((service) => ({
      ...service,
      endpoints: state.endpointsOf(service).map(({ workload, ports }) => ({
        uid: workload.uid, namespace: workload.namespace, name: workload.name, node: workload.node, addresses: workload.addresses, status: workload.status ?? 'HEALTHY', ports,
      })),
    }))
    .sort((a, b) => `${a.namespace}/${a.hostname}`.localeCompare(`${b.namespace}/${b.hostname}`));
}
