/**
 * The HTTP/1.1 backend of the waypoint suite: answers every request (after reading its body) with a fixed-size body
 * and `x-backend: <name>`, so the load tool can count which backend a weighted route chose.
 *
 *   node bench/tools/http-target.ts --host H --port P --name NAME [--size BYTES]
 *
 * Keep-alive, Nagle off. Prints `{"ready":{"port":P}}`. Must not know about: what sits in front of it.
 */
import http from 'node:http';
import { parseArgs } from 'node:util';
import { announceReady, exitWithParent } from './common.ts';

const { values } = parseArgs({ options: { host: { type: 'string', default: '0.0.0.0' }, port: { type: 'string' }, name: { type: 'string', default: 'target' }, size: { type: 'string', default: '1024' } } });
const body = Buffer.alloc(Number(values.size), 'x');
const headers = { 'content-type': 'application/octet-stream', 'content-length': String(body.length), 'x-backend': values.name };
const server = http.createServer({ keepAliveTimeout: 60_000, noDelay: true }, (request, response) => {
  request.on('data', () => {});
  request.on('end', () => response.writeHead(200, headers).end(body));
});
server.listen({ host: values.host, port: Number(values.port), backlog: 4096 }, () => announceReady({ port: (server.address() as { port: number }).port }));
exitWithParent();
