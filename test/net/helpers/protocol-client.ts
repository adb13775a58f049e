/**
 * Test client run inside a pod: one scenario over one protocol, printed as one JSON line (what the client got).
 *
 *   node test/net/helpers/protocol-client.ts '{"scenario":"grpc-unary","host":"10.240.3.10","port":80,...}'
 * Scenarios: grpc-unary (count calls of `path`, with `metadata`), grpc-fail, grpc-big (an 8 MiB request and an 8 MiB
 * response), grpc-bidi (lock-step: each message waits for its answer), h2-post (a body of `size` bytes in 64 KiB
 * pieces with request trailers), h2-big-get, h2-slow-reader, h2-garbage (raw bytes after the HTTP/2 preface), http1-continue,
 * http1-chunked, ws (WebSocket echo), http1-retry-loop and grpc-retry-loop (requests in a loop, each retried until
 * it succeeds), h2-get (requests one after another on one session: status, headers, body), h2-hold (a download
 * left open: prints `open` once the first bytes came, then waits to be killed), h2-flood (`count` requests at once on
 * one session, or opened and reset at once with `reset`).
 * Owns: nothing beyond this. Must not know about: the mesh.
 */
import { createHash } from 'node:crypto';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import WebSocket from 'ws';
import { patternBytes } from './pattern-bytes.ts';

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- a scenario's free-form JSON arguments
type Spec = Record<string, any> & { scenario: string; host: string; port: number };

const spec = JSON.parse(process.argv[2] ?? '{}') as Spec;
const target = `${spec.host}:${spec.port}`;
const bytes = (value: Buffer): Buffer => value;
const sha256 = (body: Buffer): string => createHash('sha256').update(body).digest('hex');

function grpcClient(): grpc.Client {
  return new grpc.Client(target, grpc.credentials.createInsecure(), { 'grpc.max_receive_message_length': -1, 'grpc.max_send_message_length': -1 });
}

interface UnaryResult {
  code: number;
  details: string;
  headers: Record<string, unknown>;
  trailers: Record<string, unknown>;
  body?: unknown;
  size?: number;
  sha256?: string;
}

function unary(client: grpc.Client, path: string, request: Buffer, metadata: Record<string, string> = {}, json = true): Promise<UnaryResult> {
  return new Promise((resolve) => {
    const meta = new grpc.Metadata();
    for (const [name, value] of Object.entries(metadata)) meta.set(name, value);
    let headers: Record<string, unknown> = {};
    let response: Buffer | undefined;
    const call = client.makeUnaryRequest(path, bytes, bytes, request, meta, { deadline: Date.now() + 30_000 }, (_error, value) => (response = value));
    call.on('metadata', (received: grpc.Metadata) => (headers = received.getMap()));
    call.on('status', (status: grpc.StatusObject) => {
      // 'status' can come before the callback's value is set: let the callback run first.
      setImmediate(() => {
        const result: UnaryResult = { code: status.code, details: status.details, headers, trailers: status.metadata.getMap() };
        if (response) {
          if (json) result.body = JSON.parse(response.toString()) as unknown;
          result.size = response.length;
          result.sha256 = sha256(response);
        }
        resolve(result);
      });
    });
  });
}

async function grpcUnary(): Promise<unknown> {
  const client = grpcClient();
  const results: UnaryResult[] = [];
  for (let i = 0; i < (spec.count ?? 1); i++) {
    const request = spec.request !== undefined ? Buffer.from(JSON.stringify(spec.request)) : Buffer.from(`call ${i}`);
    results.push(await unary(client, spec.path ?? '/ambit.test.Echo/Unary', request, spec.metadata));
  }
  client.close();
  return results;
}

async function grpcFail(): Promise<unknown> {
  const client = grpcClient();
  const result = await unary(client, '/ambit.test.Echo/Fail', Buffer.from(JSON.stringify({ code: spec.code, message: spec.message })));
  client.close();
  return result;
}

async function grpcBig(): Promise<unknown> {
  const client = grpcClient();
  const request = patternBytes(spec.size);
  const upload = await unary(client, '/ambit.test.Echo/Unary', request);
  const download = await unary(client, '/ambit.test.Echo/Big', Buffer.from(JSON.stringify({ size: spec.size })), {}, false);
  client.close();
  const expected = sha256(request);
  return { upload: { code: upload.code, details: upload.details, body: upload.body }, sentSha256: expected, download: { code: download.code, details: download.details, size: download.size, sha256: download.sha256 }, expectedSha256: expected };
}

async function grpcBidi(): Promise<unknown> {
  const client = grpcClient();
  const call = client.makeBidiStreamRequest('/ambit.test.Echo/Bidi', bytes, bytes, new grpc.Metadata(), { deadline: Date.now() + 60_000 });
  const answers: unknown[] = [];
  let waiting: ((message: Buffer) => void) | undefined;
  call.on('data', (message: Buffer) => waiting?.(message));
  const status = new Promise<grpc.StatusObject>((resolve) => call.on('status', resolve));
  call.on('error', () => {
    // reported through 'status'
  });
  // Lock-step: the next message is sent only after the answer to this one came back through the waypoint, so
  // nothing is buffered to the end of the stream.
  for (let i = 0; i < spec.count; i++) {
    if (spec.cancelAfter === i) {
      call.cancel();
      const cancelled = await status;
      client.close();
      return { answers, code: cancelled.code, details: cancelled.details };
    }
    const answer = new Promise<Buffer>((resolve, reject) => {
      waiting = resolve;
      setTimeout(() => reject(new Error(`no answer to message ${i} in 15 s`)), 15_000).unref();
    });
    call.write(Buffer.from(`message ${i}`));
    answers.push(JSON.parse((await answer).toString()) as unknown);
  }
  call.end();
  const final = await status;
  client.close();
  return { answers, code: final.code, details: final.details };
}

function h2Post(): Promise<unknown> {
  return new Promise((resolve) => {
    const session = http2.connect(`http://${target}`);
    session.on('error', (error) => resolve({ error: error.message }));
    const body = patternBytes(spec.size ?? 0);
    const stream = session.request({ ':method': 'POST', ':path': spec.path ?? '/upload', 'content-type': 'application/octet-stream', ...(spec.headers ?? {}) }, { waitForTrailers: true });
    stream.on('wantTrailers', () => stream.sendTrailers(spec.trailers ?? {}));
    let headers: http2.IncomingHttpHeaders = {};
    let trailers: http2.IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    stream.on('response', (received) => (headers = received));
    stream.on('trailers', (received) => (trailers = received));
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.on('error', (error) => resolve({ error: error.message }));
    stream.on('end', () => {
      session.close();
      const text = Buffer.concat(chunks).toString();
      let parsed: unknown = text;
      try {
        parsed = JSON.parse(text);
      } catch {
        // not JSON: kept as text
      }
      resolve({ status: headers[':status'], headers, trailers: { ...trailers }, body: parsed, sentSha256: sha256(body) });
    });
    let offset = 0;
    const pump = (): void => {
      while (offset < body.length) {
        const piece = body.subarray(offset, offset + 65536);
        offset += piece.length;
        if (!stream.write(piece)) {
          stream.once('drain', pump);
          return;
        }
      }
      stream.end();
    };
    pump();
  });
}

function h2BigGet(): Promise<unknown> {
  return new Promise((resolve) => {
    const session = http2.connect(`http://${target}`);
    session.on('error', (error) => resolve({ error: error.message }));
    const stream = session.request({ ':path': `/big?size=${spec.size}` });
    const hash = createHash('sha256');
    let size = 0;
    let status: unknown;
    stream.on('response', (headers) => (status = headers[':status']));
    stream.on('data', (chunk: Buffer) => {
      size += chunk.length;
      hash.update(chunk);
    });
    stream.on('end', () => {
      session.close();
      resolve({ status, size, sha256: hash.digest('hex'), expectedSha256: sha256(patternBytes(spec.size)) });
    });
  });
}

/**
 * A slow reader: GET /big of `size` bytes through the waypoint, read one chunk, stop reading for `pauseMs`, then ask
 * the server that answers (directly at its pod address) how much it has written so far; then read the rest.
 */
function h2SlowReader(): Promise<unknown> {
  return new Promise((resolve) => {
    const session = http2.connect(`http://${target}`);
    session.on('error', (error) => resolve({ error: error.message }));
    const id = `${process.pid}-${Date.now()}`;
    const stream = session.request({ ':path': `/big?size=${spec.size}&id=${id}` });
    const hash = createHash('sha256');
    let size = 0;
    let address = '';
    let writtenWhilePaused = -1;
    stream.on('response', (headers) => (address = String(headers['x-served-by-address'])));
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      hash.update(chunk);
    };
    stream.once('data', (chunk: Buffer) => {
      onData(chunk);
      stream.pause();
      setTimeout(() => {
        const direct = http2.connect(`http://${address.startsWith('::ffff:') ? address.slice(7) : address}:${spec.directPort}`);
        const query = direct.request({ ':path': `/written?id=${id}` });
        let text = '';
        query.setEncoding('utf8');
        query.on('data', (part: string) => (text += part));
        query.on('end', () => {
          direct.close();
          writtenWhilePaused = (JSON.parse(text) as { written: number }).written;
          stream.on('data', onData);
          stream.resume();
        });
      }, spec.pauseMs);
    });
    stream.on('end', () => {
      session.close();
      resolve({ size, sha256: hash.digest('hex'), expectedSha256: sha256(patternBytes(spec.size)), writtenWhilePaused });
    });
  });
}

/** Sends the preface then `garbage` (hex); reports what came back and whether the connection was closed. */
function h2Garbage(): Promise<unknown> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: spec.host, port: spec.port });
    const received: Buffer[] = [];
    socket.on('connect', () => socket.write(Buffer.concat([spec.noPreface ? Buffer.alloc(0) : Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), Buffer.from(spec.garbage, 'hex')])));
    socket.on('data', (chunk: Buffer) => received.push(chunk));
    socket.on('error', () => {
      // the close reports it
    });
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ closed: false });
    }, 15_000);
    socket.on('close', () => {
      clearTimeout(timer);
      const all = Buffer.concat(received);
      // Frame types seen (9-byte headers walked from the start): 4 SETTINGS, 7 GOAWAY.
      const types: number[] = [];
      let goawayCode: number | undefined;
      for (let offset = 0; offset + 9 <= all.length; ) {
        const length = all.readUIntBE(offset, 3);
        const type = all[offset + 3]!;
        types.push(type);
        if (type === 7 && offset + 17 <= all.length) goawayCode = all.readUInt32BE(offset + 13);
        offset += 9 + length;
      }
      resolve({ closed: true, bytes: all.length, text: all.subarray(0, 40).toString('latin1'), frameTypes: types, goawayCode });
    });
  });
}

function http1Continue(): Promise<unknown> {
  return new Promise((resolve) => {
    const body = patternBytes(spec.size ?? 100_000);
    const events: string[] = [];
    const request = http.request({ host: spec.host, port: spec.port, method: 'POST', path: '/continue', headers: { expect: '100-continue', 'content-length': body.length, ...(spec.headers ?? {}) } });
    request.on('continue', () => {
      events.push('continue');
      request.end(body);
      events.push('body sent');
    });
    request.on('response', (response) => {
      events.push(`response ${response.statusCode}`);
      let text = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (text += chunk));
      response.on('end', () => {
        let parsed: unknown = text;
        try {
          parsed = JSON.parse(text);
        } catch {
          // kept as text
        }
        resolve({ status: response.statusCode, events, body: parsed, sentSha256: sha256(body) });
      });
    });
    request.on('error', (error) => resolve({ error: error.message, events }));
    request.flushHeaders();
  });
}

/** A chunked request body (no content-length) and the chunked answer. */
function http1Chunked(): Promise<unknown> {
  return new Promise((resolve) => {
    const pieces = Array.from({ length: spec.pieces ?? 20 }, (_, i) => patternBytes(1000 + i));
    const request = http.request({ host: spec.host, port: spec.port, method: 'POST', path: '/chunked' });
    request.on('response', (response) => {
      let text = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (text += chunk));
      response.on('end', () => resolve({ status: response.statusCode, transferEncoding: response.headers['transfer-encoding'], body: JSON.parse(text) as unknown, sentSha256: sha256(Buffer.concat(pieces)) }));
    });
    request.on('error', (error) => resolve({ error: error.message }));
    for (const piece of pieces) request.write(piece);
    request.end();
  });
}

function webSocket(): Promise<unknown> {
  return new Promise((resolve) => {
    const socket = new WebSocket(`ws://${target}${spec.path ?? '/chat'}`);
    const received: string[] = [];
    const messages: string[] = spec.messages;
    let next = 0;
    socket.on('message', (data: Buffer) => {
      received.push(data.toString());
      // The first message is the server's hello; each later one answers ours, then ours goes next.
      if (next < messages.length) socket.send(messages[next++]!);
      else socket.close(1000, 'done');
    });
    socket.on('close', (code) => resolve({ received, closeCode: code }));
    socket.on('error', (error) => resolve({ error: error.message, received }));
  });
}

/** `count` requests, one connection each; a failed one is retried (up to 60 times, 250 ms apart) until it answers. */
async function http1RetryLoop(): Promise<unknown> {
  const served: string[] = [];
  let retries = 0;
  let failed = 0;
  for (let i = 0; i < spec.count; i++) {
    let done = false;
    for (let attempt = 0; attempt < 60 && !done; attempt++) {
      const result = await new Promise<{ ok: boolean; name?: string }>((resolve) => {
        const request = http.get({ host: spec.host, port: spec.port, path: `/loop/${i}`, agent: false, timeout: 10_000 }, (response) => {
          let text = '';
          response.setEncoding('utf8');
          response.on('data', (chunk: string) => (text += chunk));
          response.on('end', () => {
            if (response.statusCode !== 200) return resolve({ ok: false });
            try {
              resolve({ ok: true, name: (JSON.parse(text) as { name: string }).name });
            } catch {
              resolve({ ok: false });
            }
          });
          response.on('error', () => resolve({ ok: false }));
        });
        request.on('timeout', () => request.destroy(new Error('timeout')));
        request.on('error', () => resolve({ ok: false }));
      });
      if (result.ok) {
        served.push(result.name!);
        done = true;
      } else {
        retries++;
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
    }
    if (!done) failed++;
    if (spec.pauseMs) await new Promise((resolve) => setTimeout(resolve, spec.pauseMs));
  }
  return { served: served.length, retries, failed };
}

/** `count` unary calls on one channel, one after another; a call that fails is retried (up to 60 times, 250 ms apart). */
async function grpcRetryLoop(): Promise<unknown> {
  const client = grpcClient();
  let served = 0;
  let retries = 0;
  let failed = 0;
  const codes: Record<string, number> = {};
  for (let i = 0; i < spec.count; i++) {
    let done = false;
    for (let attempt = 0; attempt < 60 && !done; attempt++) {
      const result = await unary(client, '/ambit.test.Echo/Unary', Buffer.from(`loop ${i}`));
      if (result.code === 0) {
        served++;
        done = true;
      } else {
        retries++;
        codes[result.code] = (codes[result.code] ?? 0) + 1;
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
    }
    if (!done) failed++;
    if (spec.pauseMs) await new Promise((resolve) => setTimeout(resolve, spec.pauseMs));
  }
  client.close();
  return { served, retries, failed, codes };
}

interface H2Answer {
  status?: number;
  headers?: Record<string, unknown>;
  body?: unknown;
  error?: string;
  code?: number;
}

/** One request on `session`: its answer, or the error (and reset code) that ended it. */
function h2Request(session: http2.ClientHttp2Session, request: { method?: string; path: string; headers?: Record<string, string>; body?: string }): Promise<H2Answer> {
  return new Promise((resolve) => {
    const stream = session.request({ ':method': request.method ?? 'GET', ':path': request.path, ...(request.headers ?? {}) }, { endStream: request.body === undefined });
    if (request.body !== undefined) stream.end(request.body);
    let headers: http2.IncomingHttpHeaders = {};
    let text = '';
    stream.setEncoding('utf8');
    stream.on('response', (received) => (headers = received));
    stream.on('data', (chunk: string) => (text += chunk));
    stream.on('error', (error) => resolve({ error: error.message, code: stream.rstCode }));
    stream.on('end', () => {
      let body: unknown = text;
      try {
        body = JSON.parse(text);
      } catch {
        // kept as text
      }
      resolve({ status: Number(headers[':status']), headers: { ...headers }, body });
    });
  });
}

async function h2Get(): Promise<unknown> {
  const session = http2.connect(`http://${target}`);
  session.on('error', () => {
    // each request reports its own
  });
  const results: H2Answer[] = [];
  for (const request of spec.requests as { path: string; headers?: Record<string, string>; method?: string; body?: string }[]) results.push(await h2Request(session, request));
  session.close();
  return results;
}

/** A download left open: `open` printed once its first bytes came; then nothing more is read until the kill. */
function h2Hold(): Promise<unknown> {
  return new Promise(() => {
    const session = http2.connect(`http://${target}`);
    const stream = session.request({ ':path': spec.path ?? `/big?size=${spec.size ?? 256 * 1024 * 1024}` });
    stream.once('data', () => {
      stream.pause();
      process.stdout.write(`${JSON.stringify({ open: true })}\n`);
    });
    stream.on('error', (error) => {
      process.stdout.write(`${JSON.stringify({ streamError: error.message, code: stream.rstCode })}\n`);
    });
    if (spec.read) {
      // A reader that keeps reading: it sees how the stream ends (a backend killed mid-response).
      stream.once('data', () => stream.resume());
      stream.on('data', () => {});
      stream.on('end', () => process.stdout.write(`${JSON.stringify({ ended: true })}\n`));
    }
  });
}

/** `count` requests of `path` at once on one session; with `reset`, each is reset (CANCEL) as soon as it is sent. */
async function h2Flood(): Promise<unknown> {
  const session = http2.connect(`http://${target}`);
  let goaway: number | undefined;
  session.on('goaway', (code) => (goaway = code));
  session.on('error', () => {
    // counted per stream
  });
  await new Promise<void>((resolve) => session.once('connect', () => resolve()));
  const answers: Promise<H2Answer>[] = [];
  for (let i = 0; i < spec.count; i++) {
    if (spec.reset) {
      try {
        const stream = session.request({ ':path': spec.path ?? '/' });
        stream.on('error', () => {});
        stream.close(http2.constants.NGHTTP2_CANCEL);
      } catch {
        break;
      }
      continue;
    }
    answers.push(h2Request(session, { path: spec.path ?? '/' }));
  }
  const settled = await Promise.all(answers);
  const statuses: Record<string, number> = {};
  for (const answer of settled) {
    const key = answer.status !== undefined && !Number.isNaN(answer.status) ? String(answer.status) : `error:${answer.code ?? answer.error}`;
    statuses[key] = (statuses[key] ?? 0) + 1;
  }
  if (spec.reset) await new Promise((resolve) => setTimeout(resolve, 500));
  session.destroy();
  return { statuses, goaway };
}

const scenarios: Record<string, () => Promise<unknown>> = {
  'h2-get': h2Get,
  'h2-hold': h2Hold,
  'h2-flood': h2Flood,
  'grpc-retry-loop': grpcRetryLoop,
  'grpc-unary': grpcUnary,
  'grpc-fail': grpcFail,
  'grpc-big': grpcBig,
  'grpc-bidi': grpcBidi,
  'h2-post': h2Post,
  'h2-big-get': h2BigGet,
  'h2-garbage': h2Garbage,
  'h2-slow-reader': h2SlowReader,
  'http1-continue': http1Continue,
  'http1-chunked': http1Chunked,
  ws: webSocket,
  'http1-retry-loop': http1RetryLoop,
};

const run = scenarios[spec.scenario];
if (!run) {
  process.stderr.write(`unknown scenario ${spec.scenario}\n`);
  process.exit(2);
}
// Exit once the result is written: process.exit drops what a non-blocking stdout still holds.
process.stdout.write(`${JSON.stringify(await run())}\n`, () => process.exit(0));
