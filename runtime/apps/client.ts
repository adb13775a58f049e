/**
 * Sample client for local-runtime pods: opens `count` connections one after another, sends `size` bytes on each
 * and reads them back (TCP mode), or sends one GET per connection (HTTP mode); prints one JSON result line.
 *
 *   node runtime/apps/client.ts --host 10.1.0.5 --port 8080 [--count 1] [--size 1024] [--http] [--timeout 5000]
 * Exit status 0 when every connection succeeded.
 *
 * Owns: nothing beyond this demo behaviour. Must not know about: the mesh.
 */
import http from 'node:http';
import net from 'node:net';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    host: { type: 'string' },
    port: { type: 'string', default: '8080' },
    count: { type: 'string', default: '1' },
    size: { type: 'string', default: '1024' },
    http: { type: 'boolean', default: false },
    timeout: { type: 'string', default: '5000' },
  },
});
if (values.host === undefined) {
  console.error('usage: client.ts --host HOST [--port P] [--count N] [--size BYTES] [--http] [--timeout MS]');
  process.exit(2);
}
const host = values.host;
const port = Number(values.port);
const size = Number(values.size);
const timeoutMs = Number(values.timeout);

function tcpRoundTrip(): Promise<number> {
  const payload = Buffer.alloc(size, 'ambit-');
  return new Promise<number>((resolve, reject) => {
    const received: Buffer[] = [];
    let length = 0;
    const socket = net.connect({ host, port, timeout: timeoutMs });
    socket.on('connect', () => socket.end(payload));
    socket.on('data', (chunk: Buffer) => {
      received.push(chunk);
      length += chunk.length;
    });
    socket.on('timeout', () => socket.destroy(new Error(`timed out after ${timeoutMs} ms`)));
    socket.on('error', reject);
    socket.on('end', () => {
      if (Buffer.concat(received, length).equals(payload)) resolve(length);
      else reject(new Error(`echo mismatch: sent ${size} bytes, got ${length}`));
    });
  });
}

function httpGet(): Promise<{ status: number; body: unknown }> {
  return new Promise((resolve, reject) => {
    const request = http.get({ host, port, path: '/', timeout: timeoutMs, agent: false }, (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (body += chunk));
      response.on('end', () => {
        try {
          resolve({ status: response.statusCode ?? 0, body: JSON.parse(body) });
        } catch {
          resolve({ status: response.statusCode ?? 0, body });
        }
      });
    });
    request.on('timeout', () => request.destroy(new Error(`timed out after ${timeoutMs} ms`)));
    request.on('error', reject);
  });
}

const started = performance.now();
const errors: string[] = [];
let succeeded = 0;
let bytesReceived = 0;
let lastResponse: unknown;
for (let i = 0; i < Number(values.count); i++) {
  try {
    if (values.http) {
      lastResponse = await httpGet();
    } else {
      bytesReceived += await tcpRoundTrip();
    }
    succeeded++;
  } catch (error) {
    errors.push((error as Error).message);
  }
}
const ok = errors.length === 0;
console.log(
  JSON.stringify({
    ok,
    host,
    port,
    connections: Number(values.count),
    succeeded,
    failed: errors.length,
    bytesReceived,
    durationMs: Math.round(performance.now() - started),
    errors: errors.slice(0, 10),
    ...(values.http ? { response: lastResponse } : {}),
  }),
);
process.exitCode = ok ? 0 : 1;
