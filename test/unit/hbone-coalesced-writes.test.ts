import test from 'ava';
import { randomBytes } from 'node:crypto';
import type net from 'node:net';
import { hboneImplementation } from '../../shared/hbone/config.ts';
import { directWriteStats, socketWriteMode } from '../../shared/hbone/direct-writes.ts';
import { socketPair, startPair, startTarget } from '../helpers/hbone.ts';

/**
 * Two applications' requests that reach the client side in one poll phase (the mesh suite's load sends its requests
 * in pairs, and an agent read two of them in more than half of its wake-ups: BENCHMARKS.md, session s14) leave in
 * one TLS write, and the echoes that reach the server side together leave in one too (shared/hbone/h2/connection.ts,
 * #write's `coalesce`): two TLS writes for the round trip of both, where a flush at each read's end made four (the
 * second of each pair behind the first's completion). Both ends and the echo target run in this one process, so
 * the two sockets the test writes in one tick are read in one poll phase. Every byte must come back as sent.
 */
const REQUEST_BYTES = 1024;

function echoOf(app: net.Socket, bytes: number): Promise<Buffer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let received = 0;
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk);
      received += chunk.length;
      if (received < bytes) return;
      app.off('data', onData);
      resolve(Buffer.concat(chunks));
    };
    app.on('data', onData);
  });
}

test('two requests read in one poll phase go out in one TLS write, and so do their two echoes; both come back intact', async (t) => {
  const target = await startTarget((socket) => socket.pipe(socket));
  const pair = await startPair();
  const sockets = await Promise.all([socketPair(), socketPair()]);
  t.teardown(async () => {
    for (const pairOfSockets of sockets) pairOfSockets.close();
    await pair.close();
    await target.close();
  });
  const apps = sockets.map((pairOfSockets) => pairOfSockets.app);
  const tunnels = sockets.map((pairOfSockets) => pair.pool.tunnel(pair.target(target.address), pairOfSockets.downstream));
  // Both tunnels up and settled: one byte each way on each.
  await Promise.all(apps.map((app) => {
    const echoed = echoOf(app, 1);
    app.write('x');
    return echoed;
  }));
  await new Promise((resolve) => setTimeout(resolve, 50));
  t.is(pair.pool.stats().connections, 1, 'both tunnels share one HBONE connection');

  const requests = [randomBytes(REQUEST_BYTES), randomBytes(REQUEST_BYTES)];
  const before = directWriteStats();
  const echoes = apps.map((app) => echoOf(app, REQUEST_BYTES));
  apps[0]!.write(requests[0]!);
  apps[1]!.write(requests[1]!);
  const echoed = await Promise.all(echoes);
  const after = directWriteStats();
  t.deepEqual(echoed[0], requests[0], 'the first application got its own bytes back');
  t.deepEqual(echoed[1], requests[1], 'the second application got its own bytes back');

  t.is(socketWriteMode, process.env.AMBIT_HBONE_STREAM_WRITES === '1' ? 'stream' : 'handle', 'the write mode this run asks for');
  if (socketWriteMode === 'handle' && hboneImplementation() === 'own') {
    // Every TLS write completes later (TLSWrap): writesInFlight counts them. One for the two requests, one for the
    // two echoes.
    t.is(after.writesInFlight - before.writesInFlight, 2, `TLS writes for the two round trips: ${JSON.stringify({ before, after })}`);
    t.is(after.writesFailed, before.writesFailed, 'no direct write failed');
  }
  for (const app of apps) app.end();
  const results = await Promise.all(tunnels);
  for (const result of results) t.is(result.error, undefined);
});
