/**
 * Test helpers for the HBONE tunnel on ambit's own HTTP/2 layer (shared/hbone/h2/): a server on 127.0.0.1:0,
 * a dialed client connection that trusts it, and a helper that opens a CONNECT stream as a Duplex-free pair of
 * callbacks. Real TLS, real sockets. Used by tests only.
 */
import net from 'node:net';
import { dialH2, openConnectStream } from '../../shared/hbone/h2/tunnel-client.ts';
import { H2TunnelServer, type H2TunnelServerOptions } from '../../shared/hbone/h2/tunnel-server.ts';
import type { H2Connection } from '../../shared/hbone/h2/connection.ts';
import type { H2Stream, H2StreamHandler } from '../../shared/hbone/h2/stream.ts';
import type { HostPort } from '../../shared/hbone/types.ts';
import { makeMesh, SERVER_ID, TRUST_DOMAIN, type Mesh } from './hbone.ts';

export interface H2Pair {
  mesh: Mesh;
  server: H2TunnelServer;
  serverAddress: HostPort;
  dial(): Promise<H2Connection>;
  close(): Promise<void>;
}

export async function startH2Pair(options: { mesh?: Mesh; server?: Partial<H2TunnelServerOptions> } = {}): Promise<H2Pair> {
  const mesh = options.mesh ?? (await makeMesh());
  const server = new H2TunnelServer({
    certificateFor: () => mesh.serverCert,
    rootsPem: [mesh.ca.rootCertPem],
    trustDomain: TRUST_DOMAIN,
    ...options.server,
  });
  const serverAddress = await server.listen({ host: '127.0.0.1', port: 0 });
  const dialed: H2Connection[] = [];
  return {
    mesh,
    server,
    serverAddress,
    dial: async () => {
      const connection = await dialH2({
        proxy: serverAddress,
        certificate: mesh.clientCert,
        trustDomain: TRUST_DOMAIN,
        expectedIdentities: [SERVER_ID.uri],
        connect: (target) => net.connect({ host: target.host, port: target.port }),
      });
      dialed.push(connection);
      return connection;
    },
    close: async () => {
      for (const connection of dialed) connection.destroy();
      await server.shutdown(0);
    },
  };
}

/** Collects what a stream delivers; `done` resolves when it closes. */
export class StreamCollector implements H2StreamHandler {
  readonly chunks: Buffer[] = [];
  bytes = 0;
  ended = false;
  readonly done: Promise<H2Stream>;
  #resolve!: (stream: H2Stream) => void;
  onChunk: ((chunk: Buffer) => void) | undefined;

  constructor() {
    this.done = new Promise((resolve) => (this.#resolve = resolve));
  }

  onData(_stream: H2Stream, chunk: Buffer): void {
    this.bytes += chunk.length;
    if (this.onChunk) this.onChunk(chunk);
    else this.chunks.push(chunk);
  }

  onEnd(): void {
    this.ended = true;
  }

  onDrain(): void {}

  onClose(stream: H2Stream): void {
    this.#resolve(stream);
  }

  get data(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

/** Opens a CONNECT to `destination` and attaches a fresh collector. */
export async function openCollected(connection: H2Connection, proxy: HostPort, destination: HostPort): Promise<{ stream: H2Stream; collector: StreamCollector }> {
  const stream = await openConnectStream(connection, { proxy, destination });
  const collector = new StreamCollector();
  stream.setHandler(collector);
  return { stream, collector };
}
