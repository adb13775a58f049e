/**
 * "Our client": a process that accepts plain TCP and carries each connection in an HBONE stream from a pooled
 * mutual-TLS HTTP/2 connection, as the agent's outbound path does (without capture, policy or telemetry).
 *
 *   relay-hbone-client.ts --cert client.json --proxy 127.0.0.1:<our server> --destination 127.0.0.1:<target>
 *                         --expect spiffe://.../sa/bench-server
 *
 * Listens on 127.0.0.1:0 and prints `{"ready":{"port":N}}`.
 * Must not know about: the load or the anchor.
 */
import net from 'node:net';
import { parseArgs } from 'node:util';
import { HboneClientPool } from '../../shared/hbone/index.ts';
import type { HboneTarget } from '../../shared/hbone/types.ts';
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
const pool = new HboneClientPool({
  certificateFor: () => certificate,
  trustDomain: certificate.identity.trustDomain,
});
const target: HboneTarget = {
  proxy: parseHostPort(values.proxy),
  destination: parseHostPort(values.destination),
  sourceIdentity: certificate.identity,
  expectedIdentities: values.expect,
};

const server = net.createServer({ noDelay: true, allowHalfOpen: true }, (socket) => {
  socket.on('error', () => socket.destroy());
  pool.tunnel(target, socket).catch((error: unknown) => {
    process.stderr.write(`tunnel failed: ${(error as Error).message}\n`);
    socket.destroy();
  });
});
server.listen({ host: '127.0.0.1', port: 0, backlog: 4096 }, () => {
  announceReady({ port: (server.address() as net.AddressInfo).port });
});
exitWithParent(() => void pool.close());
