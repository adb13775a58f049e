/**
 * Two tiny test peers run inside pods, driven and observed one JSON line at a time (no sample app says when it
 * accepted a connection, nor resets on cue).
 *
 *   node test/net/helpers/line-peers.ts server <port>       echoes; prints {"listening":port}, then {"accepted":n}
 *                                                           for each connection it accepts
 *   node test/net/helpers/line-peers.ts client <host> <port> connects; prints {"connected":true}; on a line "reset"
 *                                                           on stdin resets the connection (RST) and prints
 *                                                           {"reset":true}; on a line "echo" writes 5 bytes and
 *                                                           prints {"echoed":"..."} with what came back
 * Owns: nothing beyond this. Must not know about: the mesh.
 */
import net from 'node:net';
import readline from 'node:readline';

const [role, ...rest] = process.argv.slice(2);

function say(line: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

if (role === 'server') {
  let accepted = 0;
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    say({ accepted: ++accepted });
    socket.on('error', () => undefined);
    socket.pipe(socket);
  });
  server.listen(Number(rest[0]), '0.0.0.0', () => say({ listening: (server.address() as net.AddressInfo).port }));
} else if (role === 'client') {
  const socket = net.connect({ host: rest[0]!, port: Number(rest[1]) });
  socket.on('error', () => undefined);
  socket.once('connect', () => say({ connected: true }));
  readline.createInterface({ input: process.stdin }).on('line', (line) => {
    if (line === 'reset') {
      socket.once('close', () => {
        say({ reset: true });
        process.exit(0);
      });
      socket.resetAndDestroy();
    } else if (line === 'echo') {
      let echoed = '';
      socket.setEncoding('utf8').on('data', (chunk: string) => {
        echoed += chunk;
        if (echoed.length >= 5) say({ echoed });
      });
      socket.write('hello');
    }
  });
} else {
  process.stderr.write('usage: line-peers.ts server <port> | client <host> <port>\n');
  process.exit(2);
}
