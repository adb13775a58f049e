// Unit tests: agent/telemetry/access-log.ts and reporter.ts — one JSON line per finished connection with
// the facts an operator looks for, and metrics and logs fed by the one reporter the proxy calls.
import test from 'ava';
import fc from 'fast-check';
import { ACCESS_LOG_MESSAGE, AccessLog, accessLogFieldsJson, accessLogLine } from '../../agent/telemetry/access-log.ts';
import { responseFlagsFor } from '../../agent/telemetry/metrics.ts';
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

test('the reporter asks for source addresses only while clean connections get a line (info), not at warn', (t) => {
  const metrics = new AgentMetrics({ processMetrics: false });
  t.true(telemetryReporter({ metrics, accessLog: new AccessLog(captureLog('info').log) }).sourceAddressWanted!());
  t.false(telemetryReporter({ metrics, accessLog: new AccessLog(captureLog('warn').log) }).sourceAddressWanted!());
  t.false(telemetryReporter({ metrics }).sourceAddressWanted!(), 'no access log, no line');
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

// The line is built as JSON text for pino loggers (shared/telemetry/raw-log-line.ts): it must say exactly what the
// object form says, for any record, and be framed exactly as pino frames the object form.
const text = fc.string({ unit: 'grapheme', maxLength: 12 });
// Namespaces and service accounts are Kubernetes names (the mesh state holds no other): they make the identity.
const kubernetesName = fc.stringMatching(/^[a-z][a-z0-9-]{0,10}[a-z0-9]$/);
const anyWorkload = fc.record({ name: text, namespace: kubernetesName, serviceAccount: kubernetesName }).map(({ name, namespace, serviceAccount }) => ({ ...client, uid: `${name}-uid`, name, namespace, serviceAccount }));
const anyRecord: fc.Arbitrary<ConnectionRecord> = fc.record(
  {
    direction: fc.constantFrom('outbound' as const, 'inbound' as const),
    source: anyWorkload,
    sourcePrincipal: text,
    sourceAddress: fc.oneof(fc.ipV4(), fc.ipV6(), text),
    destination: anyWorkload,
    destinationPrincipal: text,
    destinationAddress: fc.record({ host: fc.oneof(fc.ipV4(), fc.ipV6(), text), port: fc.integer({ min: 0, max: 65535 }) }),
    destinationService: fc.record({ hostname: text, name: text, namespace: text }),
    mtls: fc.boolean(),
    bytesSent: fc.oneof(fc.nat(), fc.constant(Number.NaN)),
    bytesReceived: fc.nat(),
    durationMs: fc.oneof(fc.double({ min: 0, max: 1e7, noNaN: true }), fc.constant(Number.POSITIVE_INFINITY)),
    error: text.map((message) => new Error(message)),
    responseFlags: fc.constantFrom('UF', 'UAEX', '"odd\\flag'),
  },
  { requiredKeys: ['direction', 'destinationAddress', 'mtls', 'bytesSent', 'bytesReceived', 'durationMs'] },
);

test('the access line built as text says what the object form says, for any record (quotes, backslashes, control and non-ASCII characters, NaN)', (t) => {
  fc.assert(
    fc.property(anyRecord, (record) => {
      const fields = accessLogFieldsJson(record, responseFlagsFor(record));
      const parsed = JSON.parse(`{${fields.slice(1)}}`) as unknown;
      // JSON.stringify then parse: the object form as it reaches the log (undefined keys dropped, NaN -> null).
      t.deepEqual(parsed, JSON.parse(JSON.stringify(accessLogLine(record))));
      return true;
    }),
    { numRuns: 2000 },
  );
});

test('through pino the text line is framed as pino frames the object (level, time, bindings, message), on the same stream, at the level in force now', (t) => {
  const { log, lines } = captureLog();
  const child = log.child({ node: 'node-1', worker: 0 });
  const record: ConnectionRecord = {
    direction: 'outbound', source: client, sourceAddress: '10.0.0.7', destination: server, destinationPrincipal: 'spiffe://cluster.local/ns/shop/sa/server-sa',
    destinationAddress: { host: '10.0.1.9', port: 8080 }, mtls: true, bytesSent: 5, bytesReceived: 7, durationMs: 2.5,
  };
  const access = new AccessLog(child);
  access.closed(record);
  child.info(accessLogLine(record), ACCESS_LOG_MESSAGE);
  t.is(lines.length, 2);
  const [fast, object] = lines as [Record<string, unknown>, Record<string, unknown>];
  t.true(typeof fast.time === 'number' && Math.abs((fast.time as number) - (object.time as number)) < 1000);
  t.deepEqual({ ...fast, time: 0 }, { ...object, time: 0 });
  t.deepEqual(Object.keys(fast), Object.keys(object), 'same keys in the same order');
  child.level = 'warn';
  access.closed(record);
  t.is(lines.length, 2, 'a clean connection is not logged at warn');
  access.closed({ ...record, error: new Error('reset') });
  t.is(lines.length, 3, 'a failed one is (error level)');
  t.like(lines[2], { level: 50, node: 'node-1', worker: 0, error: 'reset', msg: ACCESS_LOG_MESSAGE });
});

test('a logger that is no plain pino logger gets the object form', (t) => {
  const logged: Array<[string, object, string]> = [];
  const fake = {
    info: (object: object, message: string) => logged.push(['info', object, message]),
    error: (object: object, message: string) => logged.push(['error', object, message]),
    debug: () => {},
    isLevelEnabled: () => true,
  };
  const record: ConnectionRecord = { direction: 'inbound', destinationAddress: { host: '10.0.1.9', port: 8080 }, mtls: false, bytesSent: 1, bytesReceived: 2, durationMs: 3 };
  new AccessLog(fake).closed(record);
  t.deepEqual(logged, [['info', accessLogLine(record), ACCESS_LOG_MESSAGE]]);
});
