/**
 * Test client run inside a pod: opens many TCP connections to one address and goes away from them the ways an
 * impatient or crashing client does, then prints one JSON line of what it saw.
 *
 *   node test/net/helpers/storm-client.ts '{"mode":"half-close","host":"10.0.1.2","port":8080,"count":20}'
 *
 * Modes:
 *   half-close  each connection ends its side at once, before sending a byte (shutdown(SHUT_WR)), and waits for
 *               the server's end (an echo server ends when its client does): counts `ended`, `timedOut`, `failed`.
 *   storm       `count` connections at `rate`/s; each writes `probe` bytes and is then dropped after a spread of
 *               delays, some with nothing sent (FIN alone), some after a byte (FIN or RST): the clients of a
 *               storm that gave up. Every socket is closed on the client's side, whatever the server does. Counts `answered` (any byte back before it was dropped) and `dropped`.
 * Owns: nothing beyond this. Must not know about: the mesh.
 */
import net from 'node:net';

interface Spec {
  mode: 'half-close' | 'storm';
  host: string;
  port: number;
  count: number;
  rate?: number;
  timeoutMs?: number;
}

const spec = JSON.parse(process.argv[2] ?? '{}') as Spec;

function halfClose(): Promise<'ended' | 'timedOut' | 'failed'> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: spec.host, port: spec.port, allowHalfOpen: true });
    const timer = setTimeout(() => {
      socket.destroy();
      resolve('timedOut');
    }, spec.timeoutMs ?? 10_000);
    socket.end();
    socket.resume();
    socket.once('end', () => {
      clearTimeout(timer);
      socket.destroy();
      resolve('ended');
    });
    socket.once('error', () => {
      clearTimeout(timer);
      resolve('failed');
    });
  });
}

/** How connection `index` of a storm goes away: cycles through the ways so every kind is in every storm. */
function stormOne(index: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: spec.host, port: spec.port, noDelay: true });
    let answered = false;
    socket.on('data', () => (answered = true));
    socket.on('error', () => undefined);
    socket.once('close', () => resolve(answered));
    switch (index % 4) {
      case 0: // connected, then gone without a byte: the agent sees a FIN and nothing else
        socket.once('connect', () => socket.destroy());
        break;
      case 1: // a byte, then gone: FIN right behind it
        socket.once('connect', () => {
          socket.write('E');
          socket.destroy();
        });
        break;
      case 2: // a byte, then cut a moment later (RST if the echo had arrived, FIN otherwise)
        socket.write('E');
        setTimeout(() => socket.destroy(), index % 50);
        break;
      default: // a byte, then reset
        socket.write('E');
        setTimeout(() => socket.resetAndDestroy(), index % 30);
    }
  });
}

async function storm(): Promise<{ answered: number; dropped: number }> {
  const rate = spec.rate ?? 1000;
  const done: Promise<boolean>[] = [];
  const start = performance.now();
  for (let index = 0; index < spec.count; index++) {
    const due = start + (index * 1000) / rate;
    const wait = due - performance.now();
    if (wait > 1) await new Promise((resolve) => setTimeout(resolve, wait));
    done.push(stormOne(index));
  }
  const answered = (await Promise.all(done)).filter(Boolean).length;
  return { answered, dropped: spec.count - answered };
}

if (spec.mode === 'half-close') {
  const results = await Promise.all(Array.from({ length: spec.count }, halfClose));
  const count = (what: string): number => results.filter((result) => result === what).length;
  process.stdout.write(JSON.stringify({ ended: count('ended'), timedOut: count('timedOut'), failed: count('failed') }) + '\n');
} else {
  process.stdout.write(JSON.stringify(await storm()) + '\n');
}
