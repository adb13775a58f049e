/**
 * The shop example's one service binary (image ambit/shop-service in runtime/workloads/images.yaml): an HTTP
 * server that, for every request, calls each of its upstreams by URL (Service names, e.g. http://catalog:8080/) and
 * answers JSON naming itself, its pod and what each upstream answered, so a call to the front shows the whole chain.
 *
 *   SERVICE=frontend PORT=8080 UPSTREAMS=http://catalog:8080/,http://cart:8080/ node examples/shop/app/service.ts
 * VERSION, POD_NAME and POD_NAMESPACE (downward API) are reported when set; GET /healthz answers 200 without calling upstreams.
 *
 * Owns: nothing beyond this example's behaviour. Must not know about: the mesh.
 */
import http from 'node:http';

const service = process.env.SERVICE ?? 'service';
const port = Number(process.env.PORT ?? '8080');
const upstreams = (process.env.UPSTREAMS ?? '').split(',').filter((url) => url !== '');
const UPSTREAM_TIMEOUT_MS = 5_000;

/**
 * One upstream call on a connection of its own (no keep-alive): the mesh balances connections, so each call is
 * balanced across the Service's endpoints, which is what this example shows (a kept-alive connection would stay on
 * one catalog version).
 */
function call(url: string): Promise<unknown> {
  return new Promise((resolve) => {
    const request = http.get(url, { agent: false, timeout: UPSTREAM_TIMEOUT_MS }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => {
        try {
          resolve({ url, status: response.statusCode, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown });
        } catch (error) {
          resolve({ url, error: (error as Error).message });
        }
      });
      response.on('error', (error) => resolve({ url, error: error.message }));
    });
    request.on('timeout', () => request.destroy(new Error(`no answer within ${UPSTREAM_TIMEOUT_MS} ms`)));
    request.on('error', (error) => resolve({ url, error: error.message }));
  });
}

const server = http.createServer((request, response) => {
  request.resume();
  request.on('end', () => {
    if (request.url === '/healthz') {
      response.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n'); // readiness: this process, not its upstreams
      return;
    }
    void Promise.all(upstreams.map(call)).then((answers) => {
      const failed = answers.some((answer) => (answer as { error?: string }).error !== undefined);
      const body = JSON.stringify({ service, version: process.env.VERSION, pod: process.env.POD_NAME, namespace: process.env.POD_NAMESPACE, peer: request.socket.remoteAddress, upstreams: answers });
      response.writeHead(failed ? 502 : 200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      response.end(body);
    });
  });
});
server.listen(port, '0.0.0.0', () => console.log(JSON.stringify({ service, listening: port, upstreams })));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
