/**
 * waypoint/http1/downstream.ts against a client that trickles its request, over real HTTP/2 streams on loopback (the
 * lean path reads the terminated HBONE stream the same way): a head that does not arrive whole in time, or a body
 * that does not, is answered 408 and the stream ends, as Node's server does with headersTimeout/requestTimeout; a
 * request that arrives in time is served and nothing times out after it. A relayed response's head leaves in one
 * write with the body bytes that came with it, and never waits for a body that comes later. A kept-alive stream's
 * next request gets the last one's exchange object back once the proxy released it, with nothing of the last request
 * in it, and a late body call of the last request's relay goes nowhere.
 */
import test from 'ava';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { DownstreamConnection, type LeanExchange, type LeanHandler } from '../../waypoint/http1/downstream.ts';
import { DuplexTransport } from '../../waypoint/http1/duplex-transport.ts';
import type { Http1Error } from '../../waypoint/http1/errors.ts';

interface Served {
  refused: string[];
  served: string[];
}

function answerOk(exchange: LeanExchange): void {
  exchange.writeHead(200, { 'content-length': '2' }).end('ok');
}

async function withServer(timeouts: { headersMs: number; requestMs: number }, run: (client: http2.ClientHttp2Session, seen: Served) => Promise<void>, answer = answerOk): Promise<void> {
  const seen: Served = { refused: [], served: [] };
  const handler: LeanHandler = {
    accepts: () => true,
    serve: (exchange: LeanExchange) => {
      seen.served.push(`${exchange.method} ${exchange.url} ${exchange.bodyBytes}`);
      answer(exchange);
    },
    handOver: () => undefined,
    refused: (error: Http1Error) => void seen.refused.push(error.code),
  };
  const server = http2.createServer();
  server.on('stream', (stream) => {
    stream.respond({ ':status': 200 });
    new DownstreamConnection(new DuplexTransport(stream), undefined, handler, timeouts);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const client = http2.connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  try {
    await run(client, seen);
  } finally {
    client.close();
    server.close();
  }
}

/**
 * Opens a stream, sends `pieces` `gapMs` apart until an answer comes (then ends its side, as a client that read
 * `connection: close` does), and resolves with what came back once the stream closed; `elapsedMs`: to the answer.
 */
function trickle(client: http2.ClientHttp2Session, pieces: string[], gapMs: number): Promise<{ text: string; elapsedMs: number }> {
  return new Promise((resolve) => {
    const started = performance.now();
    let answeredMs = Number.POSITIVE_INFINITY;
    const stream = client.request({ ':method': 'POST', ':path': '/' });
    let text = '';
    stream.setEncoding('latin1');
    stream.on('data', (chunk: string) => {
      if (text === '') answeredMs = performance.now() - started;
      text += chunk;
      clearInterval(timer);
      if (!stream.writableEnded) stream.end();
    });
    stream.on('error', () => undefined);
    const timer = setInterval(() => {
      const piece = pieces.shift();
      if (piece === undefined || stream.destroyed) clearInterval(timer);
      else stream.write(piece);
    }, gapMs);
    stream.once('close', () => {
      clearInterval(timer);
      resolve({ text, elapsedMs: answeredMs });
    });
  });
}

test('a head that trickles past the headers deadline is answered 408 and the stream ends', async (t) => {
  await withServer({ headersMs: 300, requestMs: 2_000 }, async (client, seen) => {
    // One byte of the head every 50 ms: each keeps the idle timeout away; only the deadline ends it.
    const head = 'GET /slow HTTP/1.1\r\nhost: a\r\nx-filler: ' + 'y'.repeat(200) + '\r\n\r\n';
    const result = await trickle(client, [...head], 50);
    t.regex(result.text, /^HTTP\/1\.1 408 Request Timeout\r\n/);
    t.regex(result.text, /connection: close/i);
    t.true(result.elapsedMs < 3_000, `answered after ${result.elapsedMs} ms`);
    t.deepEqual(seen.refused, ['HTTP1_REQUEST_TIMEOUT']);
    t.deepEqual(seen.served, []);
  });
});

test('a body that trickles past the request deadline is answered 408 and never served', async (t) => {
  await withServer({ headersMs: 300, requestMs: 600 }, async (client, seen) => {
    const pieces = ['POST /upload HTTP/1.1\r\nhost: a\r\ncontent-length: 40\r\n\r\n', ...'x'.repeat(40)];
    const result = await trickle(client, pieces, 50);
    t.regex(result.text, /^HTTP\/1\.1 408 /);
    t.deepEqual(seen.refused, ['HTTP1_REQUEST_TIMEOUT']);
    t.deepEqual(seen.served, []);
  });
});

test('a request that arrives in time (in pieces) is served, and its deadline does not fire after it', async (t) => {
  await withServer({ headersMs: 300, requestMs: 600 }, async (client, seen) => {
    const pieces = ['POST /in-time HTTP/1.1\r\nho', 'st: a\r\ncontent-length: 4\r\n\r\n', 'ab', 'cd'];
    const stream = client.request({ ':method': 'POST', ':path': '/' });
    let text = '';
    stream.setEncoding('latin1');
    stream.on('data', (chunk: string) => (text += chunk));
    for (const piece of pieces) {
      stream.write(piece);
      await new Promise((resolve) => setTimeout(resolve, 30));
    }
    // Longer than both deadlines: a deadline left armed would answer 408 into the kept-alive stream.
    await new Promise((resolve) => setTimeout(resolve, 900));
    t.deepEqual(seen.served, ['POST /in-time 4']);
    t.deepEqual(seen.refused, []);
    t.regex(text, /^HTTP\/1\.1 200 OK\r\n/);
    t.notRegex(text, /408/);
    stream.close();
  });
});

/** The chunks (as the client's 'data' events saw them) of the answer to one request, and when each came. */
function exchangeOnce(client: http2.ClientHttp2Session, request: string, until: (text: string) => boolean): Promise<Array<{ text: string; atMs: number }>> {
  return new Promise((resolve) => {
    const started = performance.now();
    const chunks: Array<{ text: string; atMs: number }> = [];
    const stream = client.request({ ':method': 'POST', ':path': '/' });
    stream.setEncoding('latin1');
    stream.on('data', (chunk: string) => {
      chunks.push({ text: chunk, atMs: performance.now() - started });
      if (until(chunks.map((entry) => entry.text).join(''))) {
        stream.close();
        resolve(chunks);
      }
    });
    stream.on('error', () => undefined);
    stream.write(request);
  });
}

const RELAYED_HEAD = 'HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n';

test('a relayed head and the body bytes that came with it leave in one write (one DATA frame)', async (t) => {
  await withServer({ headersMs: 1_000, requestMs: 2_000 }, async (client) => {
    const chunks = await exchangeOnce(client, 'GET /one HTTP/1.1\r\nhost: a\r\n\r\n', (text) => text.endsWith('hello'));
    t.deepEqual(chunks.map((chunk) => chunk.text), [`${RELAYED_HEAD}hello`]);
  }, (exchange) => {
    // As the proxy relays: the head, the body that came with it (one range of a larger chunk), then flushHead().
    exchange.sendHead(RELAYED_HEAD);
    const upstreamChunk = Buffer.from('xxhelloyy');
    exchange.bodyChunk(exchange.generation, upstreamChunk, 2, 7);
    exchange.flushHead();
    exchange.bodyEnd(exchange.generation);
  });
});

test('a relayed head whose body comes later is not held back for it', async (t) => {
  let exchangeSeen: LeanExchange | undefined;
  await withServer({ headersMs: 1_000, requestMs: 2_000 }, async (client) => {
    const chunks = await exchangeOnce(client, 'GET /later HTTP/1.1\r\nhost: a\r\n\r\n', (text) => {
      // The head came: only now does the body go (a head held for it would never come: a deadlock, not a delay).
      if (text === RELAYED_HEAD) setTimeout(() => {
        exchangeSeen!.bodyChunk(exchangeSeen!.generation, Buffer.from('hello'), 0, 5);
        exchangeSeen!.bodyEnd(exchangeSeen!.generation);
      }, 20);
      return text.endsWith('hello');
    });
    t.is(chunks[0]!.text, RELAYED_HEAD);
    t.is(chunks.map((chunk) => chunk.text).join(''), `${RELAYED_HEAD}hello`);
  }, (exchange) => {
    exchangeSeen = exchange;
    exchange.sendHead(RELAYED_HEAD);
    exchange.flushHead();
  });
});

test('the next request on a stream reuses the released exchange with nothing of the last request in it, and a late relay call of the last request is dropped', async (t) => {
  const exchanges: LeanExchange[] = [];
  const states: Array<Record<string, unknown>> = [];
  let lateRelay: (() => void) | undefined;
  await withServer({ headersMs: 1_000, requestMs: 2_000 }, async (client) => {
    const stream = client.request({ ':method': 'POST', ':path': '/' });
    stream.setEncoding('latin1');
    let text = '';
    const until = (done: () => boolean): Promise<void> =>
      new Promise((resolve) => {
        const check = (): void => void (done() ? resolve() : setTimeout(check, 5));
        check();
      });
    stream.on('data', (chunk: string) => (text += chunk));
    stream.on('error', () => undefined);
    stream.write('POST /first HTTP/1.1\r\nhost: a\r\nx-first: 1\r\ncontent-length: 5\r\n\r\nhello');
    await until(() => text.endsWith('first'));
    stream.write('GET /second HTTP/1.1\r\nhost: b\r\n\r\n');
    await until(() => text.endsWith('ok'));
    await new Promise((resolve) => setTimeout(resolve, 30));
    stream.close();
    t.is(text, `${RELAYED_HEAD}first` + 'HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok', 'each request got its own answer, and nothing of the late relay');
  }, (exchange) => {
    exchanges.push(exchange);
    states.push({ method: exchange.method, url: exchange.url, bodyBytes: exchange.bodyBytes, body: Buffer.concat(exchange.body).toString(), first: exchange.headers['x-first'], host: exchange.authority, headersSent: exchange.headersSent, done: exchange.done, listener: exchange.listener, source: exchange.source, generation: exchange.generation });
    if (exchanges.length === 1) {
      // Relayed as the proxy relays, with a listener and a source; the proxy then releases it (its line was written).
      const generation = exchange.generation;
      exchange.listener = { clientGone: () => undefined, relayed: () => undefined };
      exchange.source = { pause: () => undefined, resume: () => undefined };
      exchange.sendHead(RELAYED_HEAD);
      exchange.bodyChunk(generation, Buffer.from('first'), 0, 5);
      exchange.bodyEnd(generation);
      exchange.release();
      // A late call of that relay (a try that had not let go), made once the next request has the object.
      lateRelay = () => {
        exchange.bodyChunk(generation, Buffer.from('LATE'), 0, 4);
        exchange.bodyEnd(generation);
        exchange.bodyCut(generation);
      };
      return;
    }
    lateRelay!();
    t.false(exchange.done, 'the late end did not end the next request');
    setTimeout(() => answerOk(exchange), 20);
  });
  t.is(exchanges.length, 2);
  t.is(exchanges[1], exchanges[0], 'the same object, handed out again');
  t.deepEqual(states[0], { method: 'POST', url: '/first', bodyBytes: 5, body: 'hello', first: '1', host: 'a', headersSent: false, done: false, listener: undefined, source: undefined, generation: 0 });
  t.deepEqual(states[1], { method: 'GET', url: '/second', bodyBytes: 0, body: '', first: undefined, host: 'b', headersSent: false, done: false, listener: undefined, source: undefined, generation: 1 });
});

test('an exchange the proxy has not released is not handed out again: the next request gets its own', async (t) => {
  const exchanges: LeanExchange[] = [];
  await withServer({ headersMs: 1_000, requestMs: 2_000 }, async (client) => {
    // Two pipelined requests: the second is served inside the first's end, before the proxy is done with the first.
    const chunks = await exchangeOnce(client, 'GET /1 HTTP/1.1\r\nhost: a\r\n\r\nGET /2 HTTP/1.1\r\nhost: a\r\n\r\n', (text) => text.split('ok').length === 3);
    t.is(chunks.map((chunk) => chunk.text).join('').split('HTTP/1.1 200').length, 3);
  }, (exchange) => {
    const url = `/${exchanges.push(exchange)}`;
    answerOk(exchange);
    // The proxy reads the request for its log line after the answer (the second was served inside it), then releases it.
    t.is(exchange.url, url);
    exchange.release();
  });
  t.is(exchanges.length, 2);
  t.not(exchanges[1], exchanges[0]);
});
