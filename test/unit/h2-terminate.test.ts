/**
 * What the waypoint needs of the own HTTP/2 layer to terminate HBONE on it (waypoint/hbone-leg.ts): the server's
 * `terminateStream` (the CONNECT handed over instead of connected; resets before the answer still spend the
 * rapid-reset budget), and H2DuplexStream's node:http2 face (`close(code)`, `setTimeout`). Real mutual TLS on loopback.
 */
import test from 'ava';
import { once } from 'node:events';
import { H2DuplexStream } from '../../shared/hbone/h2/duplex.ts';
import { H2_CANCEL, H2_CONNECT_ERROR, H2_NO_ERROR } from '../../shared/hbone/h2/errors.ts';
import type { H2Stream } from '../../shared/hbone/h2/stream.ts';
import { openConnectStream, requestConnectStream } from '../../shared/hbone/h2/tunnel-client.ts';
import type { HboneRejection, HboneRequest } from '../../shared/hbone/types.ts';
import { waitFor } from '../helpers/hbone.ts';
import { startH2Pair, StreamCollector } from '../helpers/h2-tunnel.ts';

const NOWHERE = { host: '10.255.255.1', port: 9 };

/** A pair whose server answers every CONNECT 200 and hands the stream over as an H2DuplexStream (in `served`). */
async function startDuplexPair(): Promise<{ pair: Awaited<ReturnType<typeof startH2Pair>>; served: H2DuplexStream[] }> {
  const served: H2DuplexStream[] = [];
  const pair = await startH2Pair({
    server: {
      terminateStream: (_request, stream) => {
        stream.respond(200);
        served.push(new H2DuplexStream(stream));
      },
    },
  });
  return { pair, served };
}

test('terminateStream takes the CONNECT: the handler answers it and owns its data both ways; no target is dialled', async (t) => {
  const handed: Array<{ request: HboneRequest; stream: H2Stream }> = [];
  const pair = await startH2Pair({
    server: {
      // A target the server would time out on: were it dialled, the answer would be a 503 much later.
      connect: () => {
        throw new Error('terminateStream must not connect');
      },
      terminateStream: (request, stream) => {
        handed.push({ request, stream });
        stream.respond(200);
        const duplex = new H2DuplexStream(stream);
        duplex.on('data', (chunk: Buffer) => duplex.write(Buffer.from(chunk.toString().toUpperCase())));
        duplex.once('end', () => duplex.end());
      },
    },
  });
  t.teardown(() => pair.close());
  const connection = await pair.dial();
  const stream = await openConnectStream(connection, { proxy: pair.serverAddress, destination: NOWHERE, headers: { traceparent: '00-abc-def-01' } });
  const collector = new StreamCollector();
  stream.setHandler(collector);
  stream.end(Buffer.from('hello waypoint'));
  const closed = await collector.done;
  t.is(collector.data.toString(), 'HELLO WAYPOINT');
  t.true(collector.ended);
  t.is(closed.rstCode, undefined);
  t.is(handed.length, 1);
  t.deepEqual(handed[0]!.request.target, NOWHERE);
  t.is(handed[0]!.request.headers['traceparent'], '00-abc-def-01');
  t.is(pair.server.stats().tunnelsOpened, 1);
});

test('terminateStream: streams reset before the handler answered spend the rapid-reset budget, answered ones do not', async (t) => {
  const rejections: HboneRejection[] = [];
  const held: H2Stream[] = [];
  let answerThem = true;
  const pair = await startH2Pair({
    server: {
      prematureResetBurst: 3,
      prematureResetRatePerSecond: 0.001,
      onRejected: (rejection) => rejections.push(rejection),
      terminateStream: (_request, stream) => {
        held.push(stream);
        if (answerThem) stream.respond(200);
      },
    },
  });
  t.teardown(() => pair.close());
  const connection = await pair.dial();
  // Five answered streams, reset by the client: no budget spent, the connection stays.
  for (let index = 0; index < 5; index++) {
    const stream = await openConnectStream(connection, { proxy: pair.serverAddress, destination: NOWHERE });
    stream.reset(H2_CANCEL);
  }
  await waitFor(() => held.filter((stream) => stream.closed).length === 5);
  t.is(rejections.length, 0);
  t.false(connection.closed);
  // Unanswered ones: the fourth reset is over the burst of 3, and the connection goes with ENHANCE_YOUR_CALM.
  answerThem = false;
  for (let index = 0; index < 4 && !connection.closed; index++) {
    const { stream, opened } = requestConnectStream(connection, { proxy: pair.serverAddress, destination: NOWHERE });
    opened.catch(() => undefined);
    await waitFor(() => held.length === 6 + index || connection.closed);
    stream?.reset(H2_CANCEL);
  }
  await waitFor(() => connection.closed);
  t.deepEqual(rejections.map((rejection) => rejection.reason), ['stream_flood']);
  t.is(pair.server.stats().streamFloods, 1);
});

test("H2DuplexStream.close(code): the peer sees RST_STREAM with that code; NO_ERROR is no 'error' here, CONNECT_ERROR is", async (t) => {
  const { pair, served } = await startDuplexPair();
  t.teardown(() => pair.close());
  const connection = await pair.dial();
  for (const code of [H2_NO_ERROR, H2_CONNECT_ERROR]) {
    const stream = await openConnectStream(connection, { proxy: pair.serverAddress, destination: NOWHERE });
    const collector = new StreamCollector();
    stream.setHandler(collector);
    await waitFor(() => served.length > 0);
    const duplex = served.shift()!;
    const errors: Error[] = [];
    duplex.on('error', (error) => errors.push(error));
    const closedHere = new Promise((resolve) => duplex.once('close', resolve));
    duplex.close(code);
    await closedHere;
    const closed = await collector.done;
    t.is(closed.rstCode, code, `the client's stream was reset with ${code}`);
    t.true(closed.resetByPeer);
    t.false(collector.ended);
    t.is(duplex.rstCode, code);
    t.is(errors.length, code === H2_NO_ERROR ? 0 : 1);
  }
});

test("H2DuplexStream.setTimeout: 'timeout' comes only after that long with no data either way", async (t) => {
  const { pair, served } = await startDuplexPair();
  t.teardown(() => pair.close());
  const connection = await pair.dial();
  const stream = await openConnectStream(connection, { proxy: pair.serverAddress, destination: NOWHERE });
  stream.setHandler(new StreamCollector());
  await waitFor(() => served.length === 1);
  const duplex = served[0]!;
  const idleMs = 300;
  let lastData = performance.now();
  duplex.on('data', () => (lastData = performance.now()));
  const timedOut = new Promise<number>((resolve) => duplex.setTimeout(idleMs, () => resolve(performance.now())));
  // Data for three times the limit, a chunk every 50 ms: whenever the timeout comes, it is at least idleMs after
  // the last chunk before it (however late the loop runs the timers).
  let sending = true;
  const sender = (async () => {
    const until = performance.now() + 3 * idleMs;
    while (performance.now() < until) {
      stream.write(Buffer.from('x'));
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    sending = false;
  })();
  const at = await timedOut;
  t.true(at - lastData >= idleMs - 1, `timed out ${Math.round(at - lastData)} ms after the last data (limit ${idleMs} ms)`);
  await sender;
  t.false(sending);
  const closedHere = once(duplex, 'close');
  duplex.close(H2_NO_ERROR);
  await closedHere;
});
