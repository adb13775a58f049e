/**
 * The own HTTP/2 layer reads its TLS socket into pooled buffers that the next reads reuse (shared/hbone/pooled-reads.ts,
 * SharedPooledReader). Whatever outlives the read it came in must therefore be a copy or hold the buffer: a header
 * block split over TLS records, DATA given to a handler that keeps its chunks, DATA that arrives before a handler
 * is attached. These tests send each over a real TLS connection, record by record, and check what arrives.
 */
import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import tls from 'node:tls';
import { H2Connection } from '../../shared/hbone/h2/connection.ts';
import { CLIENT_PREFACE, DEFAULT_WINDOW, FLAG_END_HEADERS, FLAG_END_STREAM, FRAME_CONTINUATION, FRAME_DATA, FRAME_HEADERS, FRAME_WINDOW_UPDATE, settingsFrame } from '../../shared/hbone/h2/frame.ts';
import { HpackEncoder } from '../../shared/hbone/h2/hpack.ts';
import type { H2Stream, H2StreamHandler } from '../../shared/hbone/h2/stream.ts';
import { sharedReadBuffers } from '../../shared/hbone/pooled-reads.ts';
import { connectTls, serverTlsOptions } from '../../shared/hbone/tls.ts';
import { frame, RawPeer } from '../helpers/h2-raw-peer.ts';
import { makeMesh, SERVER_ID, TRUST_DOMAIN, waitFor } from '../helpers/hbone.ts';

/** Keeps every chunk it is given as is (no copy), to be read only at the end. */
class KeepingHandler implements H2StreamHandler {
  readonly chunks: Buffer[] = [];
  ended = false;
  onData(_stream: H2Stream, chunk: Buffer): void {
    this.chunks.push(chunk);
  }
  onEnd(): void {
    this.ended = true;
  }
  onDrain(): void {}
  onClose(): void {}
}

interface TlsPeerPair {
  /** Our server-side connection on the accepted TLS socket. */
  connection: H2Connection;
  serverSocket: tls.TLSSocket;
  streams: H2Stream[];
  /** A hand-driven client on the other end (preface and SETTINGS already sent). */
  peer: RawPeer;
  close(): void;
}

async function tlsPeerPair(streamWindowBytes: number): Promise<TlsPeerPair> {
  const mesh = await makeMesh();
  const server = tls.createServer(serverTlsOptions(mesh.serverCert, [mesh.ca.rootCertPem], 5000));
  const accepted = new Promise<tls.TLSSocket>((resolve) => server.once('secureConnection', resolve));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  const client = connectTls(net.connect(port, '127.0.0.1'), { certificate: mesh.clientCert, trustDomain: TRUST_DOMAIN, expectedIdentities: [SERVER_ID.uri], proxy: { host: '127.0.0.1', port } });
  client.on('error', () => {});
  await new Promise<void>((resolve) => client.once('secureConnect', () => resolve()));
  const serverSocket = await accepted;
  serverSocket.on('error', () => {});
  server.close();
  const connection = new H2Connection(serverSocket, { role: 'server', streamWindowBytes, connectionWindowBytes: 16 * streamWindowBytes });
  const streams: H2Stream[] = [];
  connection.on('stream', (stream: H2Stream) => streams.push(stream));
  const peer = new RawPeer(client);
  peer.send(CLIENT_PREFACE, settingsFrame([]));
  return {
    connection,
    serverSocket,
    streams,
    peer,
    close: () => {
      connection.destroy();
      client.destroy();
      serverSocket.destroy();
    },
  };
}

/** Waits until the server's TLS socket has read `bytes` more than `before` (ciphertext, so at least what was sent). */
async function serverRead(pair: TlsPeerPair, before: number, bytes: number): Promise<boolean> {
  return waitFor(() => pair.serverSocket.bytesRead >= before + bytes);
}

test('a header block split over two TLS records decodes whole (its first fragment outlives the pooled read it came in)', async (t) => {
  const pair = await tlsPeerPair(256 * 1024);
  t.teardown(() => pair.close());
  const padding = randomBytes(1200).toString('hex');
  const block = new HpackEncoder().encode([':method', 'CONNECT', ':authority', '10.0.0.1:80', 'x-padding', padding]);
  const half = Math.floor(block.length / 2);
  // Each write is its own TLS record and, once the server has read it, its own pooled read: under 4 KiB, so the
  // second read goes into the buffer the first one was in.
  const before = pair.serverSocket.bytesRead;
  pair.peer.send(frame(FRAME_HEADERS, 0, 1, block.subarray(0, half)));
  t.true(await serverRead(pair, before, half), 'the server read the first fragment');
  pair.peer.send(frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 1, block.subarray(half)));
  t.true(await waitFor(() => pair.streams.length === 1 || pair.connection.closed), 'the request arrived or the connection failed');
  t.false(pair.connection.closed, `connection error: ${pair.connection.error?.message}`);
  t.is(pair.streams[0]?.header('x-padding'), padding);
});

test('DATA kept by a handler without onSharedData, and DATA that arrived before any handler, stay as sent while later reads reuse the buffers', async (t) => {
  const window = 64 * 1024;
  const pair = await tlsPeerPair(window);
  t.teardown(() => pair.close());
  const block = new HpackEncoder().encode([':method', 'CONNECT', ':authority', '10.0.0.1:80']);
  pair.peer.send(frame(FRAME_HEADERS, FLAG_END_HEADERS, 1, block));
  t.true(await waitFor(() => pair.streams.length === 1));
  const stream = pair.streams[0]!;
  stream.respond(200);
  // One stream window's worth arrives before a handler is attached (it waits on the stream, no credit given).
  const sent = createHash('sha256');
  const early = randomBytes(window);
  sent.update(early);
  for (let offset = 0; offset < window; offset += 8 * 1024) pair.peer.send(frame(FRAME_DATA, 0, 1, early.subarray(offset, offset + 8 * 1024)));
  t.true(await waitFor(() => stream.receiveWindow === 0), 'the whole window arrived before the handler');
  const handler = new KeepingHandler();
  stream.setHandler(handler);
  // Then 4 MiB more, as the server's credit allows (its WINDOW_UPDATEs, counted here), in frames under a record, so
  // the pooled buffers go round many times while the handler keeps what it was given.
  const later = randomBytes(4 * 1024 * 1024);
  sent.update(later);
  const credit = (streamId: number): number =>
    pair.peer.frames.filter((received) => received.type === FRAME_WINDOW_UPDATE && received.streamId === streamId).reduce((sum, received) => sum + received.payload.readUInt32BE(0), 0);
  let offset = 0;
  while (offset < later.length) {
    const seen = pair.peer.frames.length;
    const streamLeft = window + credit(1) - (window + offset);
    const connectionLeft = DEFAULT_WINDOW + credit(0) - (window + offset);
    const size = Math.min(streamLeft, connectionLeft, 16 * 1024 - 9, later.length - offset);
    if (size <= 0) {
      await pair.peer.waitFor(() => pair.peer.frames.length > seen);
      continue;
    }
    pair.peer.send(frame(FRAME_DATA, offset + size === later.length ? FLAG_END_STREAM : 0, 1, later.subarray(offset, offset + size)));
    offset += size;
  }
  t.true(await waitFor(() => handler.ended, 20_000), 'END_STREAM reached the handler');
  const received = createHash('sha256');
  for (const chunk of handler.chunks) received.update(chunk);
  t.is(received.digest('hex'), sent.digest('hex'));
  t.true(sharedReadBuffers().record + sharedReadBuffers().small > 0, 'the reads were pooled (buffers back in the pool)');
});
