/**
 * Test backend run inside a pod for the waypoint route tests: answers every request with JSON saying what it
 * received (method, url, headers, body bytes, its name and the peer address), and keeps a record of each request
 * for the test to read from inside the pod (`GET /__seen`). Request headers steer it, so a test can make one try
 * fail and the next succeed:
 *   x-test-status: N           answer N
 *   x-test-fail-first: N       answer 503 to the first N requests with this request's x-request-id
 *   x-test-hold: KEY           hold the answer until `GET /__release?key=KEY`
 *   x-test-hold-first: KEY     hold only the first request with this request's x-request-id
 *   x-test-flaky: 1            answer 503 to every other request carrying this header (the 1st, 3rd, ...)
 * Every answer carries `x-backend: NAME` and `x-backend-secret: 1` (for response header filters).
 *
 *   node test/net/helpers/route-backend.ts --port 8080 --name NAME
 * Prints `{"listening":<port>}` once it accepts connections. Owns: nothing beyond this. Must not know about: the mesh.
 */
import http from 'node:http';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { port: { type: 'string', default: '8080' }, name: { type: 'string', default: '' } } });

interface Seen {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  /** The field lines as they came (name, value, name, value, ...): repeats and case that `headers` folds. */
  rawHeaders: string[];
  bytes: number;
}

const seen: Seen[] = [];
const triesByRequestId = new Map<string, number>();
let flakyRequests = 0;
const held = new Map<string, (() => void)[]>();

function header(request: http.IncomingMessage, name: string): string | undefined {
  const value = request.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

const server = http.createServer((request, response) => {
  const url = new URL(request.url ?? '/', 'http://backend');
  if (url.pathname === '/__seen') {
    response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(seen));
    return;
  }
  if (url.pathname === '/__release') {
    const key = url.searchParams.get('key') ?? '';
    const waiting = held.get(key) ?? [];
    held.delete(key);
    for (const release of waiting) release();
    response.writeHead(200).end(String(waiting.length));
    return;
  }
  let bytes = 0;
  request.on('data', (chunk: Buffer) => (bytes += chunk.length));
  request.on('end', () => {
    seen.push({ method: request.method ?? '', url: request.url ?? '', headers: request.headers, rawHeaders: request.rawHeaders, bytes });
    const requestId = header(request, 'x-request-id') ?? '';
    const tries = (triesByRequestId.get(requestId) ?? 0) + 1;
    triesByRequestId.set(requestId, tries);
    let status = Number(header(request, 'x-test-status') ?? 200);
    if (tries <= Number(header(request, 'x-test-fail-first') ?? 0)) status = 503;
    if (header(request, 'x-test-flaky') !== undefined && flakyRequests++ % 2 === 0) status = 503;
    const answer = (): void => {
      if (response.destroyed) return;
      const body = JSON.stringify({ name: values.name, peer: request.socket.remoteAddress, peerPort: request.socket.remotePort, method: request.method, url: request.url, bytes, tries, headers: request.headers });
      response.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'x-backend': values.name, 'x-backend-secret': '1' });
      response.end(body);
    };
    const holdKey = header(request, 'x-test-hold') ?? (tries === 1 ? header(request, 'x-test-hold-first') : undefined);
    if (holdKey === undefined) {
      answer();
      return;
    }
    const waiting = held.get(holdKey) ?? [];
    waiting.push(answer);
    held.set(holdKey, waiting);
  });
});
server.listen(Number(values.port), '0.0.0.0', () => console.log(JSON.stringify({ listening: (server.address() as { port: number }).port })));
