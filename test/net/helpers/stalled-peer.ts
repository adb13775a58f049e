/**
 * Test peer run inside a pod: a process that never reads what it is sent, so the agent's writes to it back up, and
 * that the test then kills with SIGKILL (the kernel resets its connections: unread data in a receive queue makes the
 * close an RST).
 *
 *   node test/net/helpers/stalled-peer.ts '{"role":"server","port":8080,"flood":0}'
 *   node test/net/helpers/stalled-peer.ts '{"role":"client","host":"10.0.1.2","port":8080,"flood":25165824}'
 *
 * `server` listens on 0.0.0.0:port; `client` connects to host:port. Either way the connection's socket never reads
 * (paused), and with `flood` > 0 the peer writes that many bytes into it in 64 KiB pieces without waiting (Node queues
 * what the kernel does not take). Prints one JSON line `{"listening":true}` (server) and `{"connected":true}` per
 * connection, then stays until killed.
 * Owns: nothing beyond this. Must not know about: the mesh.
 */
import net from 'node:net';

interface Spec {
  role: 'server' | 'client';
  host?: string;
  port: number;
  flood: number;
}

const spec = JSON.parse(process.argv[2] ?? '{}') as Spec;
// A paused socket with nothing to write keeps no event loop alive: stay until killed.
setInterval(() => undefined, 1 << 30);
const piece = Buffer.alloc(64 * 1024, 0x5a);

function stall(socket: net.Socket): void {
  socket.on('error', () => undefined);
  socket.pause();
  for (let sent = 0; sent < spec.flood; sent += piece.length) socket.write(piece);
  process.stdout.write(`${JSON.stringify({ connected: true })}\n`);
}

if (spec.role === 'server') {
  const server = net.createServer(stall);
  server.listen(spec.port, '0.0.0.0', () => process.stdout.write(`${JSON.stringify({ listening: true })}\n`));
} else {
  const socket = net.connect({ host: spec.host, port: spec.port });
  socket.once('connect', () => stall(socket));
  socket.on('error', () => undefined);
}
