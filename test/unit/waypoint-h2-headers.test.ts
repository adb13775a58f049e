/**
 * The waypoint's HTTP/2 header handling without a network (waypoint/h2-proxy.ts): what goes on to the endpoint
 * (connection-specific headers dropped, gRPC's `te: trailers` kept, the route's request modifier applied, pseudo
 * headers untouched) and what comes back (the response modifier applied).
 */
import test from 'ava';
import { downstreamResponseHeaders, upstreamRequestHeaders } from '../../waypoint/h2-proxy.ts';
import { headerListOf, headersObjectOf } from '../../waypoint/h2-own-upstream.ts';
import { H2RequestHead } from '../../waypoint/h2-request-head.ts';
import { upstreamHeadOf, upstreamHeadOfFields, UpstreamRequestHead } from '../../waypoint/h2-upstream-head.ts';

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

/** What the object path sends (upstreamRequestHeaders, the proxy's overrides, the own pool's list with its defaults). */
function objectPathFields(headers: Record<string, string | string[]>, path: string, authority: string | undefined, requestId: string, traceparent: string, tracestate: string | undefined): string[] {
  const result = upstreamRequestHeaders(headers, undefined);
  result[':path'] = path;
  if (authority !== undefined) result[':authority'] = authority;
  result['x-request-id'] = requestId;
  result.traceparent = traceparent;
  if (tracestate !== undefined) result.tracestate = tracestate;
  else delete result.tracestate;
  return headerListOf(result, DEFAULTS);
}
const DEFAULTS = [':scheme', 'http', ':authority', '10.1.0.7:50051'];

test('the upstream head straight from the request: the same fields in the same order as the object path, for each change the proxy makes', (t) => {
  const grpc = { ':method': 'POST', ':scheme': 'http', ':path': '/pkg.Svc/Call', ':authority': 'svc:50051', 'content-type': 'application/grpc', te: 'trailers', 'user-agent': 'grpc-node', 'grpc-timeout': '5S' };
  const cases: Array<[Record<string, string | string[]>, string, string | undefined, string | undefined]> = [
    [grpc, '/pkg.Svc/Call', undefined, undefined],
    [{ ...grpc, 'x-request-id': 'from-client', traceparent: '00-a-b-01', tracestate: 'k=v' }, '/pkg.Svc/Call', undefined, 'k=v'],
    [{ ...grpc, tracestate: 'dropped' }, '/rewritten', 'other-host', undefined],
    // No :scheme nor :authority: the endpoint's defaults are put after the pseudo-headers.
    [{ ':method': 'GET', ':path': '/p', connection: 'keep-alive', host: 'h', te: 'gzip', 'set-cookie': ['a=1', 'b=2'], 'keep-alive': '5', upgrade: 'h2c', 'transfer-encoding': 'chunked', 'proxy-connection': 'x', 'http2-settings': 'AAA' }, '/p', undefined, undefined],
    [{ ':method': 'GET' }, '/added', 'rewritten:80', undefined],
  ];
  for (const [headers, path, authority, tracestate] of cases) {
    const head = upstreamHeadOf(headers, path, authority, 'req-1', '00-trace-span-01', tracestate);
    t.deepEqual(head.fieldsWith(DEFAULTS), objectPathFields(headers, path, authority, 'req-1', '00-trace-span-01', tracestate));
    t.deepEqual(UpstreamRequestHead.fromObject(head.object).fieldsWith(DEFAULTS), head.fieldsWith(DEFAULTS));
  }
});

test('the upstream head: a field node:http2 would refuse fails the try when sent (503 UF with its name), not the request at once', (t) => {
  for (const headers of [{ ':path': '/', 'x-evil': 'a\r\nb' }, { ':path': '/', 'bad name': 'x' }, { ':path': '/', 'x-nul': 'a\u0000b' }]) {
    const head = upstreamHeadOf(headers, '/', undefined, 'r', 't', undefined);
    t.truthy(head.problem);
    const error = t.throws(() => head.fieldsWith(DEFAULTS)) as Error & { code?: string };
    t.is(error.code, 'WAYPOINT_UPSTREAM_CONNECT_FAILED');
    t.regex(error.message, /x-evil|bad name|x-nul/);
  }
});

/** A decoded request head as the own layer hands it: names and values in turn, pseudo-headers first. */
function fieldsOf(headers: Record<string, string>): string[] {
  return Object.entries(headers).flat();
}

test('the upstream head from the request\'s list: the fields and order of the object way; repeats go on as they came, the trace fields once', (t) => {
  const grpc = { ':method': 'POST', ':scheme': 'http', ':path': '/pkg.Svc/Call', ':authority': 'svc:50051', 'content-type': 'application/grpc', te: 'trailers', 'user-agent': 'grpc-node', 'grpc-timeout': '5S' };
  const cases: Array<[Record<string, string>, string, string | undefined, string | undefined]> = [
    [grpc, '/pkg.Svc/Call', undefined, undefined],
    [{ ...grpc, 'x-request-id': 'from-client', traceparent: '00-a-b-01', tracestate: 'k=v' }, '/pkg.Svc/Call', undefined, 'k=v'],
    [{ ...grpc, tracestate: 'dropped' }, '/rewritten', 'other-host', undefined],
    [{ ':method': 'GET', ':path': '/p', connection: 'keep-alive', host: 'h', te: 'gzip', 'keep-alive': '5', upgrade: 'h2c', 'transfer-encoding': 'chunked', 'proxy-connection': 'x', 'http2-settings': 'AAA' }, '/p', undefined, undefined],
    [{ ':method': 'GET' }, '/added', 'rewritten:80', undefined],
  ];
  for (const [headers, path, authority, tracestate] of cases) {
    const fields = fieldsOf(headers);
    t.deepEqual(upstreamHeadOfFields(fields, path, authority, 'req-1', '00-trace-span-01', tracestate).fieldsWith(DEFAULTS), upstreamHeadOf(headersObjectOf(fields), path, authority, 'req-1', '00-trace-span-01', tracestate).fieldsWith(DEFAULTS));
  }
  const repeated = [':method', 'POST', ':scheme', 'http', ':path', '/s/m', ':authority', 'svc', 'x-tag', 'a', 'x-request-id', 'one', 'x-tag', 'b', 'x-request-id', 'two', 'traceparent', 'p1', 'traceparent', 'p2', 'tracestate', 's1', 'tracestate', 's2'];
  t.deepEqual(upstreamHeadOfFields(repeated, '/s/m', undefined, 'id', 'tp', 'ts').fieldsWith(DEFAULTS), [':method', 'POST', ':scheme', 'http', ':path', '/s/m', ':authority', 'svc', 'x-tag', 'a', 'x-request-id', 'id', 'x-tag', 'b', 'traceparent', 'tp', 'tracestate', 'ts']);
});

test('the upstream head from the request\'s list: a field node:http2 would refuse fails the try when sent, as from the object', (t) => {
  for (const fields of [[':path', '/', 'x-evil', 'a\r\nb'], [':path', '/', 'bad name', 'x'], [':path', '/', 'x-nul', 'a\u0000b'], [':path', '/', 'x-quote"', 'v']]) {
    const head = upstreamHeadOfFields(fields, '/', undefined, 'r', 't', undefined);
    const error = t.throws(() => head.fieldsWith(DEFAULTS)) as Error & { code?: string };
    t.is(error.code, 'WAYPOINT_UPSTREAM_CONNECT_FAILED');
    t.regex(error.message, /x-evil|bad name|x-nul|x-quote/);
  }
});

test('the request head: the facts every request reads, as node:http2\'s object holds them, and the object made only when read', (t) => {
  const fields = [':method', 'POST', ':scheme', 'http', ':path', '/a/../b', ':authority', 'svc:80', 'content-type', 'application/grpc', 'x-request-id', 'r1', 'x-request-id', 'r2', 'traceparent', 'tp', 'tracestate', 'a=1', 'tracestate', 'b=2', 'set-cookie', 'c=1', 'set-cookie', 'c=2'];
  const head = H2RequestHead.ofFields(fields);
  const object = headersObjectOf(fields);
  t.is(head.method, object[':method']);
  t.is(head.path, object[':path']);
  t.is(head.authority, object[':authority']);
  t.is(head.contentType, object['content-type']);
  t.is(head.requestId, object['x-request-id'] as string);
  t.is(head.requestId, 'r1, r2');
  t.is(head.traceparent, object.traceparent as string);
  t.is(head.tracestate, object.tracestate as string);
  head.normalisePath('/b');
  t.is(head.currentPath, '/b');
  t.deepEqual(head.object, { ...object, ':path': '/b' });
  t.is(H2RequestHead.ofFields([':method', 'GET', ':path', '/', 'host', 'h:1']).authority, 'h:1');
  const fromObject = H2RequestHead.ofObject({ ':method': 'GET', ':path': '/x', host: 'h', tracestate: ['a', 'b'] as unknown as string });
  t.is(fromObject.authority, 'h');
  t.is(fromObject.tracestate, 'a,b');
  fromObject.normalisePath('/y');
  t.is(fromObject.object[':path'], '/y');
});
