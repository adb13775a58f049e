// Services in the local runtime, on a dual-stack 2-node mesh (control plane, an agent per node): cluster IPs
// assigned and written back, collisions refused naming the file; pods outside the mesh reach a Service by VIP and
// by name through the kube-proxy stand-in (nftables in the node namespaces) and the cluster DNS (a dnsmasq per
// node), across nodes and in both families; endpoints follow the pods (not Ready, removed, none left -> refused at
// once); a STRICT destination refuses their plaintext; and destroy leaves nothing behind.
import test from 'ava';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { createLocalMesh, type LocalMesh } from '../../runtime/local-mesh.ts';
import { RuntimeError, runClient, startEchoServer, type Cluster, type Pod } from '../../runtime/index.ts';
import { run } from '../../runtime/exec.ts';
import { listNetns } from '../../runtime/netns.ts';
import { runPrefix } from '../../runtime/topology.ts';
import { Cidr, SERVICE_CIDR_V4, SERVICE_CIDR_V6 } from '../../runtime/service-ips.ts';
import type { ServiceObject, ServiceView } from '../../runtime/services.ts';

const ENROLLED = { 'istio.io/dataplane-mode': 'ambient' };
const TCP_PORT = 8080;
const HTTP_PORT = 8081;
/** Generous: the machine is shared; every wait polls for the thing itself and returns as soon as it is there. */
const WAIT_MS = 20_000;

let mesh: LocalMesh;
let cluster: Cluster;
let webA: Pod; // web/echo endpoint on node 1
let webB: Pod; // web/echo endpoint on node 0
let webClient: Pod; // un-enrolled, node 0, namespace web
let legacy: Pod; // un-enrolled, node 0, namespace legacy
let echo: ServiceObject;

function echoService(name: string, namespace: string, extra: Partial<NonNullable<ServiceObject['spec']>> = {}): ServiceObject {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace },
    spec: {
      selector: { app: name },
      ports: [
        { name: 'tcp', port: 80, targetPort: TCP_PORT },
        { name: 'http', port: 81, targetPort: HTTP_PORT },
      ],
      ...extra,
    },
  };
}

async function waitFor<T>(what: string, probe: () => Promise<T | undefined> | T | undefined): Promise<T> {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

function view(namespace: string, name: string): ServiceView | undefined {
  return cluster.services!.table.services.find((service) => service.namespace === namespace && service.name === name);
}

/** Waits until the nodes were programmed with the endpoints of `namespace/name`'s http port being exactly `ips`. */
async function waitForEndpoints(namespace: string, name: string, ips: string[]): Promise<void> {
  const wanted = [...ips].sort().join(',');
  await waitFor(`${namespace}/${name} endpoints ${wanted}`, () => {
    const port = view(namespace, name)?.ports.find((candidate) => candidate.name === 'http');
    return port !== undefined && port.endpoints.map((endpoint) => endpoint.ip).sort().join(',') === wanted ? true : undefined;
  });
}

/** `count` HTTP GETs to port 81, one connection each, from one process: the names of the servers that answered. */
async function serversAnswering(client: Pod, host: string, count: number): Promise<string[]> {
  const script = `
    const http = require('node:http');
    const get = () => new Promise((resolve, reject) => {
      const request = http.get({ host: ${JSON.stringify(host)}, port: 81, agent: false, timeout: 5000 }, (response) => {
        let body = '';
        response.on('data', (chunk) => (body += chunk)).on('end', () => resolve(JSON.parse(body).server));
      });
      request.on('timeout', () => request.destroy(new Error('timed out'))).on('error', reject);
    });
    (async () => { const names = []; for (let i = 0; i < ${count}; i++) names.push(await get()); console.log(JSON.stringify(names)); })()
      .catch((error) => { console.error(error.message); process.exit(1); });`;
  const result = await client.exec(process.execPath, ['-e', script]);
  if (result.code !== 0) throw new Error(`GET http://${host}:81 from ${client.name} failed: ${result.stderr.trim()}`);
  return JSON.parse(result.stdout) as string[];
}

/** getent in the pod (glibc: the pod's resolv.conf, search path and ndots), addresses of one family. */
async function getent(pod: Pod, name: string, family: 'ahostsv4' | 'ahostsv6'): Promise<string[]> {
  const result = await pod.exec('getent', [family, name]);
  return [...new Set(result.stdout.split('\n').map((line) => line.split(/\s+/)[0] ?? '').filter((ip) => ip !== ''))].sort();
}

/** One DNS query from the pod to its nameserver (no search path): the addresses, or the error code. */
async function query(pod: Pod, name: string, type: 'A' | 'AAAA'): Promise<string[] | string> {
  const script = `require('node:dns').promises.resolve(${JSON.stringify(name)}, ${JSON.stringify(type)}).then((a) => console.log(JSON.stringify(a.sort())), (e) => console.log(JSON.stringify(e.code)))`;
  const result = await pod.exec(process.execPath, ['-e', script]);
  return JSON.parse(result.stdout) as string[] | string;
}

test.before(async () => {
  mesh = await createLocalMesh({ nodes: 2, name: 'svc', dualStack: true });
  cluster = mesh.cluster;
  webA = await cluster.createPod({ node: 1, namespace: 'web', name: 'web-a', labels: { app: 'echo' } });
  webB = await cluster.createPod({ node: 0, namespace: 'web', name: 'web-b', labels: { app: 'echo' } });
  webClient = await cluster.createPod({ node: 0, namespace: 'web', name: 'web-client' });
  legacy = await cluster.createPod({ node: 0, namespace: 'legacy', name: 'legacy' });
  for (const pod of [webA, webB]) {
    await startEchoServer(pod, { port: TCP_PORT, host: '::' });
    await startEchoServer(pod, { port: HTTP_PORT, host: '::', http: true });
  }
  echo = await cluster.services!.applyService(echoService('echo', 'web'));
});

test.after.always(async () => {
  await mesh?.destroy();
});

test.serial('a Service without clusterIP gets one per family from the service ranges, written back to its file', async (t) => {
  const [ip4, ip6] = echo.spec!.clusterIPs!;
  t.true(new Cidr(SERVICE_CIDR_V4).contains(ip4!), ip4);
  t.true(new Cidr(SERVICE_CIDR_V6).contains(ip6!), ip6);
  t.is(echo.spec!.clusterIP, ip4);
  t.deepEqual(echo.spec!.ipFamilies, ['IPv4', 'IPv6']);
  const written = await readFile(path.join(cluster.clusterDir, 'services', 'web.echo.yaml'), 'utf8');
  t.regex(written, new RegExp(`clusterIP: ${ip4!.replace(/\./g, '\\.')}`));

  // A file a user writes: two Services, a comment; the runtime fills in only the missing clusterIPs.
  const file = path.join(cluster.clusterDir, 'user', 'two.yaml');
  await mkdir(path.dirname(file), { recursive: true });
  const text = [
    '# my services',
    'apiVersion: v1',
    'kind: Service',
    'metadata: {name: first, namespace: web}',
    'spec: {selector: {app: first}, ports: [{port: 80}]}',
    '---',
    'apiVersion: v1',
    'kind: Service',
    'metadata: {name: fixed, namespace: web}',
    'spec: {clusterIP: 10.240.7.7, clusterIPs: [10.240.7.7], selector: {app: fixed}, ports: [{port: 80}]}',
    '',
  ].join('\n');
  await writeFile(`${path.dirname(file)}/.two.tmp`, text);
  await rename(`${path.dirname(file)}/.two.tmp`, file);
  const rewritten = await waitFor('the file rewritten with clusterIP', async () => {
    const now = await readFile(file, 'utf8');
    return /name: first[\s\S]*clusterIP: 10\.240\./.test(now.split('---')[0] ?? '') ? now : undefined;
  });
  t.true(rewritten.startsWith('# my services'), 'the comment is kept');
  t.regex(rewritten.split('---')[1] ?? '', /clusterIP: 10\.240\.7\.7/, 'the user-set clusterIP is kept');
  t.truthy(await waitFor('first in the table', () => view('web', 'first')));
  t.deepEqual(view('web', 'fixed')?.clusterIPs, ['10.240.7.7']);
});

test.serial('a duplicate or out-of-range clusterIP is refused with the file named; the holder keeps serving', async (t) => {
  const [ip4] = echo.spec!.clusterIPs!;
  const taken = await t.throwsAsync(cluster.services!.applyService(echoService('copycat', 'web', { clusterIP: ip4, clusterIPs: [ip4!] })), { instanceOf: RuntimeError });
  t.is((taken as RuntimeError).code, 'SERVICE_IP_REFUSED');
  t.regex(taken!.message, /web\.copycat\.yaml/);
  t.regex(taken!.message, /already allocated to Service web\/echo/);
  const outside = await t.throwsAsync(cluster.services!.applyService(echoService('outside', 'web', { clusterIP: '10.96.0.5' })), { instanceOf: RuntimeError });
  t.regex(outside!.message, /not in the service range 10\.240\.0\.0\/16/);
  t.false(existsSync(path.join(cluster.clusterDir, 'services', 'web.copycat.yaml')), 'a refused apply writes nothing');

  // Written straight into the directory, as a user would: reported, not programmed.
  const file = path.join(cluster.clusterDir, 'user', 'dup.yaml');
  await writeFile(file, `apiVersion: v1\nkind: Service\nmetadata: {name: dup, namespace: web}\nspec: {clusterIP: ${ip4}, selector: {app: nothing}, ports: [{port: 80}]}\n`);
  const problem = await waitFor('the duplicate reported', () => cluster.services!.problems.find((candidate) => candidate.service === 'web/dup'));
  t.is(problem.code, 'SERVICE_IP_REFUSED');
  t.is(problem.file, file);
  t.regex(problem.message, new RegExp(`${file.replace(/\./g, '\\.')}.*already allocated to Service web/echo`));
  t.is(view('web', 'dup'), undefined);
  t.regex(await readFile(path.join(cluster.tmpDir, 'services.log'), 'utf8'), /refused: Service web\/dup/);
  t.deepEqual(await query(legacy, 'dup.web.svc.cluster.local', 'A'), 'ENOTFOUND', 'a refused Service has no name');
  t.true((await runClient(legacy, { host: ip4!, port: 80 })).ok, 'the VIP still reaches web/echo');
});

test.serial('an un-enrolled pod reaches a Service by VIP and by name, across nodes, over IPv4 and IPv6', async (t) => {
  const [ip4, ip6] = echo.spec!.clusterIPs!;
  t.deepEqual(await getent(webClient, 'echo', 'ahostsv4'), [ip4], 'short name from the same namespace (search path)');
  t.deepEqual(await getent(legacy, 'echo.web', 'ahostsv4'), [ip4], '<svc>.<ns> from another namespace');
  t.deepEqual(await getent(legacy, 'echo.web.svc.cluster.local', 'ahostsv6'), [ip6], 'AAAA');
  t.deepEqual(await query(legacy, 'nothing.web.svc.cluster.local', 'A'), 'ENOTFOUND', 'NXDOMAIN for unknown cluster names');
  const resolv = await legacy.exec('cat', ['/etc/resolv.conf']);
  t.regex(resolv.stdout, /search legacy\.svc\.cluster\.local svc\.cluster\.local cluster\.local/);
  t.regex(resolv.stdout, /options ndots:5/);

  for (const host of [ip4!, ip6!, 'echo.web']) {
    const result = await runClient(legacy, { host, port: 80, count: 3, size: 4096 });
    t.true(result.ok, `${host}: ${result.errors.join('; ')}`);
  }
  const answered = await serversAnswering(legacy, ip6!, 30);
  t.true(answered.includes('web-a') && answered.includes('web-b'), `both endpoints, on both nodes, answer over IPv6: ${answered.join(' ')}`);
  const http = await runClient(legacy, { host: ip4!, port: 81, http: true });
  const peer = (http.response?.body as { peer: string; server: string }).peer;
  t.is(peer, `::ffff:${legacy.ip}`, 'the endpoint sees the client address (no masquerade between pods)');
  const hairpin = await serversAnswering(webA, ip4!, 10);
  t.is(hairpin.length, 10, 'an endpoint reaches its own Service (hairpin)');
});

test.serial('endpoints follow the pods: not Ready and removed pods are no longer chosen, none left is refused at once', async (t) => {
  const [ip4] = echo.spec!.clusterIPs!;
  await cluster.setPodReady(webA, false);
  await waitForEndpoints('web', 'echo', [webB.ip, webB.ip6]);
  t.deepEqual([...new Set(await serversAnswering(legacy, ip4!, 10))], ['web-b'], 'only the Ready endpoint');
  t.deepEqual(await getent(legacy, 'echo.web', 'ahostsv4'), [ip4], 'the name stays');

  await cluster.setPodReady(webA, true);
  await waitForEndpoints('web', 'echo', [webA.ip, webA.ip6, webB.ip, webB.ip6]);
  await cluster.deletePod(webB);
  await waitForEndpoints('web', 'echo', [webA.ip, webA.ip6]);
  t.deepEqual([...new Set(await serversAnswering(legacy, ip4!, 10))], ['web-a'], 'a removed endpoint is not chosen');
  t.false(existsSync(`/etc/netns/${webB.netnsName}`), 'the removed pod\'s resolv.conf went with it');

  await cluster.setPodReady(webA, false);
  await waitForEndpoints('web', 'echo', []);
  const refused = await runClient(legacy, { host: ip4!, port: 80, timeoutMs: 10_000 });
  t.false(refused.ok);
  t.regex(refused.errors[0] ?? '', /ECONNREFUSED/, 'refused, not left to time out');
  await cluster.setPodReady(webA, true);
  await waitForEndpoints('web', 'echo', [webA.ip, webA.ip6]);
});

test.serial('a headless Service answers with its ready endpoints, and internalTrafficPolicy Local keeps to the node', async (t) => {
  await cluster.services!.applyService(echoService('echo-headless', 'web', { clusterIP: 'None', selector: { app: 'echo' } }));
  t.deepEqual(await getent(webClient, 'echo-headless', 'ahostsv4'), [webA.ip]);
  t.deepEqual(await query(webClient, 'echo-headless.web.svc.cluster.local', 'AAAA'), [webA.ip6]);
  await rm(path.join(cluster.clusterDir, 'services', 'web.echo-headless.yaml'));
  t.is(await waitFor('the removed Service\'s name to go', async () => ((await query(webClient, 'echo-headless.web.svc.cluster.local', 'A')) === 'ENOTFOUND' ? true : undefined)), true);

  const local = await cluster.services!.applyService(echoService('echo-local', 'web', { internalTrafficPolicy: 'Local', selector: { app: 'echo' } }));
  const onNode1 = await cluster.createPod({ node: 1, namespace: 'web', name: 'node1-client' });
  t.true((await runClient(onNode1, { host: 'echo-local', port: 80 })).ok, 'the endpoint on the client\'s node');
  const offNode = await runClient(webClient, { host: local.spec!.clusterIP!, port: 80 });
  t.regex(offNode.errors[0] ?? '', /ECONNREFUSED/, 'no endpoint on node 0: refused there');
});

test.serial('enrolled pods still reach Services; a STRICT destination refuses the un-enrolled client\'s plaintext', async (t) => {
  await cluster.setNamespaceLabels('shop', ENROLLED);
  const server = await cluster.createPod({ node: 1, namespace: 'shop', name: 'shop-server', serviceAccount: 'server', labels: { app: 'server' } });
  const client = await cluster.createPod({ node: 0, namespace: 'shop', name: 'shop-client', serviceAccount: 'client' });
  await startEchoServer(server, { port: TCP_PORT, host: '::' });
  await cluster.services!.applyService({
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'server', namespace: 'shop' },
    spec: { selector: { app: 'server' }, ports: [{ name: 'tcp', port: 80, targetPort: TCP_PORT }] },
  });
  const fromMesh = await runClient(client, { host: 'server', port: 80, count: 3 });
  t.true(fromMesh.ok, `an enrolled client by name: ${fromMesh.errors.join('; ')}`);
  const before = await runClient(legacy, { host: 'server.shop', port: 80 });
  t.true(before.ok, `PERMISSIVE: plaintext through the stand-in gets in (${before.errors.join('; ')})`);

  const strict = 'apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: strict, namespace: shop}\nspec:\n  mtls: {mode: STRICT}\n';
  const dir = path.join(cluster.clusterDir, 'policies');
  await mkdir(dir, { recursive: true });
  await writeFile(path.join(dir, '.strict.tmp'), strict);
  await rename(path.join(dir, '.strict.tmp'), path.join(dir, 'strict.yaml'));
  const refused = await waitFor('STRICT to refuse the legacy client', async () => {
    const result = await runClient(legacy, { host: 'server.shop', port: 80, timeoutMs: 3000 });
    return result.ok ? undefined : result;
  });
  t.false(refused.ok);
  t.false((await runClient(legacy, { host: server.ip, port: TCP_PORT, timeoutMs: 3000 })).ok, 'as it refuses it at the pod IP');
  const mesh = await runClient(client, { host: server.ip, port: TCP_PORT });
  t.true(mesh.ok, `the mesh path (HBONE to the pod) still gets in: ${mesh.errors.join('; ')}`);
});

test.serial('names outside cluster.local go to the upstream the cluster is given; without one they are refused', async (t) => {
  t.is(await query(legacy, 'www.example.test', 'A'), 'EREFUSED', 'no upstream by default');
  // An upstream resolver of the test's own, on the fabric (the underlay every node reaches).
  const fabricIp = mesh.controlPlaneAddress!.split(':')[0]!;
  const upstream = cluster.spawnInFabric(
    '/usr/sbin/dnsmasq',
    ['--keep-in-foreground', '--conf-file=/dev/null', '--no-resolv', '--no-hosts', '--user=root', '--pid-file=', '--bind-interfaces', `--listen-address=${fabricIp}`, '--address=/example.test/192.0.2.7'],
    { stdio: 'ignore' },
  );
  t.teardown(() => void upstream.kill('SIGKILL'));
  await cluster.setDnsUpstream([fabricIp]);
  const answer = await waitFor('the upstream\'s answer', async () => {
    const addresses = await getent(legacy, 'www.example.test', 'ahostsv4');
    return addresses.length > 0 ? addresses : undefined;
  });
  t.deepEqual(answer, ['192.0.2.7'], 'through the search path (ndots 5) and on to the upstream');
  t.is(await query(legacy, 'nothing.web.svc.cluster.local', 'A'), 'ENOTFOUND', 'cluster names are still the cluster DNS\'s own');
});

test.serial('destroy leaves no namespaces, /etc/netns directories or dnsmasq processes behind', async (t) => {
  const prefix = runPrefix(cluster.runId);
  const dnsmasqOfRun = async (): Promise<string[]> => {
    const result = await run('pgrep', ['-f', `dnsmasq.*${cluster.tmpDir}`]);
    return result.stdout.split('\n').filter((line) => line !== '');
  };
  t.is((await dnsmasqOfRun()).length, 2, 'one dnsmasq per node while it runs');
  t.true((await readdir('/etc/netns')).some((name) => name.startsWith(prefix)), 'pods have /etc/netns entries while it runs');
  await mesh.destroy();
  t.deepEqual((await listNetns()).filter((name) => name.startsWith(prefix)), []);
  t.deepEqual((await readdir('/etc/netns').catch(() => [] as string[])).filter((name) => name.startsWith(prefix)), []);
  t.deepEqual(await dnsmasqOfRun(), []);
});
