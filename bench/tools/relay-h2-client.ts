/**
 * "Our client" on ambit's own HTTP/2 layer (shared/hbone/h2/): accepts plain TCP and carries each connection in
 * a CONNECT stream of a shared mutual-TLS connection, like relay-hbone-client.ts does with node:http2.
 *
 *   relay-h2-client.ts --cert client.json --proxy 127.0.0.1:<server> --destination 127.0.0.1:<target> --expect <spiffe>
 *
 * Listens on 127.0.0.1:0 and prints `{"ready":{"port":N}}`. Keeps one connection and dials another only when it
 * is full or gone (the pool's job, reduced to what a benchmark needs).
 * Must not know about: the load or the anchors.
 */
import net from 'node:net';
import { parseArgs } from 'node:util';
import { DEFAULT_MAX_STREAMS_PER_CONNECTION } from '../../shared/hbone/config.ts';
import type { H2Connection } from '../../shared/hbone/h2/connection.ts';
import { spliceH2 } from '../../shared/hbone/h2/splice.ts';
import { dialH2, openConnectStream } from '../../shared/hbone/h2/tunnel-client.ts';
import { announceReady, exitWithParent, parseHostPort, readWorkloadCertificate } from './common.ts';

const { values } = parseArgs({
  options: {
    cert: { type: 'string' },
    proxy: { type: 'string' },
    destination: { type: 'string' },
    expect: { type: 'string', multiple: true, default: [] },
  },
});
if (!values.cert || !values.proxy || !values.destination) throw new Error('--cert, --proxy and --destination are required');

const certificate = readWorkloadCertificate(values.cert);
const proxy = parseHostPort(values.proxy);
const destination = parseHostPort(values.destination);
let current: H2Connection | undefined;
let dialing: Promise<H2Connection> | undefined;

function usable(connection: H2Connection | undefined): connection is H2Connection {
  return connection !== undefined && connection.available && connection.activeStreams < DEFAULT_MAX_STREAMS_PER_CONNECTION;
}

async function connection(): Promise<H2Connection> {
  if (usable(current)) return current;
  dialing ??= dialH2({
    proxy,
    certificate,
    trustDomain: certificate.identity.trustDomain,
    expectedIdentities: values.expect,
    connect: (target) => net.connect({ host: target.host, port: target.port }),
  }).finally(() => (dialing = undefined));
  current = await dialing;
  return current;
}

const server = net.createServer({ noDelay: true, allowHalfOpen: true }, (socket) => {
  socket.on('error', () => socket.destroy());
  void (async () => {
    try {
      const stream = await openConnectStream(await connection(), { proxy, destination });
      await spliceH2(socket, stream);
    } catch (error) {
      process.stderr.write(`tunnel failed: ${(error as Error).message}\n`);
      socket.destroy();
    }
  })();
});
server.listen({ host: '127.0.0.1', port: 0, backlog: 4096 }, () => {
  announceReady({ port: (server.address() as net.AddressInfo).port });
});
exitWithParent(() => current?.close());
