// Unit tests: agent/telemetry/access-log.ts and reporter.ts — one JSON line per finished connection with
// the facts an operator looks for, and metrics and logs fed by the one reporter the proxy calls.
import test from 'ava';
import { AccessLog } from '../../agent/telemetry/access-log.ts';
import { AgentMetrics } from '../../agent/telemetry/metrics.ts';
import { telemetryReporter } from '../../agent/telemetry/reporter.ts';
import type { ConnectionRecord } from '../../agent/proxy/report.ts';
import type { Workload } from '../../shared/mesh/workload.ts';
import { HboneError } from '../../shared/hbone/errors.ts';
import { captureLog } from '../helpers/log-capture.ts';
import { parsePrometheusText, sumOf } from '../helpers/prometheus-text.ts';

function workload(name: string, namespace: string, ip: string): Workload {
  return {
    uid: `${name}-uid`, name: `${name}-0`, namespace, serviceAccount: `${name}-sa`, trustDomain: 'cluster.local', node: 'n0', addresses: [ip],
    tunnelProtocol: 'HBONE', captureReason: '', canonicalName: name, canonicalRevision: 'v1', workloadName: name,
  };
}
const client = workload('client', 'shop', '10.0.0.7');
const server = workload('server', 'shop', '10.0.1.9');

test('a finished inbound mTLS connection: addresses, workloads, identities, service, bytes, duration', (t) => {
  const { log, lines } = captureLog();
  const record: ConnectionRecord = {
    direction: 'inbound', source: client, sourcePrincipal: 'spiffe://cluster.local/ns/shop/sa/client-sa', sourceAddress: '10.0.0.7',
    destination: server, destinationAddress: { host: '10.0.1.9', port: 8080 }, destinationService: { hostname: 'server.shop.svc.cluster.local', name: 'server', namespace: 'shop' },
    mtls: true, bytesSent: 2048, bytesReceived: 512, durationMs: 12.34567,
  };
  new AccessLog(log).closed(record);
  t.is(lines.length, 1);
  t.like(lines[0], {
    level: 30,
    msg: 'connection closed',
    scope: 'access',
    direction: 'inbound',
    src: { address: '10.0.0.7', workload: 'client-0', namespace: 'shop', principal: 'spiffe://cluster.local/ns/shop/sa/client-sa' },
    dst: { address: '10.0.1.9:8080', workload: 'server-0', namespace: 'shop', principal: 'spiffe://cluster.local/ns/shop/sa/server-sa', service: 'server.shop.svc.cluster.local' },
    mtls: true,
    connection_security_policy: 'mutual_tls',
    bytes_sent: 2048,
    bytes_received: 512,
    duration_ms: 12.346,
    response_flags: '-',
  });
  t.false('error' in lines[0]!);
});

test('plaintext shows no identities; a failure is logged at error level with its message and flag', (t) => {
  const { log, lines } = captureLog();
  const access = new AccessLog(log);
  access.closed({ direction: 'outbound', source: client, destinationAddress: { host: '192.168.9.9', port: 443 }, mtls: false, bytesSent: 10, bytesReceived: 0, durationMs: 3, error: Object.assign(new Error('connect ECONNREFUSED 192.168.9.9:443'), { code: 'ECONNREFUSED' }) });
  access.closed({ direction: 'inbound', source: client, sourcePrincipal: 'spiffe://cluster.local/ns/shop/sa/client-sa', destination: server, destinationAddress: { host: '10.0.1.9', port: 8080 }, mtls: true, bytesSent: 0, bytesReceived: 0, durationMs: 1, error: new HboneError('HBONE_DENIED', 'denied by policy') });
  t.like(lines[0], { level: 50, direction: 'outbound', mtls: false, connection_security_policy: 'unknown', response_flags: 'UF', error: 'connect ECONNREFUSED 192.168.9.9:443', dst: { address: '192.168.9.9:443' } });
  t.is(lines[0]!.src.principal, undefined, 'plaintext proves no identity');
  t.is(lines[0]!.dst.workload, undefined, 'a destination outside the mesh has no workload');
  t.like(lines[1], { level: 50, response_flags: 'UAEX', error: 'denied by policy', src: { principal: 'spiffe://cluster.local/ns/shop/sa/client-sa' } });
});

test('outbound mTLS: the destination identity is the one its certificate proved, not the workload table\'s; none if never established', (t) => {
  const { log, lines } = captureLog();
  const access = new AccessLog(log);
  const established: ConnectionRecord = {
    direction: 'outbound', source: client, destination: server, destinationPrincipal: 'spiffe://cluster.local/ns/shop/sa/presented', destinationAddress: { host: '10.0.1.9', port: 8080 },
    mtls: true, bytesSent: 1, bytesReceived: 1, durationMs: 1,
  };
  access.closed(established);
  access.closed({ direction: 'outbound', source: client, destination: server, destinationAddress: { host: '10.0.1.9', port: 8080 }, mtls: true, bytesSent: 0, bytesReceived: 0, durationMs: 1, error: new HboneError('HBONE_PEER_IDENTITY', 'not who we expected') });
  t.like(lines[0], { dst: { workload: 'server-0', principal: 'spiffe://cluster.local/ns/shop/sa/presented' }, src: { principal: 'spiffe://cluster.local/ns/shop/sa/client-sa' } });
  t.is(lines[1]!.dst.principal, undefined, 'refused before any certificate was accepted: no destination identity is claimed');
  t.is(lines[1]!.dst.workload, 'server-0', 'the workload it was meant for is still named');
});

test('"connection opened" is logged only at debug level', (t) => {
  const info = captureLog('info');
  const record: ConnectionRecord = { direction: 'outbound', source: client, destination: server, destinationAddress: { host: '10.0.1.9', port: 8080 }, mtls: true, bytesSent: 0, bytesReceived: 0, durationMs: 0 };
  new AccessLog(info.log).opened(record);
  t.is(info.lines.length, 0);
  const debug = captureLog('debug');
  new AccessLog(debug.log).opened(record);
  t.like(debug.lines[0], { level: 20, msg: 'connection opened', direction: 'outbound', src: { principal: 'spiffe://cluster.local/ns/shop/sa/client-sa' } });
});

test('the reporter feeds metrics and the access log from the same record, and a telemetry bug never throws into the proxy', async (t) => {
  const { log, lines } = captureLog();
  const metrics = new AgentMetrics({ processMetrics: false });
  const errors: Error[] = [];
  const reporter = telemetryReporter({ metrics, accessLog: new AccessLog(log), onError: (error) => errors.push(error) });
  const record: ConnectionRecord = { direction: 'outbound', source: client, destination: server, destinationAddress: { host: '10.0.1.9', port: 8080 }, mtls: true, bytesSent: 0, bytesReceived: 0, durationMs: 0 };
  reporter.opened(record);
  record.bytesSent = 300;
  record.bytesReceived = 30;
  reporter.closed(record);
  const samples = parsePrometheusText(await metrics.text());
  t.is(sumOf(samples, 'istio_tcp_connections_opened_total', { reporter: 'source' }), 1);
  t.is(sumOf(samples, 'istio_tcp_received_bytes_total', { reporter: 'source' }), 300);
  t.is(lines.length, 1);
  t.is(lines[0]!.bytes_sent, 300);
  const broken = { ...record, liveBytes: undefined, get destinationAddress(): never { throw new Error('boom'); } } as unknown as ConnectionRecord;
  t.notThrows(() => reporter.closed(broken));
  t.is(errors.length, 1);
});
