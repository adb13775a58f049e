/**
 * The HTTP/2 request body the waypoint keeps for a retry (waypoint/h2-request-body.ts), over real node:http2 streams
 * on loopback (a client, a "waypoint" server whose request stream is the source, an "endpoint" server that a try's
 * stream goes to): a small ended body is sent whole to each try and can be sent again; a body past the limit, and
 * a stream that sent its first message and is still open (streaming gRPC), cannot; a request without a body can.
 */
import test from 'ava';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { H2RequestBody } from '../../waypoint/h2-request-body.ts';

interface Rig {
  /** The next request stream the "waypoint" gets, with its body wrapper. */
  nextSource(limit: number): Promise<{ source: http2.ServerHttp2Stream; body: H2RequestBody }>;
  client: http2.ClientHttp2Session;
  /** A new try's stream to the endpoint; resolves with the bytes the endpoint got once that stream ended. */
  tryStream(body: H2RequestBody): { stream: http2.ClientHttp2Stream; received: Promise<number> };
  close(): void;
}

async function rig(): Promise<Rig> {
  const waiting: ((value: { source: http2.ServerHttp2Stream; flags: number }) => void)[] = [];
  const waypoint = http2.createServer();
  waypoint.on('stream', (source, _headers, flags) => waiting.shift()?.({ source, flags }));
  const endpoint = http2.createServer();
  endpoint.on('stream', (stream) => {
    let bytes = 0;
    stream.on('data', (chunk: Buffer) => (bytes += chunk.length));
    stream.on('error', () => {
      // a try the test cut
    });
    stream.on('end', () => {
      if (!stream.destroyed && !stream.closed) stream.respond({ ':status': 200, 'x-bytes': String(bytes) }, { endStream: true });
    });
  });
  await new Promise<void>((resolve) => waypoint.listen(0, '127.0.0.1', resolve));
  await new Promise<void>((resolve) => endpoint.listen(0, '127.0.0.1', resolve));
  const client = http2.connect(`http://127.0.0.1:${(waypoint.address() as AddressInfo).port}`);
  const upstream = http2.connect(`http://127.0.0.1:${(endpoint.address() as AddressInfo).port}`);
  return {
    client,
    nextSource: (limit) =>
      new Promise((resolve) => waiting.push(({ source, flags }) => resolve({ source, body: new H2RequestBody(source, limit, (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) !== 0) }))),
    tryStream: (body) => {
      const stream = upstream.request({ ':method': 'POST', ':path': '/' }, { endStream: body.endsAtHeaders, waitForTrailers: !body.endsAtHeaders });
      stream.on('wantTrailers', () => stream.sendTrailers({}));
      const received = new Promise<number>((resolve) => stream.on('response', (headers) => resolve(Number(headers['x-bytes']))));
      body.attach(stream);
      return { stream, received };
    },
    close: () => {
      client.destroy();
      upstream.destroy();
      waypoint.close();
      endpoint.close();
    },
  };
}

test('a small ended body goes whole to each try and can be sent again; bytes are counted once', async (t) => {
  const r = await rig();
  t.teardown(r.close);
  const sourcePromise = r.nextSource(1024);
  r.client.request({ ':method': 'POST', ':path': '/' }).end(Buffer.alloc(600, 1));
  const { body } = await sourcePromise;
  const first = r.tryStream(body);
  t.is(await first.received, 600);
  t.true(body.replayable(), 'ended and kept whole');
  body.detach(first.stream);
  const second = r.tryStream(body);
  t.is(await second.received, 600, 'the retry carried the whole body again');
  t.is(body.bytes, 600);
});

test('a body past the limit is sent once and cannot be sent again', async (t) => {
  const r = await rig();
  t.teardown(r.close);
  const sourcePromise = r.nextSource(1024);
  r.client.request({ ':method': 'POST', ':path': '/' }).end(Buffer.alloc(5000, 2));
  const { body } = await sourcePromise;
  t.is(await r.tryStream(body).received, 5000);
  t.false(body.replayable());
});

test('a stream that sent its first message and is still open (streaming gRPC) cannot be sent again; before it, it can', async (t) => {
  const r = await rig();
  t.teardown(r.close);
  const sourcePromise = r.nextSource(64 * 1024);
  const call = r.client.request({ ':method': 'POST', ':path': '/stream' });
  const { body } = await sourcePromise;
  t.true(body.replayable(), 'nothing sent yet');
  const upstream = r.tryStream(body);
  call.write(Buffer.from('first message'));
  while (body.bytes < 13) await new Promise((resolve) => setTimeout(resolve, 10));
  t.is(body.bytes, 13);
  t.false(body.replayable(), 'its first message went and the stream is open');
  call.end();
  t.is(await upstream.received, 13);
});

test('a request without a body opens the try already ended and can be sent again', async (t) => {
  const r = await rig();
  t.teardown(r.close);
  const sourcePromise = r.nextSource(1024);
  r.client.request({ ':method': 'GET', ':path': '/' }, { endStream: true });
  const { body } = await sourcePromise;
  t.true(body.endsAtHeaders);
  t.is(await r.tryStream(body).received, 0);
  t.true(body.replayable());
});

test('the answer done while the client still sends: the rest is read and dropped, so the client can finish', async (t) => {
  const r = await rig();
  t.teardown(r.close);
  const sourcePromise = r.nextSource(1024);
  const call = r.client.request({ ':method': 'POST', ':path': '/upload' });
  const { source, body } = await sourcePromise;
  const upstream = r.tryStream(body);
  call.write(Buffer.alloc(100, 1));
  while (body.bytes < 100) await new Promise((resolve) => setTimeout(resolve, 10));
  // The try is over (its endpoint answered in full); the client goes on with 4 MiB, far past the stream's window.
  body.detach(upstream.stream);
  upstream.stream.close();
  body.discardRest();
  const ended = new Promise<void>((resolve) => source.once('end', () => resolve()));
  call.end(Buffer.alloc(4 * 1024 * 1024, 2));
  await ended;
  t.true(body.ended);
  t.is(body.bytes, 100 + 4 * 1024 * 1024);
  t.false(body.replayable(), 'dropped bytes cannot be sent again');
});
