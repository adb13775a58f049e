/**
 * The waypoint's L4 join (waypoint/stream-join.ts) over two HBONE legs on the own layer (waypoint/hbone-leg.ts), with
 * real mutual TLS on loopback: a client's CONNECT terminated by one H2TunnelServer (terminateStream, as the waypoint's
 * listener) joined to a CONNECT opened to another (as the endpoint's agent). Data and half-close both ways, and a
 * reset on either side reaching the other as a reset (CONNECT_ERROR), never as a clean end.
 */
import test from 'ava';
import { H2DuplexStream } from '../../shared/hbone/h2/duplex.ts';
import { H2_CANCEL, H2_CONNECT_ERROR } from '../../shared/hbone/h2/errors.ts';
import type { H2Stream } from '../../shared/hbone/h2/stream.ts';
import { openConnectStream } from '../../shared/hbone/h2/tunnel-client.ts';
import { answer, canAnswer, openLeg } from '../../waypoint/hbone-leg.ts';
import { joinStreams, type JoinResult } from '../../waypoint/stream-join.ts';
import { waitFor } from '../helpers/hbone.ts';
import { startH2Pair, StreamCollector, type H2Pair } from '../helpers/h2-tunnel.ts';

const TARGET = { host: '10.0.0.9', port: 8080 };

interface Joined {
  client: H2Stream;
  clientSide: StreamCollector;
  /** The endpoint's end of the second leg (what its agent would splice to the app). */
  endpoint: H2Stream;
  endpointSide: StreamCollector;
  joined: Promise<JoinResult>;
}

/** client -> [waypoint: terminate, answer 200, join] -> endpoint server; resolves once both legs are open. */
async function joinedLegs(t: { teardown: (fn: () => Promise<void>) => void }): Promise<Joined> {
  const endpoints: H2Stream[] = [];
  const endpointPair = await startH2Pair({
    server: {
      terminateStream: (_request, stream) => {
        stream.respond(200);
        endpoints.push(stream);
      },
    },
  });
  let joined: Promise<JoinResult> | undefined;
  const upstreamConnection = await endpointPair.dial();
  const waypointPair: H2Pair = await startH2Pair({
    mesh: endpointPair.mesh,
    server: {
      terminateStream: (_request, stream) => {
        void (async () => {
          const upstream = new H2DuplexStream(await openConnectStream(upstreamConnection, { proxy: endpointPair.serverAddress, destination: TARGET }));
          if (!canAnswer(stream)) return;
          answer(stream, 200);
          joined = joinStreams(openLeg(stream), upstream);
        })();
      },
    },
  });
  t.teardown(async () => {
    await waypointPair.close();
    await endpointPair.close();
  });
  const client = await openConnectStream(await waypointPair.dial(), { proxy: waypointPair.serverAddress, destination: TARGET });
  const clientSide = new StreamCollector();
  client.setHandler(clientSide);
  await waitFor(() => joined !== undefined && endpoints.length === 1);
  const endpoint = endpoints[0]!;
  const endpointSide = new StreamCollector();
  endpoint.setHandler(endpointSide);
  return { client, clientSide, endpoint, endpointSide, joined: joined! };
}

test('data and half-close both ways through two own-layer legs; both close clean', async (t) => {
  const legs = await joinedLegs(t);
  legs.client.end(Buffer.from('ping'));
  await waitFor(() => legs.endpointSide.ended);
  t.is(legs.endpointSide.data.toString(), 'ping');
  // The client's END_STREAM reached the endpoint while the way back stays open (half-close).
  legs.endpoint.end(Buffer.from('pong'));
  const clientClosed = await legs.clientSide.done;
  t.is(legs.clientSide.data.toString(), 'pong');
  t.true(legs.clientSide.ended);
  t.is(clientClosed.rstCode, undefined);
  t.is((await legs.endpointSide.done).rstCode, undefined);
  t.is((await legs.joined).error, undefined);
});

test("the endpoint's reset reaches the client as RST_STREAM CONNECT_ERROR, after the data that came before it", async (t) => {
  const legs = await joinedLegs(t);
  legs.endpoint.write(Buffer.from('partial'));
  await waitFor(() => legs.clientSide.bytes === 7);
  legs.endpoint.reset(H2_CANCEL);
  const closed = await legs.clientSide.done;
  t.is(closed.rstCode, H2_CONNECT_ERROR);
  t.false(legs.clientSide.ended, 'a cut stream never looks whole');
  t.truthy((await legs.joined).error);
});

test("the client's reset reaches the endpoint as RST_STREAM CONNECT_ERROR", async (t) => {
  const legs = await joinedLegs(t);
  legs.client.write(Buffer.from('half a request'));
  await waitFor(() => legs.endpointSide.bytes > 0);
  legs.client.reset(H2_CANCEL);
  const closed = await legs.endpointSide.done;
  t.is(closed.rstCode, H2_CONNECT_ERROR);
  t.false(legs.endpointSide.ended);
});
