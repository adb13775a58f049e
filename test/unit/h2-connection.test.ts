/**
 * The connection of ambit's own HTTP/2 layer against a hand-driven peer over real loopback TCP: every hostile
 * input gets the RFC's GOAWAY or RST_STREAM code and never an exception in our process; and between two of our
 * own connections, flow control with large windows, half-close and resets both ways, GOAWAY drain, keepalive.
 */
import test from 'ava';
import type { H2Connection } from '../../shared/hbone/h2/connection.ts';
import {
  H2_CANCEL,
  H2_COMPRESSION_ERROR,
  H2_ENHANCE_YOUR_CALM,
  H2_FLOW_CONTROL_ERROR,
  H2_FRAME_SIZE_ERROR,
  H2_NO_ERROR,
  H2_PROTOCOL_ERROR,
  H2_REFUSED_STREAM,
  H2_STREAM_CLOSED,
  type H2Error,
} from '../../shared/hbone/h2/errors.ts';
import {
  FLAG_ACK,
  FLAG_END_HEADERS,
  FLAG_END_STREAM,
  FRAME_CONTINUATION,
  FRAME_DATA,
  FRAME_HEADERS,
  FRAME_PING,
  FRAME_PUSH_PROMISE,
  FRAME_SETTINGS,
  pingFrame,
  rstStreamFrame,
  SETTINGS_INITIAL_WINDOW_SIZE,
  SETTINGS_MAX_FRAME_SIZE,
  settingsFrame,
  windowUpdateFrame,
} from '../../shared/hbone/h2/frame.ts';
import { writeInteger } from '../../shared/hbone/h2/hpack.ts';
import type { H2Stream, H2StreamHandler } from '../../shared/hbone/h2/stream.ts';
import { clientUnderTest, CONNECT_HEADERS, connectionPair, frame, headersFrame, serverUnderTest } from '../helpers/h2-raw-peer.ts';
import { StreamCollector } from '../helpers/h2-tunnel.ts';

/** Resolves with the error our connection ended with (it must end). */
function endedWith(connection: H2Connection): Promise<H2Error | undefined> {
  return new Promise((resolve) => (connection.closed ? resolve(connection.error) : connection.once('close', () => resolve(connection.error))));
}

test('PING is answered with the same payload; unknown frame types and PRIORITY are ignored', async (t) => {
  const { peer, connection, close } = await serverUnderTest();
  t.teardown(close);
  const opaque = Buffer.from('01234567');
  peer.send(frame(0xfa, 0, 0, Buffer.alloc(30)), frame(2, 0, 1, Buffer.alloc(5)), pingFrame(opaque, false));
  const ack = await peer.waitFor((received) => received.type === FRAME_PING && (received.flags & FLAG_ACK) !== 0);
  t.true(ack.payload.equals(opaque));
  t.false(connection.closed);
});

test('a first frame other than SETTINGS is a PROTOCOL_ERROR', async (t) => {
  const { peer, connection, close } = await serverUnderTest({}, false);
  t.teardown(close);
  peer.send(Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), pingFrame(Buffer.alloc(8), false));
  t.is(await peer.goawayCode(), H2_PROTOCOL_ERROR);
  t.is((await endedWith(connection))?.wireCode, H2_PROTOCOL_ERROR);
  await peer.closed;
});

test('a client that does not send the preface (an HTTP/1 request) gets GOAWAY PROTOCOL_ERROR', async (t) => {
  const { peer, connection, close } = await serverUnderTest({}, false);
  t.teardown(close);
  peer.send(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
  t.is(await peer.goawayCode(), H2_PROTOCOL_ERROR);
  t.regex((await endedWith(connection))!.message, /preface/);
});

test('a frame longer than our SETTINGS_MAX_FRAME_SIZE is a FRAME_SIZE_ERROR', async (t) => {
  const { peer, close } = await serverUnderTest({ maxFrameSize: 16_384 });
  t.teardown(close);
  peer.send(headersFrame(1, CONNECT_HEADERS), frame(FRAME_DATA, 0, 1, Buffer.alloc(16_385)));
  t.is(await peer.goawayCode(), H2_FRAME_SIZE_ERROR);
});

test('an HPACK bomb in a request is cut off with ENHANCE_YOUR_CALM before it is expanded', async (t) => {
  const { peer, streams, close } = await serverUnderTest({ maxHeaderListBytes: 16 * 1024 });
  t.teardown(close);
  const block = Buffer.alloc(6000);
  let offset = 0;
  block[offset++] = 0x40;
  offset = writeInteger(block, offset, 1, 7, 0);
  block[offset++] = 0x62;
  offset = writeInteger(block, offset, 4000, 7, 0);
  offset += block.write('x'.repeat(4000), offset, 'latin1');
  block.fill(0xbe, offset, offset + 1000);
  peer.send(frame(FRAME_HEADERS, FLAG_END_HEADERS, 1, block.subarray(0, offset + 1000)));
  t.is(await peer.goawayCode(), H2_ENHANCE_YOUR_CALM);
  t.is(streams.length, 0);
});

test('an undecodable header block is a COMPRESSION_ERROR', async (t) => {
  const { peer, close } = await serverUnderTest();
  t.teardown(close);
  peer.send(frame(FRAME_HEADERS, FLAG_END_HEADERS, 1, Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0x0f])));
  t.is(await peer.goawayCode(), H2_COMPRESSION_ERROR);
});

test('a CONTINUATION flood is cut off with ENHANCE_YOUR_CALM; another frame inside a header block is a PROTOCOL_ERROR', async (t) => {
  const flood = await serverUnderTest({ maxContinuationFrames: 32 });
  t.teardown(flood.close);
  const continuations = Array.from({ length: 40 }, () => frame(FRAME_CONTINUATION, 0, 1, Buffer.alloc(0)));
  flood.peer.send(frame(FRAME_HEADERS, 0, 1, Buffer.from([0x82])), ...continuations);
  t.is(await flood.peer.goawayCode(), H2_ENHANCE_YOUR_CALM);

  const interleaved = await serverUnderTest();
  t.teardown(interleaved.close);
  interleaved.peer.send(frame(FRAME_HEADERS, 0, 1, Buffer.from([0x82])), pingFrame(Buffer.alloc(8), false));
  t.is(await interleaved.peer.goawayCode(), H2_PROTOCOL_ERROR);
});

test('a header block split over HEADERS and CONTINUATION is assembled', async (t) => {
  const { peer, streams, close } = await serverUnderTest();
  t.teardown(close);
  const whole = headersFrame(1, [...CONNECT_HEADERS, 'traceparent', '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01']).subarray(9);
  peer.send(frame(FRAME_HEADERS, 0, 1, whole.subarray(0, 5)), frame(FRAME_CONTINUATION, 0, 1, whole.subarray(5, 20)), frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 1, whole.subarray(20)));
  peer.send(pingFrame(Buffer.alloc(8), false));
  await peer.waitFor((received) => received.type === FRAME_PING);
  t.is(streams.length, 1);
  t.is(streams[0]!.header(':authority'), '10.0.0.1:80');
  t.is(streams[0]!.header('traceparent'), '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01');
});

test('a stream flood past SETTINGS_MAX_CONCURRENT_STREAMS is refused stream by stream; the connection lives on', async (t) => {
  const { peer, connection, streams, close } = await serverUnderTest({ maxConcurrentStreams: 5 });
  t.teardown(close);
  const opens = Array.from({ length: 8 }, (_, index) => headersFrame(2 * index + 1, CONNECT_HEADERS));
  peer.send(...opens, pingFrame(Buffer.alloc(8), false));
  await peer.waitFor((received) => received.type === FRAME_PING);
  t.is(streams.length, 5);
  for (const id of [11, 13, 15]) t.is(await peer.rstCode(id), H2_REFUSED_STREAM);
  t.is(connection.stats.streamsRefused, 3);
  t.false(connection.closed);
  // Once one closes, another fits.
  streams[0]!.reset();
  peer.send(headersFrame(17, CONNECT_HEADERS), pingFrame(Buffer.from('second!!'), false));
  await peer.waitFor((received) => received.type === FRAME_PING && received.payload.toString() === 'second!!');
  t.is(streams.length, 6);
});

test('rapid reset (streams opened and reset faster than the budget) ends the connection with ENHANCE_YOUR_CALM', async (t) => {
  const { peer, connection, close } = await serverUnderTest({ resetBurst: 20, resetRatePerSecond: 1 });
  t.teardown(close);
  const frames: Buffer[] = [];
  for (let index = 0; index < 50; index++) frames.push(headersFrame(2 * index + 1, CONNECT_HEADERS), rstStreamFrame(2 * index + 1, H2_CANCEL));
  peer.send(...frames);
  t.is(await peer.goawayCode(), H2_ENHANCE_YOUR_CALM);
  t.regex((await endedWith(connection))!.message, /rapid reset/);
  t.true(connection.stats.resetsReceived <= 22);
});

test('a flood of empty DATA frames is cut off with ENHANCE_YOUR_CALM; a few are harmless', async (t) => {
  const { peer, connection, close } = await serverUnderTest();
  t.teardown(close);
  peer.send(headersFrame(1, CONNECT_HEADERS), ...Array.from({ length: 10 }, () => frame(FRAME_DATA, 0, 1)), pingFrame(Buffer.alloc(8), false));
  await peer.waitFor((received) => received.type === FRAME_PING);
  t.false(connection.closed);
  peer.send(...Array.from({ length: 1200 }, () => frame(FRAME_DATA, 0, 1)));
  t.is(await peer.goawayCode(), H2_ENHANCE_YOUR_CALM);
});

test('window overflow: past 2^31-1 on the connection is GOAWAY FLOW_CONTROL_ERROR, on a stream RST_STREAM', async (t) => {
  const onStream = await serverUnderTest();
  t.teardown(onStream.close);
  onStream.peer.send(headersFrame(1, CONNECT_HEADERS), windowUpdateFrame(1, 2 ** 31 - 1));
  t.is(await onStream.peer.rstCode(1), H2_FLOW_CONTROL_ERROR);
  onStream.peer.send(headersFrame(3, CONNECT_HEADERS), windowUpdateFrame(3, 0));
  t.is(await onStream.peer.rstCode(3), H2_PROTOCOL_ERROR);
  t.false(onStream.connection.closed);

  const onConnection = await serverUnderTest();
  t.teardown(onConnection.close);
  onConnection.peer.send(windowUpdateFrame(0, 2 ** 31 - 1));
  t.is(await onConnection.peer.goawayCode(), H2_FLOW_CONTROL_ERROR);

  const bySettings = await serverUnderTest();
  t.teardown(bySettings.close);
  const settings = Buffer.alloc(6);
  settings.writeUInt16BE(SETTINGS_INITIAL_WINDOW_SIZE, 0);
  settings.writeUInt32BE(2 ** 31, 2);
  bySettings.peer.send(frame(FRAME_SETTINGS, 0, 0, settings));
  t.is(await bySettings.peer.goawayCode(), H2_FLOW_CONTROL_ERROR);
});

test('a peer sending past our windows: the stream is reset, the connection ended (FLOW_CONTROL_ERROR)', async (t) => {
  const stream = await serverUnderTest({ streamWindowBytes: 65_535 });
  t.teardown(stream.close);
  stream.peer.send(headersFrame(1, CONNECT_HEADERS), frame(FRAME_DATA, 0, 1, Buffer.alloc(16_000)), frame(FRAME_DATA, 0, 1, Buffer.alloc(16_000)));
  stream.peer.send(frame(FRAME_DATA, 0, 1, Buffer.alloc(16_000)), frame(FRAME_DATA, 0, 1, Buffer.alloc(16_000)), frame(FRAME_DATA, 0, 1, Buffer.alloc(16_000)));
  t.is(await stream.peer.rstCode(1), H2_FLOW_CONTROL_ERROR);
  t.false(stream.connection.closed);

  // Our connection window is credited as data arrives (at half), so only one frame larger than what is left can
  // overrun it: allow large frames and send one.
  const connection = await serverUnderTest({ streamWindowBytes: 1 << 20, connectionWindowBytes: 65_535, maxFrameSize: 1 << 20 });
  t.teardown(connection.close);
  connection.peer.send(headersFrame(1, CONNECT_HEADERS), frame(FRAME_DATA, 0, 1, Buffer.alloc(70_000)));
  t.is(await connection.peer.goawayCode(), H2_FLOW_CONTROL_ERROR);
});

test('malformed requests are reset with PROTOCOL_ERROR and never reach the server; a good one after them does', async (t) => {
  const { peer, streams, connection, close } = await serverUnderTest();
  t.teardown(close);
  const malformed = [
    [':method', 'CONNECT', ':authority', '10.0.0.1:80', ':path', '/'],
    [':method', 'CONNECT', ':scheme', 'https', ':authority', '10.0.0.1:80'],
    [':method', 'CONNECT'],
    [':authority', '10.0.0.1:80'],
    [':method', 'CONNECT', ':authority', '10.0.0.1:80', 'X-Upper', '1'],
    [':method', 'CONNECT', ':authority', '10.0.0.1:80', 'connection', 'close'],
    [':method', 'CONNECT', 'x-a', '1', ':authority', '10.0.0.1:80'],
    [':method', 'CONNECT', ':authority', '10.0.0.1:80', ':status', '200'],
    [':method', 'CONNECT', ':method', 'CONNECT', ':authority', '10.0.0.1:80'],
    [':method', 'CONNECT', ':authority', '10.0.0.1:80', 'x-bad', 'a\r\nb'],
  ];
  malformed.forEach((headers, index) => peer.send(headersFrame(2 * index + 1, headers)));
  for (let index = 0; index < malformed.length; index++) t.is(await peer.rstCode(2 * index + 1), H2_PROTOCOL_ERROR, JSON.stringify(malformed[index]));
  t.is(streams.length, 0);
  peer.send(headersFrame(101, CONNECT_HEADERS), pingFrame(Buffer.alloc(8), false));
  await peer.waitFor((received) => received.type === FRAME_PING);
  t.is(streams.length, 1);
  t.false(connection.closed);
});

test('stream id abuse: even ids from a client, DATA on a never-opened stream, a reused id', async (t) => {
  const even = await serverUnderTest();
  t.teardown(even.close);
  even.peer.send(headersFrame(2, CONNECT_HEADERS));
  t.is(await even.peer.goawayCode(), H2_PROTOCOL_ERROR);

  const idle = await serverUnderTest();
  t.teardown(idle.close);
  idle.peer.send(frame(FRAME_DATA, 0, 7, Buffer.alloc(10)));
  t.is(await idle.peer.goawayCode(), H2_PROTOCOL_ERROR);

  const reused = await serverUnderTest();
  t.teardown(reused.close);
  reused.peer.send(headersFrame(5, CONNECT_HEADERS), headersFrame(3, CONNECT_HEADERS));
  t.is(await reused.peer.goawayCode(), H2_STREAM_CLOSED);
});

test('bad SETTINGS values: MAX_FRAME_SIZE out of range is a PROTOCOL_ERROR', async (t) => {
  const { peer, close } = await serverUnderTest();
  t.teardown(close);
  const settings = Buffer.alloc(6);
  settings.writeUInt16BE(SETTINGS_MAX_FRAME_SIZE, 0);
  settings.writeUInt32BE(100, 2);
  peer.send(frame(FRAME_SETTINGS, 0, 0, settings));
  t.is(await peer.goawayCode(), H2_PROTOCOL_ERROR);
});

test('a hostile server: PUSH_PROMISE is a PROTOCOL_ERROR; DATA before the response headers resets the stream', async (t) => {
  const push = await clientUnderTest();
  t.teardown(push.close);
  push.connection.request(CONNECT_HEADERS, new StreamCollector());
  push.peer.send(frame(FRAME_PUSH_PROMISE, FLAG_END_HEADERS, 1, Buffer.from([0, 0, 0, 2, 0x82])));
  t.is(await push.peer.goawayCode(), H2_PROTOCOL_ERROR);

  const early = await clientUnderTest();
  t.teardown(early.close);
  const collector = new StreamCollector();
  early.connection.request(CONNECT_HEADERS, collector);
  early.peer.send(frame(FRAME_DATA, 0, 1, Buffer.from('sneaky')));
  t.is(await early.peer.rstCode(1), H2_PROTOCOL_ERROR);
  const stream = await collector.done;
  t.is(stream.rstCode, H2_PROTOCOL_ERROR);
  t.is(collector.bytes, 0, 'nothing was delivered');
});

test('a server that stops answering PINGs is detected by keepalive (H2_TIMEOUT)', async (t) => {
  const { connection, close } = await clientUnderTest({ keepaliveIntervalMs: 50, keepaliveTimeoutMs: 200 });
  t.teardown(close);
  const error = await endedWith(connection);
  t.is(error?.code, 'H2_TIMEOUT');
});

/** A handler that collects data and can hold back credit, for flow-control tests. */
class PausingCollector extends StreamCollector implements H2StreamHandler {
  override onData(stream: H2Stream, chunk: Buffer): void {
    super.onData(stream, chunk);
    stream.pauseReading();
  }
}

test('flow control with 4 MiB stream windows: a sender stops at the window while the reader is paused, then finishes', async (t) => {
  const pair = await connectionPair();
  t.teardown(pair.close);
  const streamOpened = pair.nextServerStream();
  const sender = new StreamCollector();
  const stream = pair.client.request(CONNECT_HEADERS, sender);
  const serverStream = await streamOpened;
  const reader = new PausingCollector();
  reader.onChunk = () => {};
  serverStream.setHandler(reader);
  serverStream.respond(200);
  const total = 12 * 1024 * 1024;
  const block = Buffer.alloc(64 * 1024, 1);
  let written = 0;
  const pumped = (async () => {
    while (written < total) {
      const more = stream.write(block);
      written += block.length;
      if (!more) await new Promise<void>((resolve) => (sender.onDrain = () => resolve()));
    }
    stream.end();
  })();
  const window = 4 * 1024 * 1024;
  const until = (condition: () => boolean): Promise<void> =>
    new Promise((resolve) => {
      const check = (): void => (condition() ? resolve() : void setTimeout(check, 5));
      check();
    });
  await until(() => reader.bytes >= window);
  // A PING round trip after the window filled: anything sent past the window would have arrived before its ACK.
  await new Promise<void>((resolve) => pair.client.ping(() => resolve()));
  t.is(reader.bytes, window, 'not one byte past the stream window while the reader held its credit');
  t.is(stream.sendWindow, 0);
  t.true(written < total, 'the writer was held back');
  // Now let it flow: the reader takes everything and credits as it goes.
  serverStream.setHandler({
    onData: (_stream, chunk) => void (reader.bytes += chunk.length),
    onEnd: () => void (reader.ended = true),
    onDrain: () => {},
    onClose: () => {},
  });
  serverStream.resumeReading();
  await pumped;
  await until(() => reader.ended);
  t.is(reader.bytes, total);
});

test('half-close both ways and resets both ways between our client and server', async (t) => {
  const pair = await connectionPair();
  t.teardown(pair.close);
  // Client ends first; the server keeps sending, then ends: the stream closes cleanly.
  let opened = pair.nextServerStream();
  const clientSide = new StreamCollector();
  const stream = pair.client.request(CONNECT_HEADERS, clientSide);
  let serverStream = await opened;
  const serverSide = new StreamCollector();
  serverStream.setHandler(serverSide);
  serverStream.respond(200);
  stream.write(Buffer.from('request'));
  stream.end();
  await new Promise<void>((resolve) => {
    const check = (): void => (serverSide.ended ? resolve() : void setTimeout(check, 5));
    check();
  });
  t.is(serverSide.data.toString(), 'request');
  t.false(serverStream.closed, 'half-closed: the server side may still send');
  serverStream.write(Buffer.from('response after the client FIN'));
  serverStream.end();
  const clean = await clientSide.done;
  t.is(clientSide.data.toString(), 'response after the client FIN');
  t.true(clientSide.ended);
  t.is(clean.rstCode, undefined);

  // The server resets: the client sees the peer's code.
  opened = pair.nextServerStream();
  const resetByServer = new StreamCollector();
  pair.client.request(CONNECT_HEADERS, resetByServer);
  serverStream = await opened;
  serverStream.respond(200);
  serverStream.reset(0xa);
  const reset = await resetByServer.done;
  t.is(reset.rstCode, 0xa);
  t.true(reset.resetByPeer);

  // The client resets: the server stream closes with CANCEL, by the peer.
  opened = pair.nextServerStream();
  const clientStream = pair.client.request(CONNECT_HEADERS, new StreamCollector());
  serverStream = await opened;
  const serverCollector = new StreamCollector();
  serverStream.setHandler(serverCollector);
  clientStream.reset();
  const serverReset = await serverCollector.done;
  t.is(serverReset.rstCode, H2_CANCEL);
  t.true(serverReset.resetByPeer);
  t.false(pair.client.closed);
  t.false(pair.server.closed);
});

test('GOAWAY drain: no new streams, the open stream finishes both ways, then both ends close cleanly', async (t) => {
  const pair = await connectionPair();
  t.teardown(pair.close);
  const opened = pair.nextServerStream();
  const clientSide = new StreamCollector();
  const stream = pair.client.request(CONNECT_HEADERS, clientSide);
  const serverStream = await opened;
  const serverSide = new StreamCollector();
  serverStream.setHandler(serverSide);
  serverStream.respond(200);
  const goaway = new Promise<number>((resolve) => pair.client.once('goaway', (code: number) => resolve(code)));
  pair.server.close();
  t.is(await goaway, H2_NO_ERROR);
  t.false(pair.client.available);
  t.throws(() => pair.client.request(CONNECT_HEADERS, new StreamCollector()), { message: /closing/ });
  stream.write(Buffer.from('still flowing'));
  stream.end();
  serverStream.write(Buffer.from('and back'));
  serverStream.end();
  const done = await clientSide.done;
  await serverSide.done;
  t.is(done.rstCode, undefined);
  t.is(clientSide.data.toString(), 'and back');
  t.is(serverSide.data.toString(), 'still flowing');
  t.is(await endedWith(pair.client), undefined);
  t.is(await endedWith(pair.server), undefined);
});

test('END_STREAM on the request HEADERS and trailers both end the remote side', async (t) => {
  const { peer, streams, close } = await serverUnderTest();
  t.teardown(close);
  peer.send(headersFrame(1, CONNECT_HEADERS, FLAG_END_STREAM), headersFrame(3, CONNECT_HEADERS), frame(FRAME_DATA, 0, 3, Buffer.from('x')), headersFrame(3, ['x-trailer', '1'], FLAG_END_STREAM));
  peer.send(pingFrame(Buffer.alloc(8), false));
  await peer.waitFor((received) => received.type === FRAME_PING);
  t.is(streams.length, 2);
  t.true(streams[0]!.remoteEnded);
  t.true(streams[1]!.remoteEnded);
  // Trailers without END_STREAM are malformed.
  peer.send(headersFrame(5, CONNECT_HEADERS), headersFrame(5, ['x-trailer', '1']));
  t.is(await peer.rstCode(5), H2_PROTOCOL_ERROR);
});

test('SETTINGS are acknowledged', async (t) => {
  const { peer, close } = await serverUnderTest();
  t.teardown(close);
  peer.send(settingsFrame([[SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20]]));
  const acks = await peer.waitFor((received) => received.type === FRAME_SETTINGS && (received.flags & FLAG_ACK) !== 0);
  t.is(acks.payload.length, 0);
});
