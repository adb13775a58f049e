/**
 * Where a request or stream the waypoint terminated goes next: the Service behind the `:authority` VIP:port, one of
 * its endpoints (shared/mesh/load-balance.ts, ztunnel's choice), and a stream to it: HBONE to endpointIP:15008 with
 * `:authority` endpointIP:targetPort under the waypoint's own identity when the endpoint is in the mesh, plain TCP
 * otherwise.
 *
 * Owns: the lookup, the pick and opening the upstream. Must not know about: HTTP, routes, the downstream stream.
 */
import http2 from 'node:http2';
import net from 'node:net';
import type { HboneClientPool, HostPort } from '../shared/hbone/index.ts';
import type { SpiffeId } from '../shared/identity/index.ts';
import { NoHealthyUpstreamError, pickEndpoint } from '../shared/mesh/load-balance.ts';
import type { MeshState } from '../shared/mesh/mesh-state.ts';
import type { Service } from '../shared/mesh/service.ts';
import { workloadIdentity, type Workload } from '../shared/mesh/workload.ts';
import { WaypointError } from './errors.ts';
import type { EndpointChooser } from './destination/destination-traffic.ts';

/** Port every in-mesh pod's agent takes HBONE on. */
const HBONE_PORT = 15008;

export type UpstreamStream = { kind: 'hbone'; stream: http2.ClientHttp2Stream; endpoint: Workload } | { kind: 'tcp'; socket: net.Socket; endpoint: Workload };

export class Upstreams {
  readonly #state: MeshState;
  readonly #pool: HboneClientPool;
  readonly #identity: SpiffeId;
  readonly #self: () => Workload;

  constructor(options: { state: MeshState; pool: HboneClientPool; identity: SpiffeId; self: () => Workload }) {
    this.#state = options.state;
    this.#pool = options.pool;
    this.#identity = options.identity;
    this.#self = options.self;
  }

  /** The Service a client asked for by VIP; throws WAYPOINT_UNKNOWN_DESTINATION. */
  service(target: HostPort): Service {
    const service = this.#state.serviceByVip(target.host);
    if (service === undefined) throw new WaypointError('WAYPOINT_UNKNOWN_DESTINATION', `${target.host}:${target.port} is no service VIP this waypoint knows`);
    return service;
  }

  /**
   * Opens a stream to one healthy endpoint of `service` for `servicePort`; `vip` picks the address family.
   * `choose` (DestinationRule hook, waypoint/destination/) replaces ztunnel's pick when a rule applies.
   */
  async open(service: Service, servicePort: number, vip: string, choose: EndpointChooser = pickEndpoint): Promise<UpstreamStream> {
    let target: HostPort;
    let endpoint: Workload;
    try {
      const picked = choose(this.#self(), service, this.#state.endpointsOf(service), servicePort, vip);
      target = { host: picked.address, port: picked.targetPort };
      endpoint = picked.endpoint.workload;
    } catch (error) {
      if (error instanceof NoHealthyUpstreamError) throw new WaypointError('WAYPOINT_NO_HEALTHY_UPSTREAM', error.message, { cause: error });
      throw error;
    }
    if (endpoint.tunnelProtocol === 'HBONE') {
      try {
        const stream = (await this.#pool.open({
          proxy: { host: target.host, port: HBONE_PORT },
          destination: target,
          sourceIdentity: this.#identity,
          expectedIdentities: service.subjectAltNames.length > 0 ? [workloadIdentity(endpoint).uri, ...service.subjectAltNames] : [workloadIdentity(endpoint).uri],
        })) as http2.ClientHttp2Stream;
        return { kind: 'hbone', stream, endpoint };
      } catch (error) {
        throw new WaypointError('WAYPOINT_UPSTREAM_CONNECT_FAILED', `HBONE to ${endpoint.namespace}/${endpoint.name} (${target.host}:${target.port}) failed: ${(error as Error).message}`, { cause: error });
      }
    }
    const socket = net.connect({ host: target.host, port: target.port, allowHalfOpen: true, noDelay: true });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', (error) => reject(new WaypointError('WAYPOINT_UPSTREAM_CONNECT_FAILED', `TCP to ${endpoint.namespace}/${endpoint.name} (${target.host}:${target.port}) failed: ${error.message}`, { cause: error })));
    });
    return { kind: 'tcp', socket, endpoint };
  }
}
