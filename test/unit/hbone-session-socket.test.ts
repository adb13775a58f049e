/**
 * The bound of the node:http2 server's SessionSocket (shared/hbone/session-socket.ts): its writes complete at once so
 * the session keeps reading (the bulk-tunnel deadlock's fix), but a peer that sends and never reads must not grow the
 * server's memory through it (what Node's own guard, stopping reads while a write is pending, was for). A raw TLS
 * peer with a mesh certificate floods PINGs and reads none of the answers: every answer is queued on the server's
 * side (PINGs, not DATA: what a peer that never reads can make us send in DATA is capped by its window, below the
 * bound). Node's HTTP/2 layer only: the own layer bounds its own queue.
 */
import test from 'ava';
import { once } from 'node:events';
import tls from 'node:tls';
import { CLIENT_PREFACE, pingFrame, settingsFrame } from '../../shared/hbone/h2/frame.ts';
import { SESSION_SOCKET_QUEUE_LIMIT_BYTES } from '../../shared/hbone/config.ts';
import { sessionSocketStats } from '../../shared/hbone/session-socket.ts';
import type { HostPort } from '../../shared/hbone/index.ts';
import { makeMesh, readAll, socketPair, startEcho, startPair, waitFor, type Mesh, type Pair } from '../helpers/hbone.ts';

/** What the server may queue past the bound: the one write that crossed it (a batch of frames, far below this). */
const SLACK_BYTES = 1024 * 1024;
const FLOOD_BYTES = 64 * 1024 * 1024;

/** A raw HTTP/2 client over mutual TLS that reads nothing once connected. */
async function connectSilentPeer(mesh: Mesh, server: HostPort): Promise<{ socket: tls.TLSSocket; closed: Promise<void> }> {
  const socket = tls.connect({
    host: server.host,
    port: server.port,
    cert: mesh.clientCert.certPem,
    key: mesh.clientCert.keyPem,
    ca: [mesh.ca.rootCertPem],
    minVersion: 'TLSv1.3',
    ALPNProtocols: ['h2'],
    checkServerIdentity: () => undefined,
  });
  socket.on('error', () => {});
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  await once(socket, 'secureConnect');
  // From here on nothing is read: at most the socket's own readable buffer fills, then the kernel's.
  socket.pause();
  return { socket, closed };
}

/** Writes `chunk` until `total` bytes went out or the connection closed; resolves with the bytes written. */
async function writeUntil(socket: tls.TLSSocket, closed: Promise<void>, next: () => Buffer, total: number): Promise<number> {
  let written = 0;
  while (written < total && !socket.destroyed) {
    const chunk = next();
    written += chunk.length;
    if (!socket.write(chunk)) {
      const how = await Promise.race([once(socket, 'drain').then(() => 'drain' as const, () => 'closed' as const), closed.then(() => 'closed' as const)]);
      if (how === 'closed') break;
    }
  }
  return written;
}

/** Echoes through a tunnel from the pair's pool: the server still serves while a silent peer is held. */
async function echoThroughPool(pair: Pair, echo: HostPort, message: string): Promise<string> {
  const sockets = await socketPair();
  try {
    const tunnel = pair.pool.tunnel(pair.target(echo), sockets.downstream);
    sockets.app.end(message);
    const answer = await readAll(sockets.app);
    await tunnel;
    return answer.toString();
  } finally {
    sockets.close();
  }
}

/** PING frames, 256 to a write (4 KiB): the server answers every one, and the answers pile up on its side. */
const PING_BATCH = Buffer.concat(Array.from({ length: 256 }, (_, index) => pingFrame(Buffer.from(`ping${String(index).padStart(4, '0')}`), false)));

test.serial('a peer that floods PINGs and reads none of the answers is throttled at the bound: the server stops reading it, its memory stays bounded and others are served', async (t) => {
  t.timeout(180_000);
  const mesh = await makeMesh();
  const echo = await startEcho();
  // No keepalive: only the bound can stop the server from queueing answers (the next test has the keepalive end it).
  const pair = await startPair({ mesh, server: { implementation: 'node', keepaliveIntervalMs: 0, idleTimeoutMs: 0 }, client: { implementation: 'node' } });
  const peer = await connectSilentPeer(mesh, pair.serverAddress);
  t.teardown(async () => {
    peer.socket.destroy();
    await pair.close();
    await echo.close();
  });
  const before = sessionSocketStats();
  peer.socket.write(Buffer.concat([CLIENT_PREFACE, settingsFrame([])]));
  let floodEnded = false;
  const flooding = writeUntil(peer.socket, peer.closed, () => PING_BATCH, FLOOD_BYTES).then(() => (floodEnded = true));
  // Either the bound holds a write (the fix), or the queue grows past it (no bound), or the flood went through.
  const decided = await waitFor(() => sessionSocketStats().writesHeld > before.writesHeld || sessionSocketStats().largestQueueBytes > SESSION_SOCKET_QUEUE_LIMIT_BYTES + SLACK_BYTES || floodEnded, 150_000);
  t.true(decided, 'the flood neither reached the bound nor ended');
  t.true(sessionSocketStats().writesHeld > before.writesHeld, `the server held a write at the bound: ${JSON.stringify(sessionSocketStats())}`);
  // While that session is held, the server's other connections are served: a new client tunnels an echo 3 times
  // (each a full round trip through the server: each a chance for the held session to read and queue on).
  for (let round = 0; round < 3; round++) t.is(await echoThroughPool(pair, echo.address, `still served ${round}`), `still served ${round}`);
  const queued = sessionSocketStats().largestQueueBytes;
  t.true(queued <= SESSION_SOCKET_QUEUE_LIMIT_BYTES + SLACK_BYTES, `largest queue on a TLS socket: ${queued} bytes, bound ${SESSION_SOCKET_QUEUE_LIMIT_BYTES}`);
  // Throttled: the rest of the flood waits in the kernel's buffers, the peer's socket does not drain.
  t.false(floodEnded, 'the peer is still waiting for its socket to drain');
  // Once the peer is gone, its held session goes too (nothing stays pinned by the held write).
  peer.socket.destroy();
  await flooding;
  t.true(await waitFor(() => pair.server.stats().activeSessions === 1, 20_000), `only the pool's session is left: ${JSON.stringify(pair.server.stats())}`);
});

test.serial('a peer that floods PINGs and reads none of the answers is cut by the keepalive, and the server\'s queue stays bounded', async (t) => {
  t.timeout(180_000);
  const mesh = await makeMesh();
  const echo = await startEcho();
  const pair = await startPair({ mesh, server: { implementation: 'node', keepaliveIntervalMs: 1000, keepaliveTimeoutMs: 2000, idleTimeoutMs: 0 }, client: { implementation: 'node' } });
  const peer = await connectSilentPeer(mesh, pair.serverAddress);
  t.teardown(async () => {
    peer.socket.destroy();
    await pair.close();
    await echo.close();
  });
  peer.socket.write(Buffer.concat([CLIENT_PREFACE, settingsFrame([])]));
  // Ends when the server closes the connection (or, were it never closed, when the flood is all written).
  const written = await writeUntil(peer.socket, peer.closed, () => PING_BATCH, 4 * FLOOD_BYTES);
  t.true(written < 4 * FLOOD_BYTES, `the server closed the connection before the peer wrote ${4 * FLOOD_BYTES} bytes of PINGs (wrote ${written})`);
  await peer.closed;
  t.is(pair.server.stats().keepaliveTimeouts, 1, 'closed by the keepalive: the peer answered no PING');
  const queued = sessionSocketStats().largestQueueBytes;
  t.true(queued <= SESSION_SOCKET_QUEUE_LIMIT_BYTES + SLACK_BYTES, `largest queue on a TLS socket: ${queued} bytes`);
  t.true(await waitFor(() => pair.server.stats().activeSessions === 0, 10_000), 'the session is gone');
  t.is(await echoThroughPool(pair, echo.address, 'after the flood'), 'after the flood');
});
