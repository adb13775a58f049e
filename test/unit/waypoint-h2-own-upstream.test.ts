/**
 * The waypoint's HTTP/2 requests to endpoints on the own HTTP/2 layer (waypoint/h2-own-upstream.ts) and what it
 * added to the layer (shared/hbone/h2/): trailers both ways (queued behind data that waits for window), a response
 * head's END_STREAM, and the stream as the try drives it, against a real node:http2 endpoint and against a raw
 * hostile one (bad trailers, a peer gone mid-answer).
 */
import { once } from 'node:events';
import http2 from 'node:http2';
import net from 'node:net';
import test from 'ava';
import { H2Connection } from '../../shared/hbone/h2/connection.ts';
import { H2_CANCEL, H2_ENHANCE_YOUR_CALM, H2_FLOW_CONTROL_ERROR, H2_PROTOCOL_ERROR } from '../../shared/hbone/h2/errors.ts';
import { FLAG_END_HEADERS, FLAG_END_STREAM, FRAME_DATA, FRAME_HEADERS } from '../../shared/hbone/h2/frame.ts';
import { type HeaderList, writeInteger } from '../../shared/hbone/h2/hpack.ts';
import type { H2Stream, H2StreamHandler } from '../../shared/hbone/h2/stream.ts';
import { headerListOf, OwnUpstreamStream } from '../../waypoint/h2-own-upstream.ts';
import { clientUnderTest, connectionPair, frame, headersFrame } from '../helpers/h2-raw-peer.ts';

/** Records what a stream's handler heard, in order. */
class Recorder implements H2StreamHandler {
  readonly events: string[] = [];
  readonly chunks: Buffer[] = [];
  trailers: HeaderList | undefined;
  readonly closed: Promise<H2Stream>;
  #closed!: (stream: H2Stream) => void;
  constructor() {
    this.closed = new Promise((resolve) => (this.#closed = resolve));
  }
  onResponse(_stream: H2Stream, _headers: HeaderList, endStream: boolean): void {
    this.events.push(`response${endStream ? '+end' : ''}`);
  }
  onData(_stream: H2Stream, chunk: Buffer): void {
    if (this.events.at(-1) !== 'data') this.events.push('data');
    this.chunks.push(chunk);
  }
  onTrailers(_stream: H2Stream, trailers: HeaderList): void {
    this.events.push('trailers');
    this.trailers = trailers;
  }
  onEnd(): void {
    this.events.push('end');
  }
  onDrain(): void {}
  onClose(stream: H2Stream): void {
    this.events.push('close');
    this.#closed(stream);
  }
}

const REQUEST = [':method', 'POST', ':scheme', 'http', ':authority', 'backend:50051', ':path', '/pkg.Svc/Call', 'content-type', 'application/grpc', 'te', 'trailers'];

test('own layer: trailers both ways, the request trailers queued behind data that waits for window; a response head with END_STREAM says so', async (t) => {
  // The server's 16 KiB stream window holds the client's 200 KiB body back: the trailers must wait behind it.
  const pair = await connectionPair({}, { streamWindowBytes: 16 * 1024 });
  t.teardown(pair.close);
  const client = new Recorder();
  const nextServerStream = pair.nextServerStream();
  const request = pair.client.request(REQUEST, client);
  const body = Buffer.alloc(200 * 1024, 0x61);
  request.write(body);
  request.endWithTrailers(['x-request-checksum', 'abc']);
  t.true(request.pendingBytes > 0, 'part of the body waits for window');
  const serverStream = await nextServerStream;
  const server = new Recorder();
  serverStream.setHandler(server);
  await new Promise<void>((resolve) => {
    const check = setInterval(() => {
      if (server.events.includes('end')) {
        clearInterval(check);
        resolve();
      }
    }, 5);
  });
  t.deepEqual(server.events, ['data', 'trailers', 'end']);
  t.is(Buffer.concat(server.chunks).length, body.length, 'the whole body came before the trailers');
  t.deepEqual(server.trailers, ['x-request-checksum', 'abc']);
  serverStream.respond(200, ['content-type', 'application/grpc']);
  serverStream.write(Buffer.from('answer'));
  serverStream.endWithTrailers(['grpc-status', '0', 'grpc-message', 'fine']);
  const closed = await client.closed;
  t.is(closed.rstCode, undefined, 'a clean close');
  t.deepEqual(client.events, ['response', 'data', 'trailers', 'end', 'close']);
  t.deepEqual(client.trailers, ['grpc-status', '0', 'grpc-message', 'fine']);

  // A trailers-only answer: the head carries END_STREAM.
  const second = new Recorder();
  const nextSecond = pair.nextServerStream();
  pair.client.request(REQUEST, second, true);
  const secondServer = await nextSecond;
  secondServer.setHandler(new Recorder());
  secondServer.respond(200, ['content-type', 'application/grpc', 'grpc-status', '12'], true);
  await second.closed;
  t.deepEqual(second.events, ['response+end', 'end', 'close']);
});

/** A node:http2 h2c endpoint that answers every call with its body, a header and trailers; it records request trailers. */
async function nodeEndpoint(): Promise<{ port: number; requestTrailers: http2.IncomingHttpHeaders[]; close(): void }> {
  const server = http2.createServer();
  const requestTrailers: http2.IncomingHttpHeaders[] = [];
  server.on('stream', (stream) => {
    const chunks: Buffer[] = [];
    stream.on('trailers', (trailers: http2.IncomingHttpHeaders) => requestTrailers.push(trailers));
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.on('end', () => {
      stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'x-answer': 'yes' }, { waitForTrailers: true });
      stream.once('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0', 'x-bytes': String(Buffer.concat(chunks).length) }));
      stream.end(Buffer.concat(chunks));
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { port: (server.address() as net.AddressInfo).port, requestTrailers, close: () => server.close() };
}

async function ownClient(port: number): Promise<{ connection: H2Connection; close(): void }> {
  const socket = net.connect(port, '127.0.0.1');
  await once(socket, 'connect');
  const connection = new H2Connection(socket, { role: 'client' });
  return { connection, close: () => socket.destroy() };
}

/** Events of an OwnUpstreamStream as the try and the relay see them, in order. */
function watch(upstream: OwnUpstreamStream): { events: string[]; data: Buffer[]; closed: Promise<void> } {
  const events: string[] = [];
  const data: Buffer[] = [];
  upstream.once('response', (headers: http2.IncomingHttpHeaders, flags: number) => events.push(`response ${String(headers[':status'])} ${headers['x-answer'] ?? ''} flags ${flags}`));
  upstream.once('trailers', (trailers: http2.IncomingHttpHeaders) => events.push(`trailers ${JSON.stringify(trailers)}`));
  const closed = new Promise<void>((resolve) =>
    upstream.once('close', () => {
      events.push(`close ${upstream.rstCode ?? 'clean'}`);
      resolve();
    }),
  );
  return { events, data, closed };
}

test('OwnUpstreamStream against a node:http2 endpoint: the answer held until a reader attaches, then data, trailers, end and close in order; request trailers on wantTrailers', async (t) => {
  const endpoint = await nodeEndpoint();
  t.teardown(endpoint.close);
  const { connection, close } = await ownClient(endpoint.port);
  t.teardown(close);
  const upstream = new OwnUpstreamStream();
  const seen = watch(upstream);
  upstream.stream = connection.request(headerListOf({ ':method': 'POST', ':path': '/pkg.Svc/Call', 'content-type': 'application/grpc', te: 'trailers' }, [':scheme', 'http', ':authority', '127.0.0.1:1']), upstream);
  upstream.once('wantTrailers', () => upstream.sendTrailers({ 'x-request-trailer': 'given' }));
  upstream.write(Buffer.from('hello '));
  upstream.write(Buffer.from('endpoint'));
  upstream.end();
  await new Promise<void>((resolve) => upstream.once('response', () => resolve()));
  // The relay attaches its reader a few turns after the head (the try loop's promises): nothing may be lost meanwhile.
  await new Promise((resolve) => setTimeout(resolve, 50));
  upstream.on('data', (chunk: Buffer) => seen.data.push(chunk));
  upstream.once('end', () => seen.events.push('end'));
  await seen.closed;
  t.deepEqual(seen.events, ['response 200 yes flags 0', 'trailers {"grpc-status":"0","x-bytes":"14"}', 'end', 'close clean']);
  t.is(Buffer.concat(seen.data).toString(), 'hello endpoint');
  t.deepEqual(endpoint.requestTrailers.map((trailers) => trailers['x-request-trailer']), ['given']);
});

test('a hostile endpoint: trailers with a pseudo-header, CR/LF in a value or a connection field reset the stream (PROTOCOL_ERROR); no trailers or end reach the try', async (t) => {
  for (const bad of [[':status', '200'], ['x-evil', 'a\r\nset-cookie: b'], ['connection', 'close']]) {
    const { peer, connection, close } = await clientUnderTest();
    t.teardown(close);
    const upstream = new OwnUpstreamStream();
    const seen = watch(upstream);
    upstream.on('data', (chunk: Buffer) => seen.data.push(chunk));
    upstream.once('end', () => seen.events.push('end'));
    upstream.stream = connection.request(REQUEST, upstream, true);
    peer.send(headersFrame(1, [':status', '200', 'content-type', 'application/grpc']), frame(FRAME_DATA, 0, 1, Buffer.from('part')), headersFrame(1, ['grpc-status', '0', ...bad], FLAG_END_STREAM));
    t.is(await peer.rstCode(1), H2_PROTOCOL_ERROR, `reset for ${bad[0]}`);
    await seen.closed;
    t.false(seen.events.some((event) => event.startsWith('trailers') || event === 'end'), JSON.stringify(seen.events));
    t.is(seen.events.at(-1), `close ${H2_PROTOCOL_ERROR}`);
    t.false(connection.closed, 'the connection serves on');
  }
});

test('an endpoint gone mid-answer: the stream closes with a reset code (CANCEL), never a clean end; a field Node would refuse is refused before sending', async (t) => {
  const { peer, connection, close } = await clientUnderTest();
  t.teardown(close);
  const upstream = new OwnUpstreamStream();
  const seen = watch(upstream);
  upstream.on('data', (chunk: Buffer) => seen.data.push(chunk));
  upstream.once('end', () => seen.events.push('end'));
  upstream.stream = connection.request(REQUEST, upstream, true);
  peer.send(headersFrame(1, [':status', '200']), frame(FRAME_DATA, 0, 1, Buffer.from('half an ans')));
  await new Promise<void>((resolve) => upstream.once('response', () => resolve()));
  peer.socket.destroy();
  await seen.closed;
  t.is(seen.events.at(-1), `close ${H2_CANCEL}`);
  t.false(seen.events.includes('end'), 'a cut answer never looks whole');
  t.throws(() => headerListOf({ ':method': 'GET', 'x-evil': 'a\r\nb' }), { message: /x-evil/ });
  t.throws(() => headerListOf({ ':method': 'GET', 'bad name': 'x' }), { message: /bad name/ });
  t.deepEqual(headerListOf({ 'X-Upper': ['1', '2'], ':path': '/p' }, [':scheme', 'http']), [':path', '/p', ':scheme', 'http', 'x-upper', '1', 'x-upper', '2']);
});

test('a hostile endpoint on the waypoint connection: an HPACK bomb in a response ends the connection (ENHANCE_YOUR_CALM) and the call closes reset; data past the stream window resets that stream only (FLOW_CONTROL_ERROR)', async (t) => {
  const bomb = await clientUnderTest({ maxHeaderListBytes: 16 * 1024 });
  t.teardown(bomb.close);
  const bombed = new OwnUpstreamStream();
  const bombSeen = watch(bombed);
  bombed.stream = bomb.connection.request(REQUEST, bombed, true);
  // One 4,000-byte field added to the dynamic table, then referenced 1,000 times: 4 MB decoded from 5 KB.
  const block = Buffer.alloc(6000);
  let offset = 0;
  block[offset++] = 0x40;
  offset = writeInteger(block, offset, 1, 7, 0);
  block[offset++] = 0x62;
  offset = writeInteger(block, offset, 4000, 7, 0);
  offset += block.write('x'.repeat(4000), offset, 'latin1');
  block.fill(0xbe, offset, offset + 1000);
  bomb.peer.send(frame(FRAME_HEADERS, FLAG_END_HEADERS, 1, block.subarray(0, offset + 1000)));
  t.is(await bomb.peer.goawayCode(), H2_ENHANCE_YOUR_CALM);
  await bombSeen.closed;
  t.deepEqual(bombSeen.events, [`close ${H2_CANCEL}`], 'no response head, a reset close');

  const flood = await clientUnderTest({ streamWindowBytes: 65_535 });
  t.teardown(flood.close);
  const flooded = new OwnUpstreamStream();
  const floodSeen = watch(flooded);
  flooded.stream = flood.connection.request(REQUEST, flooded, true);
  // The relay paused (its client is not reading): no window goes back, so the endpoint may send 64 KiB at most.
  flooded.pause();
  flood.peer.send(headersFrame(1, [':status', '200']));
  for (let index = 0; index < 5; index++) flood.peer.send(frame(FRAME_DATA, 0, 1, Buffer.alloc(16_000)));
  t.is(await flood.peer.rstCode(1), H2_FLOW_CONTROL_ERROR);
  await floodSeen.closed;
  t.is(floodSeen.events.at(-1), `close ${H2_FLOW_CONTROL_ERROR}`);
  t.false(flood.connection.closed, 'the connection serves on');
});
