/**
 * Sample server for local-runtime pods. TCP mode echoes every byte back and half-closes when the client does;
 * HTTP mode answers each request with JSON naming the peer address it saw (to show source-IP preservation), the
 * server's `--name` and the request headers it received (to show what a proxy on the way changed).
 *
 *   node runtime/apps/echo-server.ts --port 8080 [--host 0.0.0.0] [--http] [--name NAME]
 * (HTTP mode: `server` in the answer is NAME, so a client of a Service sees which endpoint answered.)
 * Prints one line `{"listening":<port>}` on stdout once it accepts connections.
 *
 * Owns: nothing beyond this demo behaviour. Must not know about: the mesh.
 */
import http from 'node:http';
import net from 'node:net';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    port: { type: 'string', default: '8080' },
    host: { type: 'string', default: '0.0.0.0' },
    http: { type: 'boolean', default: false },
    name: { type: 'string', default: '' },
  },
});
const port = Number(values.port);

function announce(server: net.Server): void {
  console.log(JSON.stringify({ listening: (server.address() as net.AddressInfo).port }));
}

if (values.http) {
  const server = http.createServer((request, response) => {
    let bytesReceived = 0;
    request.on('data', (chunk: Buffer) => (bytesReceived += chunk.length));
    request.on('end', () => {
      const body = JSON.stringify({
        peer: request.socket.remoteAddress,
        peerPort: request.socket.remotePort,
        method: request.method,
        url: request.url,
        bytesReceived,
        server: values.name,
        name: values.name,
        headers: request.headers,
      });
      response.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      response.end(body);
    });
  });
  server.listen(port, values.host, () => announce(server));
} else {
  const server = net.createServer((socket) => {
    socket.on('error', () => socket.destroy());
    socket.pipe(socket); // echoes, and ends our side when the client ends its side
  });
  server.listen(port, values.host, () => announce(server));
}
