/**
 * The L7 benchmark's HTTP server: Node's HTTP/1.1 server answering every request itself, with the waypoint's L7
 * policy step (1,000 policies and a JWT check, bench/l7-scenario.ts) at the start of its handler, or without it
 * (`--policies 0`). Either way the handler copies the request's headers for forwarding, as the waypoint does for
 * every request (Node builds `request.headers` lazily: a server that never reads them would hide that cost). Requests are attributed to one peer identity whose policies match some requests, as if they
 * came over one HBONE stream. `GET /__cpu` answers this process's CPU seconds (outside the gate).
 *
 *   node bench/tools/l7-gate-server.ts --policies 1000   -> prints {"ready": {"port": N}}
 * Owns: nothing beyond this. Must not know about: the load generator.
 */
import http from 'node:http';
import { parseArgs } from 'node:util';
import { spiffeId } from '../../shared/identity/index.ts';
import type { HboneRequest } from '../../shared/hbone/index.ts';
import { benchGate } from '../l7-gate.ts';
import { l7Scenario } from '../l7-scenario.ts';

const { values } = parseArgs({ options: { policies: { type: 'string', default: '1000' } } });
const count = Number(values.policies);
const scenario = count > 0 ? await l7Scenario(count) : undefined;
const { gate } = benchGate(scenario);
const hbone: HboneRequest = { peerIdentity: spiffeId('cluster.local', 'ns-1', 'sa-1'), target: { host: '10.240.0.10', port: 80 }, headers: {}, remoteAddress: '10.1.0.7' };
const service = { namespace: 'shop', name: 'web' };
/** Keeps the header copy observable, so it is not optimised away. */
export let sink: object = {};
const server = http.createServer({ keepAlive: true }, async (request, response) => {
  if (request.url === '/__cpu') {
    const usage = process.cpuUsage();
    response.end(JSON.stringify({ cpuSeconds: (usage.user + usage.system) / 1e6 }));
    return;
  }
  const refusal = await gate.check(request, response, hbone, service);
  if (refusal) return;
  const forwarded: Record<string, string | string[] | undefined> = {};
  for (const name in request.headers) if (name !== 'connection') forwarded[name] = request.headers[name];
  sink = forwarded;
  request.resume();
  response.writeHead(200, { 'content-type': 'text/plain', 'content-length': 2 }).end('ok');
});
// The ready line carries a token this server's keys sign (the load generator sends it) and request paths, half of
// them allowed for the server's peer identity.
const paths = scenario ? await pathsFor(scenario) : [];
server.listen(0, '127.0.0.1', () => process.stdout.write(JSON.stringify({ ready: { port: (server.address() as { port: number }).port, token: scenario?.requests[0]!.headers.authorization, paths } }) + '\n'));

async function pathsFor(built: NonNullable<typeof scenario>): Promise<string[]> {
  const probe = benchGate(built).gate;
  const allowed: string[] = [];
  const denied: string[] = [];
  const response = { status: 200, writeHead(status: number) { this.status = status; return this; }, end: () => {} };
  for (const request of built.requests) {
    response.status = 200;
    await probe.check({ method: 'GET', url: request.url, headers: { ...built.requests[0]!.headers, 'x-tenant': 't-3' }, resume: () => {} }, response, hbone, service);
    (response.status === 200 ? allowed : denied).push(request.url);
  }
  return [...allowed.slice(0, 8), ...denied.slice(0, 8)];
}
// Exit with the bench runner (stdin is its pipe), even when it is killed.
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
