/**
 * The far end of the mesh suite's paths: bench/tools/target.ts's sink/echo protocol on an address of our
 * choosing, because inside a pod the target must be reachable on the pod's IP (target.ts binds 127.0.0.1:0).
 *
 *   node bench/tools/mesh-target.ts --port 8080 [--host 0.0.0.0]
 *
 * Protocol (same as target.ts; the first byte of a connection picks the mode):
 *   'S' + uint64 big-endian length: sink, reply 'K' once that many bytes arrived;
 *   'E': echo every byte back until the peer ends.
 * Prints `{"ready":{"port":N}}` when listening.
 * Must not know about: which path, if any, sits in front of it.
 */
import net from 'node:net';
import { parseArgs } from 'node:util';
import { announceReady, exitWithParent } from './common.ts';

const SINK = 0x53; // 'S'
const ECHO = 0x45; // 'E'
const SINK_HEADER_BYTES = 9;
const ACK = Buffer.from('K');

const { values } = parseArgs({
  options: {
    host: { type: 'string', default: '0.0.0.0' },
    port: { type: 'string', default: '8080' },
  },
});

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
