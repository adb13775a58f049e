/**
 * HTTP/2 cleartext and HTTP/1.1's special cases through the waypoint on a real 2-node local mesh (control plane,
 * real agents, a real waypoint in its pod; clients and servers in pods). A port with appProtocol
 * `kubernetes.io/h2c`: a prior-knowledge HTTP/2 POST of 8 MiB with request trailers reaches the server whole with
 * its trailers, the answer's trailers reach the client, an 8 MiB answer streams back. A port named `http-web`:
 * `Expect: 100-continue` is passed to the server, whose 100 (or 417) is what the client gets before it sends the
 * body; chunked bodies both ways; WebSocket echo end to end. A waypoint restart loses no request that the client
 * retries.
 */
import test from 'ava';
import { clientRun, createProtocolMesh, H2_PORT, HTTP1_PORT, serviceReady, until, waypointRequests, writeService, type ProtocolMesh } from './helpers/protocol-mesh.ts';

const PROTO_VIP = '10.240.4.10';
const MIB = 1024 * 1024;

let setup: ProtocolMesh;

test.before(async () => {
  setup = await createProtocolMesh('wh');
  await writeService(setup, 'proto', PROTO_VIP, [{ name: 'h2', appProtocol: 'kubernetes.io/h2c', port: 80, targetPort: H2_PORT }, { name: 'http-web', port: 81, targetPort: HTTP1_PORT }]);
  await until('the waypoint and the client agent know the service', () => serviceReady(setup, 'proto', 2), 60_000);
});

test.after.always(async () => {
  await setup?.mesh.destroy();
});

const run = (spec: Record<string, unknown>) => clientRun(setup, { host: PROTO_VIP, ...spec });

test.serial('h2c: an 8 MiB POST with request trailers arrives whole with them; the answer and its trailers come back', async (t) => {
  const result = await run({ scenario: 'h2-post', port: 80, size: 8 * MIB, trailers: { 'x-checksum': 'client-side', 'x-count': '128' }, headers: { 'x-client': 'yes' } });
  t.is(result.status, 200, JSON.stringify(result).slice(0, 500));
  t.is(result.body.size, 8 * MIB);
  t.is(result.body.sha256, result.sentSha256, 'the server received exactly the bytes sent');
  t.is(result.body.trailers['x-checksum'], 'client-side', 'request trailers reached the server');
  t.is(result.body.trailers['x-count'], '128');
  t.is(result.body.headers['x-client'], 'yes');
  t.is(result.body.headers[':method'], 'POST');
  t.is(result.trailers['x-body-sha256'], result.sentSha256, 'response trailers reached the client');
  t.is(result.trailers['x-served-by'], result.body.name);
  t.is(result.headers['x-served-by'], result.body.name);
  t.true((await waypointRequests(setup, { request_protocol: 'http', response_code: '200', destination_service_name: 'proto' })) >= 1);
});

test.serial('h2c: an 8 MiB answer streams back whole', async (t) => {
  const result = await run({ scenario: 'h2-big-get', port: 80, size: 8 * MIB });
  t.is(result.status, 200);
  t.is(result.size, 8 * MIB);
  t.is(result.sha256, result.expectedSha256);
});

test.serial('h2c back-pressure: while the client stops reading, the server can write only what the windows on the way hold, not the whole body', async (t) => {
  const result = await run({ scenario: 'h2-slow-reader', port: 80, size: 64 * MIB, pauseMs: 3000, directPort: H2_PORT });
  t.is(result.error, undefined, JSON.stringify(result));
  t.log(`written by the server while the client read nothing for 3 s: ${(result.writtenWhilePaused / MIB).toFixed(1)} MiB of 64`);
  t.true(result.writtenWhilePaused > 0);
  t.true(result.writtenWhilePaused < 16 * MIB, `the server wrote ${result.writtenWhilePaused} bytes while the client was not reading`);
  t.is(result.size, 64 * MIB);
  t.is(result.sha256, result.expectedSha256);
});

test.serial("Expect: 100-continue: the server's 100 reaches the client, which then sends the body", async (t) => {
  const result = await run({ scenario: 'http1-continue', port: 81, size: 200_000 });
  t.is(result.status, 200, JSON.stringify(result));
  t.deepEqual(result.events, ['continue', 'body sent', 'response 200']);
  t.true(result.body.sawExpect, 'the server saw the Expect header (it answered 100 itself)');
  t.is(result.body.headers.expect, '100-continue');
  t.is(result.body.sha256, result.sentSha256, 'the body arrived whole after the 100');
});

test.serial('Expect: 100-continue refused by the server (417): the client gets the 417 and never sends the body', async (t) => {
  const result = await run({ scenario: 'http1-continue', port: 81, headers: { 'x-refuse-continue': '1' } });
  t.is(result.status, 417, JSON.stringify(result));
  t.deepEqual(result.events, ['response 417']);
});

test.serial('chunked bodies both ways', async (t) => {
  const result = await run({ scenario: 'http1-chunked', port: 81, pieces: 30 });
  t.is(result.status, 200);
  t.is(result.transferEncoding, 'chunked', 'the answer came chunked');
  t.is(result.body.headers['transfer-encoding'], 'chunked', 'the request reached the server chunked');
  t.is(result.body.sha256, result.sentSha256);
});

test.serial('WebSocket: the upgrade is carried end to end and messages echo both ways', async (t) => {
  const messages = ['one', 'two', 'x'.repeat(100_000), 'last'];
  const result = await run({ scenario: 'ws', port: 81, messages });
  t.is(result.error, undefined, JSON.stringify(result).slice(0, 300));
  t.is(result.received.length, 5);
  const server = String(result.received[0]).split(':')[0];
  t.true(server === 'web-a' || server === 'web-b');
  t.is(result.received[0], `${server}:hello /chat`);
  t.deepEqual(result.received.slice(1), messages.map((message) => `${server}:${message}`));
  t.is(result.closeCode, 1000);
  t.true((await waypointRequests(setup, { response_code: '101', destination_service_name: 'proto' })) >= 1, 'the upgrade counted as a 101');
});

test.serial('a waypoint restart loses no request that the client retries', async (t) => {
  let loopDone = false;
  const loop = run({ scenario: 'http1-retry-loop', port: 81, count: 150, pauseMs: 40 }).finally(() => (loopDone = true));
  // Restart once the loop is well under way (the signal: requests counted by this waypoint process).
  await until('20 loop requests through the waypoint', async () => (await waypointRequests(setup, { response_code: '200', destination_service_name: 'proto' })) >= 20);
  t.false(loopDone, 'the loop was still running at the restart');
  await setup.waypoint.restart();
  const result = await loop;
  t.log(`150 requests across a waypoint restart: ${result.retries} retried attempts`);
  t.is(result.failed, 0);
  t.is(result.served, 150);
  t.true((await waypointRequests(setup, { response_code: '200', destination_service_name: 'proto' })) >= 1, 'the new waypoint process served some of them');
});
