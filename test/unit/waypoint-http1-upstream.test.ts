/**
 * The lean path's upstream side (waypoint/http1/upstream-pool.ts, upstream-stream.ts) over real HTTP/2 streams on
 * loopback, as HBONE carries them: an endpoint that answers with raw HTTP/1.1 bytes (Content-Length, chunked split
 * across writes, close-delimited, a 100 Continue before the answer, a keep-alive hint, a broken chunk) and what
 * the exchange's receiver gets, whether the stream goes back to the pool and is reused.
 */
import test from 'ava';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import type { PickedEndpoint } from '../../shared/mesh/load-balance.ts';
import type { Service } from '../../shared/mesh/service.ts';
import type { ResponseHead } from '../../waypoint/http1/heads.ts';
import { UpstreamHttp1Pool } from '../../waypoint/http1/upstream-pool.ts';
import type { ResponseSink, UpstreamHttp1Stream } from '../../waypoint/http1/upstream-stream.ts';
import type { Upstreams } from '../../waypoint/upstream.ts';

/** An endpoint: each request on a stream gets the next raw answer of `answers` (split into the pieces given). */
async function endpoint(answers: string[][]): Promise<{ session: http2.ClientHttp2Session; requests: string[]; close: () => void }> {
  const requests: string[] = [];
  let next = 0;
  const server = http2.createServer();
  server.on('stream', (stream) => {
    stream.respond({ ':status': 200 });
    let seen = '';
    stream.on('data', (chunk: Buffer) => {
      seen += chunk.toString('latin1');
      // One request per head here (no bodies): answer each as its head ends.
      let end: number;
      while ((end = seen.indexOf('\r\n\r\n')) >= 0) {
        requests.push(seen.slice(0, end));
        seen = seen.slice(end + 4);
        const pieces = answers[next++] ?? [];
        let delay = 0;
        for (const piece of pieces) {
          // The end well after the pieces: a loaded machine that fires both timers in one turn would otherwise end the
          // stream in the same read as the last piece, before the receiver took the body (setImmediate in `exchange`).
          if (piece === '<end>') setTimeout(() => stream.end(), (delay += 200));
          else setTimeout(() => stream.write(Buffer.from(piece, 'latin1')), (delay += 20));
        }
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const session = http2.connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  return { session, requests, close: () => (session.destroy(), server.close()) };
}

const service = { namespace: 'shop', hostname: 'web.shop.svc.cluster.local', name: 'web' } as unknown as Service;
// The endpoint object as the mesh state hands it out (the pool keys its connections' key by it).
const picked = { endpoint: { workload: { name: 'web-a' }, ports: [] }, address: '10.0.0.1', targetPort: 8080 } as unknown as PickedEndpoint;

/** Upstreams whose connectDirect() opens a stream on the test's session (the HBONE client pool's part). */
function upstreamsOn(session: http2.ClientHttp2Session): { upstreams: Upstreams; opened: () => number } {
  let opened = 0;
  const upstreams = {
    connectDirect: () => {
      opened++;
      return Promise.resolve({ kind: 'hbone', stream: session.request({ ':method': 'POST', ':path': '/' }) });
    },
  } as unknown as Upstreams;
  return { upstreams, opened: () => opened };
}

interface Received {
  head?: ResponseHead;
  body: string;
  ended: boolean;
  error?: Error;
}

/** One exchange on a stream from the pool; resolves when the response ended or failed. */
async function exchange(pool: UpstreamHttp1Pool, path: string, headRequest = false): Promise<{ received: Received; stream: UpstreamHttp1Stream }> {
  const stream = await pool.acquire(service, picked);
  const received: Received = { body: '', ended: false };
  await new Promise<void>((resolve) => {
    const sink: ResponseSink = {
      onHead: (head) => {
        received.head = head;
        // The proxy takes the body a little later (after the try loop's await).
        setImmediate(() => stream.startBody());
      },
      onBody: (bytes, start, end) => (received.body += bytes.toString('latin1', start, end)),
      onEnd: () => {
        received.ended = true;
        resolve();
      },
      onError: (error) => {
        received.error = error;
        resolve();
      },
    };
    stream.send(Buffer.from(`${headRequest ? 'HEAD' : 'GET'} ${path} HTTP/1.1\r\nhost: web\r\n\r\n`, 'latin1'), headRequest, sink);
  });
  return { received, stream };
}

test('Content-Length and chunked answers end where their framing says; a 100 is skipped; the idle stream is reused', async (t) => {
  const backend = await endpoint([
    ['HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhel', 'lo'],
    ['HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n', '4;x=y\r\ndefg\r', '\n0\r\n\r\n'],
    ['HTTP/1.1 100 Continue\r\n\r\n', 'HTTP/1.1 204 No Content\r\n\r\n'],
    ['HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n'],
  ]);
  t.teardown(backend.close);
  const { upstreams, opened } = upstreamsOn(backend.session);
  const pool = new UpstreamHttp1Pool(upstreams);
  t.teardown(() => pool.close());
  const first = await exchange(pool, '/length');
  t.is(first.received.body, 'hello');
  t.true(first.received.ended);
  t.deepEqual(pool.view(), { 'shop/web.shop.svc.cluster.local|10.0.0.1|8080': { open: 0, idle: 1 } });
  const second = await exchange(pool, '/chunked');
  t.is(second.stream, first.stream, 'the idle stream carried the next request');
  t.is(second.received.body, '3\r\nabc\r\n4;x=y\r\ndefg\r\n0\r\n\r\n', 'the chunked framing passed on as it came');
  const third = await exchange(pool, '/continue');
  t.is(third.received.head?.status, 204, 'the 100 was skipped');
  const fourth = await exchange(pool, '/head', true);
  t.is(fourth.received.head?.status, 200);
  t.is(fourth.received.body, '', 'no body after a HEAD request');
  t.is(opened(), 1);
  t.deepEqual(backend.requests.map((request) => request.split(' ')[1]), ['/length', '/chunked', '/continue', '/head']);
});

test('a close-delimited answer ends with the stream, which is not reused; a keep-alive hint shortens the idle time', async (t) => {
  const backend = await endpoint([['HTTP/1.1 200 OK\r\nkeep-alive: timeout=3\r\ncontent-length: 2\r\n\r\nok'], ['HTTP/1.1 200 OK\r\n\r\nuntil', ' close', '<end>'], ['HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nx']]);
  t.teardown(backend.close);
  const { upstreams, opened } = upstreamsOn(backend.session);
  const pool = new UpstreamHttp1Pool(upstreams);
  t.teardown(() => pool.close());
  const hinted = await exchange(pool, '/hint');
  t.is(hinted.stream.idleTimeoutMs, 2000, "the endpoint's timeout less one second");
  const closed = await exchange(pool, '/close');
  t.is(closed.stream, hinted.stream);
  t.is(closed.received.body, 'until close');
  t.true(closed.received.ended);
  await exchange(pool, '/after');
  t.is(opened(), 2, 'a new stream after the close-delimited answer');
});

test('a broken answer (bad chunk size, a cut before the end) fails the exchange and closes the stream', async (t) => {
  const backend = await endpoint([['HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n'], ['HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort', '<end>'], ['HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nx']]);
  t.teardown(backend.close);
  const { upstreams, opened } = upstreamsOn(backend.session);
  const pool = new UpstreamHttp1Pool(upstreams);
  t.teardown(() => pool.close());
  const bad = await exchange(pool, '/bad-chunk');
  t.regex(bad.received.error?.message ?? '', /not a hex digit/);
  t.false(bad.received.ended);
  const cut = await exchange(pool, '/cut');
  t.is(cut.received.body, 'short');
  t.truthy(cut.received.error, 'a response cut before its length is an error, not an end');
  t.is(opened(), 2);
  t.deepEqual(pool.view(), {});
});

test('idle streams go out last in first out; one closed while idle leaves its list at once and is never handed out', async (t) => {
  const answer = ['HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok'];
  const backend = await endpoint(Array.from({ length: 8 }, () => answer));
  t.teardown(backend.close);
  const { upstreams, opened } = upstreamsOn(backend.session);
  const pool = new UpstreamHttp1Pool(upstreams);
  t.teardown(() => pool.close());
  const first = await Promise.all([exchange(pool, '/a'), exchange(pool, '/b'), exchange(pool, '/c')]);
  t.is(opened(), 3, 'three requests at once: three streams');
  t.deepEqual(Object.values(pool.view()), [{ open: 0, idle: 3 }]);
  // The stream idle last is the one handed out next, again and again (the list goes 3 -> 2 -> 3 each time).
  const last = (await exchange(pool, '/d')).stream;
  t.is((await exchange(pool, '/e')).stream, last);
  t.is((await exchange(pool, '/f')).stream, last);
  // One of the others closes while idle (a reset, or the endpoint going): out of the idle list, never handed out.
  const closed = first.map((done) => done.stream).find((stream) => stream !== last)!;
  closed.destroy();
  for (let waited = 0; Object.values(pool.view())[0]?.idle !== 2 && waited < 2_000; waited += 20) await new Promise((resolve) => setTimeout(resolve, 20));
  t.deepEqual(Object.values(pool.view()), [{ open: 0, idle: 2 }]);
  const again = await Promise.all([exchange(pool, '/g'), exchange(pool, '/h')]);
  const handedOut = again.map((done) => done.stream);
  t.false(handedOut.includes(closed), 'the closed stream was not handed out');
  t.true(handedOut.includes(last));
  t.is(new Set(handedOut).size, 2);
  t.is(opened(), 3, 'no new stream: the two idle ones carried both');
  t.true(again.every((done) => done.received.body === 'ok'));
});
