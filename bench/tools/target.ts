/**
 * The far end of every benchmarked path: a TCP server that sinks or echoes.
 *
 * Protocol (first byte of each connection chooses the mode, so one address serves every measurement):
 *   'S' + uint64 big-endian length: sink; after `length` bytes arrive, reply one byte 'K' (so the sender
 *       knows every byte crossed the path without depending on half-close semantics of the relay).
 *   'E': echo every byte back until the peer ends.
 * Anything else closes the connection. Prints `{"ready":{"port":N}}` when listening.
 *   node bench/tools/target.ts [--host 127.0.0.1] [--port 0]   (in a pod: --host 0.0.0.0 --port 8080)
 * Must not know about: which relay, if any, sits in front of it.
 */
import net from 'node:net';
import { parseArgs } from 'node:util';
import { announceReady, exitWithParent } from './common.ts';

const { values } = parseArgs({
  options: {
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string', default: '0' },
  },
});

const SINK = 0x53; // 'S'
const ECHO = 0x45; // 'E'
const SINK_HEADER_BYTES = 9;
const ACK = Buffer.from('K');

function serve(socket: net.Socket): void {
  socket.setNoDelay(true);
  socket.on('error', () => socket.destroy());
  let header: Buffer = Buffer.alloc(0);
  const onHeader = (chunk: Buffer): void => {
    header = header.length === 0 ? chunk : Buffer.concat([header, chunk]);
    const mode = header[0];
    if (mode === ECHO) {
      socket.off('data', onHeader);
      if (header.length > 1) socket.write(header.subarray(1));
      socket.pipe(socket);
      return;
    }
    if (mode !== SINK) {
      socket.destroy();
      return;
    }
    if (header.length < SINK_HEADER_BYTES) return;
    socket.off('data', onHeader);
    const expected = Number(header.readBigUInt64BE(1));
    let received = header.length - SINK_HEADER_BYTES;
    if (received >= expected) {
      socket.write(ACK);
      return;
    }
    const onData = (data: Buffer): void => {
      received += data.length;
      if (received >= expected) {
        socket.off('data', onData);
        socket.resume();
        socket.write(ACK);
      }
    };
    socket.on('data', onData);
  };
  socket.on('data', onHeader);
  socket.on('end', () => socket.end());
}

const server = net.createServer({ noDelay: true }, serve);
server.listen({ host: values.host, port: Number(values.port), backlog: 4096 }, () => {
  announceReady({ port: (server.address() as net.AddressInfo).port });
});
exitWithParent();
