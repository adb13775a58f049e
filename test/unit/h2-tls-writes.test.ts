/**
 * The own HTTP/2 layer's writes on a TLS socket (HBONE): when the socket is idle, a tick's frames are copied into
 * one send buffer that every connection of the thread reuses (shared/hbone/h2/connection.ts). The buffer may be
 * reused only because TLS has encrypted it before `write` returns, which holds only while nothing is queued on the
 * socket; these tests make the TLS socket back up (the peer stops reading) so that writes queue, from several
 * streams and from two connections at once, and check that every byte arrives as it was sent.
 */
import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import tls from 'node:tls';
import { H2Connection } from '../../shared/hbone/h2/connection.ts';
import type { H2Stream, H2StreamHandler } from '../../shared/hbone/h2/stream.ts';
import { connectRequestHeaders, dialH2 } from '../../shared/hbone/h2/tunnel-client.ts';
import { serverTlsOptions } from '../../shared/hbone/tls.ts';
import { makeMesh, SERVER_ID, TRUST_DOMAIN, waitFor } from '../helpers/hbone.ts';

/** Hashes what a server stream receives; `done` resolves with the digest once the stream ends. */
class HashingHandler implements H2StreamHandler {
  readonly #hash = createHash('sha256');
  bytes = 0;
  readonly done: Promise<string>;
  #resolve!: (digest: string) => void;

  constructor() {
    this.done = new Promise((resolve) => (this.#resolve = resolve));
  }

  onData(_stream: H2Stream, chunk: Buffer): void {
    this.bytes += chunk.length;
    this.#hash.update(chunk);
  }

  onEnd(stream: H2Stream): void {
    this.#resolve(this.#hash.digest('hex'));
    stream.end();
  }

  onDrain(): void {}

  onClose(stream: H2Stream): void {
    if (stream.rstCode !== undefined) this.#resolve(`reset ${stream.rstCode}`);
  }
}

/** Client stream handler: only forwards drain (the client sends, the server answers nothing but END_STREAM). */
class Writer implements H2StreamHandler {
  onDrained: (() => void) | undefined;
  onData(): void {}
  onEnd(): void {}
  onDrain(): void {
    this.onDrained?.();
  }
  onClose(): void {
    this.onDrained?.();
  }
}

const MIB = 1024 * 1024;

interface TlsServer {
  port: number;
  /** The server side's TLS sockets, in accept order. */
  sockets: tls.TLSSocket[];
  /** Server stream handlers by stream id, per connection in accept order. */
  handlers: Array<Map<number, HashingHandler>>;
  close(): void;
}

async function startServer(mesh: Awaited<ReturnType<typeof makeMesh>>): Promise<TlsServer> {
  const sockets: tls.TLSSocket[] = [];
  const handlers: Array<Map<number, HashingHandler>> = [];
  const connections: H2Connection[] = [];
  const server = tls.createServer({ ...serverTlsOptions(mesh.serverCert, [mesh.ca.rootCertPem], 5000), }, (socket) => {
    socket.on('error', () => {});
    sockets.push(socket);
    const byStream = new Map<number, HashingHandler>();
    handlers.push(byStream);
    // Windows far above what the tests send: the peer is held back by its TLS socket backing up, not by credit.
    const connection = new H2Connection(socket, { role: 'server', streamWindowBytes: 64 * MIB, connectionWindowBytes: 256 * MIB });
    connections.push(connection);
    connection.on('stream', (stream: H2Stream) => {
      const handler = new HashingHandler();
      byStream.set(stream.id, handler);
      stream.respond(200);
      stream.setHandler(handler);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    sockets,
    handlers,
    close: () => {
      for (const connection of connections) connection.destroy();
      server.close();
    },
  };
}

/** Writes `blocks` distinct 64 KiB blocks on `stream`, waiting for drain when told to; returns the SHA-256. */
async function writeBlocks(stream: H2Stream, writer: Writer, blocks: number, seed: number): Promise<string> {
  const hash = createHash('sha256');
  const base = randomBytes(64 * 1024);
  for (let index = 0; index < blocks; index++) {
    const block = Buffer.from(base);
    block.writeUInt32BE(seed, 0);
    block.writeUInt32BE(index, 4);
    hash.update(block);
    if (stream.closed) return `closed after ${index} blocks`;
    if (!stream.write(block)) await new Promise<void>((resolve) => (writer.onDrained = resolve));
    writer.onDrained = undefined;
  }
  stream.end();
  return hash.digest('hex');
}

test('streams on two TLS connections written while the peer does not read arrive intact once it reads (shared send buffer)', async (t) => {
  t.timeout(120_000);
  const mesh = await makeMesh();
  const server = await startServer(mesh);
  t.teardown(() => server.close());
  const dial = () =>
    dialH2({
      proxy: { host: '127.0.0.1', port: server.port },
      certificate: mesh.clientCert,
      trustDomain: TRUST_DOMAIN,
      expectedIdentities: [SERVER_ID.uri],
      connect: (target) => net.connect({ host: target.host, port: target.port }),
    });
  const clients = [await dial(), await dial()];
  t.teardown(() => {
    for (const client of clients) client.destroy();
  });
  t.true(await waitFor(() => server.sockets.length === 2));
  // The server stops reading: the kernel's buffers fill, the clients' TLS writes stay in flight, and what the
  // streams write meanwhile gathers behind them.
  for (const socket of server.sockets) socket.pause();

  const streamsPerConnection = 4;
  const blocksPerStream = 192; // 12 MiB per stream, 96 MiB in all: far more than loopback's socket buffers hold.
  const sent: Array<Promise<string>> = [];
  const ids: number[][] = [];
  for (const [connectionIndex, client] of clients.entries()) {
    ids.push([]);
    for (let index = 0; index < streamsPerConnection; index++) {
      const writer = new Writer();
      const stream = client.request(connectRequestHeaders({ destination: { host: '10.0.0.1', port: 8080 } }), writer);
      ids[connectionIndex]!.push(stream.id);
      sent.push(writeBlocks(stream, writer, blocksPerStream, connectionIndex * 100 + index));
    }
  }
  // Backed up for real: both clients hold data they could not hand to the kernel.
  t.true(await waitFor(() => clients.every((client) => client.unsentBytes > 0), 20_000), 'the TLS sockets never backed up');
  for (const socket of server.sockets) socket.resume();

  const expected = await Promise.all(sent);
  // A connection torn down by what it received (bytes overwritten before TLS took them parse as garbage) shows
  // as a closed stream here, or as a digest that does not match.
  t.true(clients.every((client) => !client.closed), `a connection was closed: ${clients.map((client) => client.error?.message).join('; ')}`);
  const received: string[] = [];
  for (const [connectionIndex, streamIds] of ids.entries()) {
    for (const id of streamIds) {
      const handlers = server.handlers[connectionIndex]!;
      received.push((await waitFor(() => handlers.has(id), 20_000)) ? await handlers.get(id)!.done : `stream ${id} never reached the server`);
    }
  }
  t.deepEqual(received, expected);
});
