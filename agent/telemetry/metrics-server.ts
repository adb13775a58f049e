/**
 * The Prometheus endpoint: `GET /metrics` on 0.0.0.0:15020 (Istio's port, what its scrape annotations name).
 *
 * Owns: serving the registry's text exposition.
 * Must not know about: which metrics exist (metrics.ts).
 */
import http from 'node:http';
import { closeHttpServer, listenReusePort, type RunningHttpServer } from '../http-listen.ts';
import type { AgentMetrics } from './metrics.ts';

export function createMetricsServer(metrics: AgentMetrics): http.Server {
  return http.createServer((request, response) => {
    const path = (request.url ?? '/').split('?')[0];
    if (path !== '/metrics' && path !== '/stats/prometheus') {
      response.writeHead(404, { 'content-type': 'text/plain' }).end('not found: metrics are at /metrics\n');
      return;
    }
    metrics.text().then(
      (text) => response.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text),
      (error: Error) => response.writeHead(500, { 'content-type': 'text/plain' }).end(`collecting metrics failed: ${error.message}\n`),
    );
  });
}

export async function startMetricsServer(address: { host: string; port: number }, metrics: AgentMetrics): Promise<RunningHttpServer> {
  const server = createMetricsServer(metrics);
  const bound = await listenReusePort(server, address);
  return { address: bound, close: () => closeHttpServer(server) };
}
