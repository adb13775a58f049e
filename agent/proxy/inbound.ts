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
import { plainIp, PolicyTracked, POLICY_DENIED_FLAG, type InboundPolicy } from '../policy/enforcer.ts';
import type { MeshState } from '../../shared/mesh/mesh-state.ts';
import { principalParts, type Connection, type PrincipalParts } from '../../shared/policy/index.ts';
import type { SpiffeId } from '../../shared/identity/index.ts';
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
        // The tunnel's one object from here on: what policy decides it on, its telemetry record, its delivery's state.
        const tunnel = new InboundTunnel(this, request, this.#state.workloadByIp(request.remoteAddress), context.pod);
        request.callerState = tunnel;
        if (this.#policy) {
          const decision = this.#policy.check(context.pod, 'hbone', tunnel);
          if (!decision.allowed) {
            tunnel.responseFlags = POLICY_DENIED_FLAG;
            tunnel.error = new Error(`policy rejection: ${decision.reason}`);
            this.#report.closed(tunnel);
            return { allow: false, reason: decision.reason };
          }
        }
        return ALLOW;
      },
      connect: (request) => this.#deliver(request, context),
      onTargetSettled: (request, error, streamGone) => this.#deliverySettled(tunnelOf(request, this, context.pod), error, streamGone),
      onTunnel: (event) => {
        const tunnel = tunnelOf(event.request, this, context.pod);
        this.#policy?.untrack(tunnel);
        tunnel.bytesSent = event.bytesOut;
        tunnel.bytesReceived = event.bytesIn;
        tunnel.durationMs = event.durationMs;
        // A tunnel closed by late enforcement keeps its policy error (the stream reset is its consequence).
        if (event.error && !tunnel.error) tunnel.error = new Error(event.error);
        this.#report.closed(tunnel);
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

  #deliver(request: HboneRequest, context: InboundContext): net.Socket {
    const tunnel = tunnelOf(request, this, context.pod);
    const source = context.preserveSourceIp ? this.#sourceAddressFor(request) : undefined;
    const socket = context.factory.connect(
      source ? { host: request.target.host, port: request.target.port, localAddress: source, transparent: true } : { host: request.target.host, port: request.target.port },
    );
    tunnel.socket = socket;
    // Late enforcement: closing the application side resets the HBONE stream (the splice turns an unclean socket
    // close into RST_STREAM), so the client sees a reset too. Untracked when the delivery fails or the tunnel ends.
    this.#policy?.trackOpen(context.pod, 'hbone', tunnel, tunnel);
    return socket;
  }

  /**
   * The HBONE server's word on a delivery's connect (no listeners of our own on the socket): the application accepted
   * it (the tunnel counts as opened), refused it or was unreachable (the server answers 503 and reports no tunnel, so
   * it is reported here), or the client's stream went first (nothing to report).
   */
  #deliverySettled(tunnel: InboundTunnel, error: Error | undefined, streamGone: boolean): void {
    if (error === undefined) {
      this.#report.opened(tunnel);
      return;
    }
    this.#policy?.untrack(tunnel);
    if (streamGone) return;
    tunnel.error ??= error;
    tunnel.responseFlags ??= 'UF';
    this.#report.closed(tunnel);
  }
}

/** The request's tunnel, as `decide` made it (or made now, for a server that did not ask `decide`). */
function tunnelOf(request: HboneRequest, proxy: InboundProxy, pod: Workload): InboundTunnel {
  const tunnel = request.callerState;
  if (tunnel instanceof InboundTunnel) return tunnel;
  const made = new InboundTunnel(proxy, request, undefined, pod);
  request.callerState = made;
  return made;
}

/**
 * One tunnel into the pod: its telemetry record (what `opened` and `closed` are given), what policy decides it on and
 * tracks it by (it is the policy's Connection and its tracked object), the delivery's socket and its live byte counts
 * read from that socket: one object per tunnel, on the request as the server's `callerState`, where a record literal,
 * a byte-count closure, a delivery object, a policy connection, a tracking entry and two closures were seven (issue 14,
 * the storm step).
 */
class InboundTunnel extends PolicyTracked implements ConnectionRecord, Connection {
  readonly direction = 'inbound';
  readonly source: Workload | undefined;
  readonly sourcePrincipal: string;
  /** `sourcePrincipal` parsed for policy, once per HBONE connection (principalPartsOf). */
  readonly sourcePrincipalParts: PrincipalParts;
  readonly sourceAddress: string;
  readonly destination: Workload;
  readonly destinationAddress: HostPort;
  readonly mtls = true;
  /** Policy's view of the addresses: the source as plain IPv4 when it came as IPv4-mapped IPv6. */
  readonly sourceIp: string;
  readonly destinationIp: string;
  readonly destinationPort: number;
  bytesSent = 0;
  bytesReceived = 0;
  durationMs = 0;
  error: Error | undefined = undefined;
  responseFlags: string | undefined = undefined;
  readonly proxy: InboundProxy;
  readonly request: HboneRequest;
  /** The socket into the pod, once the delivery made it. */
  socket: net.Socket | undefined = undefined;

  constructor(proxy: InboundProxy, request: HboneRequest, source: Workload | undefined, pod: Workload) {
    super();
    this.proxy = proxy;
    this.request = request;
    this.source = source;
    this.sourcePrincipal = request.peerIdentity.uri;
    this.sourcePrincipalParts = principalPartsOf(request.peerIdentity);
    this.sourceAddress = request.remoteAddress;
    this.sourceIp = plainIp(request.remoteAddress);
    this.destination = pod;
    this.destinationAddress = request.target;
    this.destinationIp = request.target.host;
    this.destinationPort = request.target.port;
  }

  /** Bytes so far: sent to the source is what the pod's socket read, received what it wrote (read at scrapes only). */
  liveBytes(): ByteCounts {
    const socket = this.socket;
    return socket === undefined ? { sent: 0, received: 0 } : { sent: socket.bytesRead, received: socket.bytesWritten };
  }

  /** A policy change denies the open tunnel: the delivery is cut (a reset the HBONE stream passes on). */
  override policyDenied(reason: string): void {
    this.responseFlags = POLICY_DENIED_FLAG;
    const error = new Error(`policy changed: ${reason}`);
    this.error = error;
    const socket = this.socket;
    if (socket === undefined) return;
    if (socket.connecting) socket.destroy(error);
    else resetSocket(socket);
  }
}

/**
 * The peer's principal as policy reads it, parsed once per HBONE connection instead of once per stream (issue 14, the
 * storm step): the HBONE server makes one SpiffeId object per TLS connection, from the certificate that connection
 * presented (shared/hbone/tls.ts verifyClient), and hands that same object to every stream on it. Keyed by that
 * object, never by its text: a connection's streams are decided on the identity its own certificate proved, and an
 * entry goes with its connection's identity object.
 */
const principalPartsByPeer = new WeakMap<SpiffeId, PrincipalParts>();

function principalPartsOf(identity: SpiffeId): PrincipalParts {
  let parts = principalPartsByPeer.get(identity);
  if (parts === undefined) principalPartsByPeer.set(identity, (parts = principalParts(identity.uri)));
  return parts;
}

/** `decide`'s answer for every tunnel it lets through (one object, not one per stream). */
const ALLOW: HboneDecision = Object.freeze({ allow: true });

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
