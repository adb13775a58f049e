/**
 * The listeners the agent opens inside one captured pod's network namespace, and the hand-off of every
 * accepted connection to the proxy (and of the DNS sockets to the DNS proxy).
 *
 *   15001 outbound   127.0.0.1 (nat REDIRECT from OUTPUT always rewrites to 127.0.0.1); original
 *                    destination from SO_ORIGINAL_DST
 *   15006 inbound    0.0.0.0 with IP_TRANSPARENT under TPROXY, where the accepted socket's own local
 *                    address is the original destination; SO_ORIGINAL_DST under REDIRECT
 *   15008 hbone      0.0.0.0, not redirected: the destination is the listener's own address
 *   15053 dns        127.0.0.1, UDP and TCP, only with a DNS handler (nat REDIRECT of port 53 from OUTPUT);
 *                    handed to the CapturedDnsHandler, which answers or forwards
 *
 * The factory decides socket options; the capture manager's gives all three SO_REUSEPORT (a restarting
 * agent's listeners overlap with the old agent's) and the mark 0x539.
 *
 * Owns: opening and closing the listeners, reading the original destination, refusing connections that
 * would loop into the agent itself, reporting a listener that fails.
 * Must not know about: HBONE, TLS, policy, workloads; what to do with a connection (the handler decides).
 */
import { isIPv6 } from 'node:net';
import type dgram from 'node:dgram';
import type net from 'node:net';
import { nativeSockets } from './sockets.ts';
import { INPOD, type InboundCapture } from './rules.ts';
import type { SocketFactory } from './socket-factory.ts';
import { CaptureError } from './errors.ts';
import { markNoDelaySet, passesNoDelay } from './inherited-no-delay.ts';

/** A pod to capture: what the CNI plugin (or the start-up reconcile) told us. */
export interface PodInfo {
  uid: string;
  name: string;
  namespace: string;
  /** Path of the pod's network namespace. */
  netns: string;
  /** The pod's IPs, without prefix length. */
  ips: readonly string[];
  /** The sandbox's CNI_CONTAINERID (from its ADD): how CNI GC names the attachments still in use. */
  containerId?: string;
}

/** A pod being captured, as the handler sees it. */
export interface CapturedPod extends PodInfo {
  /**
   * Sockets inside this pod's namespace, marked 0x539 so its rules leave them alone: dial the destination
   * of an outbound connection, or the app of an inbound one (with `transparent` and `localAddress` = the
   * client's IP to keep the source address), through this.
   */
  readonly sockets: SocketFactory;
}

export type ListenerKind = 'outbound' | 'inbound' | 'hbone';

export interface OriginalDestination {
  address: string;
  port: number;
}

/**
 * The proxy's side of the seam. Called once per accepted connection, synchronously from the accept event;
 * the handler owns the socket from then on and must destroy it on every path. The socket is a raw
 * net.Socket (no TLS; for 'hbone' the handler runs the TLS server on it) with allowHalfOpen and
 * TCP_NODELAY set. `originalDst` is where the client meant to go: for 'outbound' the remote service, for
 * 'inbound' the pod's own IP and app port, for 'hbone' the pod's IP and 15008.
 */
export interface CapturedTrafficHandler {
  accepted(kind: ListenerKind, socket: net.Socket, originalDst: OriginalDestination, pod: CapturedPod): void;
}

/**
 * The DNS proxy's side of the seam: given the pod's bound 15053 UDP socket(s) once, and every connection accepted
 * on its 15053 TCP listener(s). Owns them from then on; must never throw on a peer's input.
 */
export interface CapturedDnsHandler {
  udpBound(socket: dgram.Socket, pod: CapturedPod): void;
  tcpAccepted(socket: net.Socket, pod: CapturedPod): void;
}

export interface PodListenerOptions {
  /** A factory for the pod's namespace (netns = pod's path, mark 0x539, SO_REUSEPORT) to listen with. */
  factory: SocketFactory;
  handler: CapturedTrafficHandler;
  inbound: InboundCapture;
  /** Called when a listener fails after opening (accept failed for good); may be called once per listener. */
  onFailure?: (error: Error) => void;
  /** Opens the 15053 DNS sockets too and hands them here (the rules must redirect port 53 with `dnsCapture`). */
  dns?: CapturedDnsHandler;
}

/** Counters a person can read in the admin dump; never logged per connection. */
export interface PodListenerStats {
  accepted: number;
  /** Connections refused because their original destination could not be read or pointed at the agent. */
  refused: number;
  /** Connections dropped because the handler threw. */
  handlerErrors: number;
}

export class PodListeners {
  readonly pod: CapturedPod;
  readonly stats: PodListenerStats = { accepted: 0, refused: 0, handlerErrors: 0 };
  private readonly servers: net.Server[];
  private readonly udpSockets: dgram.Socket[];
  private closed = false;

  private constructor(pod: CapturedPod, servers: net.Server[], udpSockets: dgram.Socket[]) {
    this.pod = pod;
    this.servers = servers;
    this.udpSockets = udpSockets;
  }

  /** Opens 15001, 15006 and 15008 in the pod's namespace; on any failure closes what was opened and throws. */
  static async open(pod: CapturedPod, options: PodListenerOptions): Promise<PodListeners> {
    const { factory } = options;
    const tproxy = options.inbound === 'tproxy';
    const specs: { kind: ListenerKind; host: string; port: number; transparent: boolean }[] = [
      { kind: 'outbound', host: '127.0.0.1', port: INPOD.outboundPort, transparent: false },
      { kind: 'inbound', host: '0.0.0.0', port: INPOD.inboundPlaintextPort, transparent: tproxy },
      { kind: 'hbone', host: '0.0.0.0', port: INPOD.inboundHbonePort, transparent: false },
    ];
    if (pod.ips.some((ip) => isIPv6(ip))) {
      // The same three for IPv6 (the ip6tables rules redirect to ::1 and TPROXY to ::), IPv6-only so they share
      // the ports with the IPv4 listeners and IPv4 clients never arrive as ::ffff: addresses.
      specs.push(
        { kind: 'outbound', host: '::1', port: INPOD.outboundPort, transparent: false },
        { kind: 'inbound', host: '::', port: INPOD.inboundPlaintextPort, transparent: tproxy },
        { kind: 'hbone', host: '::', port: INPOD.inboundHbonePort, transparent: false },
      );
    }
    // The DNS proxy listens on loopback only: REDIRECT from OUTPUT rewrites to 127.0.0.1 / ::1, and nothing
    // outside the pod may use the agent as a resolver.
    const dnsHosts = options.dns === undefined ? [] : pod.ips.some((ip) => isIPv6(ip)) ? ['127.0.0.1', '::1'] : ['127.0.0.1'];
    const settled = await Promise.allSettled(
      specs.map((spec) => factory.listen({ host: spec.host, port: spec.port, transparent: spec.transparent, ...(isIPv6(spec.host) ? { ipv6Only: true } : {}) })),
    );
    const dnsTcp = await Promise.allSettled(dnsHosts.map((host) => factory.listen({ host, port: INPOD.dnsPort, ...(isIPv6(host) ? { ipv6Only: true } : {}) })));
    const dnsUdp = await Promise.allSettled(dnsHosts.map((host) => factory.bindUdp({ host, port: INPOD.dnsPort, ...(isIPv6(host) ? { ipv6Only: true } : {}) })));
    const servers: net.Server[] = [];
    const dnsServers: net.Server[] = [];
    const udpSockets: dgram.Socket[] = [];
    let failure: unknown;
    for (const result of settled) {
      if (result.status === 'fulfilled') servers.push(result.value);
      else failure ??= result.reason;
    }
    for (const result of dnsTcp) {
      if (result.status === 'fulfilled') dnsServers.push(result.value);
      else failure ??= result.reason;
    }
    for (const result of dnsUdp) {
      if (result.status === 'fulfilled') udpSockets.push(result.value);
      else failure ??= result.reason;
    }
    if (failure !== undefined) {
      await Promise.all([...servers, ...dnsServers].map(closeServer));
      for (const socket of udpSockets) socket.close();
      const reason = failure instanceof Error ? failure.message : String(failure);
      throw new CaptureError('LISTEN_FAILED', `cannot open the capture listeners of pod ${pod.namespace}/${pod.name}: ${reason}`, { cause: failure });
    }
    const listeners = new PodListeners(pod, [...servers, ...dnsServers], udpSockets);
    specs.forEach((spec, index) => listeners.attach(servers[index]!, spec.kind, isIPv6(spec.host) ? 6 : 4, tproxy, options));
    if (options.dns !== undefined) listeners.attachDns(dnsServers, udpSockets, options.dns, options);
    return listeners;
  }

  private attachDns(servers: net.Server[], udpSockets: dgram.Socket[], dns: CapturedDnsHandler, options: PodListenerOptions): void {
    const pod = this.pod;
    for (const socket of udpSockets) dns.udpBound(socket, pod);
    for (const server of servers) {
      server.on('connection', (socket: net.Socket) => {
        this.stats.accepted++;
        try {
          dns.tcpAccepted(socket, pod);
        } catch {
          this.stats.handlerErrors++;
          socket.destroy();
        }
      });
      server.on('error', (error: Error) => {
        if (this.closed) return;
        options.onFailure?.(error);
      });
    }
  }

  /** `family`: the listener's, so its accepted sockets' (the original destination's lookup needs no getsockname). */
  private attach(server: net.Server, kind: ListenerKind, family: 4 | 6, tproxy: boolean, options: PodListenerOptions): void {
    const { handler } = options;
    const pod = this.pod;
    const stats = this.stats;
    const ownPort = (server.address() as net.AddressInfo).port;
    const noDelayInherited = passesNoDelay(server);
    // One closure per listener, none per connection: the accept path only reads the destination and calls on.
    const readDestination =
      kind === 'outbound' || (kind === 'inbound' && !tproxy) ? (socket: net.Socket): OriginalDestination | undefined => fromConntrack(socket, family) : fromLocalAddress;
    server.on('connection', (socket: net.Socket) => {
      if (noDelayInherited) markNoDelaySet(socket);
      const destination = readDestination(socket);
      // A destination we cannot read, or one that is our own listener (a client dialling 15001/15006 directly),
      // would make the proxy dial itself in a loop.
      if (destination === undefined || (kind !== 'hbone' && destination.port === ownPort)) {
        stats.refused++;
        socket.destroy();
        return;
      }
      stats.accepted++;
      try {
        handler.accepted(kind, socket, destination, pod);
      } catch {
        // A handler bug costs this connection, never the agent.
        stats.handlerErrors++;
        socket.destroy();
      }
    });
    server.on('error', (error: Error) => {
      if (this.closed) return;
      options.onFailure?.(error);
    });
  }

  /** Stops accepting (connections already handed over are the handler's); idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const socket of this.udpSockets) socket.close();
    await Promise.all(this.servers.map(closeServer));
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** The addresses listened on, e.g. for the admin dump. */
  addresses(): net.AddressInfo[] {
    return this.servers.map((server) => server.address() as net.AddressInfo).filter((address) => address !== null);
  }
}

function fromConntrack(socket: net.Socket, family: 4 | 6): OriginalDestination | undefined {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (fd === undefined || fd < 0) return undefined;
  try {
    return nativeSockets.originalDst(fd, family);
  } catch {
    return undefined;
  }
}

function fromLocalAddress(socket: net.Socket): OriginalDestination | undefined {
  const address = socket.localAddress;
  const port = socket.localPort;
  if (address === undefined || port === undefined) return undefined;
  return { address, port };
}

/**
 * Closes the listening socket now. server.close()'s callback would wait for every accepted connection to
 * end, but those belong to the handler; what matters to a restart handover is that the listening fd is
 * gone, which happens synchronously inside close().
 */
function closeServer(server: net.Server): Promise<void> {
  if (server.listening) server.close(ignore);
  return new Promise((resolve) => setImmediate(resolve));
}

function ignore(): void {
  // close errors (not running) are not interesting here.
}
