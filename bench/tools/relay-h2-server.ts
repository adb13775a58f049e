/**
 * "Our server" on ambit's own HTTP/2 layer (shared/hbone/h2/): terminates HBONE (mutual TLS 1.3, HTTP/2
 * CONNECT) and connects each stream to its `:authority`, like relay-hbone-server.ts does with node:http2.
 *
 *   relay-h2-server.ts --cert server.json
 *
 * Listens on 127.0.0.1:0 and prints `{"ready":{"port":N}}`.
 * Must not know about: the load or the anchors.
 */
import { parseArgs } from 'node:util';
import { H2TunnelServer } from '../../shared/hbone/h2/tunnel-server.ts';
import { announceReady, exitWithParent, readWorkloadCertificate } from './common.ts';

const { values } = parseArgs({ options: { cert: { type: 'string' } } });
if (!values.cert) throw new Error('--cert is required');

const certificate = readWorkloadCertificate(values.cert);
const server = new H2TunnelServer({
  certificateFor: () => certificate,
  rootsPem: certificate.rootsPem,
  trustDomain: certificate.identity.trustDomain,
});
const { port } = await server.listen({ host: '127.0.0.1', port: 0 });
announceReady({ port });
exitWithParent(() => void server.shutdown(0));
