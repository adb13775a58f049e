/**
 * Forwarding a query the agent does not answer itself to an upstream resolver, byte for byte: the client gets the
 * upstream's reply unchanged (its answers, TTLs, rcode, its TC bit), never a re-encoded copy.
 *
 * The sockets come from the client pod's socket factory (ztunnel's forwarder does the same with its in-pod socket
 * factory): the query leaves from inside the pod's network namespace, marked 0x539 so the pod's own rules do not
 * send it back to the agent, and takes the pod's network path to the resolver. UDP queries go out over UDP from a
 * fresh socket per query (a random source port, connected so the kernel drops datagrams from anyone else and an
 * ICMP refusal ends the wait at once); TCP queries over TCP, so a client retrying after TC gets the whole answer.
 * Upstreams are tried in order, each for at most UPSTREAM_TIMEOUT_MS.
 *
 * Owns: the exchange with the upstream and its timeouts; checking that a reply answers our query (id, QR bit).
 * Must not know about: Service names, pods, the mesh state; which upstreams (upstream.ts decides).
 */
import type dgram from 'node:dgram';
import type net from 'node:net';
import type { SocketFactory } from '../inpod/socket-factory.ts';
import { DnsError } from './errors.ts';
import { HEADER_LENGTH } from './messages.ts';
import type { Upstream } from './upstream.ts';

/**
 * Per upstream. glibc's stub waits 5 s for a server before its next attempt; answering SERVFAIL (or trying the next
 * upstream) within 2 s lets the client's own retry logic work instead of both timing out together.
 */
export const UPSTREAM_TIMEOUT_MS = 2_000;

export type Transport = 'udp' | 'tcp';

export interface ForwarderOptions {
  upstreams: readonly Upstream[];
  timeoutMs?: number;
}

export class Forwarder {
  readonly upstreams: readonly Upstream[];
  readonly #timeoutMs: number;

  constructor(options: ForwarderOptions) {
    this.upstreams = options.upstreams;
    this.#timeoutMs = options.timeoutMs ?? UPSTREAM_TIMEOUT_MS;
  }

  /** The upstream's reply to `query`; rejects with DnsError (NO_UPSTREAM, UPSTREAM_TIMEOUT, UPSTREAM_FAILED). */
  async forward(query: Buffer, transport: Transport, sockets: SocketFactory): Promise<Buffer> {
    if (this.upstreams.length === 0) throw new DnsError('NO_UPSTREAM', 'no upstream DNS resolver: set AMBIT_DNS_UPSTREAM or a nameserver in the agent\'s resolv.conf');
    let failure: unknown;
    for (const upstream of this.upstreams) {
      try {
        return transport === 'udp'
          ? await exchangeUdp(query, upstream, sockets, this.#timeoutMs)
          : await exchangeTcp(query, upstream, sockets, this.#timeoutMs);
      } catch (error) {
        failure = error;
      }
    }
    throw failure instanceof DnsError ? failure : new DnsError('UPSTREAM_FAILED', `DNS upstream failed: ${String(failure)}`, { cause: failure });
  }
}

function where(upstream: Upstream): string {
  return upstream.family === 6 ? `[${upstream.address}]:${upstream.port}` : `${upstream.address}:${upstream.port}`;
}

function answersQuery(reply: Buffer, query: Buffer): boolean {
  return reply.length >= HEADER_LENGTH && reply[0] === query[0] && reply[1] === query[1] && (reply[2]! & 0x80) !== 0;
}

async function exchangeUdp(query: Buffer, upstream: Upstream, sockets: SocketFactory, timeoutMs: number): Promise<Buffer> {
  let socket: dgram.Socket;
  try {
    socket = await sockets.bindUdp({ host: upstream.family === 6 ? '::' : '0.0.0.0', port: 0 });
  } catch (error) {
    throw new DnsError('UPSTREAM_FAILED', `cannot open a UDP socket to reach DNS upstream ${where(upstream)}: ${(error as Error).message}`, { cause: error });
  }
  return new Promise<Buffer>((resolve, reject) => {
    const timer = setTimeout(() => finish(new DnsError('UPSTREAM_TIMEOUT', `DNS upstream ${where(upstream)} did not answer over UDP within ${timeoutMs} ms`)), timeoutMs);
    let done = false;
    function finish(error: Error | undefined, reply?: Buffer): void {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.removeAllListeners('message');
      socket.on('error', ignore);
      socket.close();
      if (error) reject(error);
      else resolve(reply!);
    }
    socket.on('message', (reply: Buffer) => {
      // Anything that is not the answer to this query (a late answer to another id, garbage) is ignored.
      if (answersQuery(reply, query)) finish(undefined, reply);
    });
    socket.once('error', (error: Error) => finish(new DnsError('UPSTREAM_FAILED', `DNS upstream ${where(upstream)} over UDP: ${error.message}`, { cause: error })));
    const failed = (error: Error | null | undefined): void => {
      if (error) finish(new DnsError('UPSTREAM_FAILED', `DNS upstream ${where(upstream)} over UDP: ${error.message}`, { cause: error }));
    };
    // Node passes a failed connect to its callback (typed without the argument).
    const connected = (error?: Error): void => {
      if (error) failed(error);
      else socket.send(query, failed);
    };
    socket.connect(upstream.port, upstream.address, connected as () => void);
  });
}

async function exchangeTcp(query: Buffer, upstream: Upstream, sockets: SocketFactory, timeoutMs: number): Promise<Buffer> {
  const socket: net.Socket = sockets.connect({ host: upstream.address, port: upstream.port });
  return new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let received = 0;
    const timer = setTimeout(() => finish(new DnsError('UPSTREAM_TIMEOUT', `DNS upstream ${where(upstream)} did not answer over TCP within ${timeoutMs} ms`)), timeoutMs);
    let done = false;
    function finish(error: Error | undefined, reply?: Buffer): void {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.removeAllListeners('data');
      socket.on('error', ignore);
      socket.destroy();
      if (error) reject(error);
      else resolve(reply!);
    }
    socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      received += chunk.length;
      if (received < 2) return;
      const all = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
      const length = all.readUInt16BE(0);
      if (received < 2 + length) return;
      const reply = all.subarray(2, 2 + length);
      if (answersQuery(reply, query)) finish(undefined, reply);
      else finish(new DnsError('UPSTREAM_BAD_REPLY', `DNS upstream ${where(upstream)} sent a TCP reply that does not answer the query`));
    });
    socket.on('end', () => finish(new DnsError('UPSTREAM_FAILED', `DNS upstream ${where(upstream)} closed the TCP connection without an answer`)));
    socket.on('error', (error: Error) => finish(new DnsError('UPSTREAM_FAILED', `DNS upstream ${where(upstream)} over TCP: ${error.message}`, { cause: error })));
    socket.on('connect', () => {
      const framed = Buffer.allocUnsafe(2 + query.length);
      framed.writeUInt16BE(query.length, 0);
      query.copy(framed, 2);
      socket.write(framed);
    });
  });
}

function ignore(): void {
  // errors after we finished (a late ICMP, a reset while closing) change nothing.
}
