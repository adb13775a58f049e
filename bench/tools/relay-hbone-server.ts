/**
 * "Our server": a process that terminates HBONE (mutual TLS 1.3, HTTP/2 CONNECT) and connects each stream to
 * its `:authority` over plain TCP with the library's default connector, as the agent's inbound 15008 path does
 * (without policy or in-pod sockets).
 *
 *   relay-hbone-server.ts --cert server.json
 *
 * Listens on 127.0.0.1:0 and prints `{"ready":{"port":N}}`.
 * Must not know about: the load or the anchor.
 */
import { parseArgs } from 'node:util';
import { HboneServer } from '../../shared/hbone/index.ts';
import { announceReady, exitWithParent, readWorkloadCertificate } from './common.ts';

const { values } = parseArgs({ options: { cert: { type: 'string' } } });
if (!values.cert) throw new Error('--cert is required');

const certificate = readWorkloadCertificate(values.cert);
const server = new HboneServer({
  certificateFor: () => certificate,
  rootsPem: certificate.rootsPem,
  trustDomain: certificate.identity.trustDomain,
});
const { port } = await server.listen({ host: '127.0.0.1', port: 0 });
announceReady({ port });
exitWithParent(() => void server.shutdown(0));
