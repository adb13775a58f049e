/**
 * Outbound: connections a captured pod makes, accepted on its port 15001.
 *
 * Owns: choosing the path for each connection from the mesh state: destination in the mesh -> an HBONE stream
 * to the destination pod's port 15008 under the source pod's identity; anything else -> plain TCP passthrough
 * from the pod's namespace.
 * Must not know about: how sockets are made (the pod's socket factory) or how tunnels are pooled (HboneClientPool).
 */
import type net from 'node:net';
import type { HboneClientPool, HostPort } from '../../shared/hbone/index.ts';
import type { SocketFactory } from '../inpod/socket-factory.ts';
import type { MeshState } from '../state/mesh-state.ts';
import { workloadIdentity, type Workload } from '../state/workload.ts';
import { spliceTcp } from './tcp-splice.ts';
import type { ConnectionReporter } from './report.ts';

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

export class OutboundProxy {
  readonly #state: MeshState;
  readonly #report: ConnectionReporter;

  constructor(options: { state: MeshState; report: ConnectionReporter }) {
    this.#state = options.state;
    this.#report = options.report;
  }

  handle(socket: net.Socket, originalDestination: HostPort, context: OutboundContext): void {
    const started = performance.now();
    const destination = this.#state.workloadByIp(originalDestination.host);
    if (destination && destination.tunnelProtocol === 'HBONE' && destination.addresses.length > 0) {
      this.#viaHbone(socket, originalDestination, destination, context, started);
    } else {
      this.#passthrough(socket, originalDestination, destination, context, started);
    }
  }

  #viaHbone(socket: net.Socket, originalDestination: HostPort, destination: Workload, context: OutboundContext, started: number): void {
    const bytesBefore = { read: socket.bytesRead, written: socket.bytesWritten };
    context.pool
      .tunnel(
        {
          proxy: { host: destination.addresses[0]!, port: HBONE_PORT },
          destination: originalDestination,
          sourceIdentity: workloadIdentity(context.source),
          expectedIdentities: [workloadIdentity(destination).uri],
        },
        socket,
      )
      .then(
        () => this.#report.closed({ direction: 'outbound', source: context.source, destination, destinationAddress: originalDestination, mtls: true, bytesSent: socket.bytesRead - bytesBefore.read, bytesReceived: socket.bytesWritten - bytesBefore.written, durationMs: performance.now() - started }),
        (error: Error) => {
          if (!socket.destroyed) socket.resetAndDestroy();
          this.#report.closed({ direction: 'outbound', source: context.source, destination, destinationAddress: originalDestination, mtls: true, bytesSent: socket.bytesRead - bytesBefore.read, bytesReceived: socket.bytesWritten - bytesBefore.written, durationMs: performance.now() - started, error });
        },
      );
  }

  #passthrough(socket: net.Socket, originalDestination: HostPort, destination: Workload | undefined, context: OutboundContext, started: number): void {
    const upstream = context.factory.connect({ host: originalDestination.host, port: originalDestination.port });
    void spliceTcp(socket, upstream).then((result) =>
      this.#report.closed({ direction: 'outbound', source: context.source, destination, destinationAddress: originalDestination, mtls: false, bytesSent: result.bytesUp, bytesReceived: result.bytesDown, durationMs: performance.now() - started, ...(result.error ? { error: result.error } : {}) }),
    );
  }
}
