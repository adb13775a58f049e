/**
 * gRPC unary load for the waypoint suite, open loop: calls with a B-byte message scheduled at R/s for S seconds,
 * spread round-robin over C HTTP/2 cleartext connections (h2c, prior knowledge, as gRPC clients speak to a plain
 * port), each timed from its scheduled start (no coordinated omission). A call counts as done when its response
 * ended with `:status` 200 and the trailer `grpc-status: 0`; anything else is a failure, counted by reason.
 *
 *   node bench/tools/grpc-load.ts --host H --port P --rate R --duration S --connections C --size B [--warmup N]
 *
 * Prints `{"result":{...latency summary µs, requestsPerSecond, failed, backends: {name: count}, errors}}`.
 * Must not know about: what sits between it and the target.
 */
import http2 from 'node:http2';
import { parseArgs } from 'node:util';
import { emitResult, exitWithParent } from './common.ts';
import { grpcFrame } from './grpc-wire.ts';
import { CallTally, runOpenLoop, warmUp } from './open-loop.ts';

const { values } = parseArgs({
  options: {
    host: { type: 'string' },
    port: { type: 'string' },
    rate: { type: 'string' },
    duration: { type: 'string', default: '5' },
    connections: { type: 'string', default: '4' },
    size: { type: 'string', default: '1024' },
    warmup: { type: 'string', default: '200' },
  },
});
const message = grpcFrame(Number(values.size));
const requestHeaders = { ':method': 'POST', ':path': '/bench.Bench/Unary', 'content-type': 'application/grpc', te: 'trailers', 'grpc-timeout': '10S' };
const authority = `http://${values.host!.includes(':') ? `[${values.host}]` : values.host}:${values.port}`;

function connect(): Promise<http2.ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(authority, { settings: { initialWindowSize: 1 << 20 } });
    session.once('connect', () => {
      session.off('error', reject);
      session.on('error', () => {});
      resolve(session);
    });
    session.once('error', reject);
  });
}

let sessions: http2.ClientHttp2Session[] = [];
let turn = 0;

function once(): Promise<string> {
  return new Promise((resolve, reject) => {
    const session = sessions[turn++ % sessions.length]!;
    if (session.destroyed || session.closed) {
      reject(new Error('connection closed'));
      return;
    }
    const stream = session.request(requestHeaders);
    let status: number | undefined;
    let backend = '';
    let grpcStatus: string | undefined;
    stream.setTimeout(10_000, () => stream.close(http2.constants.NGHTTP2_CANCEL));
    stream.once('response', (headers) => {
      status = Number(headers[':status']);
      backend = String(headers['x-backend'] ?? '');
      // A trailers-only answer (an error from a proxy) carries grpc-status in its headers.
      if (headers['grpc-status'] !== undefined) grpcStatus = String(headers['grpc-status']);
    });
    stream.once('trailers', (trailers) => {
      grpcStatus = String(trailers['grpc-status']);
    });
    stream.on('data', () => {});
    stream.on('error', () => {});
    stream.once('close', () => {
      if (status === 200 && grpcStatus === '0') resolve(backend);
      else reject(new Error(status === undefined ? `reset (code ${stream.rstCode})` : `status ${status} grpc-status ${grpcStatus ?? 'none'}`));
    });
    stream.end(message);
  });
}

async function main(): Promise<void> {
  sessions = await Promise.all(Array.from({ length: Number(values.connections) }, connect));
  const tally = new CallTally();
  await warmUp(once, Number(values.warmup));
  const result = await runOpenLoop(once, tally, Number(values.rate), Number(values.duration));
  for (const session of sessions) session.close();
  emitResult({ ...result, ...tally.summary() });
}

exitWithParent();
main().then(
  () => process.exit(0),
  (error: Error) => {
    process.stderr.write(`grpc-load: ${error.message}\n`);
    process.exit(1);
  },
);
