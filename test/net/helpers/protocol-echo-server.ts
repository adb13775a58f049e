/**
 * Test backend run inside a pod: answers with what it received, over the protocols the waypoint carries.
 *
 *   node test/net/helpers/protocol-echo-server.ts '{"name":"web-a","grpcPort":50051,"h2Port":8082,"http1Port":8081}'
 * - gRPC (@grpc/grpc-js, bytes in and out, no .proto): ambit.test.Echo/Unary and ambit.test.Other/Unary answer
 *   JSON {name, method, peer, metadata, size, sha256} for the request bytes, with response header `x-served-by` and
 *   trailer `x-trailer`; Echo/Big answers `size` bytes; Echo/Fail fails with the code and message asked for (and a
 *   trailer); Echo/Bidi answers each message with JSON {name, seq, text} as it arrives and finishes 1.5 s after the
 *   client's end; Stats/Get answers how many Bidi streams were cancelled before the server finished them;
 *   Echo/Slow answers after `ms`; Echo/Flaky fails with `code` the first `failures` calls of an `id` (then answers
 *   like Unary, with `calls`, the calls of that id so far).
 * - h2c (node:http2): any request: the body streamed through sha256, then JSON {name, method, path, headers, size,
 *   sha256, trailers} and trailers `x-body-sha256`, `x-served-by`; `GET /big?size=N&id=I` (any path ending in /big) answers N bytes written
 *   with back-pressure, and `GET /written?id=I` says how many of them it has written so far; `/slow?ms=N` answers
 *   after N ms (any path ending in /slow); `/failon?name=N` answers 503 on the server named N, 200 {name} elsewhere; `/flaky?id=I&failures=N&status=S` answers S the first N requests of id I, then 200 with `calls` and the body's `size`.
 * - HTTP/1.1 (node:http): `Expect: 100-continue` is answered 100 (or 417 when `x-refuse-continue` is set) before
 *   the body is read; every request answers JSON {name, method, url, headers, size, sha256, sawExpect}, chunked;
 *   WebSocket (ws) on the same port echoes each message as `<name>:<message>`.
 * Prints {"listening":true} when every port is up. Owns: nothing beyond this. Must not know about: the mesh.
 */
import { createHash } from 'node:crypto';
import http from 'node:http';
import http2 from 'node:http2';
import * as grpc from '@grpc/grpc-js';
import { WebSocketServer } from 'ws';
import { patternBytes } from './pattern-bytes.ts';

interface Spec {
  name: string;
  grpcPort?: number;
  h2Port?: number;
  http1Port?: number;
}

const spec = JSON.parse(process.argv[2] ?? '{}') as Spec;
/** Bidi streams reset before the server finished them (grpc-js 'cancelled': an RST_STREAM reached this server). */
let cancelledStreams = 0;
/** Calls (gRPC Flaky, h2c /flaky) seen per id. */
const callsById = new Map<string, number>();
function countCall(id: string): number {
  const calls = (callsById.get(id) ?? 0) + 1;
  callsById.set(id, calls);
  return calls;
}
const bytes = { serialize: (value: Buffer): Buffer => value, deserialize: (value: Buffer): Buffer => value };

function method(path: string, requestStream: boolean, responseStream: boolean): grpc.MethodDefinition<Buffer, Buffer> {
  return { path, requestStream, responseStream, requestSerialize: bytes.serialize, requestDeserialize: bytes.deserialize, responseSerialize: bytes.serialize, responseDeserialize: bytes.deserialize };
}

function metadataOf(call: { metadata: grpc.Metadata }): Record<string, unknown> {
  return call.metadata.getMap();
}

async function startGrpc(port: number): Promise<void> {
  const server = new grpc.Server({ 'grpc.max_receive_message_length': -1, 'grpc.max_send_message_length': -1 });
  const unary = (methodName: string): grpc.handleUnaryCall<Buffer, Buffer> => (call, callback) => {
    const header = new grpc.Metadata();
    header.set('x-served-by', spec.name);
    call.sendMetadata(header);
    const trailer = new grpc.Metadata();
    trailer.set('x-trailer', `from-${spec.name}`);
    const body = { name: spec.name, method: methodName, peer: call.getPeer(), metadata: metadataOf(call), size: call.request.length, sha256: createHash('sha256').update(call.request).digest('hex') };
    callback(null, Buffer.from(JSON.stringify(body)), trailer);
  };
  server.addService(
    { Unary: method('/ambit.test.Echo/Unary', false, false), Big: method('/ambit.test.Echo/Big', false, false), Fail: method('/ambit.test.Echo/Fail', false, false), Slow: method('/ambit.test.Echo/Slow', false, false), Flaky: method('/ambit.test.Echo/Flaky', false, false), Bidi: method('/ambit.test.Echo/Bidi', true, true) },
    {
      Unary: unary('Echo/Unary'),
      Big: ((call, callback) => {
        const { size } = JSON.parse(call.request.toString()) as { size: number };
        callback(null, patternBytes(size));
      }) as grpc.handleUnaryCall<Buffer, Buffer>,
      Slow: ((call, callback) => {
        const { ms } = JSON.parse(call.request.toString()) as { ms: number };
        setTimeout(() => callback(null, Buffer.from(JSON.stringify({ name: spec.name, method: 'Echo/Slow' }))), ms);
      }) as grpc.handleUnaryCall<Buffer, Buffer>,
      Flaky: ((call, callback) => {
        const { id, failures, code } = JSON.parse(call.request.toString()) as { id: string; failures: number; code: number };
        const calls = countCall(id);
        if (calls <= failures) {
          callback({ code, details: `flaky call ${calls} of ${id}` });
          return;
        }
        callback(null, Buffer.from(JSON.stringify({ name: spec.name, method: 'Echo/Flaky', calls, metadata: metadataOf(call) })));
      }) as grpc.handleUnaryCall<Buffer, Buffer>,
      Fail: ((call, callback) => {
        const { code, message } = JSON.parse(call.request.toString()) as { code: number; message: string };
        const trailer = new grpc.Metadata();
        trailer.set('x-failed-by', spec.name);
        callback({ code, details: message, metadata: trailer });
      }) as grpc.handleUnaryCall<Buffer, Buffer>,
      Bidi: ((call) => {
        // The server finishes its side 1.5 s after the client's end (work still going on); a cancellation that
        // arrives before that is a reset that reached it (grpc-js also says 'cancelled' after a finished call).
        let finished = false;
        call.on('cancelled', () => {
          if (!finished) cancelledStreams++;
        });
        let seq = 0;
        call.on('data', (message: Buffer) => call.write(Buffer.from(JSON.stringify({ name: spec.name, seq: seq++, text: message.toString() }))));
        call.on('end', () =>
          setTimeout(() => {
            finished = true;
            call.end();
          }, 1500),
        );
      }) as grpc.handleBidiStreamingCall<Buffer, Buffer>,
    },
  );
  server.addService({ Unary: method('/ambit.test.Other/Unary', false, false) }, { Unary: unary('Other/Unary') });
  server.addService({ Stats: method('/ambit.test.Stats/Get', false, false) }, {
    Stats: ((_call, callback) => callback(null, Buffer.from(JSON.stringify({ name: spec.name, cancelledStreams })))) as grpc.handleUnaryCall<Buffer, Buffer>,
  });
  await new Promise<void>((resolve, reject) => server.bindAsync(`0.0.0.0:${port}`, grpc.ServerCredentials.createInsecure(), (error) => (error ? reject(error) : resolve())));
}

/** patternBytes' first 64 KiB: patternBytes(n) is this piece repeated (its period, 256, divides 64 KiB). */
const BIG_PIECE = patternBytes(65536);

/** Bytes each `GET /big?id=` has handed to its stream so far (the stream's back-pressure holds the rest). */
const writtenById = new Map<string, number>();

async function startH2(port: number): Promise<void> {
  const server = http2.createServer({ settings: { initialWindowSize: 1024 * 1024 } });
  server.on('stream', (stream, headers) => {
    const path = String(headers[':path']);
    if (path.startsWith('/written')) {
      const id = new URL(path, 'http://x').searchParams.get('id') ?? '';
      stream.respond({ ':status': 200, 'content-type': 'application/json' });
      stream.end(JSON.stringify({ written: writtenById.get(id) ?? -1 }));
      return;
    }
    const pathname = new URL(path, 'http://x').pathname;
    if (pathname.endsWith('/failon')) {
      // This server fails (503) when it is the one named, answers JSON {name} otherwise.
      stream.resume();
      const failing = new URL(path, 'http://x').searchParams.get('name') === spec.name;
      stream.respond({ ':status': failing ? 503 : 200, 'content-type': 'application/json', 'x-served-by': spec.name });
      stream.end(JSON.stringify({ name: spec.name }));
      return;
    }
    if (pathname.endsWith('/slow') || pathname.endsWith('/flaky')) {
      const query = new URL(path, 'http://x').searchParams;
      stream.resume();
      if (pathname.endsWith('/slow')) {
        const timer = setTimeout(() => {
          if (!stream.closed) stream.respond({ ':status': 200, 'x-served-by': spec.name }, { endStream: true });
        }, Number(query.get('ms')));
        stream.once('close', () => clearTimeout(timer));
        return;
      }
      // The body is read whole before the answer: a retried try must carry all of it (`size`).
      let size = 0;
      stream.on('data', (chunk: Buffer) => (size += chunk.length));
      stream.once('end', () => {
        const calls = countCall(query.get('id') ?? '');
        if (calls <= Number(query.get('failures'))) {
          stream.respond({ ':status': Number(query.get('status') ?? 503), 'x-served-by': spec.name }, { endStream: true });
          return;
        }
        stream.respond({ ':status': 200, 'content-type': 'application/json', 'x-served-by': spec.name });
        stream.end(JSON.stringify({ name: spec.name, calls, size, headers: Object.fromEntries(Object.entries(headers).filter(([name]) => typeof name === 'string')) }));
      });
      return;
    }
    if (pathname.endsWith('/big')) {
      const query = new URL(path, 'http://x').searchParams;
      const size = Number(query.get('size'));
      const id = query.get('id') ?? '';
      stream.respond({ ':status': 200, 'x-served-by': spec.name, 'x-served-by-address': stream.session?.socket?.localAddress ?? '' });
      // Written in 64 KiB pieces with back-pressure, as a streaming server would. The pattern repeats every 256
      // bytes, so one 64 KiB piece serves any size (GiBs included) without holding the body.
      let offset = 0;
      const pump = (): void => {
        while (offset < size) {
          const piece = BIG_PIECE.subarray(0, Math.min(BIG_PIECE.length, size - offset));
          offset += piece.length;
          writtenById.set(id, offset);
          if (!stream.write(piece)) {
            stream.once('drain', pump);
            return;
          }
        }
        stream.end();
      };
      pump();
      return;
    }
    const hash = createHash('sha256');
    let size = 0;
    let trailers: http2.IncomingHttpHeaders = {};
    stream.on('data', (chunk: Buffer) => {
      size += chunk.length;
      hash.update(chunk);
    });
    stream.once('trailers', (received: http2.IncomingHttpHeaders) => (trailers = received));
    stream.once('end', () => {
      const sha256 = hash.digest('hex');
      stream.respond({ ':status': 200, 'content-type': 'application/json', 'x-served-by': spec.name }, { waitForTrailers: true });
      stream.once('wantTrailers', () => stream.sendTrailers({ 'x-body-sha256': sha256, 'x-served-by': spec.name }));
      const plainHeaders = Object.fromEntries(Object.entries(headers).filter(([name]) => typeof name === 'string'));
      stream.end(JSON.stringify({ name: spec.name, method: headers[':method'], path, headers: plainHeaders, size, sha256, trailers: Object.fromEntries(Object.entries(trailers)) }));
    });
  });
  await new Promise<void>((resolve) => server.listen(port, '0.0.0.0', resolve));
}

async function startHttp1(port: number): Promise<void> {
  const answer = (request: http.IncomingMessage, response: http.ServerResponse, sawExpect: boolean): void => {
    const hash = createHash('sha256');
    let size = 0;
    request.on('data', (chunk: Buffer) => {
      size += chunk.length;
      hash.update(chunk);
    });
    request.once('end', () => {
      // No content-length: the answer goes chunked.
      response.writeHead(200, { 'content-type': 'application/json', 'x-served-by': spec.name });
      const body = JSON.stringify({ name: spec.name, method: request.method, url: request.url, headers: request.headers, size, sha256: hash.digest('hex'), sawExpect });
      response.write(body.slice(0, 10));
      response.end(body.slice(10));
    });
  };
  const server = http.createServer((request, response) => answer(request, response, false));
  server.on('checkContinue', (request: http.IncomingMessage, response: http.ServerResponse) => {
    if (request.headers['x-refuse-continue'] !== undefined) {
      response.writeHead(417, { 'content-type': 'text/plain', 'x-served-by': spec.name }).end('refused before the body\n');
      return;
    }
    response.writeContinue();
    answer(request, response, true);
  });
  const sockets = new WebSocketServer({ server });
  sockets.on('connection', (socket, request) => {
    socket.send(`${spec.name}:hello ${request.url ?? ''}`);
    socket.on('message', (data, binary) => socket.send(binary ? data : `${spec.name}:${String(data)}`, { binary }));
  });
  await new Promise<void>((resolve) => server.listen(port, '0.0.0.0', resolve));
}

if (spec.grpcPort) await startGrpc(spec.grpcPort);
if (spec.h2Port) await startH2(spec.h2Port);
if (spec.http1Port) await startHttp1(spec.http1Port);
process.stdout.write(`${JSON.stringify({ listening: true })}\n`);
