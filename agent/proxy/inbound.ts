/**
 * Inbound: connections to a captured pod. HBONE streams arrive on the pod's port 15008 (mutual TLS, the peer's
 * identity verified), plaintext on its port 15006. With a policy (agent/policy/enforcer.ts) each is decided
 * before the application sees it: a denied stream is answered 401, a denied plaintext connection reset; open
 * ones are tracked so a policy change can close them.
 *
 * Owns: one HBONE server per captured pod presenting that pod's certificate, checking that the tunnel's target
 * is this pod (another address: 400, never relayed) and not one of its proxy ports (503, no tunnel in a tunnel),
 * as ztunnel's inbound does; delivering to the application inside the pod's namespace with the agent's mark;
 * reporting every client the server turned away (handshake failures, refused requests, floods) to telemetry.
 * Must not know about: iptables, CNI, how certificates are fetched.
 */
import type net from 'node:net';
import { HboneServer, resetSocket, type HboneDecision, type HboneRejection, type HboneRequest, type HboneServerOptions, type HostPort } from '../../shared/hbone/index.ts';
import type { CertificateManager } from '../../shared/ca/certificate-manager.ts';
import { INPOD } from '../inpod/rules.ts';
import type { SocketFactory } from '../inpod/socket-factory.ts';
import { plainIp, POLICY_DENIED_FLAG, type InboundPolicy } from '../policy/enforcer.ts';
import type { MeshState } from '../../shared/mesh/mesh-state.ts';
import { addressOfFamily, workloadIdentity, type Workload } from '../../shared/mesh/workload.ts';
import type { ByteCounts, ConnectionRecord, ConnectionReporter, RejectionReason } from './report.ts';
import { spliceTcp } from './tcp-splice.ts';

export interface InboundContext {
  /** The destination pod's workload. */
  pod: Workload;
  /** Sockets made inside the pod's namespace, marked with the agent's mark. */
  factory: SocketFactory;
  /**
   * Deliver with the client's own source address (IP_TRANSPARENT), as ztunnel does, so the application sees
   * the real peer. Needs the pod's connmark rules that route replies back to the agent.
   */
  preserveSourceIp: boolean;
}

/** The HBONE server settings the agent's configuration decides (AMBIT_HBONE_*). */
export type InboundHboneSettings = Partial<Pick<HboneServerOptions, 'keepaliveIntervalMs' | 'keepaliveTimeoutMs' | 'idleTimeoutMs'>>;

/**
 * The pod's own proxy ports: a CONNECT for one of them would tunnel into the agent itself (ztunnel's
 * illegal_ports, answered 503).
 */
const PROXY_PORTS: ReadonlySet<number> = new Set([INPOD.inboundHbonePort, INPOD.inboundPlaintextPort, INPOD.outboundPort]);

/** The attributes policy matches an HBONE stream on: the verified peer, the tunnel's source, the target. */
function hboneConnection(request: HboneRequest): { sourcePrincipal: string; sourceIp: string; destinationIp: string; destinationPort: number } {
  return { sourcePrincipal: request.peerIdentity.uri, sourceIp: plainIp(request.remoteAddress), destinationIp: request.target.host, destinationPort: request.target.port };
}

export class InboundProxy {
  readonly #state: MeshState;
  readonly #report: ConnectionReporter;
  readonly #certificates: CertificateManager;
  readonly #trustDomain: string;
  readonly #policy: InboundPolicy | undefined;
  readonly #hboneSettings: InboundHboneSettings;

  constructor(options: { state: MeshState; report: ConnectionReporter; certificates: CertificateManager; trustDomain: string; policy?: InboundPolicy; hboneServer?: InboundHboneSettings }) {
    this.#state = options.state;
    this.#hboneSettings = options.hboneServer ?? {};
    this.#policy = options.policy;
    this.#report = options.report;
    this.#certificates = options.certificates;
    this.#trustDomain = options.trustDomain;
  }

  /** The HBONE server for one captured pod; the caller feeds it the sockets accepted on the pod's port 15008. */
  hboneServerFor(context: InboundContext): HboneServer {
    const identity = workloadIdentity(context.pod);
    return new HboneServer({
      ...this.#hboneSettings,
      certificateFor: () => this.#certificates.current(identity),
      rootsPem: this.#certificates.rootsPem(),
      trustDomain: this.#trustDomain,
      decide: (request) => {
        // A tunnel accepted in this pod's namespace may only reach this pod: anything else is a confused or
        // malicious peer trying to use the agent as a relay.
        if (!context.pod.addresses.includes(request.target.host)) {
          return { allow: false, status: 400, reason: `destination ${request.target.host} is not an address of pod ${context.pod.namespace}/${context.pod.name}: the agent relays to no other address` };
        }
        if (PROXY_PORTS.has(request.target.port)) {
          return { allow: false, status: 503, reason: `port ${request.target.port} of pod ${context.pod.namespace}/${context.pod.name} is the agent's own proxy port: no tunnel inside a tunnel` };
        }
        if (this.#policy) {
          const connection = hboneConnection(request);
          // Kept for the delivery's late enforcement (the same attributes), not built twice.
          (request as DeliveredRequest)[kPolicyConnection] = connection;
          const decision = this.#policy.check(context.pod, 'hbone', connection);
          if (!decision.allowed) {
            const record = this.#tunnelRecord(request, context.pod);
            record.responseFlags = POLICY_DENIED_FLAG;
            record.error = new Error(`policy rejection: ${decision.reason}`);
            this.#report.closed(record);
            return { allow: false, reason: decision.reason };
          }
        }
        return ALLOW;
      },
      connect: (request) => this.#deliver(request, context),
      onTunnel: (event) => {
        const request = event.request as DeliveredRequest;
        const record = request[kTunnelRecord] ?? this.#tunnelRecord(event.request, context.pod);
        request[kTunnelRecord] = undefined;
        record.bytesSent = event.bytesOut;
        record.bytesReceived = event.bytesIn;
        record.durationMs = event.durationMs;
        // A tunnel closed by late enforcement keeps its policy error (the stream reset is its consequence).
        if (event.error && !record.error) record.error = new Error(event.error);
        this.#report.closed(record);
      },
      onRejected: (rejection) => this.#rejected(rejection, context.pod),
    });
  }

  /** A client the pod's HBONE server turned away: counted and logged (policy denials are reported by `decide`). */
  #rejected(rejection: HboneRejection, pod: Workload): void {
    const reason = rejectionReason(rejection);
    if (!reason || !this.#report.rejected) return;
    const { request } = rejection;
    this.#report.rejected(
      {
        direction: 'inbound',
        source: this.#state.workloadByIp(rejection.remoteAddress),
        ...(rejection.peerIdentity ? { sourcePrincipal: rejection.peerIdentity.uri } : {}),
        sourceAddress: rejection.remoteAddress,
        destination: pod,
        destinationAddress: request ? request.target : { host: pod.addresses[0] ?? '', port: INPOD.inboundHbonePort },
        // Identities are reported only once mutual TLS proved one.
        mtls: rejection.peerIdentity !== undefined,
        bytesSent: 0,
        bytesReceived: 0,
        durationMs: 0,
        responseFlags: rejection.error.responseFlags,
        error: rejection.error,
      },
      reason,
    );
  }

  /** Plaintext reaching the pod's port 15006: decided by policy (STRICT denies it), then passed through. */
  handlePlaintext(socket: net.Socket, originalDestination: HostPort, context: InboundContext): void {
    const started = performance.now();
    const sourceAddress = socket.remoteAddress ?? '';
    // No peer identity: PeerAuthentication STRICT (converted to a DENY policy) rejects it, as do ALLOW policies
    // that need a principal. The source namespace is not verified, so it is not passed.
    const connection = this.#policy ? { sourceIp: plainIp(sourceAddress), destinationIp: originalDestination.host, destinationPort: originalDestination.port } : undefined;
    if (this.#policy && connection) {
      const decision = this.#policy.check(context.pod, 'plaintext', connection);
      if (!decision.allowed) {
        resetSocket(socket);
        this.#report.closed({
          direction: 'inbound', source: this.#state.workloadByIp(sourceAddress), sourceAddress, destination: context.pod, destinationAddress: originalDestination, mtls: false, bytesSent: 0, bytesReceived: 0,
          durationMs: performance.now() - started, responseFlags: POLICY_DENIED_FLAG, error: new Error(`policy rejection: ${decision.reason}`),
        });
        return;
      }
    }
    const upstream = context.factory.connect({
      host: originalDestination.host,
      port: originalDestination.port,
      ...(context.preserveSourceIp && sourceAddress ? { localAddress: sourceAddress, transparent: true } : {}),
    });
    const record: ConnectionRecord = {
      direction: 'inbound', source: this.#state.workloadByIp(sourceAddress), sourceAddress, destination: context.pod, destinationAddress: originalDestination, mtls: false, bytesSent: 0, bytesReceived: 0, durationMs: 0,
      liveBytes: () => ({ sent: socket.bytesWritten, received: socket.bytesRead }),
    };
    this.#report.opened(record);
    const untrack =
      this.#policy && connection
        ? this.#policy.track(context.pod, 'plaintext', connection, (reason) => {
            record.responseFlags = POLICY_DENIED_FLAG;
            record.error = new Error(`policy changed: ${reason}`);
            resetSocket(socket);
            resetSocket(upstream);
          })
        : undefined;
    void spliceTcp(socket, upstream).then((result) => {
      untrack?.();
      record.bytesSent = result.bytesDown;
      record.bytesReceived = result.bytesUp;
      record.durationMs = performance.now() - started;
      if (result.error && !record.error) record.error = result.error;
      this.#report.closed(record);
    });
  }

  /**
   * The client address to dial the application from: the tunnel's peer address, or, when the tunnel ran over the
   * other IP family than the target (a peer that tunnels IPv6 traffic over IPv4), the source workload's address of
   * the target's family; none when it has none (the application then sees the agent's address).
   */
  #sourceAddressFor(request: HboneRequest): string | undefined {
    const target = request.target.host;
    if (request.remoteAddress.includes(':') === target.includes(':')) return request.remoteAddress;
    const workload = this.#state.workloadByIp(request.remoteAddress);
    return workload ? addressOfFamily(workload, target) : undefined;
  }

  /** A tunnel's record, opened once the application accepted the delivery (what the HBONE server counts as opened). */
  #tunnelRecord(request: HboneRequest, pod: Workload, socket?: net.Socket): InboundTunnel {
    return new InboundTunnel(this, request, this.#state.workloadByIp(request.remoteAddress), pod, socket);
  }

  #deliver(request: HboneRequest, context: InboundContext): net.Socket {
    const source = context.preserveSourceIp ? this.#sourceAddressFor(request) : undefined;
    const socket = context.factory.connect(
      source ? { host: request.target.host, port: request.target.port, localAddress: source, transparent: true } : { host: request.target.host, port: request.target.port },
    ) as DeliverySocket;
    const record = this.#tunnelRecord(request, context.pod, socket);
    (request as DeliveredRequest)[kTunnelRecord] = record;
    socket[kDelivery] = record;
    if (this.#policy) {
      // Late enforcement: closing the application side resets the HBONE stream (the splice turns an unclean
      // socket close into RST_STREAM), so the client sees a reset too.
      record.untrack = this.#policy.track(context.pod, 'hbone', (request as DeliveredRequest)[kPolicyConnection] ?? hboneConnection(request), (reason) => {
        record.responseFlags = POLICY_DENIED_FLAG;
        const error = new Error(`policy changed: ${reason}`);
        record.error = error;
        if (socket.connecting) socket.destroy(error);
        else resetSocket(socket);
      });
      socket.on('close', onDeliveryClose);
    }
    if (socket.connecting) {
      record.connecting = true;
      socket.on('connect', InboundProxy.#onDeliveryConnect);
      socket.on('error', InboundProxy.#onDeliveryFailed);
    } else {
      this.#report.opened(record);
    }
    return socket;
  }

  /** The delivery of a socket whose connect just ended (connected or failed), its listeners removed. */
  static #settle(socket: DeliverySocket): InboundTunnel | undefined {
    const delivery = socket[kDelivery];
    if (delivery === undefined || !delivery.connecting) return undefined;
    delivery.connecting = false;
    socket.off('connect', InboundProxy.#onDeliveryConnect);
    socket.off('error', InboundProxy.#onDeliveryFailed);
    return delivery;
  }

  /** The application accepted the delivery: the tunnel counts as opened. (`this` is the socket: one listener for all.) */
  static readonly #onDeliveryConnect = function (this: DeliverySocket): void {
    const delivery = InboundProxy.#settle(this);
    if (delivery !== undefined) delivery.proxy.#report.opened(delivery);
  };

  /** The application refused or was unreachable: the server answers 503 and reports no tunnel, so report it here. */
  static readonly #onDeliveryFailed = function (this: DeliverySocket, error: Error): void {
    const delivery = InboundProxy.#settle(this);
    if (delivery === undefined) return;
    (delivery.request as DeliveredRequest)[kTunnelRecord] = undefined;
    delivery.error ??= error;
    delivery.responseFlags ??= 'UF';
    delivery.proxy.#report.closed(delivery);
  };
}

/**
 * One tunnel into the pod: its telemetry record (what `opened` and `closed` are given; on the request under
 * `kTunnelRecord` until the HBONE server's onTunnel closes it), what its socket's shared listeners need (on the socket
 * under `kDelivery`), and its live byte counts read from that socket: one object per tunnel, where a record literal, a
 * byte-count closure and a delivery object were three (issue 14, the storm step).
 */
class InboundTunnel implements ConnectionRecord {
  readonly direction = 'inbound';
  readonly source: Workload | undefined;
  readonly sourcePrincipal: string;
  readonly sourceAddress: string;
  readonly destination: Workload;
  readonly destinationAddress: HostPort;
  readonly mtls = true;
  bytesSent = 0;
  bytesReceived = 0;
  durationMs = 0;
  error: Error | undefined = undefined;
  responseFlags: string | undefined = undefined;
  readonly proxy: InboundProxy;
  readonly request: HboneRequest;
  /** The socket into the pod; undefined for a tunnel refused before one was made. */
  readonly socket: net.Socket | undefined;
  untrack: (() => void) | undefined = undefined;
  /** Its 'connect' / 'error' listeners are on the socket. */
  connecting = false;

  constructor(proxy: InboundProxy, request: HboneRequest, source: Workload | undefined, pod: Workload, socket: net.Socket | undefined) {
    this.proxy = proxy;
    this.request = request;
    this.source = source;
    this.sourcePrincipal = request.peerIdentity.uri;
    this.sourceAddress = request.remoteAddress;
    this.destination = pod;
    this.destinationAddress = request.target;
    this.socket = socket;
  }

  /** Bytes so far: sent to the source is what the pod's socket read, received what it wrote (read at scrapes only). */
  liveBytes(): ByteCounts {
    const socket = this.socket;
    return socket === undefined ? { sent: 0, received: 0 } : { sent: socket.bytesRead, received: socket.bytesWritten };
  }
}

/** `decide`'s answer for every tunnel it lets through (one object, not one per stream). */
const ALLOW: HboneDecision = Object.freeze({ allow: true });

const kDelivery = Symbol('ambit.inbound.delivery');
const kTunnelRecord = Symbol('ambit.inbound.tunnelRecord');
const kPolicyConnection = Symbol('ambit.inbound.policyConnection');
interface DeliverySocket extends net.Socket {
  [kDelivery]?: InboundTunnel | undefined;
}
type PolicyConnection = ReturnType<typeof hboneConnection>;
/** A request this agent delivered: its tunnel's record until onTunnel, and what policy matched it on. */
type DeliveredRequest = HboneRequest & { [kTunnelRecord]?: InboundTunnel | undefined; [kPolicyConnection]?: PolicyConnection };

/** The delivery's socket closed: policy stops watching it. */
function onDeliveryClose(this: DeliverySocket): void {
  const delivery = this[kDelivery];
  this[kDelivery] = undefined;
  delivery?.untrack?.();
}

/** The telemetry reason for a rejection; undefined for a policy denial (401), which `decide` reports itself. */
function rejectionReason(rejection: HboneRejection): RejectionReason | undefined {
  switch (rejection.reason) {
    case 'tls':
    case 'peer_identity':
    case 'stream_flood':
      return rejection.reason;
    case 'method':
      return 'bad_method';
    case 'authority':
      return 'bad_authority';
    case 'denied':
      return rejection.status === 400 ? 'misdirected' : rejection.status === 503 ? 'proxy_port' : undefined;
  }
}
