/**
 * The waypoint's client-facing HTTP/2 on the own layer (waypoint/h2-own-downstream.ts): serveOwnConnection on a real
 * loopback TCP socket, against a real node:http2 client (bodies both ways by SHA-256, trailers both ways, a 1xx
 * head, back-pressure on a request nobody reads yet) and against a raw hostile client (malformed request trailers,
 * a malformed request, DATA past the stream window, a stream flood, garbage frames, a client gone mid-answer).
 */
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import http2 from 'node:http2';
import net from 'node:net';
import test from 'ava';
import type { H2Connection } from '../../shared/hbone/h2/connection.ts';
import { H2_CANCEL, H2_ENHANCE_YOUR_CALM, H2_FLOW_CONTROL_ERROR, H2_FRAME_SIZE_ERROR, H2_PROTOCOL_ERROR, H2_REFUSED_STREAM } from '../../shared/hbone/h2/errors.ts';
import { CLIENT_PREFACE, FLAG_END_STREAM, FRAME_DATA, FRAME_GOAWAY, FRAME_HEADERS, rstStreamFrame, settingsFrame } from '../../shared/hbone/h2/frame.ts';
import { type OwnDownstreamStream, serveOwnConnection } from '../../waypoint/h2-own-downstream.ts';
import { frame, headersFrame, RawPeer } from '../helpers/h2-raw-peer.ts';

const LIMITS = { streamWindowBytes: 64 * 1024, connectionWindowBytes: 1024 * 1024, maxConcurrentStreams: 4, resetBurst: 20, resetRatePerSecond: 1 };
const sha256 = (data: Buffer): string => createHash('sha256').update(data).digest('hex');

/** A listener whose first accepted socket is served by serveOwnConnection with `onRequest`. */
async function ownServer(onRequest: (stream: OwnDownstreamStream, headers: http2.IncomingHttpHeaders, flags: number) => void): Promise<{ port: number; connection: Promise<H2Connection>; close(): void }> {
  const sockets: net.Socket[] = [];
  let served!: (connection: H2Connection) => void;
  const connection = new Promise<H2Connection>((resolve) => (served = resolve));
  const listener = net.createServer((socket) => {
    sockets.push(socket);
    socket.on('error', () => {});
    served(serveOwnConnection(socket, undefined, LIMITS, (stream, flags) => onRequest(stream, stream.requestHeaders, flags)));
  });
  await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
  return {
    port: (listener.address() as net.AddressInfo).port,
    connection,
    close: () => {
      listener.close();
      for (const socket of sockets) socket.destroy();
    },
  };
}

/** A raw client connected to an own server, preface and empty SETTINGS sent. */
async function rawClient(port: number): Promise<RawPeer> {
  const socket = net.connect(port, '127.0.0.1');
  await once(socket, 'connect');
  const peer = new RawPeer(socket);
  peer.send(CLIENT_PREFACE, settingsFrame([]));
  return peer;
}

/** Polls `ready` (the states under test have no event of their own). */
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

const GET = [':method', 'GET', ':scheme', 'http', ':authority', 'svc:80', ':path', '/'];

test('a node:http2 client: 8 MiB up and 8 MiB down whole by SHA-256, trailers both ways, a 100 head before the answer', async (t) => {
  const size = 8 * 1024 * 1024;
  const server = await ownServer((stream, headers) => {
    const chunks: Buffer[] = [];
    let trailers: http2.IncomingHttpHeaders = {};
    stream.on('trailers', (received: http2.IncomingHttpHeaders) => (trailers = received));
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.once('end', () => {
      const body = Buffer.concat(chunks);
      stream.additionalHeaders({ ':status': '100' });
      stream.once('wantTrailers', () => stream.sendTrailers({ 'x-body-sha256': sha256(body), 'x-echo': String(trailers['x-checksum']) }));
      stream.respond({ ':status': 200, 'x-path': String(headers[':path']) }, { waitForTrailers: true });
      // The body back, reversed, written with back-pressure in 64 KiB pieces.
      const answer = Buffer.from(body).reverse();
      let offset = 0;
      const pump = (): void => {
        while (offset < answer.length) {
          const piece = answer.subarray(offset, offset + 64 * 1024);
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
  });
  t.teardown(server.close);
  const session = http2.connect(`http://127.0.0.1:${server.port}`);
  t.teardown(() => session.destroy());
  const body = Buffer.allocUnsafe(size);
  for (let index = 0; index < size; index++) body[index] = (index * 7 + (index >> 10)) & 0xff;
  const request = session.request({ ':method': 'POST', ':path': '/echo' }, { waitForTrailers: true });
  request.once('wantTrailers', () => request.sendTrailers({ 'x-checksum': 'client-side' }));
  request.end(body);
  const informational: number[] = [];
  request.on('headers', (headers: http2.IncomingHttpHeaders) => informational.push(Number(headers[':status'])));
  const [headers] = (await once(request, 'response')) as [http2.IncomingHttpHeaders];
  const trailers = new Promise<http2.IncomingHttpHeaders>((resolve) => request.once('trailers', resolve));
  const received: Buffer[] = [];
  request.on('data', (chunk: Buffer) => received.push(chunk));
  await once(request, 'end');
  t.is(Number(headers[':status']), 200);
  t.is(headers['x-path'], '/echo');
  t.deepEqual(informational, [100]);
  t.is(sha256(Buffer.concat(received)), sha256(Buffer.from(body).reverse()), 'the answer whole, in order');
  const got = await trailers;
  t.is(got['x-body-sha256'], sha256(body), 'the server received exactly the bytes sent');
  t.is(got['x-echo'], 'client-side', 'request trailers reached the handler');
});

test('back-pressure: a request body nobody reads yet holds at most the stream window; the client is not credited until it is read', async (t) => {
  let handed: OwnDownstreamStream | undefined;
  let clientWroteAll = false;
  const server = await ownServer((stream) => (handed = stream));
  t.teardown(server.close);
  const connection = await (async () => {
    const session = http2.connect(`http://127.0.0.1:${server.port}`);
    t.teardown(() => session.destroy());
    const request = session.request({ ':method': 'POST', ':path': '/slow' });
    request.on('error', () => {});
    request.write(Buffer.alloc(1024 * 1024, 0x62), () => (clientWroteAll = true));
    return server.connection;
  })();
  // The window runs out (or, were held data credited, the client gets rid of all of it).
  await until(() => handed !== undefined && (handed.stream.receiveWindow === 0 || clientWroteAll));
  // A PING round trip: DATA the client sent before its ACK (had it been credited) would have arrived before it.
  await new Promise<void>((resolve) => connection.ping(() => resolve()));
  const stream = handed!;
  t.false(clientWroteAll, 'the client could not send more than the window');
  t.is(stream.stream.receiveWindow, 0, 'the client sent the whole window');
  t.true(stream.stream.readingPaused, 'held data stops the credit');
  t.is(stream.stream.receivedUncredited, LIMITS.streamWindowBytes, 'no credit went back for held data');
  let read = 0;
  stream.on('data', (chunk: Buffer) => (read += chunk.length));
  await until(() => read > LIMITS.streamWindowBytes);
  t.pass('reading gives the credit back and more comes');
});

test('a hostile client: bad request trailers reset that stream (PROTOCOL_ERROR) and reach no handler; a malformed request is refused; DATA past the stream window resets the stream (FLOW_CONTROL_ERROR)', async (t) => {
  const events: string[] = [];
  const server = await ownServer((stream, headers) => {
    events.push(`request ${stream.stream.id}`);
    // One request's body is left unread: no credit, so its client must stop at the window.
    if (headers[':path'] !== '/unread') stream.on('data', () => {});
    stream.on('trailers', () => events.push(`trailers ${stream.stream.id}`));
    stream.once('end', () => events.push(`end ${stream.stream.id}`));
    stream.once('close', () => events.push(`close ${stream.stream.id} ${stream.rstCode}`));
  });
  t.teardown(server.close);
  const peer = await rawClient(server.port);
  t.teardown(() => peer.socket.destroy());
  const post = [':method', 'POST', ':scheme', 'http', ':authority', 'svc:80', ':path', '/'];
  for (const [index, bad] of [[':path', '/x'], ['x-evil', 'a\r\nb'], ['connection', 'close']].entries()) {
    const id = 1 + 2 * index;
    peer.send(headersFrame(id, post), frame(FRAME_DATA, 0, id, Buffer.from('body')), headersFrame(id, ['grpc-status', '0', ...bad], FLAG_END_STREAM));
    t.is(await peer.rstCode(id), H2_PROTOCOL_ERROR, `reset for ${bad[0]}`);
  }
  // An upper-case field name: a malformed request, refused before any handler sees it.
  peer.send(headersFrame(7, [...GET, 'X-Upper', 'y'], FLAG_END_STREAM));
  t.is(await peer.rstCode(7), H2_PROTOCOL_ERROR);
  // DATA past the 64 KiB stream window (the connection window is larger).
  peer.send(headersFrame(9, [':method', 'POST', ':scheme', 'http', ':authority', 'svc:80', ':path', '/unread']));
  for (let sent = 0; sent <= LIMITS.streamWindowBytes; sent += 16 * 1024) peer.send(frame(FRAME_DATA, 0, 9, Buffer.alloc(16 * 1024)));
  t.is(await peer.rstCode(9), H2_FLOW_CONTROL_ERROR);
  await until(() => events.includes(`close 9 ${H2_FLOW_CONTROL_ERROR}`));
  t.false(events.some((event) => event.startsWith('trailers') || event.startsWith('end')), JSON.stringify(events));
  t.false(events.includes('request 7'), 'the malformed request reached no handler');
  t.false(peer.socket.closed, 'the connection serves on');
});

test('a hostile client: streams past SETTINGS_MAX_CONCURRENT_STREAMS are refused (REFUSED_STREAM); a frame above the frame size ends the connection (GOAWAY FRAME_SIZE_ERROR, counted as a protocol error)', async (t) => {
  const open: OwnDownstreamStream[] = [];
  const server = await ownServer((stream) => open.push(stream));
  t.teardown(server.close);
  const peer = await rawClient(server.port);
  t.teardown(() => peer.socket.destroy());
  for (let id = 1; id <= 2 * LIMITS.maxConcurrentStreams + 1; id += 2) peer.send(headersFrame(id, GET));
  t.is(await peer.rstCode(2 * LIMITS.maxConcurrentStreams + 1), H2_REFUSED_STREAM);
  t.is(open.length, LIMITS.maxConcurrentStreams);
  const connection = await server.connection;
  const errors: Array<Error & { code?: string }> = [];
  connection.on('error', (error: Error) => errors.push(error));
  const huge = Buffer.alloc(9);
  huge.writeUIntBE(16 * 1024 * 1024 - 1, 0, 3);
  huge[3] = FRAME_HEADERS;
  huge.writeUInt32BE(11, 5);
  peer.send(huge);
  t.is(await peer.goawayCode(), H2_FRAME_SIZE_ERROR);
  await peer.closed;
  t.is(errors[0]?.code, 'H2_PEER_PROTOCOL');
  await until(() => open.every((stream) => stream.closed));
  t.true(open.every((stream) => stream.rstCode === H2_CANCEL), 'the open requests close reset, not ended');
});

test('rapid reset: a client resetting streams as it opens them past the burst the proxy gives (nghttp2\'s 1,000 in the waypoint; 20 here) loses its connection (GOAWAY ENHANCE_YOUR_CALM)', async (t) => {
  const opened: OwnDownstreamStream[] = [];
  const server = await ownServer((stream) => opened.push(stream));
  t.teardown(server.close);
  const peer = await rawClient(server.port);
  t.teardown(() => peer.socket.destroy());
  // Within the burst: every stream reaches the handler and closes reset; the connection stays.
  for (let id = 1; id < 2 * LIMITS.resetBurst; id += 2) peer.send(headersFrame(id, GET), rstStreamFrame(id, H2_CANCEL));
  await until(() => opened.length === LIMITS.resetBurst && opened.every((stream) => stream.closed));
  t.true(opened.every((stream) => stream.rstCode === H2_CANCEL));
  // One more reset at once (the budget refills at 1/s): the connection goes.
  peer.send(headersFrame(2 * LIMITS.resetBurst + 1, GET), rstStreamFrame(2 * LIMITS.resetBurst + 1, H2_CANCEL), headersFrame(2 * LIMITS.resetBurst + 3, GET), rstStreamFrame(2 * LIMITS.resetBurst + 3, H2_CANCEL));
  t.is(await peer.goawayCode(), H2_ENHANCE_YOUR_CALM);
});

test('a client gone mid-answer: the request stream closes reset (CANCEL) with no end, the handler hears close once', async (t) => {
  const closes: Array<number | undefined> = [];
  let answering: OwnDownstreamStream | undefined;
  const server = await ownServer((stream) => {
    answering = stream;
    stream.once('close', () => closes.push(stream.rstCode));
    stream.respond({ ':status': 200 });
    stream.write(Buffer.alloc(1000));
  });
  t.teardown(server.close);
  const peer = await rawClient(server.port);
  peer.send(headersFrame(1, GET, FLAG_END_STREAM));
  await peer.waitFor((received) => received.type === FRAME_DATA);
  peer.socket.destroy();
  await until(() => closes.length > 0);
  t.deepEqual(closes, [H2_CANCEL]);
  t.false(answering!.write(Buffer.alloc(10)), 'writes after the close are refused, not thrown');
  answering!.end();
  t.is(peer.frames.filter((received) => received.type === FRAME_GOAWAY).length, 0);
});

test("'close' comes after the layer closed the stream and the promise jobs of that turn: an answer with END_STREAM to an ended request closes it inside respond, and the proxy records its status after an await", async (t) => {
  const events: string[] = [];
  // As h2-proxy.ts's fault abort: the answer written by an async function, the status recorded after its await.
  const answer = async (stream: OwnDownstreamStream): Promise<number> => {
    stream.respond({ ':status': '418' }, { endStream: true });
    return 418;
  };
  const server = await ownServer((stream) => {
    stream.once('close', () => events.push(`close ${stream.rstCode ?? 'clean'}`));
    void answer(stream).then((status) => events.push(`decided ${status}`));
  });
  t.teardown(server.close);
  const peer = await rawClient(server.port);
  t.teardown(() => peer.socket.destroy());
  peer.send(headersFrame(1, GET, FLAG_END_STREAM));
  await until(() => events.length === 2);
  t.deepEqual(events, ['decided 418', 'close clean']);
});
