// Unit tests: agent/admin.ts and agent/telemetry/metrics-server.ts over real HTTP — the config dump's
// content, changing the log level at runtime, health, and /metrics as Prometheus scrapes it.
import test from 'ava';
import { X509Certificate } from 'node:crypto';
import { configFromEnv } from '../../agent/config.ts';
import { AgentMetrics } from '../../agent/telemetry/metrics.ts';
import { startMetricsServer } from '../../agent/telemetry/metrics-server.ts';
import { startAdminFixture, type AdminFixture } from '../helpers/admin-fixture.ts';
import { parsePrometheusText, sumOf } from '../helpers/prometheus-text.ts';

let fixture: AdminFixture;

test.before(async () => {
  fixture = await startAdminFixture();
});

test.after.always(async () => {
  await fixture?.server.close();
});

test.serial('/config_dump: workloads with identities, captured pods, certificates with expiry and serial (never keys), policies', async (t) => {
  const response = await fetch(`${fixture.url}/config_dump`);
  t.is(response.status, 200);
  t.regex(response.headers.get('content-type') ?? '', /application\/json/);
  const text = await response.text();
  t.false(text.includes('PRIVATE KEY'), 'no private key leaves the agent');
  t.false(text.includes('keyPem'));
  const dump = JSON.parse(text);
  t.is(dump.node, 'node-1');
  t.deepEqual(dump.workloads.map((w: { namespace: string; name: string }) => `${w.namespace}/${w.name}`), ['old/legacy', 'shop/db', 'shop/web']);
  t.like(dump.workloads[2], { addresses: ['10.1.1.5'], tunnelProtocol: 'HBONE', identity: 'spiffe://cluster.local/ns/shop/sa/web' });
  t.like(dump.capturedPods[0], { name: 'web', namespace: 'shop', ips: ['10.1.1.5'], listeners: { accepted: 4 } });
  t.is(dump.certificates.length, 2);
  const web = dump.certificates.find((c: { identity: string }) => c.identity === 'spiffe://cluster.local/ns/shop/sa/web');
  const x509 = new X509Certificate(fixture.certificates[0]!.certPem);
  t.like(web, { state: 'Available', serial: x509.serialNumber, notAfter: fixture.certificates[0]!.notAfter.toISOString(), notBefore: fixture.certificates[0]!.notBefore.toISOString() });
  t.true(web.expiresInSeconds > 3500 && web.expiresInSeconds <= 3600);
  t.deepEqual(dump.policies, [{ name: 'allow-web', namespace: 'shop', action: 'ALLOW' }]);
  t.deepEqual(dump.services.map((service: { hostname: string }) => service.hostname), ['db.shop.svc.cluster.local', 'web.shop.svc.cluster.local']);
  t.like(dump.services[1], { vips: [{ address: '10.96.0.10' }, { address: 'fd00:96::10' }], endpoints: [{ name: 'web', status: 'HEALTHY', ports: [{ servicePort: 80, targetPort: 8080 }] }] });
  t.like(dump.services[0], { vips: [], endpoints: [{ name: 'db', status: 'UNHEALTHY' }] });
  t.like(dump.config, { trustDomain: 'cluster.local' });
});

test.serial('/logging changes the level at runtime: debug lines appear after, and a bad level is refused', async (t) => {
  const { log, lines } = fixture.captured;
  log.debug('before');
  t.is(lines.filter((line) => line.msg === 'before').length, 0);
  t.deepEqual(await (await fetch(`${fixture.url}/logging`)).json(), { level: 'info' });
  const changed = await fetch(`${fixture.url}/logging?level=debug`, { method: 'POST' });
  t.is(changed.status, 200);
  t.deepEqual(await changed.json(), { level: 'debug', previous: 'info' });
  log.debug('after');
  t.is(lines.filter((line) => line.msg === 'after').length, 1, 'the running logger now writes debug lines');
  const bad = await fetch(`${fixture.url}/logging?level=loud`);
  t.is(bad.status, 400);
  t.regex(((await bad.json()) as { error: string }).error, /unknown log level "loud".*debug/);
  t.is(log.level, 'debug', 'a refused change leaves the level alone');
  await fetch(`${fixture.url}/logging?level=info`);
  t.is(log.level, 'info', 'GET with ?level= works too');
});

test.serial('/healthz answers; unknown paths say where to look', async (t) => {
  const health = await fetch(`${fixture.url}/healthz`);
  t.is(health.status, 200);
  const missing = await fetch(`${fixture.url}/stats`);
  t.is(missing.status, 404);
  t.regex(((await missing.json()) as { error: string }).error, /config_dump/);
});

test('/metrics serves the Prometheus text of the agent\'s registry; two agents can hold the port (SO_REUSEPORT)', async (t) => {
  const metrics = new AgentMetrics();
  metrics.connectionClosed({ direction: 'outbound', destinationAddress: { host: '10.0.0.1', port: 80 }, mtls: false, bytesSent: 11, bytesReceived: 22, durationMs: 1 });
  const first = await startMetricsServer({ host: '127.0.0.1', port: 0 }, metrics);
  t.teardown(() => first.close());
  const second = await startMetricsServer({ host: '127.0.0.1', port: first.address.port }, new AgentMetrics({ processMetrics: false }));
  t.teardown(() => second.close());
  await second.close();
  const response = await fetch(`http://127.0.0.1:${first.address.port}/metrics`);
  t.is(response.status, 200);
  t.regex(response.headers.get('content-type') ?? '', /text\/plain/);
  const samples = parsePrometheusText(await response.text());
  t.is(sumOf(samples, 'istio_tcp_connections_closed_total', { reporter: 'source' }), 1);
  t.is(sumOf(samples, 'istio_tcp_received_bytes_total'), 11);
  t.true(sumOf(samples, 'process_cpu_seconds_total') > 0);
  t.is((await fetch(`http://127.0.0.1:${first.address.port}/`)).status, 404);
});

test('the metrics port is configurable (AMBIT_METRICS_PORT), 15020 on every address by default; admin stays on localhost', (t) => {
  const base = { AMBIT_NODE_NAME: 'n0', AMBIT_CLUSTER_DIR: '/tmp/c', AMBIT_LOCAL_CA_DIR: '/tmp/ca' };
  const defaults = configFromEnv(base);
  t.deepEqual(defaults.metricsAddress, { host: '0.0.0.0', port: 15020 });
  t.deepEqual(defaults.adminAddress, { host: '127.0.0.1', port: 15000 });
  t.is(configFromEnv({ ...base, AMBIT_METRICS_PORT: '19020' }).metricsAddress.port, 19020);
  t.throws(() => configFromEnv({ ...base, AMBIT_METRICS_PORT: 'lots' }), { message: /AMBIT_METRICS_PORT=lots is not a port number/ });
});

test.serial('/memory: where the process\'s memory is (RSS split, V8 spaces, the node binary\'s mapping, live handles)', async (t) => {
  const response = await fetch(`${fixture.url}/memory`);
  t.is(response.status, 200);
  const report = (await response.json()) as {
    rss: { total: number; anonymous: number; file: number };
    mappings: { name: string; rssBytes: number }[];
    process: { heapUsed: number };
    heap: { committed: number; used: number };
    spaces: { name: string; committed: number }[];
    resources: Record<string, number>;
    hboneSessionSockets: { writesHeld: number; largestQueueBytes: number; endsCut: number };
  };
  t.true(report.rss.total > 0 && report.rss.anonymous > 0 && report.rss.file > 0);
  t.true(Math.abs(report.rss.anonymous + report.rss.file - report.rss.total) < 4 * 1024 * 1024, 'the split adds up to the RSS');
  t.true(report.mappings.some((mapping) => mapping.name === process.execPath && mapping.rssBytes > 0), 'the node binary\'s resident pages are listed');
  t.true(report.spaces.some((space) => space.name === 'old_space' && space.committed > 0));
  t.true(report.heap.used > 0 && report.heap.used <= report.heap.committed);
  t.true((report.resources['TCPServerWrap'] ?? 0) >= 1, 'the admin listener itself is a live handle');
  t.deepEqual(Object.keys(report.hboneSessionSockets).sort(), ['endsCut', 'largestQueueBytes', 'writesHeld'], 'the node:http2 sessions\' socket bound counters');
});
