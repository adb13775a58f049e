// The local runtime's Services logic without namespaces: the cluster IP allocator, the Services controller over a
// real temp directory (assignment, write-back, refusals, endpoints, readiness), the kube-proxy ruleset text and the
// cluster DNS files.
import test from 'ava';
import { mkdtemp, readFile, rm, writeFile, mkdir } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { stringify } from 'yaml';
import { Cidr, ClusterIpAllocator, bigIntToIp, canonicalIp, ipToBigInt } from '../../runtime/service-ips.ts';
import { ClusterServices, isPodReady, type ServiceObject, type ServiceTable } from '../../runtime/services.ts';
import type { RuntimeError } from '../../runtime/errors.ts';
import { renderFamily, renderRuleset } from '../../runtime/kube-proxy.ts';
import { renderHostsFile, renderResolvConf } from '../../runtime/cluster-dns.ts';
import type { PodObject } from '../../shared/k8s/objects.ts';

test('addresses round-trip through numbers, IPv6 in RFC 5952 form', (t) => {
  t.is(bigIntToIp(ipToBigInt('10.240.0.1'), 'IPv4'), '10.240.0.1');
  t.is(canonicalIp('FD00:00F0:0:0:0:0:0:000A'), 'fd00:f0::a');
  t.is(canonicalIp('fd00:f0::1:0:0:1'), 'fd00:f0::1:0:0:1');
  t.is(canonicalIp('::ffff:10.0.0.1'), '::ffff:a00:1');
  t.is(canonicalIp('10.0.0'), undefined);
});

test('the allocator gives the lowest free address, skips reserved ones and refuses taken, out-of-range and foreign-family ones', (t) => {
  const allocator = new ClusterIpAllocator([new Cidr('10.240.0.0/16')]);
  t.deepEqual(allocator.allocate('a/one', 'IPv4'), { ip: '10.240.0.1' });
  t.is(allocator.dnsAddress('IPv4'), '10.240.0.10');
  for (let i = 2; i <= 9; i++) allocator.allocate(`a/s${i}`, 'IPv4');
  t.deepEqual(allocator.allocate('a/next', 'IPv4'), { ip: '10.240.0.11' }, 'the DNS address is never handed out');
  t.deepEqual(allocator.check('b/two', '10.240.0.1'), { reason: 'taken', ip: '10.240.0.1', holder: 'a/one' });
  t.is(allocator.check('a/one', '10.240.0.1'), undefined, 'its own address');
  t.deepEqual(allocator.check('b/two', '10.96.0.1'), { reason: 'out-of-range', ip: '10.96.0.1', range: '10.240.0.0/16' });
  t.is(allocator.check('b/two', '10.240.0.10')?.reason, 'reserved');
  t.is(allocator.check('b/two', '10.240.255.255')?.reason, 'reserved');
  t.is(allocator.check('b/two', 'fd00:f0::5')?.reason, 'no-range');
  t.is(allocator.check('b/two', 'nonsense')?.reason, 'not-an-ip');
  allocator.releaseAllBut('a/one');
  t.is(allocator.check('b/two', '10.240.0.1'), undefined, 'released');
  const tiny = new ClusterIpAllocator([new Cidr('10.1.0.0/30')]);
  t.deepEqual(tiny.allocate('x/a', 'IPv4'), { ip: '10.1.0.1' });
  t.deepEqual(tiny.allocate('x/b', 'IPv4'), { ip: '10.1.0.2' });
  t.is((tiny.allocate('x/c', 'IPv4') as { reason: string }).reason, 'exhausted');
});

function pod(name: string, labels: Record<string, string>, status: PodObject['status'], extra: Partial<PodObject['spec']> = {}): PodObject {
  return { apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: 'web', labels }, spec: { nodeName: 'n0', containers: [{ name: 'app' }], ...extra }, status };
}

const running = (ip: string, ready = true): PodObject['status'] => ({
  phase: 'Running',
  podIP: ip,
  podIPs: [{ ip }],
  conditions: [{ type: 'Ready', status: ready ? 'True' : 'False' }],
});

test('a ready endpoint is a running pod with an address whose Ready condition, when reported, is True, and that is not being deleted', (t) => {
  t.true(isPodReady(pod('a', {}, running('10.0.0.1'))));
  t.false(isPodReady(pod('a', {}, running('10.0.0.1', false))));
  t.false(isPodReady(pod('a', {}, { phase: 'Pending' })));
  t.false(isPodReady(pod('a', {}, { phase: 'Running' })), 'no address');
  t.true(isPodReady(pod('a', {}, { phase: 'Running', podIP: '10.0.0.1' })), 'no conditions reported: running is enough');
  const deleting = pod('a', {}, running('10.0.0.1'));
  (deleting.metadata as { deletionTimestamp?: string }).deletionTimestamp = '2026-01-01T00:00:00Z';
  t.false(isPodReady(deleting));
});

async function controller(t: { teardown: (fn: () => Promise<void>) => void }, dualStack = false): Promise<{ dir: string; services: ClusterServices; tables: ServiceTable[] }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ambit-services-unit-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const tables: ServiceTable[] = [];
  const services = new ClusterServices({
    clusterDir: path.join(dir, 'cluster'),
    dualStack,
    logFile: path.join(dir, 'services.log'),
    consumers: [async (table) => void tables.push(table)],
  });
  t.teardown(async () => services.stop());
  return { dir, services, tables };
}

async function writeObjects(dir: string, file: string, objects: object[]): Promise<string> {
  const full = path.join(dir, 'cluster', file);
  await mkdir(path.dirname(full), { recursive: true });
  await writeFile(full, objects.map((object) => stringify(object)).join('---\n'));
  return full;
}

test('the controller assigns, writes back, refuses a taken address naming the file, and resolves endpoints per port', async (t) => {
  const { dir, services, tables } = await controller(t, true);
  await writeObjects(dir, 'pods.yaml', [
    pod('ready', { app: 'web' }, running('10.20.0.5'), { containers: [{ name: 'app', ports: [{ name: 'http', containerPort: 8080 }] }] }),
    pod('unready', { app: 'web' }, running('10.20.0.6', false)),
    pod('other', { app: 'other' }, running('10.20.0.7')),
  ]);
  const file = await writeObjects(dir, 'svc.yaml', [
    { apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: 'web' }, spec: { selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 'http' }, { name: 'raw', port: 81, targetPort: 9000 }, { name: 'named-missing', port: 82, targetPort: 'nope' }] } },
    { apiVersion: 'v1', kind: 'Service', metadata: { name: 'user', namespace: 'web' }, spec: { clusterIP: '10.240.0.1', ports: [{ port: 80 }] } },
  ]);
  await services.start();
  const table = services.table;
  t.is(tables.length, 1, 'the nodes were given the table once');
  const web = table.services.find((service) => service.name === 'web')!;
  t.deepEqual(web.clusterIPs, ['10.240.0.2', 'fd00:f0::1'], 'the user-set 10.240.0.1 is not handed out again');
  t.deepEqual(web.ports.map((port) => [port.name, port.endpoints]), [
    ['http', [{ ip: '10.20.0.5', port: 8080, nodeName: 'n0' }]],
    ['raw', [{ ip: '10.20.0.5', port: 9000, nodeName: 'n0' }]],
    ['named-missing', []],
  ]);
  const written = await readFile(file, 'utf8');
  t.regex(written, /clusterIP: 10\.240\.0\.2\n\s+clusterIPs:\n\s+- 10\.240\.0\.2\n\s+- fd00:f0::1/);
  t.regex(written, /---\n[\s\S]*name: user[\s\S]*clusterIP: 10\.240\.0\.1/, 'the other document is kept');

  const dup = await writeObjects(dir, 'dup.yaml', [{ apiVersion: 'v1', kind: 'Service', metadata: { name: 'dup', namespace: 'web' }, spec: { clusterIP: '10.240.0.2', ports: [{ port: 80 }] } }]);
  await services.refresh();
  t.deepEqual(services.problems.map((problem) => [problem.code, problem.file]), [['SERVICE_IP_REFUSED', dup]]);
  t.regex(services.problems[0]!.message, /dup\.yaml\): clusterIP 10\.240\.0\.2 is already allocated to Service web\/web/);
  t.false(services.table.services.some((service) => service.name === 'dup'));
  t.deepEqual(services.table.services.find((service) => service.name === 'web')!.clusterIPs, ['10.240.0.2', 'fd00:f0::1'], 'the holder keeps it');
});

test('a Service a user got wrong is reported and skipped; the others and their endpoints are still programmed', async (t) => {
  const { dir, services } = await controller(t);
  await writeObjects(dir, 'pods.yaml', [
    pod('good', { app: 'web' }, running('10.20.0.5')),
    { ...pod('odd', { app: 'web' }, running('10.20.0.6')), status: { phase: 'Running', podIP: 'not-an-ip', conditions: 'yes' } },
  ]);
  const service = (name: string, spec: object): object => ({ apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: 'web' }, spec });
  await writeObjects(dir, 'svc.yaml', [
    service('good', { selector: { app: 'web' }, ports: [{ port: 80 }] }),
    service('big-port', { selector: { app: 'web' }, ports: [{ port: 70000 }] }),
    service('ports-text', { selector: { app: 'web' }, ports: '80' }),
    service('bad-protocol', { selector: { app: 'web' }, ports: [{ port: 80, protocol: 'ICMP' }] }),
    service('bad-ip', { clusterIP: 'ten.one', ports: [{ port: 80 }] }),
  ]);
  await services.start();
  t.deepEqual(services.table.services.map((entry) => [entry.name, entry.ports[0]?.endpoints.map((endpoint) => endpoint.ip)]), [['good', ['10.20.0.5']]]);
  t.deepEqual(
    services.problems.map((problem) => [problem.service, problem.code]).sort(),
    [['web/bad-ip', 'SERVICE_IP_REFUSED'], ['web/bad-protocol', 'SERVICE_INVALID'], ['web/big-port', 'SERVICE_INVALID'], ['web/ports-text', 'SERVICE_INVALID']],
  );
  t.regex(services.problems.find((problem) => problem.service === 'web/big-port')!.message, /svc\.yaml\): port 70000 is not a port number/);
  const refused = await t.throwsAsync(services.applyService(service('applied', { ports: [{ port: 0 }] }) as ServiceObject));
  t.is((refused as RuntimeError).code, 'SERVICE_INVALID');
  t.regex(refused!.message, /services\/web\.applied\.yaml\): port 0 is not a port number/);
});

const sampleTable: ServiceTable = {
  services: [
    {
      namespace: 'web', name: 'echo', file: '', clusterIPs: ['10.240.0.1', 'fd00:f0::1'], headless: false, localOnly: false,
      ports: [{ name: 'http', protocol: 'tcp', port: 80, endpoints: [{ ip: '10.20.0.5', port: 8080, nodeName: 'n0' }, { ip: '10.20.1.5', port: 8080, nodeName: 'n1' }, { ip: 'fd00:14::5', port: 8080, nodeName: 'n0' }] }],
      endpointIps: ['10.20.0.5', '10.20.1.5', 'fd00:14::5'],
    },
    {
      namespace: 'web', name: 'local', file: '', clusterIPs: ['10.240.0.2'], headless: false, localOnly: true,
      ports: [{ name: '', protocol: 'udp', port: 53, endpoints: [{ ip: '10.20.1.6', port: 5353, nodeName: 'n1' }] }],
      endpointIps: ['10.20.1.6'],
    },
    { namespace: 'web', name: 'headless', file: '', clusterIPs: [], headless: true, localOnly: false, ports: [], endpointIps: ['10.20.0.7', 'fd00:14::7'] },
  ],
};

test('the ruleset: services map, numgen over the endpoints of the family, Local policy per node, reject without endpoints', (t) => {
  const node0 = { name: 'n0', families: ['IPv4' as const] };
  const v4 = renderFamily(sampleTable, node0, 'IPv4');
  t.true(v4.startsWith('table ip kube-proxy\ndelete table ip kube-proxy\ntable ip kube-proxy {'), 'replaced in one transaction');
  t.regex(v4, /10\.240\.0\.1 \. tcp \. 80 : goto service-web\/echo\/tcp\/http/);
  t.regex(v4, /numgen random mod 2 vmap \{ 0 : goto endpoint-web\/echo\/tcp\/http__10\.20\.0\.5\/8080, 1 : goto endpoint-web\/echo\/tcp\/http__10\.20\.1\.5\/8080 \}/);
  t.regex(v4, /ip saddr 10\.20\.0\.5 jump mark-for-masquerade\n\s+meta l4proto tcp dnat to 10\.20\.0\.5:8080/);
  t.regex(v4, /10\.240\.0\.2 \. udp \. 53 : goto reject-chain/, 'Local with no endpoint on n0: rejected');
  t.notRegex(v4, /10\.240\.0\.10/, 'the cluster DNS address is the node\'s own, not DNATed');
  t.notRegex(v4, /fd00/);
  const v4n1 = renderFamily(sampleTable, { ...node0, name: 'n1' }, 'IPv4');
  t.regex(v4n1, /10\.240\.0\.2 \. udp \. 53 : goto service-web\/local\/udp\/53/, 'Local with an endpoint on n1');
  const v6 = renderFamily(sampleTable, node0, 'IPv6');
  t.regex(v6, /fd00:f0::1 \. tcp \. 80 : goto service-web\/echo\/tcp\/http/);
  t.regex(v6, /chain endpoint-web\/echo\/tcp\/http__fd00\.14\.\.5\/8080 \{\n\s+ip6 saddr fd00:14::5 jump mark-for-masquerade\n\s+meta l4proto tcp dnat to \[fd00:14::5\]:8080/);
  t.notRegex(renderRuleset(sampleTable, node0), /table ip6/, 'IPv6 only in a dual-stack cluster');
  t.regex(renderRuleset(sampleTable, { name: 'n0', families: ['IPv4', 'IPv6'] }), /table ip kube-proxy[\s\S]*table ip6 kube-proxy/);
});

test('the hosts file names every Service (headless: its endpoints) and the resolv.conf is a kubelet\'s', (t) => {
  t.is(
    renderHostsFile(sampleTable),
    [
      "# written by the ambit local runtime from the cluster directory's Services",
      '10.240.0.1 echo.web.svc.cluster.local',
      'fd00:f0::1 echo.web.svc.cluster.local',
      '10.240.0.2 local.web.svc.cluster.local',
      '10.20.0.7 headless.web.svc.cluster.local',
      'fd00:14::7 headless.web.svc.cluster.local',
      '',
    ].join('\n'),
  );
  t.is(renderResolvConf('shop', ['10.240.0.10']), 'search shop.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.240.0.10\noptions ndots:5\n');
});
