/**
 * Test helpers for the HBONE library: a mesh CA with workload certificates, echo and sink targets, a TCP proxy
 * that can be frozen, and a client/server pair wired over loopback. Used by tests and bench scratch only.
 */
import { createHash } from 'node:crypto';
import net from 'node:net';
import { CertificateAuthority, spiffeId, type SpiffeId, type WorkloadCertificate } from '../../shared/identity/index.ts';
import { HboneClientPool, HboneServer } from '../../shared/hbone/index.ts';
import type { HboneClientOptions, HboneServerOptions, HboneTarget, HostPort } from '../../shared/hbone/index.ts';

export const TRUST_DOMAIN = 'cluster.local';
export const CLIENT_ID = spiffeId(TRUST_DOMAIN, 'shop', 'client');
export const SERVER_ID = spiffeId(TRUST_DOMAIN, 'shop', 'server');

export interface Mesh {
  ca: CertificateAuthority;
  clientCert: WorkloadCertificate;
  serverCert: WorkloadCertificate;
}

export async function makeMesh(ca?: CertificateAuthority): Promise<Mesh> {
  const authority = ca ?? (await CertificateAuthority.createRoot({ trustDomain: TRUST_DOMAIN }));
  const [clientCert, serverCert] = await Promise.all([
    authority.issueWorkloadCertificate(CLIENT_ID),
    authority.issueWorkloadCertificate(SERVER_ID),
  ]);
  return { ca: authority, clientCert, serverCert };
}

/** A certificate that has already expired (1 ms lifetime, then waits past X.509's one-second resolution). */
export async function expiredCertificate(ca: CertificateAuthority, identity: SpiffeId): Promise<WorkloadCertificate> {
  const certificate = await ca.issueWorkloadCertificate(identity, 1);
  await new Promise((resolve) => setTimeout(resolve, 1100));
  return certificate;
}

export interface TcpTarget {
  address: HostPort;
  /** Sockets the target accepted, in order. */
  accepted: net.Socket[];
  close(): Promise<void>;
}

/** A TCP server running `onSocket` for each connection on 127.0.0.1, port 0. */
export async function startTarget(onSocket: (socket: net.Socket) => void): Promise<TcpTarget> {
  const accepted: net.Socket[] = [];
  const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
    accepted.push(socket);
    socket.on('error', () => {});
    onSocket(socket);
  });
  // A backlog over Node's 511: the 1,000-stream pool test connects 1,000 targets at once from the same process, and on
  // a loaded machine the accept queue overflowed (dropped SYNs, a target connect that outlived its deadline: 503).
  await new Promise<void>((resolve) => server.listen({ port: 0, host: '127.0.0.1', backlog: 2048 }, resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    address: { host: '127.0.0.1', port },
    accepted,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of accepted) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

/** Echoes every byte back and half-closes when the client does. */
export function startEcho(): Promise<TcpTarget> {
  return startTarget((socket) => socket.pipe(socket));
}

/** A loopback port with nothing listening (bound then closed). */
export async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

export interface Pair {
  mesh: Mesh;
  server: HboneServer;
  serverAddress: HostPort;
  pool: HboneClientPool;
  target(destination: HostPort, extra?: Partial<HboneTarget>): HboneTarget;
  close(): Promise<void>;
}

/** An HBONE server on 127.0.0.1:0 and a client pool that trusts it. */
export async function startPair(options: {
  mesh?: Mesh;
  server?: Partial<HboneServerOptions>;
  client?: Partial<HboneClientOptions>;
} = {}): Promise<Pair> {
  const mesh = options.mesh ?? (await makeMesh());
  const server = new HboneServer({
    certificateFor: () => mesh.serverCert,
    rootsPem: [mesh.ca.rootCertPem],
    trustDomain: TRUST_DOMAIN,
    ...options.server,
  });
  const serverAddress = await server.listen({ host: '127.0.0.1', port: 0 });
  const pool = new HboneClientPool({
    certificateFor: () => mesh.clientCert,
    trustDomain: TRUST_DOMAIN,
    ...options.client,
  });
  return {
    mesh,
    server,
    serverAddress,
    pool,
    target: (destination, extra = {}) => ({
      proxy: serverAddress,
      destination,
      sourceIdentity: CLIENT_ID,
      expectedIdentities: [SERVER_ID.uri],
      ...extra,
    }),
    close: async () => {
      pool.destroy();
      await server.shutdown(0);
    },
  };
}

/** Reads a stream to its end; resolves with everything it sent. */
export function readAll(stream: NodeJS.ReadableStream): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.on('end', () => resolve(Buffer.concat(chunks)));
    stream.on('error', reject);
  });
}

export function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** A listening TCP socket that a client can use as a downstream "application" connection into `tunnel`. */
export async function socketPair(): Promise<{ app: net.Socket; downstream: net.Socket; close(): void }> {
  const server = net.createServer({ allowHalfOpen: true, noDelay: true });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  const downstreamPromise = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
  const app = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true, noDelay: true });
  const downstream = await downstreamPromise;
  await new Promise<void>((resolve) => (app.connecting ? app.once('connect', () => resolve()) : resolve()));
  server.close();
  app.on('error', () => {});
  downstream.on('error', () => {});
  return {
    app,
    downstream,
    close: () => {
      app.destroy();
      downstream.destroy();
    },
  };
}

/** A TCP relay in front of `upstream` that can be frozen: while frozen it forwards nothing in either direction. */
export async function startFreezableProxy(upstream: HostPort): Promise<{ address: HostPort; freeze(): void; connections: number; close(): Promise<void> }> {
  const pairs: Array<[net.Socket, net.Socket]> = [];
  const server = net.createServer({ allowHalfOpen: true }, (client) => {
    const upstreamSocket = net.connect({ host: upstream.host, port: upstream.port, allowHalfOpen: true });
    client.on('error', () => {});
    upstreamSocket.on('error', () => {});
    client.pipe(upstreamSocket);
    upstreamSocket.pipe(client);
    pairs.push([client, upstreamSocket]);
    proxy.connections++;
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  const proxy = {
    address: { host: '127.0.0.1', port },
    connections: 0,
    freeze(): void {
      for (const [client, upstreamSocket] of pairs) {
        client.unpipe(upstreamSocket);
        upstreamSocket.unpipe(client);
        client.pause();
        upstreamSocket.pause();
      }
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const [client, upstreamSocket] of pairs) {
          client.destroy();
          upstreamSocket.destroy();
        }
        server.close(() => resolve());
      }),
  };
  return proxy;
}

/** Polls `condition` every 10 ms until it holds or `timeoutMs` passes; resolves with whether it held. */
export async function waitFor(condition: () => boolean, timeoutMs = 5000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return true;
}

/**
 * A raw HTTP/2 client session over mutual TLS (not our pool), to send what our client never would.
 * Resolves once the server's SETTINGS arrived ('accepted') or the connection closed first ('closed').
 */
export async function rawSession(
  address: HostPort,
  certificate: WorkloadCertificate | undefined,
  rootsPem: string[],
): Promise<{ session: import('node:http2').ClientHttp2Session; outcome: 'accepted' | 'closed' }> {
  const http2 = await import('node:http2');
  const session = http2.connect(`https://127.0.0.1:${address.port}`, {
    ...(certificate ? { cert: certificate.certPem, key: certificate.keyPem } : {}),
    ca: rootsPem,
    minVersion: 'TLSv1.3',
    ALPNProtocols: ['h2'],
    checkServerIdentity: () => undefined,
  });
  session.on('error', () => {});
  const outcome = await new Promise<'accepted' | 'closed'>((resolve) => {
    session.once('remoteSettings', () => resolve('accepted'));
    session.once('close', () => resolve('closed'));
  });
  return { session, outcome };
}

/** Sends one request on a raw session and resolves with the response status. */
export function requestStatus(session: import('node:http2').ClientHttp2Session, headers: Record<string, string>): Promise<number> {
  return new Promise((resolve, reject) => {
    const stream = session.request(headers, { endStream: false });
    stream.on('error', reject);
    stream.once('response', (response) => {
      resolve(Number(response[':status']));
      stream.close();
    });
  });
}
