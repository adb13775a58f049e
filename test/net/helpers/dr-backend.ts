/**
 * Test backend run inside a pod for the DestinationRule tests: an HTTP/1.1 server answering JSON `{name, peer}`;
 * `/slow?ms=N` answers after N ms; every request is answered 503 while the file `<failDir>/fail-<name>` exists.
 * Prints `{"listening":...}` once it listens.
 *
 *   node test/net/helpers/dr-backend.ts PORT NAME FAIL_DIR
 * Owns: nothing beyond this. Must not know about: the mesh.
 */
import { existsSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';

const [portText, name, failDir] = process.argv.slice(2);
const failFile = path.join(failDir ?? '/nonexistent', `fail-${name ?? ''}`);

const server = http.createServer((request, response) => {
  request.resume();
  const url = new URL(request.url ?? '/', 'http://backend');
  const answer = (): void => {
    if (existsSync(failFile)) {
      response.writeHead(503, { 'content-type': 'application/json' }).end(JSON.stringify({ name, failing: true }));
      return;
    }
    response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ name, peer: request.socket.remoteAddress, path: url.pathname }));
  };
  if (url.pathname === '/slow') setTimeout(answer, Number(url.searchParams.get('ms') ?? 1000));
  else answer();
});
server.keepAliveTimeout = 60_000;
server.listen(Number(portText), '0.0.0.0', () => process.stdout.write(`${JSON.stringify({ listening: Number(portText) })}\n`));
