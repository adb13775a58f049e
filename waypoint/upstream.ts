/**
 * Where a request or stream the waypoint terminated goes next: the Service behind the `:authority` VIP:port, one of
 * its endpoints (drawn by shared/mesh/load-balance.ts, ztunnel's choice; for HTTP requests two draws and the one
 * with fewer requests in flight, least-request.ts), and a stream to it: HBONE to endpointIP:15008 with
 * `:authority` endpointIP:targetPort under the waypoint's own identity when the endpoint is in the mesh, plain TCP
 * otherwise.
 *
 * Owns: the lookup, the pick and opening the upstream. Must not know about: HTTP, routes, the downstream stream.
 */
import net from 'node:net';
import type { HboneClientPool, HostPort } from '../shared/hbone/index.ts';
import { H2Stream } from '../shared/hbone/h2/stream.ts';
import type { SpiffeId } from '../shared/identity/index.ts';
import { drawEndpoint, NoHealthyUpstreamError, type PickedEndpoint } from '../shared/mesh/load-balance.ts';
import type { MeshState } from '../shared/mesh/mesh-state.ts';
import type { Service, ServiceEndpoint } from '../shared/mesh/service.ts';
import { workloadIdentity, type Workload } from '../shared/mesh/workload.ts';
import { WaypointError } from './errors.ts';
import { cachedServiceKey } from './service-keys.ts';
import type { HboneLegStream } from './hbone-leg.ts';
import type { EndpointChooser } from './destination/destination-traffic.ts';
import { LeastRequestBalancer } from './least-request.ts';

/** Port every in-mesh pod's agent takes HBONE on. */
const HBONE_PORT = 15008;
/** Draws a retry makes to find an endpoint other than the previous try's (Istio's HostSelectionRetryMaxAttempts). */
const RETRY_HOST_SELECTION_ATTEMPTS = 5;

/** An endpoint picked for a request and the address:port to dial on it (the HTTP/2 path's view of a pick). */
export interface UpstreamTarget {
  address: HostPort;
  endpoint: Workload;
  /** The pick as pickLeastRequest hands it out: shared by every request to the endpoint, so read-only. */
  picked: Readonly<PickedEndpoint>;
}

/**
 * A picked endpoint as the request pickers hand it out: one object per endpoint (and address and port), reused by every
 * request that picks it, so a pick allocates nothing (two draws per request made two objects before session s13).
 * Read-only: callers keep it but cannot change it (what takes a pick takes a Readonly<PickedEndpoint>).
 */
export interface DialTarget extends Readonly<PickedEndpoint> {
  /** `address:targetPort`, for logs and the access log's upstream host. */
  readonly hostPort: string;
}

function emptyDraw(): PickedEndpoint {
  return { endpoint: undefined as unknown as ServiceEndpoint, address: '', targetPort: 0 };
}

/** `stream`: node:http2's ClientHttp2Stream or the own layer's H2DuplexStream, by the pool's layer (hbone-leg.ts). */
export type UpstreamStream = { kind: 'hbone'; stream: HboneLegStream; endpoint: Workload } | { kind: 'tcp'; socket: net.Socket; endpoint: Workload };
/** connectDirect's: on the own layer the H2Stream itself (the caller is its handler), else as connect() gives. */
export type DirectUpstream = { kind: 'h2'; stream: H2Stream; endpoint: Workload } | UpstreamStream;

export class Upstreams {
  readonly #state: MeshState;
  readonly #pool: HboneClientPool;
  readonly #identity: SpiffeId;
  readonly #self: () => Workload;
  /** Requests in flight per endpoint, for the least-request choice. */
  readonly leastRequest = new LeastRequestBalancer();
  /** pickLeastRequest's two draws, written over by each (read before the next draw, never handed out). */
  readonly #firstDraw = emptyDraw();
  readonly #secondDraw = emptyDraw();
  /** Per endpoint, the DialTarget handed out for it (a new one when its address or port changed). */
  readonly #targets = new WeakMap<ServiceEndpoint, DialTarget>();

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

  /** Opens a stream to one healthy endpoint of `service` for `servicePort` (uniform choice); `vip` picks the address family. */
  async open(service: Service, servicePort: number, vip: string): Promise<UpstreamStream> {
    return this.connect(service, this.#draw(emptyDraw(), service, servicePort, vip));
  }

  /**
   * The endpoint for one HTTP request: of two draws, the one with fewer requests in flight; `avoid`: an address to
   * redraw. Throws UH. The same object for every request to the endpoint (DialTarget): keep it, never change it.
   */
  pickLeastRequest(service: Service, servicePort: number, vip: string, avoid?: string): Readonly<DialTarget> {
    let drawn = this.#drawTwo(service, servicePort, vip);
    // A retry prefers another endpoint than the one that failed (Envoy's previous_hosts predicate, 5 tries as Istio).
    for (let attempt = 0; avoid !== undefined && drawn.address === avoid && attempt < RETRY_HOST_SELECTION_ATTEMPTS; attempt++) {
      drawn = this.#drawTwo(service, servicePort, vip);
    }
    return this.#targetFor(drawn);
  }

  #drawTwo(service: Service, servicePort: number, vip: string): PickedEndpoint {
    const first = this.#draw(this.#firstDraw, service, servicePort, vip);
    return this.leastRequest.choose(first, this.#draw(this.#secondDraw, service, servicePort, vip));
  }

  /** The DialTarget for what a draw or a chooser picked. */
  #targetFor(picked: Readonly<PickedEndpoint>): Readonly<DialTarget> {
    const endpoint = picked.endpoint;
    const known = this.#targets.get(endpoint);
    if (known !== undefined && known.address === picked.address && known.targetPort === picked.targetPort) return known;
    const target: DialTarget = { endpoint, address: picked.address, targetPort: picked.targetPort, hostPort: `${picked.address}:${picked.targetPort}` };
    this.#targets.set(endpoint, target);
    return target;
  }

  /** pickLeastRequest() as an address to dial (the HTTP/2 path); the caller reports the request's start and end to `leastRequest`. */
  pick(service: Service, servicePort: number, vip: string): UpstreamTarget {
    const picked = this.pickLeastRequest(service, servicePort, vip);
    return { address: { host: picked.address, port: picked.targetPort }, endpoint: picked.endpoint.workload, picked };
  }

  /** The endpoint a DestinationRule's load balancer chooses (waypoint/destination/). Throws UH. */
  pickWith(choose: EndpointChooser, service: Service, servicePort: number, vip: string): Readonly<DialTarget> {
    try {
      return this.#targetFor(choose(this.#self(), service, this.#state.endpointsOf(cachedServiceKey(service)), servicePort, vip));
    } catch (error) {
      if (error instanceof NoHealthyUpstreamError) throw new WaypointError('WAYPOINT_NO_HEALTHY_UPSTREAM', error.message, { cause: error });
      throw error;
    }
  }

  #draw(into: PickedEndpoint, service: Service, servicePort: number, vip: string): PickedEndpoint {
    try {
      return drawEndpoint(into, this.#self(), service, this.#state.endpointsOf(cachedServiceKey(service)), servicePort, vip);
    } catch (error) {
      if (error instanceof NoHealthyUpstreamError) throw new WaypointError('WAYPOINT_NO_HEALTHY_UPSTREAM', error.message, { cause: error });
      throw error;
    }
  }

  /** A stream to the picked endpoint: HBONE on the pooled connection when it is in the mesh, else TCP. Throws UF. */
  async connect(service: Service, picked: Readonly<PickedEndpoint>): Promise<UpstreamStream> {
    return (await this.#connect(service, picked, false)) as UpstreamStream;
  }

  /** As connect(), but an HBONE stream on the own layer comes as the H2Stream itself (the lean HTTP/1.1 path). */
  connectDirect(service: Service, picked: Readonly<PickedEndpoint>): Promise<DirectUpstream> {
    return this.#connect(service, picked, true);
  }

  async #connect(service: Service, picked: Readonly<PickedEndpoint>, direct: boolean): Promise<DirectUpstream> {
    const target: HostPort = { host: picked.address, port: picked.targetPort };
    const endpoint = picked.endpoint.workload;
    if (endpoint.tunnelProtocol === 'HBONE') {
      try {
        const hboneTarget = {
          proxy: { host: target.host, port: HBONE_PORT },
          destination: target,
          sourceIdentity: this.#identity,
          expectedIdentities: service.subjectAltNames.length > 0 ? [workloadIdentity(endpoint).uri, ...service.subjectAltNames] : [workloadIdentity(endpoint).uri],
        };
        const stream = direct ? await this.#pool.openDirect(hboneTarget) : await this.#pool.open(hboneTarget);
        if (stream instanceof H2Stream) return { kind: 'h2', stream, endpoint };
        return { kind: 'hbone', stream: stream as HboneLegStream, endpoint };
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
