// Unit tests: ambitctl's workloads, certs and config-dump against an agent admin endpoint running in-process:
// what a person reads in a table, and what a script gets in JSON and YAML.
import test from 'ava';
import net from 'node:net';
import { parse as parseYaml } from 'yaml';
import { runAmbitctl } from '../../ambitctl/main.ts';
import { startAdminFixture, type AdminFixture } from '../helpers/admin-fixture.ts';

let fixture: AdminFixture;

test.before(async () => {
  fixture = await startAdminFixture();
});

test.after.always(async () => {
  await fixture?.server.close();
});

async function ambitctl(...argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const code = await runAmbitctl(argv, { stdout: (text) => (stdout += text), stderr: (text) => (stderr += text) }, {});
  return { code, stdout, stderr };
}

/** A port nothing listens on (just released by the kernel). */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

function rows(table: string): string[][] {
  return table.trimEnd().split('\n').map((line) => line.split(/ {3,}/));
}

test('workloads: a table with one row per workload, sorted, and columns aligned', async (t) => {
  const { code, stdout, stderr } = await ambitctl('workloads', '--admin', fixture.url);
  t.is(code, 0, stderr);
  const table = rows(stdout);
  t.deepEqual(table[0], ['NAMESPACE', 'POD NAME', 'ADDRESS', 'NODE', 'PROTOCOL', 'IDENTITY']);
  t.deepEqual(table.slice(1), [
    ['old', 'legacy', '10.1.2.7', 'node-1', 'TCP', 'spiffe://cluster.local/ns/old/sa/legacy'],
    ['shop', 'db', '10.1.1.6', 'node-1', 'HBONE', 'spiffe://cluster.local/ns/shop/sa/db'],
    ['shop', 'web', '10.1.1.5', 'node-1', 'HBONE', 'spiffe://cluster.local/ns/shop/sa/web'],
  ]);
  const lines = stdout.trimEnd().split('\n');
  t.is(new Set(lines.map((line) => line.indexOf('10.1') === -1 ? line.indexOf('ADDRESS') : line.indexOf('10.1'))).size, 1, 'the ADDRESS column starts at the same place on every line');
  const filtered = await ambitctl('workloads', '-n', 'shop', '--admin', fixture.url);
  t.is(rows(filtered.stdout).length, 3, 'header + the two shop workloads');
});

test('workloads -o json and -o yaml: the same objects, for scripts', async (t) => {
  const json = await ambitctl('workloads', '-o', 'json', '--admin', fixture.url);
  t.is(json.code, 0);
  const fromJson = JSON.parse(json.stdout);
  t.is(fromJson.length, 3);
  t.like(fromJson[2], { name: 'web', namespace: 'shop', addresses: ['10.1.1.5'], identity: 'spiffe://cluster.local/ns/shop/sa/web' });
  const yaml = await ambitctl('workloads', '--output', 'yaml', '--admin', fixture.url);
  t.is(yaml.code, 0);
  t.deepEqual(parseYaml(yaml.stdout), fromJson);
});

test('certs: identity, state, serial and expiry; json carries the same certificates', async (t) => {
  const { code, stdout } = await ambitctl('certs', '--admin', fixture.url);
  t.is(code, 0);
  const table = rows(stdout);
  t.deepEqual(table[0], ['IDENTITY', 'STATE', 'SERIAL', 'NOT BEFORE', 'NOT AFTER', 'EXPIRES IN']);
  t.is(table.length, 3);
  t.deepEqual(table.slice(1).map((row) => row[0]), ['spiffe://cluster.local/ns/shop/sa/db', 'spiffe://cluster.local/ns/shop/sa/web']);
  t.true(table.slice(1).every((row) => row[1] === 'Available'));
  t.regex(table[2]![5]!, /^(59m\d+s|1h0m)$/, 'the web certificate expires in about an hour');
  t.regex(table[1]![5]!, /^(1h59m|2h0m)$/);
  const json = JSON.parse((await ambitctl('certs', '-o', 'json', '--admin', fixture.url)).stdout);
  t.is(json.length, 2);
  t.false(JSON.stringify(json).includes('PRIVATE KEY'));
  t.is(json[1].notAfter, fixture.certificates[0]!.notAfter.toISOString());
});

test('config-dump: a summary by default; the whole document in yaml', async (t) => {
  const summary = await ambitctl('config-dump', '--admin', fixture.url);
  t.is(summary.code, 0);
  t.regex(summary.stdout, /NODE node-1/);
  t.regex(summary.stdout, /CAPTURED PODS \(1\)\nNAMESPACE\s+POD NAME\s+ADDRESS\s+ACCEPTED\s+REFUSED\nshop\s+web\s+10\.1\.1\.5\s+4\s+0/);
  t.regex(summary.stdout, /CERTIFICATES \(2\)/);
  t.regex(summary.stdout, /WORKLOADS 3 {3}SERVICES 2 {3}POLICIES 1/);
  const yaml = parseYaml((await ambitctl('config-dump', '-o', 'yaml', '--admin', fixture.url)).stdout);
  t.is(yaml.node, 'node-1');
  t.is(yaml.workloads.length, 3);
  t.is(yaml.policies[0].name, 'allow-web');
});

test('errors a person can act on: agent not running, bad flags, unknown command', async (t) => {
  const port = await closedPort();
  const down = await ambitctl('workloads', '--admin', `http://127.0.0.1:${port}`);
  t.is(down.code, 1);
  t.is(down.stdout, '');
  t.is(down.stderr, `ambitctl workloads: cannot reach the agent admin endpoint at http://127.0.0.1:${port} (ECONNREFUSED): is the agent running on this node?\n`);
  const format = await ambitctl('workloads', '-o', 'xml', '--admin', fixture.url);
  t.is(format.code, 2);
  t.regex(format.stderr, /unknown output format "xml": use table, json, yaml/);
  const unknown = await ambitctl('pods');
  t.is(unknown.code, 2);
  t.regex(unknown.stderr, /unknown command "pods"[\s\S]*workloads/);
  const notAgent = await ambitctl('workloads', '--admin', `${fixture.url}/healthz/`);
  t.is(notAgent.code, 1);
  t.regex(notAgent.stderr, /answered 404|not JSON/);
  const help = await ambitctl('--help');
  t.is(help.code, 0);
  t.regex(help.stdout, /config-dump/);
});

test('services: VIPs (or headless), port mapping, load balancing, and healthy/total endpoints', async (t) => {
  const { code, stdout, stderr } = await ambitctl('services', '--admin', fixture.url);
  t.is(code, 0, stderr);
  t.deepEqual(rows(stdout), [
    ['NAMESPACE', 'SERVICE NAME', 'VIPS', 'PORTS', 'LOAD BALANCING', 'ENDPOINTS'],
    ['shop', 'db', 'None (headless)', '5432->5432', '-', '0/1'],
    ['shop', 'web', '10.96.0.10,fd00:96::10', '80->8080,9090->named', 'STRICT NODE', '1/1'],
  ]);
  const json = JSON.parse((await ambitctl('services', '-n', 'shop', '-o', 'json', '--admin', fixture.url)).stdout);
  t.like(json[1], { hostname: 'web.shop.svc.cluster.local', endpoints: [{ name: 'web', node: 'node-1', addresses: ['10.1.1.5'] }] });
  t.is(rows((await ambitctl('services', '-n', 'old', '--admin', fixture.url)).stdout).length, 1, 'only the header for a namespace without services');
});
