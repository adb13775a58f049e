/**
 * Test client run inside a pod: sends HTTP/1.1 requests with any method, path and headers over one keep-alive
 * connection and prints one JSON line: per request the status, the response headers it cares about and the body
 * (JSON when it parses, text otherwise).
 *
 *   node test/net/helpers/http-calls.ts '{"host":"10.240.2.10","port":80,"requests":[{"method":"DELETE","path":"/a"}]}'
 * Owns: nothing beyond this. Must not know about: the mesh.
 */
import http from 'node:http';

interface Call {
  method?: string;
  path: string;
  headers?: Record<string, string>;
  repeat?: number;
  /** Send this request again and again, one after the other, for this long (instead of `repeat`). */
  durationMs?: number;
}

const spec = JSON.parse(process.argv[2] ?? '{}') as { host: string; port: number; requests: Call[] };
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
const results: { method: string; path: string; status: number; body: unknown; at: number; wwwAuthenticate?: string; rateLimit?: string; retryAfter?: string; error?: string }[] = [];
const started = performance.now();

function once(call: Call): Promise<void> {
  const method = call.method ?? 'GET';
  return new Promise((resolve) => {
    const request = http.request({ host: spec.host, port: spec.port, method, path: call.path, headers: call.headers ?? {}, agent, timeout: 15_000 }, (response) => {
      let text = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (text += chunk));
      response.on('end', () => {
        let body: unknown = text;
        try {
          body = JSON.parse(text);
        } catch {
          // plain text (403, 401)
        }
        const wwwAuthenticate = response.headers['www-authenticate'];
        const rateLimit = response.headers['x-ratelimit-limit'] as string | undefined;
        const retryAfter = response.headers['retry-after'];
        results.push({
          method, path: call.path, status: response.statusCode ?? 0, body, at: Math.round(performance.now() - started),
          ...(wwwAuthenticate ? { wwwAuthenticate } : {}), ...(rateLimit ? { rateLimit } : {}), ...(retryAfter ? { retryAfter } : {}),
        });
        resolve();
      });
    });
    request.on('timeout', () => request.destroy(new Error('timed out')));
    request.on('error', (error) => {
      results.push({ method, path: call.path, status: 0, body: null, at: Math.round(performance.now() - started), error: error.message });
      resolve();
    });
    request.end();
  });
}

for (const call of spec.requests) {
  if (call.durationMs !== undefined) {
    const until = performance.now() + call.durationMs;
    while (performance.now() < until) await once(call);
  } else for (let i = 0; i < (call.repeat ?? 1); i++) await once(call);
}
agent.destroy();
process.stdout.write(JSON.stringify(results) + '\n');
