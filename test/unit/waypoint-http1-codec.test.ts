/**
 * The lean HTTP/1.1 path's codec (waypoint/http1/): request and response heads, the chunked coding, head text.
 * Every rule that stops a request from being smuggled past the waypoint's L7 policy has a test that fails when the
 * rule is taken out; a property test checks that the request-head parser never throws and accepts exactly what
 * Node's own parser (llhttp, through an in-process http.Server) accepts, on generated heads.
 */
import test, { type ExecutionContext } from 'ava';
import fc from 'fast-check';
import http from 'node:http';
import { Duplex } from 'node:stream';
import { ChunkedDecoder } from '../../waypoint/http1/chunked.ts';
import { Http1Error, type Http1ErrorCode } from '../../waypoint/http1/errors.ts';
import { FIELD_GRPC_STATUS, FIELD_HOST, FIELD_TRACEPARENT, FIELD_TRACESTATE, FIELD_X_REQUEST_ID, MAX_HEADERS, SKIP_HOP_BY_HOP, SKIP_TRACE } from '../../waypoint/http1/head-fields.ts';
import { parseRequestHead, parseResponseHead, type RequestHead, type ResponseHead } from '../../waypoint/http1/heads.ts';
import { HeaderValueError, requestHeadText, responseHeadText } from '../../waypoint/http1/serialize.ts';
import { forwardedRequest, FRAMING_CHUNKED, FRAMING_CLOSE, relayedResponseHeadBytes, writeRelayedResponseHead } from '../../waypoint/http1/forwarded-heads.ts';
import type { TraceContext } from '../../waypoint/tracing.ts';

function request(text: string): RequestHead | Http1Error | undefined {
  const bytes = Buffer.from(text, 'latin1');
  return parseRequestHead(bytes, 0, bytes.length);
}

function refusal(t: ExecutionContext, text: string, code: Http1ErrorCode, status: 400 | 431 = 400): void {
  const result = request(text);
  t.true(result instanceof Http1Error, `accepted: ${JSON.stringify(text.slice(0, 80))}`);
  t.is((result as Http1Error).code, code);
  t.is((result as Http1Error).status, status);
}

test('a request head: method, target, fields in Node shape, framing facts, its size', (t) => {
  const text = 'POST /a?b=1 HTTP/1.1\r\nHost: svc\r\nX-A: 1\r\nx-a: 2\r\nCookie: a=1\r\ncookie: b=2\r\nHost: other\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc';
  const head = request(text) as RequestHead;
  t.is(head.method, 'POST');
  t.is(head.url, '/a?b=1');
  t.is(head.httpVersion, '1.1');
  t.deepEqual(head.headers, { host: 'svc', 'x-a': '1, 2', cookie: 'a=1; b=2', 'content-length': '3', connection: 'close' });
  t.is(head.contentLength, 3);
  t.false(head.chunked);
  t.true(head.connectionClose);
  t.is(head.size, text.length - 3);
});

test('an incomplete head is waited for; leading empty lines are skipped', (t) => {
  t.is(request('GET / HTTP/1.1\r\nHost: a\r\n'), undefined);
  const head = request('\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n') as RequestHead;
  t.is(head.method, 'GET');
  t.is(head.size, 4 + 27);
});

test('Content-Length with Transfer-Encoding is refused', (t) => {
  refusal(t, 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n', 'HTTP1_BAD_CONTENT_LENGTH');
  refusal(t, 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n', 'HTTP1_BAD_CONTENT_LENGTH');
});

test('Content-Length twice (even equal), or not digits, is refused', (t) => {
  refusal(t, 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n', 'HTTP1_BAD_CONTENT_LENGTH');
  refusal(t, 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n', 'HTTP1_BAD_CONTENT_LENGTH');
  for (const value of ['+5', '-1', '5, 5', '0x5', '5a', '', '1 1', '1234567890123456']) refusal(t, `POST / HTTP/1.1\r\nHost: a\r\nContent-Length: ${value}\r\n\r\n`, 'HTTP1_BAD_CONTENT_LENGTH');
});

test('Transfer-Encoding other than a final chunked, or twice, is refused', (t) => {
  for (const value of ['gzip', 'chunked, gzip', 'chunked, chunked', 'chunkedx', 'identity']) refusal(t, `POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ${value}\r\n\r\n`, 'HTTP1_BAD_TRANSFER_ENCODING');
  refusal(t, 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n', 'HTTP1_BAD_TRANSFER_ENCODING');
  const head = request('POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n') as RequestHead;
  t.true(head.chunked);
});

test('obs-fold, whitespace before the colon, bad names are refused', (t) => {
  refusal(t, 'GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n 2\r\n\r\n', 'HTTP1_BAD_HEADER_NAME');
  refusal(t, 'GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n\t2\r\n\r\n', 'HTTP1_BAD_HEADER_NAME');
  refusal(t, 'GET / HTTP/1.1\r\nHost: a\r\nX-A : 1\r\n\r\n', 'HTTP1_BAD_HEADER_NAME');
  refusal(t, 'GET / HTTP/1.1\r\nHost: a\r\nX-A\t: 1\r\n\r\n', 'HTTP1_BAD_HEADER_NAME');
  refusal(t, 'GET / HTTP/1.1\r\nHost: a\r\n: 1\r\n\r\n', 'HTTP1_BAD_HEADER_NAME');
  refusal(t, 'GET / HTTP/1.1\r\nHost: a\r\nX(A): 1\r\n\r\n', 'HTTP1_BAD_HEADER_NAME');
  refusal(t, 'GET / HTTP/1.1\r\nHost: a\r\nno colon\r\n\r\n', 'HTTP1_BAD_HEADER_NAME');
});

test('a bare CR or LF in the head, or a control character in a value, is refused', (t) => {
  refusal(t, 'GET / HTTP/1.1\r\nHost: a\nX-A: 1\r\n\r\n', 'HTTP1_BAD_LINE_ENDING');
  refusal(t, 'GET / HTTP/1.1\r\nHost: a\rX-A: 1\r\n\r\n', 'HTTP1_BAD_LINE_ENDING');
  refusal(t, 'GET / HTTP/1.1\nHost: a\r\n\r\n', 'HTTP1_BAD_REQUEST_LINE');
  refusal(t, 'GET /a\rb HTTP/1.1\r\nHost: a\r\n\r\n', 'HTTP1_BAD_LINE_ENDING');
  for (const code of [0, 1, 8, 0x0b, 0x1f, 0x7f]) refusal(t, `GET / HTTP/1.1\r\nHost: a\r\nX-A: a${String.fromCharCode(code)}b\r\n\r\n`, 'HTTP1_BAD_HEADER_VALUE');
  const head = request('GET / HTTP/1.1\r\nHost: a\r\nX-A: a\tb\xe9 \r\n\r\n') as RequestHead;
  t.is(head.headers['x-a'], 'a\tb\xe9');
});

test('a head over 16 KiB is refused with 431, also before its end came; more than MAX_HEADERS fields too', (t) => {
  refusal(t, `GET / HTTP/1.1\r\nHost: a\r\nX-A: ${'x'.repeat(16 * 1024)}\r\n\r\n`, 'HTTP1_HEAD_TOO_LARGE', 431);
  refusal(t, `GET / HTTP/1.1\r\nHost: a\r\nX-A: ${'x'.repeat(16 * 1024)}`, 'HTTP1_HEAD_TOO_LARGE', 431);
  t.false(request(`GET / HTTP/1.1\r\nHost: a\r\nX-A: ${'x'.repeat(16 * 1024 - 50)}\r\n\r\n`) instanceof Http1Error);
  let many = 'GET / HTTP/1.1\r\nHost: a\r\n';
  for (let index = 0; index < MAX_HEADERS; index++) many += `x-${index}: 1\r\n`;
  refusal(t, `${many}\r\n`, 'HTTP1_HEAD_TOO_LARGE', 431);
});

test('bad methods, targets and versions are refused; HTTP/1.1 needs Host', (t) => {
  for (const line of ['FOO / HTTP/1.1', 'get / HTTP/1.1', ' GET / HTTP/1.1', 'GET  / HTTP/1.1', 'GET / HTTP/1.2', 'GET / HTTP/1.1 ', 'GET / http/1.1', 'GET /a b HTTP/1.1', 'GET /\x7f HTTP/1.1', 'GET /\xe9 HTTP/1.1', 'GET /', 'GET'])
    refusal(t, `${line}\r\nHost: a\r\n\r\n`, 'HTTP1_BAD_REQUEST_LINE');
  refusal(t, 'GET / HTTP/1.1\r\nX-A: 1\r\n\r\n', 'HTTP1_MISSING_HOST');
  t.is((request('GET / HTTP/1.0\r\n\r\n') as RequestHead).httpVersion, '1.0');
});

test('a response head: status, framing, 1xx and keep-alive facts', (t) => {
  const bytes = Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nSet-Cookie: a\r\nSet-Cookie: b\r\nKeep-Alive: timeout=5\r\n\r\nok', 'latin1');
  const head = parseResponseHead(bytes, 0, bytes.length) as ResponseHead;
  t.false(head instanceof Http1Error);
  t.is(head.status, 200);
  t.is(head.contentLength, 2);
  t.deepEqual(head.headers, { 'content-length': '2', 'set-cookie': ['a', 'b'], 'keep-alive': 'timeout=5' });
  for (const line of ['HTTP/1.1 20 OK', 'HTTP/1.2 200 OK', 'HTTP/1.1 200OK', 'HTTP/1.1 099 x', 'HTTP/1.1 200 O\x01K', 'ICY 200 OK']) {
    const bad = Buffer.from(`${line}\r\n\r\n`, 'latin1');
    t.true(parseResponseHead(bad, 0, bad.length) instanceof Http1Error, line);
  }
  const smuggle = Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n', 'latin1');
  t.true(parseResponseHead(smuggle, 0, smuggle.length) instanceof Http1Error);
});

function decode(pieces: string[]): { end: number; piece: number; data: number } | Http1Error | undefined {
  const decoder = new ChunkedDecoder();
  for (let index = 0; index < pieces.length; index++) {
    const bytes = Buffer.from(pieces[index]!, 'latin1');
    const result = decoder.feed(bytes, 0, bytes.length);
    if (result instanceof Http1Error) return result;
    if (result >= 0) return { end: result, piece: index, data: decoder.dataBytes };
  }
  return undefined;
}

test('chunked: the end is found however the bytes are split; what follows is left', (t) => {
  const body = '5;name=value\r\nhello\r\nA\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\nNEXT';
  for (let split = 1; split < body.length - 4; split++) {
    const result = decode([body.slice(0, split), body.slice(split)]) as { end: number; piece: number; data: number };
    t.is(result.data, 15);
    t.is(result.piece === 0 ? result.end : split + result.end, body.length - 4, `split at ${split}`);
  }
  t.is(decode(['5\r\nhel']), undefined);
});

test('chunked: bad sizes, extensions and CRLFs are refused', (t) => {
  for (const body of ['x\r\n', '-1\r\n', ' 5\r\nhello\r\n', '5 \r\nhello\r\n', '1234567890abc\r\n', '5\nhello\r\n', '5\r\nhelloX\r\n', '5\r\nhello\n0\r\n\r\n', '5\r\nhelloX\n0\r\n\r\n', '5\rXhello\r\n0\r\n\r\n', '5;a\x01b\r\nhello\r\n', '5;a\nb\r\n', '0\r\nX: 1\n\r\n', '0\r\n\n', '0\r\n folded\r\n\r\n'])
    t.true(decode([body]) instanceof Http1Error, JSON.stringify(body));
});

test('heads written: a value with CR, LF or NUL is refused rather than splitting the head', (t) => {
  t.is(requestHeadText('GET', '/x', { host: 'a', 'set-cookie': ['1', '2'] }), 'GET /x HTTP/1.1\r\nhost: a\r\nset-cookie: 1\r\nset-cookie: 2\r\n\r\n');
  t.is(responseHeadText(404, { 'content-length': 0 }, 'connection: close\r\n'), 'HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n');
  for (const value of ['a\r\nx-injected: 1', 'a\nb', 'a\0b']) t.throws(() => requestHeadText('GET', '/', { 'x-a': value }), { instanceOf: HeaderValueError });
});

/** Node's own verdict on a head: 'accept' when its server takes the request (and no error follows at once), else 'reject'. */
function llhttpVerdict(head: string): Promise<'accept' | 'reject' | 'incomplete'> {
  const server = http.createServer();
  return new Promise((resolve) => {
    let verdict: 'accept' | 'reject' | undefined;
    const socket = new Duplex({
      read() {},
      write(chunk: Buffer, _encoding, callback) {
        if (String(chunk).startsWith('HTTP/1.1 4')) verdict = 'reject';
        callback();
      },
    });
    server.on('request', () => (verdict ??= 'accept'));
    server.on('clientError', () => (verdict = 'reject'));
    server.emit('connection', socket);
    socket.push(Buffer.from(head, 'latin1'));
    setImmediate(() => setImmediate(() => {
      socket.destroy();
      resolve(verdict ?? 'incomplete');
    }));
  });
}

const methods = ['GET', 'POST', 'PUT', 'DELETE', 'HEAD', 'OPTIONS', 'PATCH', 'PURGE', 'FOO', 'get', 'G(T'];
const targets = ['/', '/a?b=c&d', '*', 'http://x/y', '/a%20b', '/a\x01', '/\x7f', '/\xe9', '/a"b', ''];
const versions = ['HTTP/1.1', 'HTTP/1.0', 'HTTP/1.2', 'HTTP/2.0', 'HTTP/0.9', 'http/1.1', 'HTTP/1.1 ', 'HTTP/11'];
const names = ['Host', 'X-A', 'Content-Length', 'Transfer-Encoding', 'Connection', 'Cookie', 'A B', 'X\x01', 'x_y', 'X"', ''];
const separators = [': ', ':', ' : ', ':\t', ':  '];
const values = ['a', '1', '0', '10', ' 7', 'chunked', 'gzip, chunked', 'chunked, gzip', 'gzip', 'close', 'keep-alive', 'a\x01b', 'a\x7fb', 'a\tb', '\xe9', '+1', '1,1', '-1', 'a\rb', 'a\nb', ''];
const endings = ['\r\n', '\r\n', '\r\n', '\r\n', '\n', '\r'];

const headArbitrary = fc
  .record({
    method: fc.constantFrom(...methods),
    target: fc.constantFrom(...targets),
    version: fc.constantFrom(...versions),
    withHost: fc.boolean(),
    fields: fc.array(fc.record({ name: fc.constantFrom(...names), separator: fc.constantFrom(...separators), value: fc.constantFrom(...values), ending: fc.constantFrom(...endings), fold: fc.boolean() }), { maxLength: 5 }),
  })
  .map(({ method, target, version, withHost, fields }) => {
    let head = `${method} ${target} ${version}\r\n${withHost ? 'Host: svc\r\n' : ''}`;
    for (const field of fields) head += `${field.name}${field.separator}${field.value}${field.ending}${field.fold && field.ending === '\r\n' ? ' folded\r\n' : ''}`;
    return `${head}\r\n`;
  });

test('property: the request-head parser never throws and agrees with Node\'s llhttp on accept or reject', async (t) => {
  let accepted = 0;
  let compared = 0;
  await fc.assert(
    fc.asyncProperty(headArbitrary, async (head) => {
      const ours = request(head);
      const node = await llhttpVerdict(head);
      // An incomplete verdict from Node: its parser waits for more (e.g. after a bare CR); ours must not accept either.
      if (node === 'incomplete') return !(ours !== undefined && !(ours instanceof Http1Error));
      compared++;
      const mine = ours === undefined ? 'incomplete' : ours instanceof Http1Error ? 'reject' : 'accept';
      if (mine === 'accept') accepted++;
      // Stricter than llhttp on purpose: Transfer-Encoding given twice is refused (a smuggling shape); Node's server
      // refuses it too for HTTP/1.1 but lets it through for other versions (seen: HTTP/2.0 and HTTP/1.0 with
      // "Transfer-Encoding: a" then "Transfer-Encoding: gzip, chunked").
      if (mine === 'reject' && node === 'accept' && (head.match(/^transfer-encoding\s*:/gim)?.length ?? 0) > 1) return true;
      return mine === node;
    }),
    { numRuns: 3000 },
  );
  t.log(`${compared} heads compared, ${accepted} accepted by both`);
  // About 100 of the 3,000 generated heads are valid (96-115 in runs here): enough that accepting was compared too.
  t.true(accepted >= 50, `only ${accepted} heads accepted by both`);
});

test('fields read in place: known names in any case, repeats as the map joins them, the map only built when read', (t) => {
  const head = request('GET / HTTP/1.1\r\nHOST: svc\r\nX-Request-Id: r1\r\nTraceParent: tp\r\ntracestate: a\r\nTraceState: b\r\nHost: other\r\n\r\n') as RequestHead;
  t.is(head.value(FIELD_HOST), 'svc');
  t.is(head.value(FIELD_X_REQUEST_ID), 'r1');
  t.is(head.value(FIELD_TRACEPARENT), 'tp');
  t.false(head.mapRead);
  t.true(head.firstWinsRepeated, 'Host came twice');
  t.is(head.value(FIELD_TRACESTATE), 'a, b');
  t.true(head.mapRead, 'a repeat is joined by the map');
  t.is(head.headers.host, 'svc');
  t.is(head.value(FIELD_GRPC_STATUS), undefined);
});

test('a head forwarded from its own lines: hop-by-hop and trace fields left out, the rest as sent', (t) => {
  const head = request('POST / HTTP/1.1\r\nConnection: keep-alive\r\nHost: svc\r\nKeep-Alive: 5\r\nX-A:  1 \r\nx-request-id: r\r\nContent-Length: 0\r\nTE: trailers\r\n\r\n') as RequestHead;
  t.is(head.fieldText(SKIP_HOP_BY_HOP | SKIP_TRACE), 'Host: svc\r\nX-A:  1 \r\nContent-Length: 0\r\n');
  t.is(head.fieldText(SKIP_HOP_BY_HOP), 'Host: svc\r\nX-A:  1 \r\nx-request-id: r\r\nContent-Length: 0\r\n');
  t.is(head.fieldText(0), 'Connection: keep-alive\r\nHost: svc\r\nKeep-Alive: 5\r\nX-A:  1 \r\nx-request-id: r\r\nContent-Length: 0\r\nTE: trailers\r\n');
  t.false(head.mapRead);
  const response = Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\nok', 'latin1');
  t.is((parseResponseHead(response, 0, response.length) as ResponseHead).fieldText(SKIP_HOP_BY_HOP), 'Content-Length: 2\r\n');
});

test('property: a head forwarded from its lines carries the same fields as one written from its map', (t) => {
  const names = ['Host', 'host', 'X-A', 'x-a', 'Cookie', 'Set-Cookie', 'Connection', 'Keep-Alive', 'TE', 'Upgrade', 'X-Request-Id', 'traceparent', 'Content-Type', 'Accept', 'Proxy-Authorization', 'hostx', 'Tracestate'];
  fc.assert(
    fc.property(fc.array(fc.record({ name: fc.constantFrom(...names), value: fc.constantFrom('a', 'b c', '', ' d ', '1') }), { maxLength: 8 }), (fields) => {
      const text = `GET / HTTP/1.1\r\nHost: svc\r\n${fields.map((field) => `${field.name}: ${field.value}\r\n`).join('')}\r\n`;
      const head = request(text) as RequestHead;
      if (head.firstWinsRepeated) return true;
      const forwarded = request(`GET / HTTP/1.1\r\n${head.fieldText(SKIP_HOP_BY_HOP | SKIP_TRACE)}\r\n`) as RequestHead;
      const expected: Record<string, unknown> = { ...head.headers };
      for (const name of ['connection', 'keep-alive', 'te', 'upgrade', 'proxy-authorization', 'x-request-id', 'traceparent', 'tracestate']) delete expected[name];
      t.deepEqual(forwarded.headers, expected);
      return true;
    }),
    { numRuns: 500 },
  );
});

const TRACE: TraceContext = { traceId: '0af7651916cd43dd8448eb211c80319c', spanId: 'b7ad6b7169203331', flags: '01', parentSpanId: '00f067aa0ba902b7' };

test('a request forwarded as bytes: the received lines less hop-by-hop and trace ones, the trace lines, the body', (t) => {
  const head = request('POST /a?b=1 HTTP/1.1\r\nConnection: keep-alive\r\nHost: svc\r\nKeep-Alive: 5\r\nX-A:  1 \r\nx-request-id: old\r\nTraceparent: 00-x\r\nContent-Length: 4\r\nTE: trailers\r\nProxy-Authorization: Basic a\r\n\r\n') as RequestHead;
  const wire = forwardedRequest('POST', '/a?b=1', head, 'r-1', { ...TRACE, tracestate: 'k=v' }, [Buffer.from('ab'), Buffer.from('cd')], 4);
  t.is(wire.toString('latin1'), 'POST /a?b=1 HTTP/1.1\r\nHost: svc\r\nX-A:  1 \r\nContent-Length: 4\r\nx-request-id: r-1\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\ntracestate: k=v\r\n\r\nabcd');
  t.false(head.mapRead);
});

test('a request forwarded as bytes: a request id or tracestate with CR, LF or NUL is refused rather than splitting the head', (t) => {
  const head = request('GET / HTTP/1.1\r\nHost: svc\r\n\r\n') as RequestHead;
  for (const value of ['a\r\nx-injected: 1', 'a\nb', 'a\0b']) {
    t.throws(() => forwardedRequest('GET', '/', head, value, TRACE, [], 0), { instanceOf: HeaderValueError });
    t.throws(() => forwardedRequest('GET', '/', head, 'r', { ...TRACE, tracestate: value }, [], 0), { instanceOf: HeaderValueError });
    t.throws(() => forwardedRequest('GET', '/', head, 'r', { ...TRACE, spanId: value }, [], 0), { instanceOf: HeaderValueError });
  }
});

test('property: heads forwarded as bytes are the string way\'s text, byte for byte (the received start line written natively or not)', (t) => {
  const names = ['Host', 'X-A', 'x-a', 'Cookie', 'Set-Cookie', 'Connection', 'Keep-Alive', 'TE', 'Upgrade', 'X-Request-Id', 'traceparent', 'Tracestate', 'Content-Type', 'Proxy-Authenticate', 'Transfer-Encoding', 'Trailer', 'Proxy-Connection', 'x-long'];
  const values = fc.constantFrom('a', 'b c', '', ' d ', '1', 'x'.repeat(40), '\u00e9t\u00e9');
  fc.assert(
    fc.property(
      fc.array(fc.record({ name: fc.constantFrom(...names), value: values }), { maxLength: 10 }),
      fc.constantFrom('/', '/a/b?c=d', `/${'p'.repeat(50)}`),
      fc.option(fc.constantFrom('k=v', 'a=1,b=2')),
      fc.integer({ min: 0, max: 3 }),
      fc.integer({ min: 100, max: 599 }),
      // The target sent on is the received one (the head's own line goes as it came) or a rewritten one.
      fc.constantFrom(undefined, '/', '/rewritten/path'),
      // The endpoint's reason phrase is the usual one (its own status line goes as it came) or another.
      fc.boolean(),
      // Room after the relayed head (the body's bytes in the write's buffer).
      fc.integer({ min: 0, max: 200 }),
      (fields, target, tracestate, framing, status, rewritten, usualReason, room) => {
        const lines = fields.filter((field) => field.name !== 'Transfer-Encoding').map((field) => `${field.name}: ${field.value}\r\n`).join('');
        const head = request(`GET ${target} HTTP/1.1\r\nHost: svc\r\n${lines}\r\n`) as RequestHead;
        if (head instanceof Http1Error || head.firstWinsRepeated) return true;
        const trace = tracestate === null ? TRACE : { ...TRACE, tracestate };
        const traceLines = `x-request-id: r\r\ntraceparent: 00-${trace.traceId}-${trace.spanId}-${trace.flags}\r\n${trace.tracestate === undefined ? '' : `tracestate: ${trace.tracestate}\r\n`}`;
        const sent = rewritten ?? target;
        t.is(forwardedRequest('GET', sent, head, 'r', trace, [Buffer.from('xyz')], 3).toString('latin1'), `GET ${sent} HTTP/1.1\r\n${head.fieldText(SKIP_HOP_BY_HOP | SKIP_TRACE)}${traceLines}\r\nxyz`);
        const response = Buffer.from(`HTTP/1.1 ${status} ${usualReason ? (http.STATUS_CODES[status] ?? '') : 'Whatever'}\r\n${lines}\r\n`, 'latin1');
        const parsed = parseResponseHead(response, 0, response.length) as ResponseHead;
        if (parsed instanceof Http1Error || parsed.firstWinsRepeated) return true;
        const headBytes = relayedResponseHeadBytes(status, parsed, framing);
        const out = Buffer.alloc(1 + headBytes + room, 0x7e);
        const end = writeRelayedResponseHead(out, 1, status, parsed, framing);
        const framingLines = ((framing & FRAMING_CHUNKED) !== 0 ? 'transfer-encoding: chunked\r\n' : '') + ((framing & FRAMING_CLOSE) !== 0 ? 'connection: close\r\n' : '');
        t.is(out.toString('latin1', 1, end), `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ''}\r\n${parsed.fieldText(SKIP_HOP_BY_HOP)}${framingLines}\r\n`);
        t.is(end, 1 + headBytes, 'the head is exactly the size counted');
        t.is(out[0], 0x7e, 'nothing written before the head');
        return true;
      },
    ),
    { numRuns: 1000 },
  );
});

test('property: Connection read in place says close and keep-alive exactly where its elements, trimmed and lowercased, say so', (t) => {
  const element = fc.constantFrom('close', 'Close', 'CLOSE', ' close ', '\tclose', 'keep-alive', 'Keep-Alive', ' keep-alive\u00a0', 'closed', 'clos', 'upgrade', '', 'keep-alivex', 'xclose', 'close\u00a0');
  fc.assert(
    fc.property(fc.array(element, { minLength: 1, maxLength: 4 }), (elements) => {
      const value = elements.join(',');
      const head = request(`GET / HTTP/1.1\r\nHost: svc\r\nConnection: ${value}\r\n\r\n`) as RequestHead;
      const parts = value.split(',').map((part) => part.trim().toLowerCase());
      t.is(head.connectionClose, parts.includes('close'), JSON.stringify(value));
      t.is(head.connectionKeepAlive, parts.includes('keep-alive'), JSON.stringify(value));
      return true;
    }),
    { numRuns: 500 },
  );
});
