/**
 * The lean HTTP/1.1 codec read and written directly on the own HTTP/2 layer's streams (waypoint/http1/
 * h2-stream-transport.ts), over real mutual TLS on loopback: the client side (downstream.ts) on a terminated CONNECT
 * stream, the endpoint side (upstream-stream.ts) on an opened one. Requests come in as views of the connection's
 * pooled TLS read buffers, which the next read reuses: what a request or response keeps past the chunk's call (a
 * body waiting for the gate or the try, pipelined requests, a response body held while the try settles) must arrive
 * intact after other traffic went through the same buffers. Pipelined requests are answered in order, keep-alive
 * holds, and the client's end closes the stream cleanly.
 */
import test from 'ava';
import type { H2Stream } from '../../shared/hbone/h2/stream.ts';
import { openConnectStream } from '../../shared/hbone/h2/tunnel-client.ts';
import { DownstreamConnection, type LeanExchange, type LeanHandler } from '../../waypoint/http1/downstream.ts';
import { H2StreamTransport } from '../../waypoint/http1/h2-stream-transport.ts';
import type { ResponseHead } from '../../waypoint/http1/heads.ts';
import { UpstreamHttp1Stream, type ResponseSink } from '../../waypoint/http1/upstream-stream.ts';
import { waitFor } from '../helpers/hbone.ts';
import { startH2Pair, StreamCollector } from '../helpers/h2-tunnel.ts';

const TARGET = { host: '10.0.0.9', port: 8080 };

/** Bytes of `length` all `fill` (so a reused buffer's other contents show). */
function filled(length: number, fill: string): string {
  return fill.repeat(length);
}

/**
 * A lean client side on the own layer: every terminated stream is served by a DownstreamConnection on an
 * H2StreamTransport whose handler answers each request, after `delayMs`, with its method, path and body.
 */
async function leanServer(t: { teardown: (fn: () => Promise<void>) => void }, delayMs: number): Promise<{ open: () => Promise<{ stream: H2Stream; collector: StreamCollector }>; served: string[] }> {
  const served: string[] = [];
  const handler: LeanHandler = {
    accepts: () => true,
    serve: (exchange: LeanExchange) => {
      const answerIt = (): void => {
        const body = Buffer.concat(exchange.body).toString('latin1');
        served.push(`${exchange.method} ${exchange.url} ${body.length}`);
        const text = `${exchange.method} ${exchange.url} ${body}`;
        exchange.writeHead(200, { 'content-type': 'text/plain' }).end(text);
      };
      // Later, after other reads went through the pooled buffers (the gate or a try would take this long).
      if (delayMs > 0) setTimeout(answerIt, delayMs);
      else answerIt();
    },
    handOver: () => undefined,
    refused: () => undefined,
  };
  const pair = await startH2Pair({
    server: {
      terminateStream: (_request, stream) => {
        stream.respond(200);
        new DownstreamConnection(new H2StreamTransport(stream), undefined, handler);
      },
    },
  });
  t.teardown(() => pair.close());
  const connection = await pair.dial();
  return {
    served,
    open: async () => {
      const stream = await openConnectStream(connection, { proxy: pair.serverAddress, destination: TARGET });
      const collector = new StreamCollector();
      stream.setHandler(collector);
      return { stream, collector };
    },
  };
}

function post(path: string, body: string): string {
  return `POST ${path} HTTP/1.1\r\nhost: web\r\ncontent-length: ${body.length}\r\n\r\n${body}`;
}

test('requests parsed from the read buffers keep their bodies intact while other traffic reuses the buffers', async (t) => {
  const server = await leanServer(t, 30);
  const first = await server.open();
  const second = await server.open();
  const bodyA = filled(1024, 'a');
  const bodyB = filled(1024, 'b');
  // A whole request in one chunk, then traffic on another stream while it waits: the same pooled buffers are read into.
  first.stream.write(Buffer.from(post('/one', bodyA)));
  await new Promise((resolve) => setTimeout(resolve, 5));
  second.stream.write(Buffer.from(post('/two', bodyB)));
  // A request whose body comes in a later chunk than its head, and a pipelined one behind it in the same chunk.
  await new Promise((resolve) => setTimeout(resolve, 5));
  const head = post('/three', bodyA);
  const split = head.length - 600;
  first.stream.write(Buffer.from(head.slice(0, split)));
  await new Promise((resolve) => setTimeout(resolve, 5));
  first.stream.write(Buffer.from(head.slice(split) + post('/four', bodyB)));
  second.stream.write(Buffer.from(post('/five', filled(1024, 'c'))));
  t.true(await waitFor(() => server.served.length === 5));
  // The last answers are on their way once served.
  t.true(await waitFor(() => first.collector.data.toString('latin1').includes('POST /four') && second.collector.data.toString('latin1').includes('POST /five')));
  const firstText = first.collector.data.toString('latin1');
  const secondText = second.collector.data.toString('latin1');
  t.true(firstText.includes(`POST /one ${bodyA}`), 'the first body as sent');
  t.true(firstText.includes(`POST /three ${bodyA}`), 'the split body as sent');
  t.true(firstText.includes(`POST /four ${bodyB}`), 'the pipelined body as sent');
  t.true(firstText.indexOf('POST /one') < firstText.indexOf('POST /three') && firstText.indexOf('POST /three') < firstText.indexOf('POST /four'), 'answered in order');
  t.true(secondText.includes(`POST /two ${bodyB}`));
  t.true(secondText.includes(`POST /five ${filled(1024, 'c')}`));
  t.is(firstText.split('HTTP/1.1 200 OK').length - 1, 3, 'one response per request on the kept-alive stream');
  // The client ends: the waypoint's side ends too and the stream closes cleanly.
  first.stream.end();
  const closed = await first.collector.done;
  t.is(closed.rstCode, undefined);
});

test("an endpoint's response read from the read buffers: its body, held until the try is taken, arrives intact", async (t) => {
  const endpoints: H2Stream[] = [];
  const pair = await startH2Pair({
    server: {
      terminateStream: (_request, stream) => {
        stream.respond(200);
        const collector = new StreamCollector();
        stream.setHandler(collector);
        endpoints.push(stream);
      },
    },
  });
  t.teardown(() => pair.close());
  const connection = await pair.dial();
  const toEndpoint = await openConnectStream(connection, { proxy: pair.serverAddress, destination: TARGET });
  const other = await openConnectStream(connection, { proxy: pair.serverAddress, destination: TARGET });
  const otherSide = new StreamCollector();
  other.setHandler(otherSide);
  const idle: UpstreamHttp1Stream[] = [];
  const upstream = new UpstreamHttp1Stream('k', new H2StreamTransport(toEndpoint), 15_000, (done) => idle.push(done), () => undefined);
  let head: ResponseHead | undefined;
  let body = '';
  let ended = false;
  const sink: ResponseSink = {
    onHead: (received) => (head = received),
    onBody: (bytes, start, end) => (body += bytes.toString('latin1', start, end)),
    onEnd: () => (ended = true),
    onError: (error) => t.fail(error.message),
  };
  upstream.send(Buffer.from('GET / HTTP/1.1\r\nhost: web\r\n\r\n', 'latin1'), false, sink);
  t.true(await waitFor(() => endpoints.length === 2));
  const responseBody = filled(1024, 'r');
  endpoints[0]!.write(Buffer.from(`HTTP/1.1 200 OK\r\ncontent-length: 1024\r\n\r\n${responseBody}`));
  t.true(await waitFor(() => head !== undefined));
  // Other reads into the same pooled buffers before the proxy takes the body.
  endpoints[1]!.write(Buffer.from(filled(1100, 'x')));
  t.true(await waitFor(() => otherSide.bytes === 1100));
  upstream.startBody();
  t.true(ended);
  t.is(body, responseBody);
  t.is(idle.length, 1, 'the kept-alive stream went back to its pool');
});
