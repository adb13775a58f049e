/**
 * agent/proxy/tunnel-admission.ts: at most N tunnels opened at once, the rest started in arrival order as slots
 * free up, and a client that left while it waited never gets a tunnel (and is reported abandoned).
 */
import test from 'ava';
import net from 'node:net';
import { TunnelAdmission } from '../../agent/proxy/tunnel-admission.ts';

/** Real (unconnected) sockets: `destroyed` is what the admission reads. */
function sockets(count: number): net.Socket[] {
  return Array.from({ length: count }, () => new net.Socket());
}

test('no more than the bound open at once; the others start in arrival order as tunnels finish', (t) => {
  const admission = new TunnelAdmission(2);
  const started: number[] = [];
  const all = sockets(5);
  all.forEach((socket, index) => admission.admit(socket, () => started.push(index), () => t.fail(`socket ${index} abandoned`)));
  t.deepEqual(started, [0, 1]);
  t.like(admission.stats, { opening: 2, queued: 3 });
  admission.done();
  t.deepEqual(started, [0, 1, 2]);
  admission.done();
  admission.done();
  t.deepEqual(started, [0, 1, 2, 3, 4]);
  t.like(admission.stats, { opening: 2, queued: 0, everQueued: 3 });
  admission.done();
  admission.done();
  t.like(admission.stats, { opening: 0, queued: 0 });
  for (const socket of all) socket.destroy();
});

test('a client gone while it waited gets no tunnel; its turn goes to the next one', (t) => {
  const admission = new TunnelAdmission(1);
  const started: number[] = [];
  const abandoned: number[] = [];
  const all = sockets(3);
  all.forEach((socket, index) => admission.admit(socket, () => started.push(index), () => abandoned.push(index)));
  all[1]!.destroy();
  admission.done();
  t.deepEqual(started, [0, 2]);
  t.deepEqual(abandoned, [1]);
  t.like(admission.stats, { opening: 1, queued: 0, abandoned: 1 });
  for (const socket of all) socket.destroy();
});

test('a bound below 1 is refused; the default bound lets every connection start at once', (t) => {
  t.throws(() => new TunnelAdmission(0), { instanceOf: RangeError });
  const admission = new TunnelAdmission();
  const all = sockets(1000);
  let started = 0;
  for (const socket of all) admission.admit(socket, () => started++, () => t.fail('abandoned'));
  t.is(started, 1000);
  for (const socket of all) socket.destroy();
});
