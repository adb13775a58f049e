/**
 * The load driver: the client end of every benchmarked path, one measurement per invocation.
 *
 *   load.ts throughput --port P --bytes N --streams K   K connections at once, each sinking N/K bytes
 *   load.ts rtt        --port P --count N --size B [--connections C]
 *                                    N sequential B-byte echoes on one connection; with C > 1, N rounds on C
 *                                    connections in lockstep: a round writes one request on each (back to back,
 *                                    in one tick: a relay reads them in one wake-up, the mesh's pairs) and the next
 *                                    round starts when every answer is back
 *   load.ts connect    --port P --count N                N sequential new connections, each to its first echoed byte
 *   load.ts rate-rtt     --port P --rate R --duration S --connections C --size B
 *                                    open loop: B-byte echoes scheduled at R/s, spread over C persistent connections
 *   load.ts rate-connect --port P --rate R --duration S  open loop: a new connection scheduled at R/s
 *
 * Open-loop modes time each operation from its scheduled start, not from when it was actually sent, so a path
 * that falls behind shows its queueing in the percentiles (no coordinated omission); they also report the rate
 * achieved and how many operations failed.
 *
 * Connects to 127.0.0.1:P, which is the target itself (direct TCP) or the entry of a relay pair, and speaks
 * bench/tools/target.ts's protocol. Prints `{"result":...}`; latencies in microseconds.
 * Must not know about: what sits between it and the target.
 */
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { summarizeLatencies } from '../lib/stats.ts';
import { emitResult, exitWithParent } from './common.ts';

/** Write size for bulk data: large enough that per-write overhead is negligible, small enough to stay in cache. */
const WRITE_CHUNK_BYTES = 256 * 1024;

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string' },
    bytes: { type: 'string', default: String(1024 ** 3) },
    streams: { type: 'string', default: '1' },
    count: { type: 'string', default: '10000' },
    size: { type: 'string', default: '1024' },
    warmup: { type: 'string', default: '200' },
    rate: { type: 'string', default: '1000' },
    duration: { type: 'string', default: '10' },
    connections: { type: 'string', default: '1' },
  },
});
const host = values.host;
const port = Number(values.port);
if (!Number.isInteger(port) || port <= 0) throw new Error('--port is required');

function connect(): net.Socket {
  return net.connect({ host, port, noDelay: true });
}

function firstData(socket: net.Socket): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const onError = (error: Error): void => reject(error);
    const onClose = (): void => reject(new Error('connection closed before any reply (is the path up?)'));
    socket.once('error', onError);
    socket.once('close', onClose);
    socket.once('data', (data: Buffer) => {
      socket.off('error', onError);
      socket.off('close', onClose);
      resolve(data);
    });
  });
}

function closed(socket: net.Socket): Promise<void> {
  return new Promise((resolve) => {
    if (socket.closed) resolve();
    else socket.once('close', () => resolve());
  });
}

function writeAll(socket: net.Socket, total: number, chunk: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    let remaining = total;
    socket.once('error', reject);
    const pump = (): void => {
      while (remaining > 0) {
        const length = Math.min(remaining, chunk.length);
        remaining -= length;
        if (!socket.write(length === chunk.length ? chunk : chunk.subarray(0, length))) {
          socket.once('drain', pump);
          return;
        }
      }
      socket.off('error', reject);
      resolve();
    };
    pump();
  });
}

/** One stream: header, `bytes` of data, wait for the target's acknowledgement that all of it arrived. */
async function sinkStream(bytes: number, chunk: Buffer): Promise<void> {
  const socket = connect();
  const acknowledged = firstData(socket);
  const header = Buffer.alloc(9);
  header[0] = 0x53; // 'S'
  header.writeBigUInt64BE(BigInt(bytes), 1);
  socket.write(header);
  await writeAll(socket, bytes, chunk);
  await acknowledged;
  socket.end();
  await closed(socket);
}

async function throughput(): Promise<void> {
  const totalBytes = Number(values.bytes);
  const streams = Number(values.streams);
  const perStream = Math.floor(totalBytes / streams);
  const chunk = randomBytes(WRITE_CHUNK_BYTES);
  const started = process.hrtime.bigint();
  await Promise.all(Array.from({ length: streams }, () => sinkStream(perStream, chunk)));
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const bytes = perStream * streams;
  emitResult({ bytes, streams, seconds, megabytesPerSecond: bytes / 1e6 / seconds });
}

async function roundTrips(): Promise<void> {
  const count = Number(values.count);
  const warmup = Number(values.warmup);
  const size = Number(values.size);
  const lanes = Number(values.connections);
  const payload = randomBytes(size);
  const sockets = Array.from({ length: lanes }, () => connect());
  for (const socket of sockets) socket.write(Buffer.from('E'));
  const samples = new Float64Array(count * lanes);
  await new Promise<void>((resolve, reject) => {
    let iteration = -warmup;
    let sentAt = 0n;
    let answered = 0;
    const received = new Array<number>(lanes).fill(0);
    const send = (): void => {
      answered = 0;
      received.fill(0);
      sentAt = process.hrtime.bigint();
      for (const socket of sockets) socket.write(payload);
    };
    sockets.forEach((socket, lane) => {
      socket.once('error', reject);
      socket.once('close', () => reject(new Error(`connection closed after ${iteration + warmup} round trips`)));
      socket.on('data', (data: Buffer) => {
        const before = received[lane]!;
        received[lane] = before + data.length;
        if (before >= size || received[lane]! < size) return;
        if (iteration >= 0) samples[iteration * lanes + answered] = Number(process.hrtime.bigint() - sentAt) / 1e3;
        if (++answered < lanes) return;
        iteration += 1;
        if (iteration === count) {
          for (const each of sockets) each.removeAllListeners('close');
          resolve();
        } else send();
      });
    });
    send();
  });
  for (const socket of sockets) socket.end();
  await Promise.all(sockets.map((socket) => closed(socket)));
  emitResult({ size, ...summarizeLatencies(samples) });
}

async function connects(): Promise<void> {
  const count = Number(values.count);
  const warmup = Number(values.warmup);
  const samples = new Float64Array(count);
  const probe = Buffer.from('Ex');
  const started = process.hrtime.bigint();
  for (let i = -warmup; i < count; i++) {
    const t0 = process.hrtime.bigint();
    const socket = connect();
    const reply = firstData(socket);
    socket.write(probe);
    await reply;
    if (i >= 0) samples[i] = Number(process.hrtime.bigint() - t0) / 1e3;
    socket.end();
    await closed(socket);
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  emitResult({ ...summarizeLatencies(samples), connectionsPerSecond: (count + warmup) / seconds });
}

/** Calls `fire(i, scheduledNs)` for i = 0.. at `rate` per second for `seconds`; late ticks catch up at once. */
function schedule(rate: number, seconds: number, fire: (index: number, scheduledNs: bigint) => void): Promise<void> {
  const total = Math.round(rate * seconds);
  const intervalNs = 1e9 / rate;
  const start = process.hrtime.bigint();
  let next = 0;
  return new Promise((resolve) => {
    const tick = (): void => {
      const elapsedNs = Number(process.hrtime.bigint() - start);
      while (next < total && next * intervalNs <= elapsedNs) {
        fire(next, start + BigInt(Math.round(next * intervalNs)));
        next += 1;
      }
      if (next >= total) resolve();
      else setTimeout(tick, Math.max(0, Math.floor((next * intervalNs - elapsedNs) / 1e6)));
    };
    tick();
  });
}

/** A persistent echo connection that serves queued fixed-size requests in order. */
class EchoLane {
  readonly socket = connect();
  readonly #pending: bigint[] = [];
  readonly #samples: number[];
  readonly #payload: Buffer;
  #received = 0;
  #onIdle: (() => void) | undefined;

  constructor(payload: Buffer, samples: number[]) {
    this.#payload = payload;
    this.#samples = samples;
    this.socket.write(Buffer.from('E'));
    this.socket.on('data', (data: Buffer) => {
      this.#received += data.length;
      while (this.#received >= this.#payload.length && this.#pending.length > 0) {
        this.#received -= this.#payload.length;
        const scheduled = this.#pending.shift()!;
        this.#samples.push(Number(process.hrtime.bigint() - scheduled) / 1e3);
      }
      if (this.#pending.length === 0) this.#onIdle?.();
    });
  }

  send(scheduledNs: bigint): void {
    this.#pending.push(scheduledNs);
    this.socket.write(this.#payload);
  }

  idle(): Promise<void> {
    return this.#pending.length === 0 ? Promise.resolve() : new Promise((resolve) => (this.#onIdle = resolve));
  }
}

async function rateRoundTrips(): Promise<void> {
  const rate = Number(values.rate);
  const seconds = Number(values.duration);
  const payload = randomBytes(Number(values.size));
  const samples: number[] = [];
  const lanes = Array.from({ length: Number(values.connections) }, () => new EchoLane(payload, samples));
  const errors: string[] = [];
  for (const lane of lanes) lane.socket.on('error', (error) => errors.push(error.message));
  const started = process.hrtime.bigint();
  await schedule(rate, seconds, (index, scheduledNs) => lanes[index % lanes.length]!.send(scheduledNs));
  await Promise.race([Promise.all(lanes.map((lane) => lane.idle())), new Promise((resolve) => setTimeout(resolve, 10_000))]);
  const elapsed = Number(process.hrtime.bigint() - started) / 1e9;
  for (const lane of lanes) lane.socket.destroy();
  emitResult({ offeredRate: rate, achievedRate: samples.length / elapsed, completed: samples.length, errors: errors.length, ...summarizeLatencies(samples) });
}

async function rateConnects(): Promise<void> {
  const rate = Number(values.rate);
  const seconds = Number(values.duration);
  const samples: number[] = [];
  let errors = 0;
  const inFlight = new Set<Promise<void>>();
  const probe = Buffer.from('Ex');
  const started = process.hrtime.bigint();
  await schedule(rate, seconds, (_index, scheduledNs) => {
    const socket = connect();
    const attempt = firstData(socket).then(
      () => {
        samples.push(Number(process.hrtime.bigint() - scheduledNs) / 1e3);
        socket.end();
      },
      () => {
        errors += 1;
        socket.destroy();
      },
    );
    socket.write(probe);
    inFlight.add(attempt);
    void attempt.then(() => inFlight.delete(attempt));
  });
  await Promise.all(inFlight);
  const elapsed = Number(process.hrtime.bigint() - started) / 1e9;
  emitResult({ offeredRate: rate, achievedRate: samples.length / elapsed, completed: samples.length, errors, ...summarizeLatencies(samples.length > 0 ? samples : [Number.NaN]) });
}

exitWithParent();
const MODES: Record<string, () => Promise<void>> = {
  throughput,
  rtt: roundTrips,
  connect: connects,
  'rate-rtt': rateRoundTrips,
  'rate-connect': rateConnects,
};
const mode = positionals[0] ?? '';
const run = MODES[mode];
if (!run) throw new Error(`unknown mode ${JSON.stringify(mode)}: ${Object.keys(MODES).join(' | ')}`);
run().then(
  () => process.exit(0),
  (error: unknown) => {
    process.stderr.write(`load ${mode}: ${(error as Error).stack ?? String(error)}\n`);
    process.exit(1);
  },
);
