/**
 * Micro-benchmark: what one nested h2c session costs the waypoint, node:http2 versus ambit's own HTTP/2 layer. An
 * outer node:http2 session carries one CONNECT stream (as an HBONE leg does); inside it an h2c session answers gRPC-
 * style unary calls (1 KiB message echoed with a header and trailers). The serving side (outer server plus inner
 * session) runs in a worker thread whose CPU (`process.threadCpuUsage`) is read around the measured calls; the
 * client side stays node:http2 in the main thread. `node`: the inner server is node:http2 fed through
 * `Http2StreamDuplex`, as the waypoint's downstream is; `own`: an `H2Connection` run straight on the CONNECT
 * stream, as waypoint/h2-own-upstream.ts runs its connections to endpoints. Modes alternate round by round.
 *
 *   node bench/h2-nested-codec.ts [--calls 5000] [--in-flight 8] [--rounds 2]
 *
 * Owns: this measurement. Must not know about: the waypoint's routing or pools.
 */
import { once } from 'node:events';
import http2 from 'node:http2';
import type net from 'node:net';
import { loadavg } from 'node:os';
import type { Duplex } from 'node:stream';
import { parseArgs } from 'node:util';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { H2Connection } from '../shared/hbone/h2/connection.ts';
import type { H2Stream } from '../shared/hbone/h2/stream.ts';
import { Http2StreamDuplex } from '../waypoint/stream-adapter.ts';

const MESSAGE_BYTES = 1029;
type Mode = 'node' | 'own';

/** The serving side: an outer h2c server whose CONNECT streams each carry one inner h2c session in `mode`. */
async function serve(mode: Mode): Promise<void> {
  const inner = http2.createServer();
  inner.on('stream', (stream) => {
    const chunks: Buffer[] = [];
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.on('end', () => {
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      stream.once('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
      stream.end(Buffer.concat(chunks));
    });
  });
  const outer = http2.createServer();
  outer.on('stream', (tunnel) => {
    tunnel.respond({ ':status': 200 });
    if (mode === 'node') {
      inner.emit('connection', new Http2StreamDuplex(tunnel));
      return;
    }
    const connection = new H2Connection(tunnel as Duplex, { role: 'server' });
    connection.on('stream', (stream: H2Stream) => {
      const chunks: Buffer[] = [];
      stream.setHandler({
        onData: (_stream, chunk) => chunks.push(chunk),
        onEnd: (ended) => {
          ended.respond(200, ['content-type', 'application/grpc']);
          ended.write(Buffer.concat(chunks));
          ended.endWithTrailers(['grpc-status', '0']);
        },
        onDrain: () => {},
        onClose: () => {},
      });
    });
  });
  outer.listen(0, '127.0.0.1');
  await once(outer, 'listening');
  parentPort!.on('message', (message) => {
    if (message === 'cpu') parentPort!.postMessage({ cpu: process.threadCpuUsage() });
  });
  parentPort!.postMessage({ port: (outer.address() as net.AddressInfo).port });
}

/** One round in `mode`: server-thread CPU per 1,000 calls. */
async function round(mode: Mode, calls: number, inFlight: number): Promise<number> {
  const worker = new Worker(new URL(import.meta.url), { workerData: { mode } });
  const next = <T>(message?: string): Promise<T> =>
    new Promise((resolve) => {
      worker.once('message', resolve);
      if (message) worker.postMessage(message);
    });
  const { port } = await next<{ port: number }>();
  const outer = http2.connect(`http://127.0.0.1:${port}`);
  const tunnel = outer.request({ ':method': 'CONNECT', ':authority': '10.0.0.1:50051' });
  await once(tunnel, 'response');
  const session = http2.connect('http://10.0.0.1:50051', { createConnection: () => new Http2StreamDuplex(tunnel) as never });
  const message = Buffer.alloc(MESSAGE_BYTES, 7);
  const call = (): Promise<void> =>
    new Promise((resolve, reject) => {
      const stream = session.request({ ':method': 'POST', ':path': '/bench.Bench/Unary', 'content-type': 'application/grpc', te: 'trailers' });
      let bytes = 0;
      let status: string | undefined;
      stream.on('data', (chunk: Buffer) => (bytes += chunk.length));
      stream.on('trailers', (trailers: http2.IncomingHttpHeaders) => (status = String(trailers['grpc-status'])));
      stream.on('close', () => (bytes === MESSAGE_BYTES && status === '0' ? resolve() : reject(new Error(`call failed: ${bytes} bytes, grpc-status ${status}`))));
      stream.end(message);
    });
  const run = async (count: number): Promise<void> => {
    let left = count;
    await Promise.all(
      Array.from({ length: inFlight }, async () => {
        while (left-- > 0) await call();
      }),
    );
  };
  await run(1000);
  const before = (await next<{ cpu: NodeJS.CpuUsage }>('cpu')).cpu;
  await run(calls);
  const after = (await next<{ cpu: NodeJS.CpuUsage }>('cpu')).cpu;
  session.destroy();
  outer.destroy();
  await worker.terminate();
  return (after.user + after.system - before.user - before.system) / calls;
}

if (!isMainThread) {
  await serve(workerData.mode as Mode);
} else {
  const { values } = parseArgs({ options: { calls: { type: 'string', default: '5000' }, 'in-flight': { type: 'string', default: '8' }, rounds: { type: 'string', default: '2' } } });
  for (let index = 0; index < Number(values.rounds); index++) {
    for (const mode of ['node', 'own'] as const) {
      const micros = await round(mode, Number(values.calls), Number(values['in-flight']));
      process.stdout.write(`${mode}: serving thread ${micros.toFixed(0)} ms per 1,000 unary calls (load average ${loadavg()[0]!.toFixed(1)})\n`);
    }
  }
}
