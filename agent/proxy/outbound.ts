/**
 * Outbound: connections a captured pod makes, accepted on its port 15001.
 *
 * Owns: choosing the path for each connection from the mesh state: destination in the mesh -> an HBONE stream
 * to the destination pod's port 15008 under the source pod's identity; a Service VIP -> one endpoint picked by
 * shared/mesh/load-balance.ts, then the same paths to endpointIP:targetPort (no endpoint: the client is reset, the
 * access log says why); a VIP of a Service bound to a waypoint -> an HBONE stream to the waypoint's 15008 under the
 * source pod's identity with the VIP:port as `:authority` (ztunnel's behaviour: the waypoint picks the endpoint);
 * anything else -> plain TCP passthrough from the pod's namespace.
 * Must not know about: how sockets are made (the pod's socket factory) or how tunnels are pooled (HboneClientPool).
 */
import type net from 'node:net';
import { resetSocket, type HboneClientPool, type HboneTarget, type HostPort } from '../../shared/hbone/index.ts';
import type { SocketFactory } from '../inpod/socket-factory.ts';
import { NoHealthyUpstreamError, pickEndpoint } from '../../shared/mesh/load-balance.ts';
import type { MeshState } from '../../shared/mesh/mesh-state.ts';
import type { Service } from '../../shared/mesh/service.ts';
import { addressOfFamily, workloadIdentity, type Workload } from '../../shared/mesh/workload.ts';
import { TunnelAdmission } from './tunnel-admission.ts';
import { OutboundTunnel, type OutboundTunnelHost } from './outbound-tunnel.ts';
import { spliceTcp } from './tcp-splice.ts';
import type { ConnectionRecord, ConnectionReporter, ServiceRef } from './report.ts';

/** The telemetry view of a service, made once per Service object (services are replaced, never mutated). */
const serviceRefs = new WeakMap<Service, ServiceRef>();

function serviceRef(service: Service): ServiceRef {
  let ref = serviceRefs.get(service);
  if (!ref) {
    ref = { hostname: service.hostname, name: service.name, namespace: service.namespace };
    serviceRefs.set(service, ref);
  }
  return ref;
}

/** A destination workload's HBONE endpoint in one address family and the identity it must prove. */
interface HbonePeer {
  proxy: HostPort;
  expectedIdentities: readonly string[];
}

/**
 * Made once per Workload object and family (workloads are replaced, never mutated), so a connection builds no address
 * object or identity list, and the pool finds its key made (client-pool.ts poolKey).
 */
const hbonePeers = new WeakMap<Workload, { v4?: HbonePeer; v6?: HbonePeer }>();

function hbonePeer(destination: Workload, like: string): HbonePeer {
  let peers = hbonePeers.get(destination);
  if (peers === undefined) {
    peers = {};
    hbonePeers.set(destination, peers);
  }
  const family = like.includes(':') ? 'v6' : 'v4';
  let peer = peers[family];
  if (peer === undefined) {
    peer = { proxy: { host: addressOfFamily(destination, like) ?? destination.addresses[0]!, port: HBONE_PORT }, expectedIdentities: [workloadIdentity(destination).uri] };
    peers[family] = peer;
  }
  return peer;
}

/** The HBONE address of a service's waypoint, made once per Service object (the pool's key is then made once too). */
const waypointProxies = new WeakMap<Service, HostPort>();

function waypointProxy(service: Service): HostPort {
  let proxy = waypointProxies.get(service);
  if (proxy === undefined) {
    proxy = { host: service.waypoint!.address, port: service.waypoint!.hboneMtlsPort };
    waypointProxies.set(service, proxy);
  }
  return proxy;
}

/** A service's waypoint address is not a workload this agent knows (its identity cannot be checked): refused. */
export class UnknownWaypointError extends Error {
  readonly code = 'UNKNOWN_WAYPOINT';
  /** Envoy's "no healthy upstream" flag: the connection had nowhere to go. */
  readonly responseFlags = 'UH';
  constructor(service: Service, address: string) {
    super(`service ${service.hostname} uses the waypoint at ${address}, which is no workload this agent knows (not running yet, or its pod was deleted)`);
    this.name = 'UnknownWaypointError';
  }
}

export { TunnelAbandonedError } from './outbound-tunnel.ts';

/** Port every captured pod's agent listener terminates HBONE on. */
export const HBONE_PORT = 15008;

export interface OutboundContext {
  /** The source pod's workload. */
  source: Workload;
  /** Sockets made inside the source pod's namespace, marked so they are not captured again. */
  factory: SocketFactory;
  /** HBONE pool dialing from the source pod's namespace. */
  pool: HboneClientPool;
}

export class OutboundProxy implements OutboundTunnelHost {
  readonly #state: MeshState;
  readonly #report: ConnectionReporter;
  /** Telemetry, as the tunnels this proxy opens report to it. */
  readonly report: ConnectionReporter;
  /** The bound on tunnels being opened at once (agent/proxy/tunnel-admission.ts). */
  readonly admission: TunnelAdmission;

  constructor(options: { state: MeshState; report: ConnectionReporter; maxOpeningTunnels?: number }) {
    this.#state = options.state;
    this.#report = options.report;
    this.report = options.report;
    this.admission = new TunnelAdmission(options.maxOpeningTunnels);
  }

  handle(socket: net.Socket, originalDestination: HostPort, context: OutboundContext): void {
    const started = performance.now();
    // A workload's own IP first, then a service VIP, as ztunnel looks addresses up.
    const destination = this.#state.workloadByIp(originalDestination.host);
    if (destination === undefined) {
      const service = this.#state.serviceByVip(originalDestination.host, context.source.network);
      if (service !== undefined) {
        if (service.waypoint !== undefined) this.#viaWaypoint(socket, originalDestination, service, context, started);
        else this.#viaService(socket, originalDestination, service, context, started);
        return;
      }
    }
    this.#toWorkload(socket, originalDestination, destination, undefined, context, started);
  }

  #toWorkload(socket: net.Socket, target: HostPort, destination: Workload | undefined, service: Service | undefined, context: OutboundContext, started: number): void {
    if (destination && destination.tunnelProtocol === 'HBONE' && destination.addresses.length > 0) {
      this.#viaHbone(socket, target, destination, service, context, started);
    } else {
      this.#passthrough(socket, target, destination, service, context, started);
    }
  }

  /** VIP:port -> HBONE to the service's waypoint, `:authority` VIP:port, the waypoint's own identity expected. */
  #viaWaypoint(socket: net.Socket, vip: HostPort, service: Service, context: OutboundContext, started: number): void {
    const address = service.waypoint!.address;
    const waypoint = this.#state.workloadByIp(address);
    if (waypoint === undefined) {
      resetSocket(socket);
      this.#report.closed({
        direction: 'outbound', source: context.source, sourceAddress: socket.remoteAddress, destinationAddress: vip, destinationService: serviceRef(service), mtls: false,
        bytesSent: 0, bytesReceived: 0, durationMs: performance.now() - started, error: new UnknownWaypointError(service, address),
      });
      return;
    }
    this.#viaHbone(socket, vip, waypoint, service, context, started, waypointProxy(service));
  }

  /** VIP:port -> one endpoint's IP:targetPort, then as a connection to that pod; none: reset, with the reason logged. */
  #viaService(socket: net.Socket, vip: HostPort, service: Service, context: OutboundContext, started: number): void {
    let target: HostPort;
    let endpoint: Workload;
    try {
      const picked = pickEndpoint(context.source, service, this.#state.endpointsOf(service), vip.port, vip.host);
      target = { host: picked.address, port: picked.targetPort };
      endpoint = picked.endpoint.workload;
    } catch (error) {
      if (!(error instanceof NoHealthyUpstreamError)) throw error;
      resetSocket(socket);
      this.#report.closed({
        direction: 'outbound', source: context.source, sourceAddress: socket.remoteAddress, destinationAddress: vip, destinationService: serviceRef(service), mtls: false,
        bytesSent: 0, bytesReceived: 0, durationMs: performance.now() - started, error,
      });
      return;
    }
    this.#toWorkload(socket, target, endpoint, service, context, started);
  }

  /** `waypoint`: the HBONE endpoint is the service's waypoint (only its identity is accepted), not the destination pod. */
  #viaHbone(socket: net.Socket, originalDestination: HostPort, destination: Workload, service: Service | undefined, context: OutboundContext, started: number, waypoint?: HostPort): void {
    const peer = waypoint === undefined ? hbonePeer(destination, originalDestination.host) : undefined;
    const target: HboneTarget = {
      proxy: waypoint ?? peer!.proxy,
      destination: originalDestination,
      sourceIdentity: workloadIdentity(context.source),
      // A service may name extra identities its endpoints can present (Istio's subject_alt_names).
      expectedIdentities:
        waypoint === undefined && service && service.subjectAltNames.length > 0 ? [workloadIdentity(destination).uri, ...service.subjectAltNames] : (peer?.expectedIdentities ?? [workloadIdentity(destination).uri]),
    };
    new OutboundTunnel(this, socket, context.source, destination, originalDestination, service && serviceRef(service), context.pool, target, started).start();
  }

  #passthrough(socket: net.Socket, originalDestination: HostPort, destination: Workload | undefined, service: Service | undefined, context: OutboundContext, started: number): void {
    const upstream = context.factory.connect({ host: originalDestination.host, port: originalDestination.port });
    const record: ConnectionRecord = {
      direction: 'outbound', source: context.source, sourceAddress: socket.remoteAddress, destination, destinationAddress: originalDestination,
      destinationService: service && serviceRef(service), mtls: false, bytesSent: 0, bytesReceived: 0, durationMs: 0,
      liveBytes: () => ({ sent: socket.bytesRead, received: socket.bytesWritten }),
    };
    this.#report.opened(record);
    void spliceTcp(socket, upstream).then((result) => {
      record.bytesSent = result.bytesUp;
      record.bytesReceived = result.bytesDown;
      record.durationMs = performance.now() - started;
      if (result.error) record.error = result.error;
      this.#report.closed(record);
    });
  }
}
