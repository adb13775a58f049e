/**
 * Test client run inside a pod: sends `count` HTTP/1.1 GETs at once, each on its own connection, and prints one
 * JSON line: per request the status, the `x-envoy-overloaded` header and the body (`timeoutMs`: give up, closing the
 * connection, after that long without an answer).
 *
 *   node test/net/helpers/concurrent-requests.ts '{"host":"10.96.1.10","port":80,"path":"/slow?ms=2000","count":6}'
 * Owns: nothing beyond this. Must not know about: the mesh.
 */
import http from 'node:http';

const spec = JSON.parse(process.argv[2] ?? '{}') as { host: string; port: number; path: string; count: number; timeoutMs?: number };

function once(): Promise<{ status: number; overloaded?: string; body: string; error?: string }> {
  return new Promise((resolve) => {
    const request = http.get({ host: spec.host, port: spec.port, path: spec.path, agent: false, timeout: spec.timeoutMs ?? 20_000 }, (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (body += chunk));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, overloaded: response.headers['x-envoy-overloaded'] as string | undefined, body }));
    });
    request.on('timeout', () => request.destroy(new Error('timed out')));
    request.on('error', (error) => resolve({ status: 0, body: '', error: error.message }));
  });
}

const results = await Promise.all(Array.from({ length: spec.count }, once));
process.stdout.write(JSON.stringify(results) + '\n');
