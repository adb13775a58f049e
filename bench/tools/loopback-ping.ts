/**
 * The machine's own round trip, as a reference for the waypoint's rate climb: a 1 KiB message sent over loopback TCP
 * to an echo in a second process and read back, R times a second for S seconds, each round trip timed. No mesh, no
 * TLS, no HTTP: what one wake-up of each of two processes costs on this machine at that rate. A round trip that
 * costs more at a low rate than at a high one (processes that sleep between messages wake slower) shows here as it
 * does, hop after hop, on every path of the climb.
 *
 *   node bench/tools/loopback-ping.ts --rate R --duration S
 *
 * Prints `{"result":{...latency summary µs, requestsPerSecond}}`.
 * Must not know about: the mesh.
 */
import { fork } from 'node:child_process';
import net from 'node:net';
import { parseArgs } from 'node:util';
import { summarizeLatencies } from '../lib/stats.ts';
import { emitResult, exitWithParent } from './common.ts';

const MESSAGE_BYTES = 1024;

function echo(): void {
  const server = net.createServer({ noDelay: true }, (socket) => {
    socket.on('data', (chunk) => socket.write(chunk));
    socket.on('error', () => undefined);
  });
  server.listen(0, '127.0.0.1', () => process.send!((server.address() as net.AddressInfo).port));
  process.on('disconnect', () => process.exit(0));
}

async function ping(rate: number, seconds: number): Promise<void> {
  const child = fork(new URL(import.meta.url).pathname, ['--echo'], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
  const port = await new Promise<number>((resolve) => child.once('message', (message) => resolve(Number(message))));
  const socket = net.connect({ host: '127.0.0.1', port, noDelay: true });
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  const message = Buffer.alloc(MESSAGE_BYTES, 'p');
  const total = Math.max(1, Math.round(rate * seconds));
  const latencies = new Float64Array(total);
  const started = performance.now();
  for (let index = 0; index < total; index++) {
    const due = started + (index / rate) * 1000;
    const wait = due - performance.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    const sent = performance.now();
    let received = 0;
    await new Promise<void>((resolve) => {
      const onData = (chunk: Buffer): void => {
        received += chunk.length;
        if (received < MESSAGE_BYTES) return;
        socket.off('data', onData);
        resolve();
      };
      socket.on('data', onData);
      socket.write(message);
    });
    latencies[index] = (performance.now() - sent) * 1000;
  }
  const elapsed = (performance.now() - started) / 1000;
  socket.destroy();
  child.kill();
  // The load tools' result shape: nothing fails here but the run itself.
  emitResult({ ...summarizeLatencies(latencies), requestsPerSecond: total / elapsed, failed: 0, backends: {}, errors: {} });
}

const { values } = parseArgs({ options: { rate: { type: 'string', default: '100' }, duration: { type: 'string', default: '3' }, echo: { type: 'boolean', default: false } } });
if (values.echo) {
  echo();
} else {
  exitWithParent();
  ping(Number(values.rate), Number(values.duration)).then(
    () => process.exit(0),
    (error: Error) => {
      process.stderr.write(`loopback-ping: ${error.message}\n`);
      process.exit(1);
    },
  );
}
