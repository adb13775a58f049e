/**
 * The agent's DNS proxy alone, for the dns suite: the real DnsServer over a real MeshState (through
 * MeshServiceRecords, as the agent wires it) holding `--services` Services `svc-<i>.bench.svc.cluster.local` with one
 * VIP each, serving UDP on 127.0.0.1 from one thread with its Prometheus series, as the agent's main thread serves
 * every captured pod.
 *   node bench/tools/dns-server.ts --services 1000   -> {"ready":{"port":N}}
 * Must not know about: the load, the anchor.
 */
import dgram from 'node:dgram';
import { parseArgs } from 'node:util';
import { Registry } from 'prom-client';
import { Forwarder } from '../../agent/dns/forwarder.ts';
import { DnsMetrics } from '../../agent/dns/metrics.ts';
import { MeshServiceRecords } from '../../agent/dns/mesh-records.ts';
import { DnsServer } from '../../agent/dns/server.ts';
import { serveUdp } from '../../agent/dns/transport.ts';
import { plainSocketFactory } from '../../agent/inpod/socket-factory.ts';
import { MeshState } from '../../shared/mesh/mesh-state.ts';
import { announceReady, exitWithParent } from './common.ts';
import { benchServiceAddress, benchServiceName } from './dns-names.ts';

const { values } = parseArgs({ options: { services: { type: 'string', default: '1000' } } });
const count = Number(values.services);

const state = new MeshState();
for (let index = 0; index < count; index++) {
  state.upsertService({
    name: `svc-${index}`, namespace: 'bench', hostname: benchServiceName(index), vips: [{ network: '', address: benchServiceAddress(index) }],
    ports: [{ servicePort: 80, targetPort: 8080 }], subjectAltNames: [], ipFamilies: 'IPV4_ONLY',
  });
}
// With its metrics, as the agent runs it.
const server = new DnsServer({ domain: 'cluster.local', records: new MeshServiceRecords(state), forwarder: new Forwarder({ upstreams: [] }), metrics: new DnsMetrics(new Registry()) });
const socket = dgram.createSocket('udp4');
socket.bind(0, '127.0.0.1', () => {
  serveUdp(socket, server, { namespace: 'bench', sockets: plainSocketFactory(), source: { canonicalService: 'bench', canonicalRevision: 'latest' }, metricsCache: new Map() });
  announceReady({ port: socket.address().port });
});
exitWithParent();
