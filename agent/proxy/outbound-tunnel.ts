/**
 * One outbound connection carried over HBONE, from its admission to its end: the telemetry record, the admission's
 * waiter and the pool's tunnel observer in one object, so a connection's set-up makes no closure, promise or record
 * of its own beside it (issue 14: the client agent's set-up per connection).
 *
 * Owns: the order of what a tunnel reports (opened once the destination proved its identity, closed exactly once,
 * the admission slot given back when the tunnel opened or failed, whichever comes first).
 * Must not know about: how the path was chosen (outbound.ts), how tunnels are pooled (HboneClientPool).
 */
import type net from 'node:net';
import type { HboneClientPool, HboneTarget, HostPort, TunnelObserver } from '../../shared/hbone/index.ts';
import type { SpiffeId } from '../../shared/identity/index.ts';
import type { Workload } from '../../shared/mesh/workload.ts';
import type { ByteCounts, ConnectionRecord, ConnectionReporter, ServiceRef } from './report.ts';
import type { AdmissionWaiter, TunnelAdmission } from './tunnel-admission.ts';

/** The client closed its connection while it waited for a slot to open its tunnel (the agent was overloaded). */
export class TunnelAbandonedError extends Error {
  readonly code = 'TUNNEL_ABANDONED';
  /** Envoy's "downstream connection termination". */
  readonly responseFlags = 'DC';
  constructor() {
    super('the client closed the connection while it waited for its tunnel to be opened (too many tunnels being opened at once: the agent is overloaded)');
    this.name = 'TunnelAbandonedError';
  }
}

/** What an outbound tunnel needs from the proxy: made once per proxy, shared by its tunnels. */
export interface OutboundTunnelHost {
  readonly report: ConnectionReporter;
  readonly admission: TunnelAdmission;
}

export class OutboundTunnel implements ConnectionRecord, AdmissionWaiter, TunnelObserver {
  readonly direction = 'outbound' as const;
  readonly mtls = true;
  readonly source: Workload;
  /** Read at once when telemetry wants it for every connection, else only when the tunnel fails (one getpeername less). */
  sourceAddress: string | undefined;
  readonly destination: Workload;
  readonly destinationAddress: HostPort;
  readonly destinationService: ServiceRef | undefined;
  destinationPrincipal: string | undefined = undefined;
  bytesSent = 0;
  bytesReceived = 0;
  durationMs = 0;
  error: Error | undefined = undefined;
  readonly socket: net.Socket;
  readonly #host: OutboundTunnelHost;
  readonly #pool: HboneClientPool;
  readonly #target: HboneTarget;
  readonly #started: number;
  /** Holds an admission slot: given back when the tunnel opened or failed, whichever comes first. */
  #admitted = false;

  constructor(host: OutboundTunnelHost, socket: net.Socket, source: Workload, destination: Workload, destinationAddress: HostPort, destinationService: ServiceRef | undefined, pool: HboneClientPool, target: HboneTarget, started: number) {
    this.#host = host;
    this.socket = socket;
    this.source = source;
    this.sourceAddress = host.report.sourceAddressWanted?.() === false ? undefined : socket.remoteAddress;
    this.destination = destination;
    this.destinationAddress = destinationAddress;
    this.destinationService = destinationService;
    this.#pool = pool;
    this.#target = target;
    this.#started = started;
  }

  /** Asks for an admission slot; the tunnel opens when it is given (at once unless the agent is at its bound). */
  start(): void {
    this.#host.admission.enter(this);
  }

  liveBytes(): ByteCounts {
    return { sent: this.socket.bytesRead, received: this.socket.bytesWritten };
  }

  admitted(): void {
    this.#admitted = true;
    this.#pool.tunnelFor(this.#target, this.socket, this);
  }

  abandoned(): void {
    // The client left while it waited for a slot: never tunnelled, reported closed with the reason.
    this.#finish(new TunnelAbandonedError());
  }

  tunnelEstablished(peerIdentity: SpiffeId): void {
    // Opened once the destination proved its identity (pinned to the workload's), so telemetry reports the identity
    // the certificate carried; a tunnel that never opens is reported closed only.
    this.#release();
    this.destinationPrincipal = peerIdentity.uri;
    this.#host.report.opened(this);
  }

  tunnelClosed(error: Error | undefined): void {
    this.#finish(error);
  }

  #release(): void {
    if (!this.#admitted) return;
    this.#admitted = false;
    this.#host.admission.done();
  }

  #finish(error: Error | undefined): void {
    this.#release();
    // For the failure's log line; a socket already gone has no address left to read (the line names the source workload).
    if (error && this.sourceAddress === undefined) this.sourceAddress = this.socket.remoteAddress;
    this.bytesSent = this.socket.bytesRead;
    this.bytesReceived = this.socket.bytesWritten;
    this.durationMs = performance.now() - this.#started;
    if (error) this.error = error;
    this.#host.report.closed(this);
  }
}
