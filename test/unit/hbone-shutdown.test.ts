import test from 'ava';
import type { ClientHttp2Stream } from 'node:http2';
import type { HboneError } from '../../shared/hbone/index.ts';
import { H2DuplexStream } from '../../shared/hbone/h2/duplex.ts';
import { readAll, startEcho, startPair, waitFor } from '../helpers/hbone.ts';

test('shutdown sends GOAWAY, lets an open stream finish before the deadline, and refuses new streams', async (t) => {
  const echo = await startEcho();
  const pair = await startPair();
  t.teardown(async () => {
    await pair.close();
    await echo.close();
  });
  const stream = await pair.pool.open(pair.target(echo.address));
  // The connection the stream rides on, whichever HTTP/2 implementation (AMBIT_HBONE_IMPL) carries it.
  const connection = stream instanceof H2DuplexStream ? stream.stream.connection : (stream as ClientHttp2Stream).session!;
  const goaway = new Promise<void>((resolve) => connection.once('goaway', () => resolve()));
  const started = Date.now();
  let shutdownDone = 0;
  const shutdown = pair.server.shutdown(5000).then(() => (shutdownDone = Date.now()));
  await goaway;
  // The open stream keeps working during the drain: its echo comes back through the draining server.
  let received = '';
  const echoed = new Promise<void>((resolve) => stream.on('data', (chunk: Buffer) => {
    received += chunk.toString();
    if (received === 'still ') resolve();
  }));
  const ended = new Promise((resolve) => stream.once('end', resolve));
  stream.write('still ');
  await Promise.race([echoed, shutdown]);
  t.is(shutdownDone, 0, 'shutdown waits for the open stream (it relayed data after the GOAWAY)');
  // New streams are refused: the draining connection takes none and the listener is closed.
  const refused = await t.throwsAsync(pair.pool.open(pair.target(echo.address)));
  t.is((refused as HboneError).code, 'HBONE_CONNECT_FAILED');
  t.is(shutdownDone, 0, 'and still waits after the refusal');
  stream.end('draining');
  await ended;
  t.is(received, 'still draining');
  await shutdown;
  t.true(shutdownDone - started < 5000, `shutdown finished ${shutdownDone - started} ms after it began, before the deadline`);
  t.is(pair.server.stats().activeSessions, 0);
});

test('shutdown cuts streams still open at the deadline', async (t) => {
  const echo = await startEcho();
  const pair = await startPair();
  t.teardown(async () => {
    await pair.close();
    await echo.close();
  });
  const stream = await pair.pool.open(pair.target(echo.address));
  stream.on('error', () => {});
  stream.write('hello');
  await new Promise<void>((resolve) => stream.once('data', () => resolve()));
  const targetSocket = echo.accepted[0]!;
  const targetClosed = new Promise<void>((resolve) => (targetSocket.destroyed ? resolve() : targetSocket.once('close', () => resolve())));
  const streamClosed = new Promise<void>((resolve) => stream.once('close', () => resolve()));
  const started = Date.now();
  await pair.server.shutdown(300);
  const elapsed = Date.now() - started;
  t.true(elapsed >= 290 && elapsed < 2000, `shutdown took ${elapsed} ms for a 300 ms deadline`);
  await streamClosed;
  t.is((stream as ClientHttp2Stream).rstCode, 8, 'the stream was cut with RST_STREAM CANCEL, not ended cleanly');
  await targetClosed;
  t.true(await waitFor(() => pair.pool.stats().connections === 0, 2000));
});

test('handle() serves sockets from the caller\'s own listener, and refuses them after shutdown', async (t) => {
  const net = await import('node:net');
  const echo = await startEcho();
  const pair = await startPair();
  const own = net.createServer((socket) => pair.server.handle(socket));
  await new Promise<void>((resolve) => own.listen(0, '127.0.0.1', resolve));
  const port = (own.address() as import('node:net').AddressInfo).port;
  t.teardown(async () => {
    own.close();
    await pair.close();
    await echo.close();
  });
  const proxy = { host: '127.0.0.1', port };
  const stream = await pair.pool.open(pair.target(echo.address, { proxy }));
  stream.end('via handle');
  t.is((await readAll(stream)).toString(), 'via handle');
  await pair.server.shutdown(100);
  const error = await t.throwsAsync(pair.pool.open(pair.target(echo.address, { proxy })));
  t.is((error as HboneError).code, 'HBONE_TLS', (error as Error).message);
});
