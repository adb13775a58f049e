/**
 * Test client run inside a pod: sends HTTP/1.1 requests over one keep-alive connection (Node's agent, one socket)
 * and prints one JSON line: per request the status, whether the connection was reused, and the JSON body.
 *
 *   node test/net/helpers/http-requests.ts '{"host":"10.96.1.10","port":80,"requests":[{"path":"/a","headers":{}}]}'
 * Owns: nothing beyond this. Must not know about: the mesh.
 */
import http from 'node:http';

interface Spec {
  host: string;
  port: number;
  requests: { path: string; headers?: Record<string, string>; repeat?: number }[];
}

const spec = JSON.parse(process.argv[2] ?? '{}') as Spec;
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
const results: { path: string; status: number; reused: boolean; body: unknown; error?: string }[] = [];

function once(path: string, headers: Record<string, string>): Promise<void> {
  return new Promise((resolve) => {
    const request = http.get({ host: spec.host, port: spec.port, path, headers, agent, timeout: 15_000 }, (response) => {
      let text = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (text += chunk));
      response.on('end', () => {
        let body: unknown = text;
        try {
          body = JSON.parse(text);
        } catch {
          // a plain-text answer (404, 503)
        }
        results.push({ path, status: response.statusCode ?? 0, reused: request.reusedSocket, body });
        resolve();
      });
    });
    request.on('timeout', () => request.destroy(new Error('timed out')));
    request.on('error', (error) => {
      results.push({ path, status: 0, reused: false, body: null, error: error.message });
      resolve();
    });
  });
}

for (const item of spec.requests) {
  for (let i = 0; i < (item.repeat ?? 1); i++) await once(item.path, item.headers ?? {});
}
agent.destroy();
process.stdout.write(JSON.stringify(results) + '\n');
