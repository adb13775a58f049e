/**
 * Test program, run inside a pod's network namespace: a real HBONE server (shared/hbone) on port 15008 that
 * presents whatever mesh certificate the test hands it, to stand in for a destination's agent that serves another
 * identity than the workload table says. Delivers accepted streams to 127.0.0.1:<target port> in the pod.
 *
 *   node impostor-hbone-server.ts <certificate.json> <target port>
 *
 * certificate.json: a WorkloadCertificate as JSON (dates as strings). Prints JSON lines on stdout:
 * `{"listening":15008}` once it accepts, `{"stream":"<client principal>"}` per CONNECT it was asked,
 * `{"rejected":"<code>"}` per connection or stream it refused (a client that walked away mid-handshake shows here).
 * Used by tests only.
 */
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { HboneServer } from '../../../shared/hbone/index.ts';
import { parseSpiffeId, type WorkloadCertificate } from '../../../shared/identity/index.ts';

const HBONE_PORT = 15008;

const [certificateFile, targetPort] = process.argv.slice(2);
const raw = JSON.parse(readFileSync(certificateFile!, 'utf8')) as Omit<WorkloadCertificate, 'identity' | 'notBefore' | 'notAfter'> & { identity: { uri: string }; notBefore: string; notAfter: string };
const certificate: WorkloadCertificate = { ...raw, identity: parseSpiffeId(raw.identity.uri), notBefore: new Date(raw.notBefore), notAfter: new Date(raw.notAfter) };

const server = new HboneServer({
  certificateFor: () => certificate,
  rootsPem: certificate.rootsPem,
  trustDomain: certificate.identity.trustDomain,
  decide: (request) => {
    console.log(JSON.stringify({ stream: request.peerIdentity.uri }));
    return { allow: true };
  },
  connect: () => net.connect({ host: '127.0.0.1', port: Number(targetPort) }),
  onError: (error) => console.log(JSON.stringify({ rejected: error.code })),
});
const bound = await server.listen({ host: '0.0.0.0', port: HBONE_PORT });
console.log(JSON.stringify({ listening: bound.port }));
process.on('SIGTERM', () => process.exit(0));
