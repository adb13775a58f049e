/**
 * The agent's side of the capture seam: every connection accepted on a captured pod's listeners arrives here
 * and goes to the outbound proxy, the inbound plaintext path or the pod's HBONE server.
 *
 * Owns: per-pod proxy state (the pod's HBONE client pool dialing from its namespace, its HBONE server), made
 * when the pod's first connection arrives and closed when the pod leaves.
 * Must not know about: rules, listeners' lifecycle, where workloads come from.
 */
import type net from 'node:net';
import { HboneClientPool, resetSocket, type HboneServer, type HboneClientOptions } from '../../shared/hbone/index.ts';
import type { CapturedPod, CapturedTrafficHandler, ListenerKind, OriginalDestination } from '../inpod/pod-listeners.ts';
import type { CertificateManager } from '../../shared/ca/certificate-manager.ts';
import type { MeshState } from '../../shared/mesh/mesh-state.ts';
import type { Workload } from '../../shared/mesh/workload.ts';
import type { InboundProxy } from './inbound.ts';
import type { OutboundContext, OutboundProxy } from './outbound.ts';
import { runReadTurn } from '../../shared/hbone/read-turn.ts';
import type { HostPort } from '../../shared/hbone/types.ts';

interface PodProxy {
  /** The mesh state's workload this proxy was last refreshed from (compared by identity on each connection). */
  fromState: Workload;
  /** What the proxy uses: `fromState`, with the pod's CNI-reported IPs when the state has none yet. */
  workload: Workload;
  /** The mesh state's version when `fromState` was looked up: unchanged state, no lookup per connection. */
  stateVersion: number;
  pool: HboneClientPool;
  hboneServer: HboneServer;
  /**
   * Hands an accepted outbound connection to the outbound proxy with this pod's context: made once per context (the
   * pod's workload, sockets and pool), not per connection.
   */
  handleOutbound?: ((socket: net.Socket, destination: HostPort) => void) & { context: OutboundContext };
}

export interface TrafficHandlerOptions {
  state: MeshState;
  outbound: OutboundProxy;
  inbound: InboundProxy;
  certificates: CertificateManager;
  trustDomain: string;
  preserveSourceIp: boolean;
  /** Extra HBONE client settings (windows, timeouts). */
  hbone?: Partial<HboneClientOptions>;
  onError?: (error: Error, pod: CapturedPod) => void;
}

export class TrafficHandler implements CapturedTrafficHandler {
  readonly #options: TrafficHandlerOptions;
  readonly #podProxies = new Map<string, PodProxy>();
  /** Plain TCP connections being proxied (outbound and inbound plaintext), so shutdown can let them finish. */
  readonly #openSockets = new Set<net.Socket>();
  readonly #forgetSocket = (socket: net.Socket): void => {
    this.#openSockets.delete(socket);
    if (this.#openSockets.size === 0) for (const resolve of this.#drained.splice(0)) resolve();
  };
  /** The 'close' listener of every proxied socket (`this` is the socket): no closure per connection. */
  readonly #onOpenSocketClose = ((forget: (socket: net.Socket) => void) =>
    function (this: net.Socket): void {
      forget(this);
    })(this.#forgetSocket);
  readonly #drained: Array<() => void> = [];
  /** HBONE servers of released pods still draining their tunnels. */
  readonly #draining = new Set<Promise<void>>();

  constructor(options: TrafficHandlerOptions) {
    this.#options = options;
  }

  accepted(kind: ListenerKind, socket: net.Socket, originalDst: OriginalDestination, pod: CapturedPod): void {
    const proxy = this.#proxyFor(pod);
    if (!proxy) {
      // The mesh state does not know this pod (yet): refuse rather than guess an identity.
      socket.resetAndDestroy();
      return;
    }
    const destination = { host: originalDst.address, port: originalDst.port };
    if (kind !== 'hbone') {
      this.#openSockets.add(socket);
      socket.on('close', this.#onOpenSocketClose);
    }
    switch (kind) {
      case 'outbound': {
        let handle = proxy.handleOutbound;
        const { context } = handle ?? {};
        if (handle === undefined || context!.source !== proxy.workload || context!.factory !== pod.sockets || context!.pool !== proxy.pool) {
          handle = proxy.handleOutbound = outboundHandler(this.#options.outbound, { source: proxy.workload, factory: pod.sockets, pool: proxy.pool });
        }
        // What the tunnel's set-up writes (the CONNECT) is flushed when this call returns, not on a tick of its own.
        runReadTurn(handle, socket, destination);
        return;
      }
      case 'inbound':
        this.#options.inbound.handlePlaintext(socket, destination, { pod: proxy.workload, factory: pod.sockets, preserveSourceIp: this.#options.preserveSourceIp });
        return;
      case 'hbone':
        proxy.hboneServer.handle(socket);
        return;
    }
  }

  /** Closes the pod's pool and drains its HBONE server (the pod is gone or no longer captured). */
  async forget(podUid: string, drainMs = 0): Promise<void> {
    const proxy = this.#podProxies.get(podUid);
    if (!proxy) return;
    this.#podProxies.delete(podUid);
    proxy.pool.close();
    const drain = proxy.hboneServer.shutdown(drainMs);
    this.#draining.add(drain);
    try {
      await drain;
    } finally {
      this.#draining.delete(drain);
    }
  }

  /**
   * Shutdown: lets open connections finish until `drainMs` (HBONE servers drain with GOAWAY; proxied TCP connections
   * run to their end), then cuts what is left. Exiting earlier would end in-flight connections with a clean FIN that
   * the application would take for a complete answer.
   */
  async close(drainMs: number): Promise<void> {
    const deadline = new Promise<void>((resolve) => setTimeout(resolve, drainMs).unref());
    const drained = this.#openSockets.size === 0 ? Promise.resolve() : new Promise<void>((resolve) => this.#drained.push(resolve));
    // Pods released just before (a shutdown releases every pod, which starts each one's drain) count too: their HBONE
    // tunnels must finish before the process may exit.
    await Promise.all([...[...this.#podProxies.keys()].map((uid) => this.forget(uid, drainMs)), ...this.#draining, Promise.race([drained, deadline])]);
    for (const socket of this.#openSockets) resetSocket(socket);
  }

  #proxyFor(pod: CapturedPod): PodProxy | undefined {
    const existing = this.#podProxies.get(pod.uid);
    const { state } = this.#options;
    if (existing && existing.stateVersion === state.version) return existing;
    const workload = state.workloadByName(pod.namespace, pod.name);
    if (existing) existing.stateVersion = state.version;
    if (existing && (!workload || existing.fromState === workload)) return existing;
    if (!workload) return existing;
    // The workload changed (e.g. its IP arrived): keep the pool and server, refresh what they see.
    const podWorkload: Workload = workload.addresses.length > 0 ? workload : { ...workload, addresses: [...pod.ips] };
    if (existing) {
      existing.fromState = workload;
      existing.workload = podWorkload;
      return existing;
    }
    const proxy: PodProxy = {
      fromState: workload,
      stateVersion: state.version,
      workload: podWorkload,
      pool: new HboneClientPool({
        ...this.#options.hbone,
        certificateFor: (identity) => this.#options.certificates.certificateFor(identity),
        trustDomain: this.#options.trustDomain,
        connect: (target) => {
          const socket = pod.sockets.connect({ host: target.host, port: target.port });
          // A pooled HBONE connection is not half-open: the peer's FIN (an agent going away) must close it,
          // or the pool would keep opening streams on a dead connection.
          socket.allowHalfOpen = false;
          return socket;
        },
      }),
      hboneServer: undefined as unknown as HboneServer,
    };
    // The server reads `proxy.workload` through a getter-like context so later IP updates are seen.
    const context = {
      get pod() {
        return proxy.workload;
      },
      factory: pod.sockets,
      preserveSourceIp: this.#options.preserveSourceIp,
    };
    proxy.hboneServer = this.#options.inbound.hboneServerFor(context);
    this.#podProxies.set(pod.uid, proxy);
    return proxy;
  }
}

function outboundHandler(outbound: OutboundProxy, context: OutboundContext): NonNullable<PodProxy['handleOutbound']> {
  return Object.assign((socket: net.Socket, destination: HostPort): void => outbound.handle(socket, destination, context), { context });
}
