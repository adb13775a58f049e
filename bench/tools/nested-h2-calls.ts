/**
 * A micro-benchmark of HTTP/2 nested in an HTTP/2 stream (the waypoint's h2c sessions inside HBONE CONNECT streams),
 * in one process over loopback TCP (no TLS: the same on both sides of an A/B): an outer client/server H2Connection
 * pair, one CONNECT stream, and an inner client/server pair on that stream, run either through H2DuplexStream
 * (`duplex`) or straight on the stream (`direct`, stream-transport.ts). The inner client makes gRPC-shaped unary
 * calls (HEADERS, a 1 KiB message, END_STREAM; answered with HEADERS, 1 KiB, trailers), `--inflight` at a time.
 The inner server answers as the waypoint's proxy does: the head from a promise job, the body and trailers
 * from a later tick. Prints {"result": {mode, calls, cpuUsPerCall, gcs, gcMsTotal, outerWritesPerCall}}
 * (outerWritesPerCall: the outer server's socket writes per call, each a TLS write on a real leg). Load-independent
 * use: the write count, and under `valgrind --tool=callgrind` instructions per call from two call counts' difference.
 *
 * node bench/tools/nested-h2-calls.ts direct|duplex [calls=20000] [inflight=4]
 */
import net from 'node:net';
import { PerformanceObserver } from 'node:perf_hooks';
import { H2Connection } from '../../shared/hbone/h2/connection.ts';
import { H2DuplexStream } from '../../shared/hbone/h2/duplex.ts';
import type { H2Stream, H2StreamHandler } from '../../shared/hbone/h2/stream.ts';
import { H2StreamTransport } from '../../shared/hbone/h2/stream-transport.ts';

const mode = process.argv[2] === 'duplex' ? 'duplex' : 'direct';
const calls = Number(process.argv[3] ?? 20000);
const inflight = Number(process.argv[4] ?? 4);
const message = Buffer.alloc(1029, 7);
const answer = Buffer.alloc(1029, 9);
const REQUEST = [':method', 'POST', ':scheme', 'http', ':path', '/bench.Echo/Unary', ':authority', 'echo:50051', 'content-type', 'application/grpc', 'te', 'trailers', 'grpc-timeout', '5S'];

let gcs = 0;
let gcMs = 0;
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) {
    gcs++;
    gcMs += entry.duration;
  }
}).observe({ entryTypes: ['gc'] });

function nested(stream: H2Stream): H2Connection['socket'] {
  if (mode === 'direct') return new H2StreamTransport(stream);
  return new H2DuplexStream(stream);
}

const ignore = (): void => {};
const serverHandler: H2StreamHandler = {
  onData: ignore,
  onEnd(stream: H2Stream) {
    void Promise.resolve().then(() => {
      stream.respond(200, ['content-type', 'application/grpc']);
      process.nextTick(() => {
        stream.write(answer);
        stream.endWithTrailers(['grpc-status', '0']);
      });
    });
  },
  onDrain: ignore,
  onClose: ignore,
};

let outerWrites = 0;
const listener = net.createServer({ noDelay: true }, (socket) => {
  const write = socket.write.bind(socket) as (chunk: Buffer) => boolean;
  socket.write = ((chunk: Buffer) => {
    outerWrites++;
    return write(chunk);
  }) as typeof socket.write;
  const outer = new H2Connection(socket, { role: 'server' });
  outer.on('stream', (connect: H2Stream) => {
    connect.respond(200);
    const inner = new H2Connection(nested(connect), { role: 'server' });
    inner.on('stream', (stream: H2Stream) => stream.setHandler(serverHandler));
  });
});
await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
const socket = net.connect({ port: (listener.address() as net.AddressInfo).port, host: '127.0.0.1', noDelay: true });
await new Promise((resolve) => socket.once('connect', resolve));
const outer = new H2Connection(socket, { role: 'client' });
const connect = await new Promise<H2Stream>((resolve) => {
  const stream = outer.request([':method', 'CONNECT', ':authority', '10.0.0.1:50051'], {
    onData: ignore, onEnd: ignore, onDrain: ignore, onClose: ignore,
    onResponse(opened: H2Stream) {
      opened.releaseHandler();
      resolve(opened);
    },
  });
  void stream;
});
const inner = new H2Connection(nested(connect), { role: 'client' });

let started = 0;
let finished = 0;
let cpuAtStart: NodeJS.CpuUsage | undefined;
let done: () => void;
const allDone = new Promise<void>((resolve) => (done = resolve));
const warmup = Math.min(2000, Math.floor(calls / 5));
const clientHandler: H2StreamHandler = {
  onData: ignore,
  onEnd: ignore,
  onDrain: ignore,
  onClose(stream: H2Stream) {
    if (stream.rstCode !== undefined) throw new Error(`call reset ${stream.rstCode}`);
    finished++;
    if (finished === warmup) {
      cpuAtStart = process.cpuUsage();
      outerWrites = 0;
      gcs = 0;
      gcMs = 0;
    }
    if (finished === calls + warmup) done();
    else if (started < calls + warmup) call();
  },
};
function call(): void {
  started++;
  const stream = inner.request(REQUEST, clientHandler);
  stream.end(message);
}
for (let index = 0; index < inflight; index++) call();
await allDone;
const cpu = process.cpuUsage(cpuAtStart);
await new Promise((resolve) => setTimeout(resolve, 50));
console.log(JSON.stringify({ result: { mode, calls, cpuUsPerCall: (cpu.user + cpu.system) / calls, gcs, gcMsTotal: Math.round(gcMs), outerWritesPerCall: outerWrites / calls } }));
socket.destroy();
listener.close();
process.exit(0);
