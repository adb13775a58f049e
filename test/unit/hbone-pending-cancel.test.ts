/**
 * A tunnel's client that leaves while its CONNECT waits for the server's answer: the pool cancels the stream
 * (RST_STREAM CANCEL), so the server never connects to the target for it; and a storm of such clients cancels no
 * more streams than the server's rapid-reset budget lets pass, so the pooled connection (and every other tunnel on
 * it) survives. Runs on whichever HTTP/2 layer AMBIT_HBONE_IMPL selects.
 */
import test from 'ava';
import { CANCELLED_PENDING_BURST, SERVER_PREMATURE_RESET_BURST } from '../../shared/hbone/config.ts';
import { readAll, socketPair, startEcho, startPair, waitFor } from '../helpers/hbone.ts';

/** A policy decision held until the test releases it: the CONNECT stays pending at the server meanwhile. */
function heldDecisions(): { decide: () => Promise<{ allow: true }>; asked: () => number; release(): void } {
  let asked = 0;
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  return {
    decide: async () => {
      asked++;
      await released;
      return { allow: true };
    },
    asked: () => asked,
    release: () => release(),
  };
}

test('a client gone while its CONNECT is pending: the stream is cancelled and the target never sees a connection', async (t) => {
  const echo = await startEcho();
  const held = heldDecisions();
  const pair = await startPair({ server: { decide: held.decide } });
  const sockets = await socketPair();
  t.teardown(async () => {
    sockets.close();
    await pair.close();
    await echo.close();
  });
  const tunnel = pair.pool.tunnel(pair.target(echo.address), sockets.downstream);
  t.true(await waitFor(() => held.asked() === 1), 'the CONNECT reached the server');
  sockets.downstream.destroy();
  const error = await t.throwsAsync(tunnel);
  t.is((error as { code?: string }).code, 'HBONE_DOWNSTREAM_CLOSED');
  // The server sees its stream closed (the cancel) while the decision is still held, before it could answer.
  t.true(await waitFor(() => pair.server.openStreams === 0), 'the server closed the cancelled stream');
  held.release();
  // Signal that a connect would have happened by now: a later tunnel through the same server reaches the target.
  const later = await pair.pool.open(pair.target(echo.address));
  later.end('later');
  t.is((await readAll(later)).toString(), 'later');
  t.is(echo.accepted.length, 1, 'the target accepted the later tunnel only');
});

test('a storm of clients gone while their CONNECTs are pending cancels within the server\'s reset budget: the pooled connection survives', async (t) => {
  t.timeout(60_000);
  const echo = await startEcho();
  const held = heldDecisions();
  // Streams enough on one connection for the whole storm, so the one connection is what the budget protects.
  const pair = await startPair({ server: { decide: held.decide, maxConcurrentStreams: 1000 }, client: { maxStreamsPerConnection: 1000 } });
  const storm = SERVER_PREMATURE_RESET_BURST + 50;
  const pairs = await Promise.all(Array.from({ length: storm }, () => socketPair()));
  t.teardown(async () => {
    for (const sockets of pairs) sockets.close();
    await pair.close();
    await echo.close();
  });
  let cancelled = 0;
  const tunnels = pairs.map((sockets) =>
    pair.pool.tunnel(pair.target(echo.address), sockets.downstream).catch((error: { code?: string }) => {
      if (error.code === 'HBONE_DOWNSTREAM_CLOSED') cancelled++;
    }),
  );
  t.true(await waitFor(() => held.asked() === storm, 20_000), `all ${storm} CONNECTs pending at the server (${held.asked()})`);
  for (const sockets of pairs) sockets.downstream.destroy();
  // The server has seen every cancel (its stream closed, or its connection with them) before the decisions go on.
  t.true(await waitFor(() => cancelled > 0 && pair.server.openStreams === storm - cancelled, 20_000), `server streams ${pair.server.openStreams}, cancelled ${cancelled}`);
  held.release();
  await Promise.all(tunnels);
  t.log(`${cancelled} of ${storm} cancelled while pending; the others answered, then reset`);
  t.is(pair.server.stats().streamFloods, 0, 'the server saw no reset flood');
  const later = await pair.pool.open(pair.target(echo.address));
  later.end('alive');
  t.is((await readAll(later)).toString(), 'alive');
  t.is(pair.pool.stats().dials, 1, 'the one pooled connection carried the storm and the later tunnel');
  t.true(cancelled >= CANCELLED_PENDING_BURST && cancelled < SERVER_PREMATURE_RESET_BURST, `cancelled ${cancelled}`);
});
