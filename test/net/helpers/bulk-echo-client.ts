/**
 * Test client run inside a pod: `streams` connections to one echo server at once, each sending `bytes` random
 * bytes (its own per connection) while reading the echo back in bursts (a pause of 20 ms every 2 MiB, so the path
 * backs up in both directions), then one JSON line: per connection, whether the echo was exactly what it sent.
 *
 *   node test/net/helpers/bulk-echo-client.ts '{"host":"10.0.1.2","port":8080,"streams":4,"bytes":33554432,"timeoutMs":120000}'
 *
 * A connection still unfinished at `timeoutMs` is reported `stalled` with the bytes it got back.
 * Owns: nothing beyond this. Must not know about: the mesh.
 */
import { createHash, randomFillSync } from 'node:crypto';
import { once } from 'node:events';
import net from 'node:net';

interface Spec {
  host: string;
  port: number;
  streams: number;
  bytes: number;
  timeoutMs: number;
}

const WRITE_BYTES = 64 * 1024;
const READ_PAUSE_EVERY = 2 * 1024 * 1024;
const spec = JSON.parse(process.argv[2] ?? '{}') as Spec;

interface Outcome {
  intact: boolean;
  received: number;
  stalled: boolean;
  error?: string;
}

async function runStream(seed: number, deadline: Promise<void>): Promise<Outcome> {
  const socket = net.connect({ host: spec.host, port: spec.port, noDelay: true });
  const sentHash = createHash('sha256');
  const echoedHash = createHash('sha256');
  let received = 0;
  let sinceBreak = 0;
  let error: string | undefined;
  socket.on('error', (cause: Error) => (error ??= cause.message));
  socket.on('data', (chunk: Buffer) => {
    echoedHash.update(chunk);
    received += chunk.length;
    sinceBreak += chunk.length;
    if (sinceBreak >= READ_PAUSE_EVERY) {
      sinceBreak = 0;
      socket.pause();
      setTimeout(() => socket.resume(), 20);
    }
  });
  // Not events.once: it rejects on 'error', and a reset tunnel must be reported as such, not crash the client.
  const closed = new Promise<'closed'>((resolve) => socket.once('close', () => resolve('closed')));
  const timedOut = deadline.then(() => 'timeout' as const);
  const sending = (async () => {
    await once(socket, 'connect');
    const buffer = Buffer.alloc(WRITE_BYTES);
    for (let sent = 0; sent < spec.bytes; sent += WRITE_BYTES) {
      randomFillSync(buffer);
      buffer[0] = seed;
      sentHash.update(buffer);
      if (!socket.write(Buffer.from(buffer))) {
        const drained = await Promise.race([once(socket, 'drain').then(() => 'drain' as const), closed, timedOut]);
        if (drained !== 'drain') return;
      }
    }
    socket.end();
  })().catch(() => undefined);
  const how = await Promise.race([closed, timedOut]);
  await Promise.race([sending, timedOut]);
  socket.destroy();
  const outcome: Outcome = { intact: how === 'closed' && received === spec.bytes && echoedHash.digest('hex') === sentHash.digest('hex'), received, stalled: how === 'timeout' };
  if (error !== undefined) outcome.error = error;
  return outcome;
}

let timer: NodeJS.Timeout | undefined;
const deadline = new Promise<void>((resolve) => (timer = setTimeout(resolve, spec.timeoutMs)));
const outcomes = await Promise.all(Array.from({ length: spec.streams }, (_, index) => runStream(index, deadline)));
clearTimeout(timer);
process.stdout.write(`${JSON.stringify({ outcomes })}\n`);
