/**
 * The socket-factory seam (ztunnel's `SocketFactory`): the proxy never creates sockets itself, it asks a
 * factory, so the same proxy code serves the node's own namespace, a pod's namespace, marked and unmarked
 * sockets, and tests can swap the factory.
 *
 * Owns: turning "listen on host:port" / "connect to host:port" / "bind UDP host:port" into a listening
 * net.Server, a connecting net.Socket or a bound dgram.Socket with the right namespace, SO_MARK, SO_REUSEPORT and IP_TRANSPARENT, via the native addon.
 * Must not know about: pods, iptables rules, HBONE, policy. It takes a namespace path, never a pod.
 *
 * Factories are values built from options; the named constructors below are the stacking ztunnel does
 * (plain -> marked -> in-pod -> reuse-port), expressed as option sets because the kernel needs every option
 * on the socket before bind/listen, in one native call.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { nativeSockets } from './sockets.ts';
import { adoptTcpSocket } from './adopt-tcp-socket.ts';
import { noDelayInheritable, passesNoDelayOn } from './inherited-no-delay.ts';
import { CaptureError } from './errors.ts';

/**
 * The mark the agent puts on every socket it opens inside a pod (1337, as Istio's in-pod mode), so the pod's
 * rules skip the agent's own traffic instead of capturing it again.
 */
export const AGENT_SOCKET_MARK = 0x539;

export interface ListenRequest {
  host: string;
  port: number;
  backlog?: number;
  /** IP_TRANSPARENT, needed for a listener that receives TPROXY'd connections. */
  transparent?: boolean;
  /** IPV6_V6ONLY on an IPv6 listener, so it shares its port with an IPv4 listener. */
  ipv6Only?: boolean;
}

export interface ConnectRequest {
  host: string;
  port: number;
  /** Source address to bind before connecting; with `transparent` it may be an address that is not local. */
  localAddress?: string;
  localPort?: number;
  /** IP_TRANSPARENT: lets the socket use a non-local source address (keeping a client's IP on inbound). */
  transparent?: boolean;
  /** TCP_NODELAY, default true: the proxy writes whole chunks and must not add Nagle's delay. */
  noDelay?: boolean;
}

export interface BindUdpRequest {
  host: string;
  /** 0 for an ephemeral port. */
  port: number;
  /** IPV6_V6ONLY on an IPv6 socket, so it shares its port with an IPv4 socket. */
  ipv6Only?: boolean;
}

export interface SocketFactory {
  /** Resolves with a server already listening; accepted sockets arrive as its 'connection' events. */
  listen(request: ListenRequest): Promise<net.Server>;
  /** Returns a socket that is connecting; failures (including creation failures) arrive as its 'error' event. */
  connect(request: ConnectRequest): net.Socket;
  /** Resolves with a bound UDP socket (the DNS proxy's 15053 socket, its upstream queries). */
  bindUdp(request: BindUdpRequest): Promise<dgram.Socket>;
  /** The options this factory applies, for diagnostics and for building a derived factory. */
  readonly options: Readonly<SocketFactoryOptions>;
  /**
   * Lets go of what the factory holds for its sockets (an in-pod factory's namespace descriptor): called when the pod
   * is released. Sockets asked for afterwards are still made, in the namespace at the path, each opening it.
   */
  close?(): void;
}

export interface SocketFactoryOptions {
  /** Network namespace path (e.g. /run/netns/pod-a or /proc/<pid>/ns/net); the agent's own when absent. */
  netns?: string;
  /** SO_MARK on every socket; 0 or absent means none. */
  mark?: number;
  /** SO_REUSEPORT on listeners, so a restarting agent's listeners overlap with the old ones. */
  reusePort?: boolean;
}

/**
 * Listen backlog: the kernel's default cap (net.core.somaxconn, 4096 in every namespace since Linux 5.4). Short
 * queues drop connections during bursts and listener handovers: with Node's 511 a 3,000/s storm overflowed the
 * client pod's 15001 queue (ListenOverflows 994-1,307 per quick mesh run at load 12-19), each dropped SYN retried by
 * the client only 1 s later (then 3 s). A queued connection costs the kernel a socket, not the agent anything.
 */
export const DEFAULT_BACKLOG = 4096;

/**
 * Accepted sockets keep half-close (the proxy carries FIN through the tunnel itself) and skip Nagle.
 * Connecting sockets get the same: `allowHalfOpen: true`, TCP_NODELAY unless asked otherwise.
 */
const SERVER_OPTIONS: net.ServerOpts = { allowHalfOpen: true, noDelay: true };
/** The addon's listeners: TCP_NODELAY on the listening socket, inherited by each accepted one (inherited-no-delay.ts). */
const INHERITING_SERVER_OPTIONS: net.ServerOpts = { allowHalfOpen: true, noDelay: false };

/** Node's own sockets, in the agent's namespace, unmarked. */
class PlainSocketFactory implements SocketFactory {
  readonly options: Readonly<SocketFactoryOptions> = Object.freeze({});

  listen(request: ListenRequest): Promise<net.Server> {
    if (request.transparent) {
      // Node cannot set IP_TRANSPARENT; a native factory can.
      return nativeFactory({}).listen(request);
    }
    const server = net.createServer(SERVER_OPTIONS);
    return listenServer(server, { host: request.host, port: request.port, backlog: request.backlog ?? DEFAULT_BACKLOG, ...(request.ipv6Only ? { ipv6Only: true } : {}) });
  }

  connect(request: ConnectRequest): net.Socket {
    if (request.transparent) return nativeFactory({}).connect(request);
    const options: net.TcpNetConnectOpts = {
      host: request.host, port: request.port, noDelay: request.noDelay ?? true, allowHalfOpen: true,
    };
    if (request.localAddress !== undefined) options.localAddress = request.localAddress;
    if (request.localPort !== undefined) options.localPort = request.localPort;
    return net.connect(options);
  }

  bindUdp(request: BindUdpRequest): Promise<dgram.Socket> {
    const socket = dgram.createSocket({ type: net.isIPv6(request.host) ? 'udp6' : 'udp4', ...(request.ipv6Only ? { ipv6Only: true } : {}) });
    return bindSocket(socket, { address: request.host, port: request.port });
  }
}

/** Sockets made by the addon: in a namespace, marked, reuse-port, transparent, in any combination. */
class NativeSocketFactory implements SocketFactory {
  readonly options: Readonly<SocketFactoryOptions>;
  /**
   * The namespace's descriptor, opened at the first socket and held until close(): a socket in the pod then costs two
   * setns and no open and close of the namespace's path (a server-side connection makes one per tunnel). -1 before
   * the first socket, after close(), or when the open failed (the path's own open then reports why, per socket).
   * Held, it also keeps every socket in the namespace the pod was captured in, even if a new sandbox took the path.
   */
  #netnsFd = -1;
  #netnsState: 'unopened' | 'held' | 'closed' = 'unopened';

  constructor(options: SocketFactoryOptions) {
    this.options = Object.freeze({ ...options });
  }

  /** The held namespace descriptor, opened on first use; undefined when there is none to hold (or it is let go). */
  #heldNetns(): number | undefined {
    if (this.#netnsState === 'held') return this.#netnsFd;
    if (this.#netnsState === 'closed' || this.options.netns === undefined) return undefined;
    try {
      this.#netnsFd = nativeSockets.openNetns(this.options.netns);
      this.#netnsState = 'held';
      return this.#netnsFd;
    } catch {
      // Not there (yet, or any more): each socket opens the path, as without a held descriptor, and fails with its reason.
      return undefined;
    }
  }

  close(): void {
    if (this.#netnsState === 'held') closeQuietly(this.#netnsFd);
    this.#netnsFd = -1;
    this.#netnsState = 'closed';
  }

  listen(request: ListenRequest): Promise<net.Server> {
    let fd: number;
    try {
      fd = nativeSockets.listenTcp({
        netns: this.options.netns,
        netnsFd: this.#heldNetns(),
        host: request.host,
        port: request.port,
        backlog: request.backlog ?? DEFAULT_BACKLOG,
        mark: this.options.mark,
        reusePort: this.options.reusePort,
        transparent: request.transparent,
        ipv6Only: request.ipv6Only,
        noDelay: noDelayInheritable,
      });
    } catch (error) {
      return Promise.reject(socketError('listen on', request.host, request.port, this.options.netns, error));
    }
    const server = net.createServer(noDelayInheritable ? INHERITING_SERVER_OPTIONS : SERVER_OPTIONS);
    if (noDelayInheritable) passesNoDelayOn(server);
    return listenServer(server, { fd }, request.backlog ?? DEFAULT_BACKLOG).catch((error: unknown) => {
      closeQuietly(fd);
      throw socketError('listen on', request.host, request.port, this.options.netns, error);
    });
  }

  connect(request: ConnectRequest): net.Socket {
    const family = net.isIPv6(request.host) ? 6 : 4;
    let fd: number;
    try {
      fd = nativeSockets.socketTcp({
        netns: this.options.netns,
        netnsFd: this.#heldNetns(),
        family,
        mark: this.options.mark,
        transparent: request.transparent,
        bindHost: request.localAddress,
        bindPort: request.localPort,
        // TCP_NODELAY is left to Node (below): set here too, Node would not know it and set it again on the splice's
        // setNoDelay, one more setsockopt per connection.
      });
    } catch (error) {
      // Same contract as net.connect: the caller gets a socket and learns of the failure from 'error'.
      const socket = new net.Socket();
      const failure = socketError('connect to', request.host, request.port, this.options.netns, error);
      process.nextTick(() => socket.destroy(failure));
      return socket;
    }
    // `noDelay`: Node sets TCP_NODELAY once connected, before the first write, and knows it is set.
    const socket = adoptTcpSocket(fd, request.noDelay ?? true);
    // Node dials an fd it was handed like one it made: uv_tcp_connect on the already bound, marked socket.
    return socket.connect({ host: request.host, port: request.port });
  }

  bindUdp(request: BindUdpRequest): Promise<dgram.Socket> {
    let fd: number;
    try {
      fd = nativeSockets.bindUdp({
        netns: this.options.netns,
        netnsFd: this.#heldNetns(),
        host: request.host,
        port: request.port,
        mark: this.options.mark,
        // An ephemeral port (the DNS forwarder's) must be the socket's own: with SO_REUSEPORT two sockets could be
        // given the same one and share each other's replies.
        reusePort: request.port !== 0 && this.options.reusePort,
        ipv6Only: request.ipv6Only,
      });
    } catch (error) {
      return Promise.reject(socketError('bind UDP', request.host, request.port, this.options.netns, error));
    }
    // dgram adopts a bound fd with bind({ fd }) and keeps its namespace, mark and address.
    const socket = dgram.createSocket(net.isIPv6(request.host) ? 'udp6' : 'udp4');
    return bindSocket(socket, { fd }).catch((error: unknown) => {
      closeQuietly(fd);
      throw socketError('bind UDP', request.host, request.port, this.options.netns, error);
    });
  }
}

const plainFactory = new PlainSocketFactory();

function nativeFactory(options: SocketFactoryOptions): SocketFactory {
  return new NativeSocketFactory(options);
}

/** Builds the factory for a set of options: Node's own sockets when none is needed, the addon otherwise. */
export function createSocketFactory(options: SocketFactoryOptions = {}): SocketFactory {
  if (options.netns === undefined && !options.mark && !options.reusePort) return plainFactory;
  return nativeFactory(options);
}

/** Node's own sockets in the agent's namespace. */
export function plainSocketFactory(): SocketFactory {
  return plainFactory;
}

/** `base` plus the agent's mark, so pod rules never capture these sockets again. */
export function markedSocketFactory(base: SocketFactoryOptions = {}, mark: number = AGENT_SOCKET_MARK): SocketFactory {
  return nativeFactory({ ...base, mark });
}

/** Sockets inside a pod's namespace, marked with the agent's mark (ztunnel's in-pod factory). */
export function inPodSocketFactory(netns: string, base: SocketFactoryOptions = {}): SocketFactory {
  return nativeFactory({ mark: AGENT_SOCKET_MARK, ...base, netns });
}

/** `base` plus SO_REUSEPORT on listeners, so an old and a new agent can listen at once. */
export function reusePortSocketFactory(base: SocketFactoryOptions = {}): SocketFactory {
  return nativeFactory({ ...base, reusePort: true });
}

/**
 * `{ fd }` is Node's documented handle form of listen(), absent from its ListenOptions type. Node listen()s the fd
 * again with its own backlog (511), ignoring `backlog` in the options of this form: only the second argument sets it.
 */
function listenServer(server: net.Server, options: net.ListenOptions | { fd: number }, fdBacklog?: number): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    const onError = (error: Error): void => {
      server.off('listening', onListening);
      reject(error);
    };
    const onListening = (): void => {
      server.off('error', onError);
      resolve(server);
    };
    server.once('error', onError);
    server.once('listening', onListening);
    if (fdBacklog === undefined) server.listen(options as net.ListenOptions);
    else server.listen(options as net.ListenOptions, fdBacklog);
  });
}

function bindSocket(socket: dgram.Socket, options: dgram.BindOptions): Promise<dgram.Socket> {
  return new Promise((resolve, reject) => {
    const onError = (error: Error): void => {
      socket.off('listening', onListening);
      reject(error);
    };
    const onListening = (): void => {
      socket.off('error', onError);
      resolve(socket);
    };
    socket.once('error', onError);
    socket.once('listening', onListening);
    socket.bind(options);
  });
}

function closeQuietly(fd: number): void {
  try {
    nativeSockets.closeFd(fd);
  } catch {
    // Node may already own and have closed it.
  }
}

function socketError(action: string, host: string, port: number, netns: string | undefined, cause: unknown): CaptureError {
  const where = netns === undefined ? '' : ` in network namespace ${netns}`;
  const reason = cause instanceof Error ? cause.message : String(cause);
  const code = (cause as { code?: unknown } | null)?.code;
  const hint = code === 'ENOENT' ? ' (the namespace is gone: was the pod deleted?)'
    : code === 'EADDRINUSE' ? ' (another process holds the port without SO_REUSEPORT)'
    : code === 'EPERM' ? ' (the agent needs CAP_NET_ADMIN and CAP_SYS_ADMIN)'
    : '';
  return new CaptureError('SOCKET_FAILED', `cannot ${action} ${host}:${port}${where}: ${reason}${hint}`, { cause });
}
