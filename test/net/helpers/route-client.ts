/**
 * Test client run inside a pod for the waypoint route tests: sends HTTP/1.1 requests in order over one keep-alive
 * connection and prints one JSON line with, per request, the status, the response headers and the body (JSON when
 * it parses). A request may carry a method, headers and a body of `bodyBytes` bytes.
 *
 *   node test/net/helpers/route-client.ts '{"host":"10.96.1.10","port":80,"requests":[{"path":"/a","method":"POST","bodyBytes":10}]}'
 * Owns: nothing beyond this. Must not know about: the mesh.
 */
import http from 'node:http';

interface RequestSpec {
  path: string;
  method?: string;
  headers?: Record<string, string>;
  bodyBytes?: number;
  /** Send only this many bytes of the declared body, then reset the connection (a peer failing rudely). */
  abortAfterBytes?: number;
  repeat?: number;
}

const spec = JSON.parse(process.argv[2] ?? '{}') as { host: string; port: number; timeoutMs?: number; requests: RequestSpec[] };
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
const results: { path: string; status: number; headers: http.IncomingHttpHeaders; body: unknown; error?: string }[] = [];

function once(item: RequestSpec): Promise<void> {
  return new Promise((resolve) => {
    const body = item.bodyBytes ? Buffer.alloc(item.bodyBytes, 'x') : undefined;
    const headers = { ...item.headers, ...(body ? { 'content-length': String(body.length) } : {}) };
    const request = http.request({ host: spec.host, port: spec.port, path: item.path, method: item.method ?? 'GET', headers, agent, timeout: spec.timeoutMs ?? 20_000 }, (response) => {
      let text = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (text += chunk));
      response.on('end', () => {
        let parsed: unknown = text;
        try {
          parsed = JSON.parse(text);
        } catch {
          // a plain-text answer from the waypoint
        }
        results.push({ path: item.path, status: response.statusCode ?? 0, headers: response.headers, body: parsed });
        resolve();
      });
      response.on('error', (error) => {
        results.push({ path: item.path, status: response.statusCode ?? 0, headers: response.headers, body: text, error: error.message });
        resolve();
      });
    });
    request.on('timeout', () => request.destroy(new Error('timed out')));
    request.on('error', (error) => {
      results.push({ path: item.path, status: 0, headers: {}, body: null, error: error.message });
      resolve();
    });
    if (item.abortAfterBytes !== undefined && body) {
      request.write(body.subarray(0, item.abortAfterBytes));
      setTimeout(() => {
        request.destroy(new Error('aborted by the test client'));
      }, 200);
      return;
    }
    request.end(body);
  });
}

for (const item of spec.requests) {
  for (let i = 0; i < (item.repeat ?? 1); i++) await once(item);
}
agent.destroy();
process.stdout.write(JSON.stringify(results) + '\n');
