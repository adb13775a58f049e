/**
 * Open-loop new-connection load with a deadline: load.ts's `rate-connect` (a new connection scheduled at R/s,
 * each timed from its scheduled start to its first echoed byte, so queueing is not hidden), plus a grace period
 * after the last scheduled connection: whatever has not been answered by then is cut and counted as unanswered.
 * A path that cannot keep up (stunnel pays a TLS handshake and a thread per connection) would otherwise take
 * minutes to drain its backlog, and the open connections would distort the next measurement.
 *
 *   node bench/tools/mesh-connect.ts --host H --port P --rate R --duration S [--grace-ms G]
 *
 * The whole run is bounded: the scheduler stops at duration + grace (connections not yet sent count as
 * unanswered) and the wait for answers ends at duration + 2 x grace at the latest.
 *
 * Prints `{"result":{offeredRate, achievedRate, completed, failed, unanswered, count, p50, p90, p99, max, mean}}`;
 * latencies in microseconds over the answered connections; achievedRate = answered / (time from the first
 * scheduled connection to the last answer or the deadline).
 * Must not know about: what sits between it and the target (bench/tools/target.ts's echo protocol).
 */
import net from 'node:net';
import { parseArgs } from 'node:util';
import { summarizeLatencies } from '../lib/stats.ts';
import { emitResult, exitWithParent } from './common.ts';

const { values } = parseArgs({
  options: {
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string' },
    rate: { type: 'string', default: '1000' },
    duration: { type: 'string', default: '3' },
    'grace-ms': { type: 'string', default: '2000' },
  },
});
const port = Number(values.port);
if (!Number.isInteger(port) || port <= 0) throw new Error('--port is required');
const rate = Number(values.rate);
const seconds = Number(values.duration);
const graceMs = Number(values['grace-ms']);

const PROBE = Buffer.from('Ex');
const samples: number[] = [];
const open = new Set<net.Socket>();
let failed = 0;
let lastAnswerNs = 0n;
/** Connections the scheduler never got to send before the hard stop (the tool itself starved of CPU). */
let unsent = 0;

function attempt(scheduledNs: bigint): void {
  const socket = net.connect({ host: values.host, port, noDelay: true });
  open.add(socket);
  const settle = (): void => void open.delete(socket);
  socket.once('data', () => {
    lastAnswerNs = process.hrtime.bigint();
    samples.push(Number(lastAnswerNs - scheduledNs) / 1e3);
    settle();
    socket.removeAllListeners('error');
    socket.on('error', () => undefined);
    socket.end();
  });
  socket.once('error', () => {
    if (open.has(socket)) failed += 1;
    settle();
    socket.destroy();
  });
  socket.once('close', () => {
    if (open.has(socket)) failed += 1; // closed before any reply
    settle();
  });
  socket.write(PROBE);
}

/**
 * Same scheduler as load.ts: tick i fires at start + i/R; late ticks catch up at once. Hard stop at
 * duration + grace: ticks not fired by then are counted as unsent (so a starved run still ends on time).
 */
function schedule(start: bigint): Promise<void> {
  const total = Math.round(rate * seconds);
  const intervalNs = 1e9 / rate;
  const hardStopNs = (seconds * 1e3 + graceMs) * 1e6;
  let next = 0;
  return new Promise((resolve) => {
    const tick = (): void => {
      const elapsedNs = Number(process.hrtime.bigint() - start);
      if (elapsedNs > hardStopNs) {
        unsent = total - next;
        resolve();
        return;
      }
      while (next < total && next * intervalNs <= elapsedNs) {
        attempt(start + BigInt(Math.round(next * intervalNs)));
        next += 1;
      }
      if (next >= total) resolve();
      else setTimeout(tick, Math.max(0, Math.floor((next * intervalNs - elapsedNs) / 1e6)));
    };
    tick();
  });
}

async function main(): Promise<void> {
  const startMs = Date.now();
  const start = process.hrtime.bigint();
  await schedule(start);
  const deadline = Math.min(Date.now() + graceMs, startMs + seconds * 1e3 + 2 * graceMs);
  while (open.size > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5));
  const unanswered = open.size + unsent;
  for (const socket of open) socket.destroy();
  open.clear();
  const endNs = unanswered > 0 ? process.hrtime.bigint() : lastAnswerNs;
  const elapsed = Number(endNs - start) / 1e9;
  emitResult({
    offeredRate: rate,
    achievedRate: elapsed > 0 ? samples.length / elapsed : 0,
    completed: samples.length,
    failed,
    unanswered,
    ...summarizeLatencies(samples.length > 0 ? samples : [Number.NaN]),
  });
}

exitWithParent();
main().then(
  () => process.exit(0),
  (error: unknown) => {
    process.stderr.write(`mesh-connect: ${(error as Error).stack ?? String(error)}\n`);
    process.exit(1);
  },
);
