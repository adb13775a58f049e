/**
 * A peer whose socket is destroyed while a splice has a write to it in flight through the socket's handle
 * (shared/hbone/direct-writes.ts): the write's completion must still run (with the error), so the pieces it carried
 * give their pooled TLS read buffers' holds back, and every descriptor of the tunnel is closed. A completion that
 * never ran would leave a hold (the buffer out of its pool for good, and with it the writer busy) and the counts here
 * would say so. On the public path (AMBIT_HBONE_STREAM_WRITES=1) the same must hold through the socket's Writable.
 * Own file: it counts this process's descriptors.
 */
import test from 'ava';
import { readdirSync } from 'node:fs';
import type net from 'node:net';
import { hboneImplementation } from '../../shared/hbone/config.ts';
import { directWriteStats, socketWriteMode } from '../../shared/hbone/direct-writes.ts';
import { sharedReadStats } from '../../shared/hbone/pooled-reads.ts';
import { socketPair, startPair, startTarget, waitFor } from '../helpers/hbone.ts';

/** Enough to fill both sockets' kernel buffers and the stream window behind them, so a write stays in flight. */
const BACKLOG_BYTES = 24 * 1024 * 1024;

function descriptors(): number {
  return readdirSync('/proc/self/fd').length;
}

/** Writes `bytes` into `socket` in 64 KiB pieces without waiting (Node queues what the socket does not take). */
function flood(socket: net.Socket, bytes: number): void {
  const piece = Buffer.alloc(64 * 1024, 0x5a);
  for (let sent = 0; sent < bytes; sent += piece.length) socket.write(piece);
}

/** A direct write is in flight (handle mode), or the flood has backed up into the pooled read buffers (either mode). */
function backedUp(before: number): boolean {
  if (socketWriteMode === 'handle') return directWriteStats().writesPending > 0 && directWriteStats().writesInFlight > before;
  return sharedReadStats().heldBuffers > 0;
}

/** node:http2 (AMBIT_HBONE_IMPL=node) has neither the handle writes nor the shared read buffers counted here. */
const ownLayerTest = hboneImplementation() === 'own' ? test.serial : test.serial.skip;

for (const side of ['target', 'application'] as const) {
  ownLayerTest(`the ${side}'s socket destroyed while a write to it is in flight: every pooled read hold comes back, no write stays pending, descriptors return to the baseline`, async (t) => {
    t.timeout(60_000);
    t.is(socketWriteMode, process.env.AMBIT_HBONE_STREAM_WRITES === '1' ? 'stream' : 'handle', 'the write mode this run asks for');
    const targetSockets: net.Socket[] = [];
    const target = await startTarget((socket) => {
      socket.on('error', () => {});
      targetSockets.push(socket);
      // The target reads nothing in the first case (the server's writes back up); in the second it floods the
      // application, which reads nothing.
      if (side === 'target') socket.pause();
      else flood(socket, BACKLOG_BYTES);
    });
    const pair = await startPair();
    t.teardown(async () => {
      await pair.close();
      await target.close();
    });
    // One tunnel first, so the pooled connection and whatever is made lazily are in the baseline.
    const warm = await socketPair();
    const warmTunnel = pair.pool.tunnel(pair.target(target.address), warm.downstream);
    await waitFor(() => targetSockets.length === 1, 5000);
    warm.close();
    targetSockets[0]!.destroy();
    await warmTunnel;
    await waitFor(() => sharedReadStats().heldBuffers === 0 && directWriteStats().writesPending === 0, 5000);
    await new Promise((resolve) => setTimeout(resolve, 200));
    const descriptorsBefore = descriptors();
    const inFlightBefore = directWriteStats().writesInFlight;
    const droppedBefore = sharedReadStats().droppedBuffers;

    const sockets = await socketPair();
    const tunnel = pair.pool.tunnel(pair.target(target.address), sockets.downstream);
    if (side === 'target') flood(sockets.app, BACKLOG_BYTES);
    else sockets.app.pause();
    t.true(await waitFor(() => targetSockets.length === 2 && backedUp(inFlightBefore), 20_000), `backed up: ${JSON.stringify({ ...directWriteStats(), ...sharedReadStats() })}`);
    // Let the backlog settle with the write in flight, then destroy the peer's socket (a reset, as a killed process's).
    await new Promise((resolve) => setTimeout(resolve, 200));
    t.true(backedUp(inFlightBefore), 'still backed up when the peer goes');
    if (side === 'target') targetSockets[1]!.resetAndDestroy();
    else sockets.app.resetAndDestroy();

    const result = await tunnel;
    t.truthy(result.error, `the tunnel ended with an error (a reset): ${JSON.stringify(result)}`);
    sockets.close();
    t.true(await waitFor(() => sharedReadStats().heldBuffers === 0, 5000), `pooled read buffers still held: ${JSON.stringify(sharedReadStats())}`);
    t.true(await waitFor(() => directWriteStats().writesPending === 0, 5000), `direct writes still pending: ${JSON.stringify(directWriteStats())}`);
    t.true(await waitFor(() => descriptors() <= descriptorsBefore, 5000), `${descriptors() - descriptorsBefore} descriptors more than before the tunnel`);
    t.log(`buffers dropped with the failed write: ${sharedReadStats().droppedBuffers - droppedBefore}; mode ${socketWriteMode}`);
  });
}
