// A dual-stack 2-node mesh (every pod has an IPv4 and an IPv6 address, from the real bridge + host-local plugins):
// IPv6 traffic between enrolled pods goes through HBONE with both identities like IPv4 traffic, the server sees the
// client's IPv6 address, and a STRICT PeerAuthentication refuses IPv6 plaintext as it refuses IPv4 plaintext
// (left uncaptured, IPv6 would bypass it).
import test from 'ava';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { createLocalMesh, type LocalMesh } from '../../runtime/local-mesh.ts';
import { runClient, startEchoServer, type Pod } from '../../runtime/index.ts';

const ENROLLED = { 'istio.io/dataplane-mode': 'ambient' };
const PORT = 8080;
const HTTP_PORT = 8081;

let mesh: LocalMesh;
let server: Pod;
let client: Pod;
let legacy: Pod;

test.before(async () => {
  mesh = await createLocalMesh({ nodes: 2, name: 'dualstack', dualStack: true });
  server = await mesh.cluster.createPod({ node: 1, namespace: 'shop', name: 'server', serviceAccount: 'server', labels: { app: 'server' }, namespaceLabels: ENROLLED });
  client = await mesh.cluster.createPod({ node: 0, namespace: 'shop', name: 'client', serviceAccount: 'client' });
  legacy = await mesh.cluster.createPod({ node: 0, namespace: 'legacy', name: 'legacy', serviceAccount: 'legacy' });
  // '::' takes both families.
  await startEchoServer(server, { port: PORT, host: '::' });
  await startEchoServer(server, { port: HTTP_PORT, host: '::', http: true });
});

test.after.always(async () => {
  await mesh?.destroy();
});

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- log lines are free-form JSON read by assertions
async function accessLog(node: number): Promise<Array<Record<string, any>>> {
  const text = await readFile(mesh.cluster.node(node).agentLogFile, 'utf8');
  return text
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as Record<string, unknown>)
    .filter((line) => line.msg === 'connection closed');
}

test.serial('every pod has both families', (t) => {
  for (const pod of [server, client, legacy]) {
    t.regex(pod.ip, /^10\./);
    t.regex(pod.ip6, /^fd00:/);
  }
});

test.serial('IPv6 between enrolled pods on two nodes goes through HBONE with both identities, and the app sees the client IPv6 address', async (t) => {
  const echo = await runClient(client, { host: server.ip6, port: PORT, count: 3 });
  t.true(echo.ok, echo.errors.join('; '));
  const http = await runClient(client, { host: server.ip6, port: HTTP_PORT, http: true });
  t.true(http.ok, http.errors.join('; '));
  t.is((http.response?.body as { peer: string }).peer, client.ip6, 'the source address survived the tunnel');
  const outbound = (await accessLog(0)).filter((entry) => entry.direction === 'outbound' && entry.dst.address === `[${server.ip6}]:${PORT}`);
  t.true(outbound.length >= 3, `client side logged the IPv6 connections (${outbound.length})`);
  t.true(outbound.every((entry) => entry.mtls === true && entry.dst.principal === 'spiffe://cluster.local/ns/shop/sa/server'));
  const inbound = (await accessLog(1)).filter((entry) => entry.direction === 'inbound' && entry.src.address === client.ip6);
  t.true(inbound.length >= 3, `server side logged them (${inbound.length})`);
  t.true(inbound.every((entry) => entry.src.principal === 'spiffe://cluster.local/ns/shop/sa/client'));
});

test.serial('IPv4 keeps working beside it', async (t) => {
  const result = await runClient(client, { host: server.ip, port: HTTP_PORT, http: true });
  t.true(result.ok, result.errors.join('; '));
  // The app listens on '::', where an IPv4 peer shows as an IPv4-mapped IPv6 address.
  t.is((result.response?.body as { peer: string }).peer, `::ffff:${client.ip}`);
});

test.serial('STRICT mTLS refuses plaintext over IPv6 from outside the mesh, as over IPv4', async (t) => {
  t.true((await runClient(legacy, { host: server.ip6, port: PORT })).ok, 'PERMISSIVE by default: plaintext IPv6 gets in');
  const dir = path.join(mesh.cluster.clusterDir, 'policies');
  await mkdir(dir, { recursive: true });
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const strict = 'apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: strict, namespace: shop}\nspec:\n  mtls: {mode: STRICT}\n';
  await writeFile(path.join(dir, '.strict.tmp'), strict);
  await rename(path.join(dir, '.strict.tmp'), path.join(dir, 'strict.yaml'));
  const deadline = Date.now() + 15_000;
  while ((await runClient(legacy, { host: server.ip6, port: PORT, timeoutMs: 3000 })).ok) {
    if (Date.now() > deadline) return t.fail('plaintext over IPv6 still gets in 15 s after STRICT');
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  t.false((await runClient(legacy, { host: server.ip, port: PORT, timeoutMs: 3000 })).ok, 'and over IPv4');
  t.true((await runClient(client, { host: server.ip6, port: PORT })).ok, 'the mesh client still gets in over IPv6');
});
