/**
 * HBONE tunnels on ambit's own HTTP/2 layer, end to end over real mutual TLS on loopback: our client ->
 * H2TunnelServer -> a TCP target. 1 GiB with a hash, half-close both ways, resets both ways, refusals.
 */
import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import type net from 'node:net';
import { H2_CANCEL, H2_CONNECT_ERROR } from '../../shared/hbone/h2/errors.ts';
import { spliceH2 } from '../../shared/hbone/h2/splice.ts';
import { openConnectStream } from '../../shared/hbone/h2/tunnel-client.ts';
import type { HboneError } from '../../shared/hbone/errors.ts';
import { closedPort, readAll, socketPair, startEcho, startTarget, waitFor } from '../helpers/hbone.ts';
import { openCollected, startH2Pair, StreamCollector } from '../helpers/h2-tunnel.ts';

test('1 GiB through client -> server -> TCP target arrives whole and in order (SHA-256), and END_STREAM becomes FIN', async (t) => {
  t.timeout(10 * 60 * 1000);
  // The target hashes until FIN and only then answers with the digest: the answer proves END_STREAM -> FIN, the
  // client seeing the end of it proves FIN -> END_STREAM.
  const target = await startTarget((socket) => {
    const hash = createHash('sha256');
    socket.on('data', (chunk: Buffer) => hash.update(chunk));
    socket.on('end', () => socket.end(hash.digest('hex')));
  });
  const pair = await startH2Pair();
  t.teardown(async () => {
    await pair.close();
    await target.close();
  });
  const connection = await pair.dial();
  const { stream, collector } = await openCollected(connection, pair.serverAddress, target.address);
  const base = randomBytes(1024 * 1024);
  const sent = createHash('sha256');
  const blocks = 1024;
  let drained: (() => void) | undefined;
  collector.onDrain = () => drained?.();
  for (let index = 0; index < blocks; index++) {
    const block = Buffer.from(base);
    block.writeUInt32BE(index, 0);
    sent.update(block);
    if (!stream.write(block)) await new Promise<void>((resolve) => (drained = resolve));
  }
  stream.end();
  const closed = await collector.done;
  t.is(collector.data.toString(), sent.digest('hex'));
  t.true(collector.ended);
  t.is(closed.rstCode, undefined);
});

test('a downstream socket spliced into a stream: data both ways, the app FIN ends the stream, the echo FIN comes back', async (t) => {
  const echo = await startEcho();
  const pair = await startH2Pair();
  const { app, downstream, close } = await socketPair();
  t.teardown(async () => {
    close();
    await pair.close();
    await echo.close();
  });
  const connection = await pair.dial();
  const stream = await openConnectStream(connection, { proxy: pair.serverAddress, destination: echo.address });
  const spliced = spliceH2(downstream, stream);
  const payload = randomBytes(8 * 1024 * 1024);
  const reply = readAll(app);
  app.end(payload);
  t.true((await reply).equals(payload));
  const result = await spliced;
  t.is(result.rstCode, undefined);
  t.is(result.bytesFromSocket, payload.length);
  t.is(result.bytesToSocket, payload.length);
});

test('a client reset reaches the target as a TCP reset, not a FIN', async (t) => {
  let targetSocket: net.Socket | undefined;
  const target = await startTarget((socket) => (targetSocket = socket));
  const pair = await startH2Pair();
  t.teardown(async () => {
    await pair.close();
    await target.close();
  });
  const connection = await pair.dial();
  const { stream } = await openCollected(connection, pair.serverAddress, target.address);
  t.true(await waitFor(() => targetSocket !== undefined));
  let sawEnd = false;
  const closed = new Promise<Error | undefined>((resolve) => {
    let error: Error | undefined;
    targetSocket!.on('end', () => (sawEnd = true));
    targetSocket!.on('error', (cause) => (error = cause));
    targetSocket!.on('close', () => resolve(error));
  });
  stream.write(Buffer.from('partial'));
  stream.reset(H2_CANCEL);
  const error = await closed;
  t.is((error as NodeJS.ErrnoException | undefined)?.code, 'ECONNRESET');
  t.false(sawEnd, 'the target never saw a clean end');
  t.false(connection.closed, 'the connection carries on');
});

test('a target reset reaches the client as RST_STREAM CONNECT_ERROR', async (t) => {
  const target = await startTarget((socket) => socket.once('data', () => socket.resetAndDestroy()));
  const pair = await startH2Pair();
  t.teardown(async () => {
    await pair.close();
    await target.close();
  });
  const connection = await pair.dial();
  const { stream, collector } = await openCollected(connection, pair.serverAddress, target.address);
  stream.write(Buffer.from('hello'));
  const closed = await collector.done;
  t.is(closed.rstCode, H2_CONNECT_ERROR);
  t.true(closed.resetByPeer);
  t.false(collector.ended, 'a reset is not an END_STREAM');
});

test('refusals: a policy denial is 401 (HBONE_DENIED), a closed target port is 503 (HBONE_REFUSED), a bad :authority 400', async (t) => {
  const echo = await startEcho();
  const pair = await startH2Pair({ server: { decide: (request) => (request.target.port === 1 ? { allow: false, reason: 'test' } : { allow: true }) } });
  t.teardown(async () => {
    await pair.close();
    await echo.close();
  });
  const connection = await pair.dial();
  const denied = await t.throwsAsync(openConnectStream(connection, { proxy: pair.serverAddress, destination: { host: '127.0.0.1', port: 1 } }));
  t.is((denied as HboneError).code, 'HBONE_DENIED');
  const refused = await t.throwsAsync(openConnectStream(connection, { proxy: pair.serverAddress, destination: { host: '127.0.0.1', port: await closedPort() } }));
  t.is((refused as HboneError).code, 'HBONE_REFUSED');
  // A host name where an ip:port belongs (our client would never send it: sent raw here).
  const badAuthority = new StreamCollector();
  const raw = connection.request([':method', 'CONNECT', ':authority', 'db.internal:5432'], badAuthority);
  t.true(await waitFor(() => raw.status !== 0 && badAuthority.ended));
  t.is(raw.status, 400);
  raw.end();
  t.is((await badAuthority.done).rstCode, undefined);
  // The connection is still good for the next tunnel.
  const { stream, collector } = await openCollected(connection, pair.serverAddress, echo.address);
  stream.end(Buffer.from('ok'));
  await collector.done;
  t.is(collector.data.toString(), 'ok');
  t.is(pair.server.requestsRefused, 3);
});

test('graceful server shutdown: an open tunnel finishes, then the connection closes; a new stream is refused', async (t) => {
  const echo = await startEcho();
  const pair = await startH2Pair();
  t.teardown(async () => {
    await pair.close();
    await echo.close();
  });
  const connection = await pair.dial();
  const { stream, collector } = await openCollected(connection, pair.serverAddress, echo.address);
  const goaway = new Promise<void>((resolve) => connection.once('goaway', () => resolve()));
  const shutdown = pair.server.shutdown(10_000);
  await goaway;
  t.false(connection.available);
  const late = await t.throwsAsync(openConnectStream(connection, { proxy: pair.serverAddress, destination: echo.address }));
  t.is((late as HboneError).code, 'HBONE_CONNECTION_CLOSED');
  stream.end(Buffer.from('last words'));
  const closed = await collector.done;
  t.is(closed.rstCode, undefined);
  t.is(collector.data.toString(), 'last words');
  await shutdown;
  t.true(connection.closed);
  t.is(connection.error, undefined);
});
