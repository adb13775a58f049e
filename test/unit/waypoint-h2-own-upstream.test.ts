/**
 * The waypoint's HTTP/2 requests to endpoints on the own HTTP/2 layer (waypoint/h2-own-upstream.ts) and what it
 * added to the layer (shared/hbone/h2/): trailers both ways (queued behind data that waits for window), a response
 * head's END_STREAM, and the stream as the try drives it, against a real node:http2 endpoint and against a raw
 * hostile one (bad trailers, a peer gone mid-answer).
 */
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import http2 from 'node:http2';
import net from 'node:net';
import test from 'ava';
import { H2Connection } from '../../shared/hbone/h2/connection.ts';
import { H2_CANCEL, H2_ENHANCE_YOUR_CALM, H2_FLOW_CONTROL_ERROR, H2_PROTOCOL_ERROR } from '../../shared/hbone/h2/errors.ts';
import { FLAG_END_HEADERS, FLAG_END_STREAM, FRAME_DATA, FRAME_HEADERS, FRAME_RST_STREAM } from '../../shared/hbone/h2/frame.ts';
import { type HeaderList, writeInteger } from '../../shared/hbone/h2/hpack.ts';
import type { H2Stream, H2StreamHandler } from '../../shared/hbone/h2/stream.ts';
import { headerListOf, OwnUpstreamStream, responseFieldListOf, trailerListOf } from '../../waypoint/h2-own-upstream.ts';
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

test('heads written into the frame-header slab: 400 calls on one connection (the slab refilled on the way) and a head larger than a frame (HEADERS + CONTINUATION) reach a node:http2 endpoint whole', async (t) => {
  const server = http2.createServer({ maxSessionMemory: 64, settings: { maxHeaderListSize: 256 * 1024 } });
  server.on('stream', (stream, headers) => {
    stream.respond({ ':status': 200, 'x-echo': String(headers['x-n']), 'x-size': String(String(headers['x-big'] ?? '').length) }, { endStream: true });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => server.close());
  const { connection, close } = await ownClient((server.address() as net.AddressInfo).port);
  t.teardown(close);
  const call = (fields: http2.OutgoingHttpHeaders): Promise<http2.IncomingHttpHeaders> => {
    const upstream = new OwnUpstreamStream();
    const answered = new Promise<http2.IncomingHttpHeaders>((resolve) => upstream.once('response', resolve));
    upstream.stream = connection.request(headerListOf({ ':method': 'GET', ':path': '/', ...fields }, [':scheme', 'http', ':authority', '127.0.0.1:1']), upstream, true);
    return answered;
  };
  for (let round = 0; round < 400; round += 50) {
    const answers = await Promise.all(Array.from({ length: 50 }, (_, index) => call({ 'x-n': `call-${round + index}-${'v'.repeat((round + index) % 97)}` })));
    t.deepEqual(answers.map((headers) => headers['x-echo']), Array.from({ length: 50 }, (_, index) => `call-${round + index}-${'v'.repeat((round + index) % 97)}`));
  }
  const big = await call({ 'x-n': 'big', 'x-big': 'b'.repeat(40_000) });
  t.is(big['x-echo'], 'big');
  t.is(big['x-size'], '40000');
});

test('header lists for the layer: pseudo-headers first (defaults only when absent), a response head without :status, trailers without pseudo-headers or connection fields, bad fields refused', (t) => {
  t.deepEqual(headerListOf({ 'content-type': 'application/grpc', ':method': 'POST', te: 'trailers', ':path': '/s/M', ':authority': 'svc:80' }, [':scheme', 'http', ':authority', () => 'unused:1']),
    [':method', 'POST', ':path', '/s/M', ':authority', 'svc:80', ':scheme', 'http', 'content-type', 'application/grpc', 'te', 'trailers']);
  t.deepEqual(headerListOf({ 'x-only': '1' }), ['x-only', '1']);
  t.deepEqual(responseFieldListOf({ ':status': 200, 'Content-Type': 'application/grpc', 'x-n': 7, 'x-none': undefined }), ['content-type', 'application/grpc', 'x-n', '7']);
  t.deepEqual(trailerListOf({ 'grpc-status': '0', ':status': 200, connection: 'close', 'Transfer-Encoding': 'chunked', 'grpc-message': ['a', 'b'] }), ['grpc-status', '0', 'grpc-message', 'a', 'grpc-message', 'b']);
  t.throws(() => trailerListOf({ 'grpc-message': 'a\nb' }), { message: /grpc-message/ });
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

/**
 * A node:http2 endpoint: GET /big?size=N answers N pattern bytes in 16 KiB writes, then ends; any other request has
 * its body hashed and answers JSON {size, sha256} with trailers x-body-sha256 and the request's x-checksum trailer
 * echoed. It reports, per request, how its stream closed (the RST_STREAM code it sent, 0 for NO_ERROR).
 */
async function bigAnswerEndpoint(): Promise<{ port: number; serverCloses: Promise<number>[]; close(): void }> {
  const server = http2.createServer();
  const serverCloses: Promise<number>[] = [];
  server.on('stream', (stream, headers) => {
    serverCloses.push(new Promise((resolve) => stream.once('close', () => resolve(stream.rstCode ?? -1))));
    const url = new URL(String(headers[':path']), 'http://x');
    if (url.pathname !== '/big') {
      const hash = createHash('sha256');
      let size = 0;
      let checksum = '';
      stream.on('data', (chunk: Buffer) => {
        size += chunk.length;
        hash.update(chunk);
      });
      stream.on('trailers', (trailers: http2.IncomingHttpHeaders) => (checksum = String(trailers['x-checksum'])));
      stream.on('end', () => {
        const sha256 = hash.digest('hex');
        stream.respond({ ':status': 200 }, { waitForTrailers: true });
        stream.once('wantTrailers', () => stream.sendTrailers({ 'x-body-sha256': sha256, 'x-checksum': checksum }));
        stream.end(JSON.stringify({ size, sha256 }));
      });
      return;
    }
    const size = Number(url.searchParams.get('size'));
    stream.respond({ ':status': 200 });
    let offset = 0;
    const pump = (): void => {
      while (offset < size) {
        const piece = patternPiece(offset, Math.min(16 * 1024, size - offset));
        offset += piece.length;
        if (!stream.write(piece)) {
          stream.once('drain', pump);
          return;
        }
      }
      stream.end();
    };
    pump();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { port: (server.address() as net.AddressInfo).port, serverCloses, close: () => server.close() };
}

/** `length` bytes of a pattern that depends on the offset, so a lost, repeated or reordered piece changes the hash. */
function patternPiece(offset: number, length: number): Buffer {
  const piece = Buffer.allocUnsafe(length);
  for (let index = 0; index < length; index++) piece[index] = ((offset + index) * 31 + ((offset + index) >> 12)) & 0xff;
  return piece;
}

const sha256Of = (chunks: Buffer[]): string => createHash('sha256').update(Buffer.concat(chunks)).digest('hex');

/** Resolves once `ready()` says so (polled: the events under test have no hook of their own). */
function until(ready: () => boolean): Promise<void> {
  return new Promise((resolve) => {
    const check = setInterval(() => {
      if (ready()) {
        clearInterval(check);
        resolve();
      }
    }, 5);
  });
}

test('one pooled connection: an 8 MiB upload with trailers, then an answer that fills the stream window exactly while the relay is paused (node:http2 ends it with RST_STREAM NO_ERROR for the END_STREAM stuck behind the window): both whole by SHA-256, the answer ends, not a reset', async (t) => {
  const endpoint = await bigAnswerEndpoint();
  t.teardown(endpoint.close);
  const window = 1024 * 1024;
  const socket = net.connect(endpoint.port, '127.0.0.1');
  await once(socket, 'connect');
  t.teardown(() => socket.destroy());
  const connection = new H2Connection(socket, { role: 'client', streamWindowBytes: window, connectionWindowBytes: 8 * window });
  const pseudo = [':scheme', 'http', ':authority', '127.0.0.1:1'];

  // The upload, as the try sends a body: writes with back-pressure, then the trailers on 'wantTrailers'.
  const upload = new OwnUpstreamStream();
  const uploadSeen = watch(upload);
  upload.stream = connection.request(headerListOf({ ':method': 'POST', ':path': '/upload' }, pseudo), upload);
  const sent: Buffer[] = [];
  for (let offset = 0; offset < 8 * window; offset += 64 * 1024) {
    const piece = patternPiece(offset, 64 * 1024);
    sent.push(piece);
    if (!upload.write(piece)) await new Promise((resolve) => upload.once('drain', resolve));
  }
  upload.once('wantTrailers', () => upload.sendTrailers({ 'x-checksum': 'client-side' }));
  upload.end();
  const uploadTrailers = new Promise<http2.IncomingHttpHeaders>((resolve) => upload.once('trailers', resolve));
  upload.on('data', (chunk: Buffer) => uploadSeen.data.push(chunk));
  await uploadSeen.closed;
  const answer = JSON.parse(Buffer.concat(uploadSeen.data).toString()) as { size: number; sha256: string };
  t.is(answer.size, 8 * window);
  t.is(answer.sha256, sha256Of(sent), 'the endpoint received exactly the bytes sent');
  t.deepEqual(await uploadTrailers, { 'x-body-sha256': sha256Of(sent), 'x-checksum': 'client-side' });

  // The download on the same connection; the relay's client stopped reading: no credit goes back, the endpoint's
  // last byte takes the window to 0.
  const download = new OwnUpstreamStream();
  const seen = watch(download);
  download.stream = connection.request(headerListOf({ ':method': 'GET', ':path': `/big?size=${window}` }, pseudo), download, true);
  t.is(download.stream.id, 3, 'the same connection');
  download.pause();
  await until(() => endpoint.serverCloses.length === 2);
  t.is(await endpoint.serverCloses[1], http2.constants.NGHTTP2_NO_ERROR, 'the endpoint closed its stream with RST_STREAM NO_ERROR (the situation under test)');
  await until(() => download.stream!.closed);
  t.false(download.stream.remoteEnded, 'no END_STREAM came');
  download.on('data', (chunk: Buffer) => seen.data.push(chunk));
  download.once('end', () => seen.events.push('end'));
  download.resume();
  await seen.closed;
  t.is(sha256Of(seen.data), sha256Of([patternPiece(0, window)]), 'every byte the endpoint sent, in order');
  t.deepEqual(seen.events, ['response 200  flags 0', 'end', 'close 0']);
});

test('a hostile endpoint ending with RST_STREAM NO_ERROR: after a whole answer (its content-length met, or none) it is the end; short of its content-length it is a reset (PROTOCOL_ERROR), never a clean end', async (t) => {
  const rstNoError = Buffer.alloc(4);
  for (const [contentLength, sent, expected] of [['10', 10, 'end'], [undefined, 7, 'end'], ['100', 50, 'reset']] as const) {
    const { peer, connection, close } = await clientUnderTest();
    t.teardown(close);
    const upstream = new OwnUpstreamStream();
    const seen = watch(upstream);
    upstream.on('data', (chunk: Buffer) => seen.data.push(chunk));
    upstream.once('end', () => seen.events.push('end'));
    upstream.stream = connection.request(REQUEST, upstream, true);
    peer.send(headersFrame(1, [':status', '200', ...(contentLength !== undefined ? ['content-length', contentLength] : [])]), frame(FRAME_DATA, 0, 1, Buffer.alloc(sent, 0x61)), frame(FRAME_RST_STREAM, 0, 1, rstNoError));
    await seen.closed;
    const label = `content-length ${contentLength}, ${sent} bytes`;
    if (expected === 'end') {
      t.deepEqual(seen.events.slice(1), ['end', 'close 0'], label);
      t.is(Buffer.concat(seen.data).length, sent, label);
    } else {
      t.false(seen.events.includes('end'), label);
      t.is(seen.events.at(-1), `close ${H2_PROTOCOL_ERROR}`, label);
    }
    t.false(connection.closed, 'the connection serves on');
  }
});
