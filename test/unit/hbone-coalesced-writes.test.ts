import test, { type ExecutionContext } from 'ava';
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

interface TwoTunnels {
  apps: net.Socket[];
  tunnels: Array<Promise<{ error?: Error }>>;
}

/** Two applications tunnelled over one HBONE connection to an echo target, each tunnel up and settled. */
async function twoTunnels(t: ExecutionContext): Promise<TwoTunnels> {
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
  return { apps, tunnels };
}

/** Writes a fresh request on each of `apps` in one tick; resolves with the TLS writes (both ends) of the round trip. */
async function roundTrip(t: ExecutionContext, apps: net.Socket[]): Promise<number> {
  const requests = apps.map(() => randomBytes(REQUEST_BYTES));
  const before = directWriteStats();
  const echoes = apps.map((app) => echoOf(app, REQUEST_BYTES));
  apps.forEach((app, index) => app.write(requests[index]!));
  const echoed = await Promise.all(echoes);
  const after = directWriteStats();
  echoed.forEach((echo, index) => t.deepEqual(echo, requests[index], `application ${index} got its own bytes back`));
  t.is(after.writesFailed, before.writesFailed, 'no direct write failed');
  // Every TLS write completes later (TLSWrap): writesInFlight counts them.
  return after.writesInFlight - before.writesInFlight;
}

/** The TLS writes are counted on the handle path of the own layer (direct-writes.ts); elsewhere only the bytes. */
function countsWrites(t: ExecutionContext): boolean {
  t.is(socketWriteMode, process.env.AMBIT_HBONE_STREAM_WRITES === '1' ? 'stream' : 'handle', 'the write mode this run asks for');
  return socketWriteMode === 'handle' && hboneImplementation() === 'own';
}

async function endTunnels(t: ExecutionContext, { apps, tunnels }: TwoTunnels): Promise<void> {
  for (const app of apps) app.end();
  const results = await Promise.all(tunnels);
  for (const result of results) t.is(result.error, undefined);
}

test.serial('two requests read in one poll phase go out in one TLS write, and so do their two echoes; both come back intact', async (t) => {
  const tunnels = await twoTunnels(t);
  const writes = await roundTrip(t, tunnels.apps);
  // One for the two requests, one for the two echoes.
  if (countsWrites(t)) t.is(writes, 2, 'TLS writes for the two round trips');
  await endTunnels(t, tunnels);
});

test.serial('after requests that come alone the DATA leaves at the read\'s end, and two that come together are gathered again', async (t) => {
  const tunnels = await twoTunnels(t);
  const [first, second] = tunnels.apps as [net.Socket, net.Socket];
  // Each alone (one read per poll phase at each end): one TLS write per request and per echo either way.
  const lone: number[] = [];
  for (let index = 0; index < 6; index++) lone.push(await roundTrip(t, [index % 2 === 0 ? first : second]));
  // Past the run of lone phases both ends flush at the read's end: the next pair leaves as two TLS writes at each end
  // (the second read finds the first's write of the same poll phase in flight, which turns the gathering on again).
  const pairAfterLone = await roundTrip(t, [first, second]);
  const pairAgain = await roundTrip(t, [first, second]);
  if (countsWrites(t)) {
    t.deepEqual(lone, [2, 2, 2, 2, 2, 2], 'one TLS write per lone request and per echo');
    t.is(pairAfterLone, 4, 'the first pair after the lone run: flushed at each read\'s end (two writes per end)');
    t.is(pairAgain, 2, 'the next pair: gathered again (one write per end)');
  }
  await endTunnels(t, tunnels);
});
