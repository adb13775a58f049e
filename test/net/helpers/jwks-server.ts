/**
 * A JWKS server run inside a pod (an identity provider's key endpoint): serves the JSON given on the command line at
 * any path, and prints one JSON line per request (`{"served": n, "peer": ...}`) after `{"listening": port}`.
 *
 *   node test/net/helpers/jwks-server.ts 8081 '{"keys":[...]}'
 * Owns: nothing beyond this. Must not know about: the mesh.
 */
import http from 'node:http';

const port = Number(process.argv[2]);
const jwks = process.argv[3] ?? '{"keys":[]}';
let served = 0;
const server = http.createServer((request, response) => {
  served++;
  process.stdout.write(JSON.stringify({ served, peer: request.socket.remoteAddress, path: request.url }) + '\n');
  response.writeHead(200, { 'content-type': 'application/json' }).end(jwks);
});
server.listen(port, '0.0.0.0', () => process.stdout.write(JSON.stringify({ listening: port }) + '\n'));
