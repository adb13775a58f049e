/**
 * The waypoint's HTTP/2 header handling without a network (waypoint/h2-proxy.ts): what goes on to the endpoint
 * (connection-specific headers dropped, gRPC's `te: trailers` kept, the route's request modifier applied, pseudo
 * headers untouched) and what comes back (the response modifier applied).
 */
import test from 'ava';
import { downstreamResponseHeaders, upstreamRequestHeaders } from '../../waypoint/h2-proxy.ts';

test('request headers: connection-specific ones dropped, te: trailers kept, other te dropped, pseudo headers kept', (t) => {
  const forwarded = upstreamRequestHeaders(
    { ':method': 'POST', ':path': '/ambit.test.Echo/Unary', ':authority': '10.0.0.1:80', ':scheme': 'http', te: 'trailers', connection: 'keep-alive', 'keep-alive': '5', 'transfer-encoding': 'chunked', upgrade: 'h2c', 'http2-settings': 'AAA', host: 'x', 'content-type': 'application/grpc' },
    undefined,
  );
  t.deepEqual(forwarded, { ':method': 'POST', ':path': '/ambit.test.Echo/Unary', ':authority': '10.0.0.1:80', ':scheme': 'http', te: 'trailers', 'content-type': 'application/grpc' });
  t.is(upstreamRequestHeaders({ ':path': '/', te: 'gzip' }, undefined).te, undefined);
});

test('the route modifiers: set replaces, add appends with a comma, remove drops (names case-insensitive)', (t) => {
  const modifier = { set: [{ name: 'X-Route', value: 'gold' }], add: [{ name: 'X-Tags', value: 'b' }, { name: 'x-new', value: 'n' }], remove: ['x-drop'] };
  const request = upstreamRequestHeaders({ ':path': '/', 'x-route': 'client', 'x-tags': 'a', 'x-drop': 'secret' }, modifier);
  t.deepEqual(request, { ':path': '/', 'x-route': 'gold', 'x-tags': 'a,b', 'x-new': 'n' });
  const response = downstreamResponseHeaders({ ':status': '200', 'x-drop': 'y', connection: 'close' }, { set: [], add: [{ name: 'X-Via', value: 'waypoint' }], remove: ['x-drop'] });
  t.deepEqual(response, { ':status': '200', 'x-via': 'waypoint' });
});
