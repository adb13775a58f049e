/**
 * The gRPC backend of the waypoint suite: a cleartext HTTP/2 (h2c) server answering every unary call, whatever its
 * method, once the request's message has arrived, with one length-prefixed message of a fixed size, `x-backend:
 * <name>` and the trailers `grpc-status: 0` (the gRPC wire protocol over HTTP/2, as gRPC servers send it).
 *
 *   node bench/tools/grpc-target.ts --host H --port P --name NAME [--size BYTES]
 *
 * Prints `{"ready":{"port":P}}`. Must not know about: what sits in front of it.
 */
import http2 from 'node:http2';
import { parseArgs } from 'node:util';
import { announceReady, exitWithParent } from './common.ts';
import { grpcFrame } from './grpc-wire.ts';

const { values } = parseArgs({ options: { host: { type: 'string', default: '0.0.0.0' }, port: { type: 'string' }, name: { type: 'string', default: 'target' }, size: { type: 'string', default: '1024' } } });
const message = grpcFrame(Number(values.size));
const headers = { ':status': 200, 'content-type': 'application/grpc', 'x-backend': values.name };
const trailers = { 'grpc-status': '0' };

const server = http2.createServer({ settings: { maxConcurrentStreams: 1000 } });
server.on('stream', (stream) => {
  stream.on('data', () => {});
  stream.once('end', () => {
    if (stream.destroyed) return;
    stream.respond(headers, { waitForTrailers: true });
    stream.once('wantTrailers', () => stream.sendTrailers(trailers));
    stream.end(message);
  });
  stream.on('error', () => {});
});
server.on('sessionError', () => {});
server.listen({ host: values.host, port: Number(values.port), backlog: 4096 }, () => announceReady({ port: (server.address() as { port: number }).port }));
exitWithParent();
