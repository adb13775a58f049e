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
import type { SpiffeId } from '../../shared/identity/index.ts';
import type { SocketFactory } from '../inpod/socket-factory.ts';
import type { MeshState } from '../state/mesh-state.ts';
import { addressOfFamily, workloadIdentity, type Workload } from '../state/workload.ts';
import { spliceTcp } from './tcp-splice.ts';
import type { ConnectionRecord, ConnectionReporter } from './report.ts';

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
    const record: ConnectionRecord = {
      direction: 'outbound', source: context.source, sourceAddress: socket.remoteAddress, destination, destinationAddress: originalDestination, mtls: true, bytesSent: 0, bytesReceived: 0, durationMs: 0,
      liveBytes: () => ({ sent: socket.bytesRead, received: socket.bytesWritten }),
    };
    // Opened once the destination proved its identity (pinned to the workload's below), so telemetry reports the
    // identity the certificate carried; a tunnel that never opens is reported closed only.
    const established = (peerIdentity: SpiffeId): void => {
      record.destinationPrincipal = peerIdentity.uri;
      this.#report.opened(record);
    };
    const finish = (error?: Error): void => {
      record.bytesSent = socket.bytesRead;
      record.bytesReceived = socket.bytesWritten;
      record.durationMs = performance.now() - started;
      if (error) record.error = error;
      this.#report.closed(record);
    };
    context.pool
      .tunnel(
        {
          proxy: { host: addressOfFamily(destination, originalDestination.host) ?? destination.addresses[0]!, port: HBONE_PORT },
          destination: originalDestination,
          sourceIdentity: workloadIdentity(context.source),
          expectedIdentities: [workloadIdentity(destination).uri],
        },
        socket,
        established,
      )
      .then(
        (result) => finish(result.error),
        (error: Error) => {
          if (!socket.destroyed) socket.resetAndDestroy();
          finish(error);
        },
      );
  }

  #passthrough(socket: net.Socket, originalDestination: HostPort, destination: Workload | undefined, context: OutboundContext, started: number): void {
    const upstream = context.factory.connect({ host: originalDestination.host, port: originalDestination.port });
    const record: ConnectionRecord = {
      direction: 'outbound', source: context.source, sourceAddress: socket.remoteAddress, destination, destinationAddress: originalDestination, mtls: false, bytesSent: 0, bytesReceived: 0, durationMs: 0,
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
