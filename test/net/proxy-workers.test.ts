/**
 * Agents with two data-plane threads (AMBIT_WORKER_THREADS=2: the main thread and one proxy worker) on a real
 * 2-node local mesh reading the cluster directory. Each thread listens in every captured pod with SO_REUSEPORT, so
 * the kernel spreads new connections over both. What a user must not notice: any difference from one thread.
 * Connections succeed whichever thread takes them, /metrics counts both threads' connections, a policy holds on
 * both, and a pod leaving the mesh loses every thread's listeners.
 */
import test from 'ava';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { createLocalMesh, type LocalMesh } from '../../runtime/local-mesh.ts';
import { runClient, startEchoServer, type ClusterNode, type Pod } from '../../runtime/index.ts';
import { parsePrometheusText, sumOf } from '../helpers/prometheus-text.ts';

const ENROLLED = { 'istio.io/dataplane-mode': 'ambient' };
const PORT = 9090;
/** Enough connections that all of them landing on one of two threads (odds 2 in 2^CONNECTIONS) means a bug. */
const CONNECTIONS = 24;
const WAIT_MS = 15_000;

let mesh: LocalMesh;
let server: Pod;
let client: Pod;
/** Not in the mesh: its connections reach the server pod's inbound plaintext port, each a new TCP connection. */
let legacy: Pod;

test.before(async () => {
  mesh = await createLocalMesh({ nodes: 2, name: 'wrktest', controlPlane: false, agentEnv: { AMBIT_WORKER_THREADS: '2' } });
  server = await mesh.cluster.createPod({ node: 1, namespace: 'shop', name: 'server', serviceAccount: 'server', labels: { app: 'server' }, namespaceLabels: ENROLLED });
  client = await mesh.cluster.createPod({ node: 0, namespace: 'shop', name: 'client', serviceAccount: 'client' });
  legacy = await mesh.cluster.createPod({ node: 0, namespace: 'legacy', name: 'legacy', serviceAccount: 'legacy' });
  await startEchoServer(server, { port: PORT });
});

test.after.always(async () => {
  await mesh?.destroy();
});

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- log lines are free-form JSON read by assertions
async function agentLog(node: ClusterNode): Promise<Array<Record<string, any>>> {
  const text = await readFile(node.agentLogFile, 'utf8');
  return text.split('\n').filter((line) => line.startsWith('{')).map((line) => JSON.parse(line) as Record<string, unknown>);
}

async function scrape(node: ClusterNode): Promise<ReturnType<typeof parsePrometheusText>> {
  const result = await node.exec(process.execPath, ['-e', "fetch('http://127.0.0.1:15020/metrics').then((r) => r.text()).then((t) => process.stdout.write(t))"]);
  if (result.code !== 0) throw new Error(`scraping /metrics failed: ${result.stderr}`);
  return parsePrometheusText(result.stdout);
}

async function waitFor(condition: () => Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + WAIT_MS;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

test.serial('both threads take connections; every connection succeeds and /metrics counts them all', async (t) => {
  const meshed = await runClient(client, { host: server.ip, port: PORT, count: CONNECTIONS, timeoutMs: 5000 });
  t.is(meshed.succeeded, CONNECTIONS, `HBONE connections: ${meshed.errors.join('; ')}`);
  const plain = await runClient(legacy, { host: server.ip, port: PORT, count: CONNECTIONS, timeoutMs: 5000 });
  t.is(plain.succeeded, CONNECTIONS, `plaintext connections: ${plain.errors.join('; ')}`);

  // The access log says which thread served each connection: the worker's lines carry "worker": 1.
  await waitFor(async () => (await agentLog(mesh.cluster.node(0))).filter((line) => line.msg === 'connection closed' && line.direction === 'outbound').length >= CONNECTIONS, 'the client side logged every connection');
  const outbound = (await agentLog(mesh.cluster.node(0))).filter((line) => line.msg === 'connection closed' && line.direction === 'outbound');
  t.true(outbound.some((line) => line.worker === 1), 'the proxy worker took some of the outbound connections');
  t.true(outbound.some((line) => line.worker === undefined), 'the main thread took some of the outbound connections');
  await waitFor(async () => (await agentLog(mesh.cluster.node(1))).filter((line) => line.msg === 'connection closed' && line.direction === 'inbound').length >= 2 * CONNECTIONS, 'the server side logged every connection');
  const plaintextInbound = (await agentLog(mesh.cluster.node(1))).filter((line) => line.msg === 'connection closed' && line.direction === 'inbound' && line.mtls === false);
  t.is(plaintextInbound.length, CONNECTIONS);
  t.true(plaintextInbound.some((line) => line.worker === 1) && plaintextInbound.some((line) => line.worker === undefined), 'both threads took plaintext inbound connections');

  // One scrape sums both threads' series.
  const clientSide = await scrape(mesh.cluster.node(0));
  t.is(sumOf(clientSide, 'istio_tcp_connections_opened_total', { reporter: 'source', destination_workload: 'server' }), CONNECTIONS);
  const serverSide = await scrape(mesh.cluster.node(1));
  t.is(sumOf(serverSide, 'istio_tcp_connections_opened_total', { reporter: 'destination', destination_workload: 'server' }), 2 * CONNECTIONS);
  t.is(sumOf(serverSide, 'istio_build', {}), 1, 'build info once, not once per thread');
});

test.serial('a DENY policy from the cluster directory holds on every thread', async (t) => {
  const policyDir = path.join(mesh.cluster.clusterDir, 'policies');
  await mkdir(policyDir, { recursive: true });
  await writeFile(path.join(policyDir, '.deny.tmp'), `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-port
  namespace: shop
spec:
  selector: {matchLabels: {app: server}}
  action: DENY
  rules:
  - to: [{operation: {ports: ["${PORT}"]}}]
`);
  await rename(path.join(policyDir, '.deny.tmp'), path.join(policyDir, 'deny.yaml'));
  await waitFor(async () => !(await runClient(legacy, { host: server.ip, port: PORT, timeoutMs: 3000 })).ok, 'the policy is in force');
  // Give the worker's replica the same chance as the main thread's, then expect no connection to get through.
  await new Promise((resolve) => setTimeout(resolve, 500));
  const plain = await runClient(legacy, { host: server.ip, port: PORT, count: CONNECTIONS, timeoutMs: 3000 });
  t.is(plain.succeeded, 0, 'no plaintext connection gets past the policy, whichever thread takes it');
  const meshed = await runClient(client, { host: server.ip, port: PORT, count: CONNECTIONS, timeoutMs: 3000 });
  t.is(meshed.succeeded, 0, 'no HBONE connection gets past the policy');
  await rename(path.join(policyDir, 'deny.yaml'), path.join(policyDir, '.deny.removed'));
  await waitFor(async () => (await runClient(legacy, { host: server.ip, port: PORT, count: 4, timeoutMs: 3000 })).succeeded === 4, 'the policy is gone');
});

test.serial('a pod leaving the mesh loses the listeners of every thread', async (t) => {
  const listeners = async (): Promise<number> => {
    const result = await server.exec('ss', ['-Hltn', 'sport = :15008 or sport = :15006 or sport = :15001']);
    return result.stdout.split('\n').filter((line) => line.trim() !== '').length;
  };
  t.is(await listeners(), 6, 'two threads x three ports');
  await mesh.cluster.setNamespaceLabels('shop', {});
  await waitFor(async () => (await listeners()) === 0, 'no listener is left in the pod');
  const plain = await runClient(legacy, { host: server.ip, port: PORT, count: 4, timeoutMs: 3000 });
  t.is(plain.succeeded, 4, 'the pod is reached directly once out of the mesh');
});
