/**
 * DNS over the pod's 15053 sockets: UDP datagrams (one query, one reply to the sender) and TCP connections (each
 * message framed by a two-byte length, RFC 1035 §4.2.2; several queries per connection, answered as they complete,
 * RFC 7766), handed to the DnsServer with the pod they came from.
 *
 * Owns: framing, per-connection limits (idle timeout, queries in flight), sending replies; never throws on input.
 * Must not know about: what an answer is (server.ts), opening sockets in the pod (inpod/pod-listeners.ts does).
 */
import type dgram from 'node:dgram';
import type net from 'node:net';
import type { CapturedDnsHandler, CapturedPod } from '../inpod/pod-listeners.ts';
import type { DnsSource } from './metrics.ts';
import type { DnsClient, DnsServer } from './server.ts';

/** A TCP client that sends nothing for this long is closed (ztunnel's DEFAULT_TCP_REQUEST_TIMEOUT is 5 s). */
export const TCP_IDLE_TIMEOUT_MS = 5_000;
/** Queries answered at once on one TCP connection; more are read only when one finishes (backpressure). */
export const TCP_MAX_IN_FLIGHT = 32;

/** Serves every datagram arriving on `socket` (bound to 15053 in the pod's namespace). */
export function serveUdp(socket: dgram.Socket, server: DnsServer, client: DnsClient): void {
  socket.on('message', (message: Buffer, from: dgram.RemoteInfo) => {
    const reply = server.answer(message, 'udp', client);
    if (reply === undefined) return;
    // Send errors (a client gone) arrive as the socket's 'error' event, ignored below.
    if (reply instanceof Promise) void reply.then((forwarded) => socket.send(forwarded, from.port, from.address));
    else socket.send(reply, from.port, from.address);
  });
  // A send to a client that went away (ICMP unreachable) surfaces here; the socket keeps serving.
  socket.on('error', ignoreError);
}

/** Serves one accepted TCP connection until the client closes it, goes idle, or breaks the framing. */
export function serveTcp(socket: net.Socket, server: DnsServer, client: DnsClient): void {
  let pending: Buffer = Buffer.alloc(0);
  let inFlight = 0;
  let ended = false;
  socket.setTimeout(TCP_IDLE_TIMEOUT_MS, () => socket.destroy());
  socket.on('error', ignoreError);
  socket.on('end', () => {
    ended = true;
    if (inFlight === 0) socket.end();
  });
  socket.on('data', (chunk: Buffer) => {
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
    while (pending.length >= 2) {
      const length = pending.readUInt16BE(0);
      if (length === 0) {
        // A zero-length message is no DNS message; the stream cannot be trusted past it.
        socket.destroy();
        return;
      }
      if (pending.length < 2 + length) break;
      const message = pending.subarray(2, 2 + length);
      pending = pending.subarray(2 + length);
      inFlight++;
      if (inFlight >= TCP_MAX_IN_FLIGHT) socket.pause();
      void Promise.resolve(server.answer(message, 'tcp', client)).then((reply) => {
        inFlight--;
        if (socket.destroyed) return;
        if (reply !== undefined) {
          const framed = Buffer.allocUnsafe(2 + reply.length);
          framed.writeUInt16BE(reply.length, 0);
          reply.copy(framed, 2);
          socket.write(framed);
        }
        if (ended && inFlight === 0) socket.end();
        else if (socket.isPaused() && inFlight < TCP_MAX_IN_FLIGHT) socket.resume();
      });
    }
  });
}

function ignoreError(): void {
  // a client that vanished is not the agent's problem; it costs that client its answer only.
}

/**
 * The handler the capture layer hands each pod's 15053 sockets to: the pod's namespace and sockets become its
 * DnsClient, with its canonical names from `sourceOf` (for the metrics' labels) when given.
 */
export function podDnsHandler(server: DnsServer, sourceOf?: (pod: CapturedPod) => DnsSource | undefined): CapturedDnsHandler {
  const clients = new WeakMap<CapturedPod, DnsClient>();
  const clientOf = (pod: CapturedPod): DnsClient => {
    let client = clients.get(pod);
    if (client === undefined) {
      const source = sourceOf?.(pod);
      client = { namespace: pod.namespace, sockets: pod.sockets, metricsCache: new Map(), ...(source ? { source } : {}) };
      clients.set(pod, client);
    }
    return client;
  };
  return {
    udpBound: (socket, pod) => serveUdp(socket, server, clientOf(pod)),
    tcpAccepted: (socket, pod) => serveTcp(socket, server, clientOf(pod)),
  };
}
