/**
 * Telemetry end to end on a real 2-node local mesh: pods exchange a known number of bytes over HBONE; the
 * agents' /metrics (scraped inside their node namespaces, as Prometheus would on the node) and access logs must
 * say exactly that, with the right identities; ambitctl reads a node's agent through its namespace.
 */
import test from 'ava';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import type { ChildProcess } from 'node:child_process';
import { runAmbitctl } from '../../ambitctl/main.ts';
import { createLocalMesh, type LocalMesh } from '../../runtime/local-mesh.ts';
import type { ClusterNode, Pod } from '../../runtime/index.ts';
import { parsePrometheusText, sumOf, type Sample } from '../helpers/prometheus-text.ts';

const ENROLLED = { 'istio.io/dataplane-mode': 'ambient' };
const APP_PORT = 9090;
/** Asymmetric on purpose, so a swapped direction shows: the client sends REQUEST_BYTES, the server answers RESPONSE_BYTES. */
const REQUEST_BYTES = 1500;
const RESPONSE_BYTES = 4000;
const CONNECTIONS = 3;
const CLIENT_PRINCIPAL = 'spiffe://cluster.local/ns/shop/sa/client';
const SERVER_PRINCIPAL = 'spiffe://cluster.local/ns/shop/sa/server';

/** Reads each connection to its end (the client's FIN), then answers RESPONSE_BYTES and closes. */
const SERVER_SCRIPT = `
const server = require('net').createServer({ allowHalfOpen: true }, (socket) => {
  socket.on('error', () => socket.destroy());
  socket.resume();
  socket.on('end', () => socket.end(Buffer.alloc(${RESPONSE_BYTES}, 'r')));
});
server.listen(${APP_PORT}, '0.0.0.0', () => console.log('"listening"'));`;

/** CONNECTIONS connections one after another: send REQUEST_BYTES, half-close, read the whole answer. */
const CLIENT_SCRIPT = `
const net = require('net');
const one = () => new Promise((resolve, reject) => {
  const socket = net.connect(${APP_PORT}, process.argv[1], () => socket.end(Buffer.alloc(${REQUEST_BYTES}, 'q')));
  let received = 0;
  socket.on('data', (chunk) => (received += chunk.length));
  socket.on('error', reject);
  socket.on('close', () => resolve(received));
});
(async () => {
  const received = [];
  for (let i = 0; i < ${CONNECTIONS}; i++) received.push(await one());
  console.log(JSON.stringify(received));
})().catch((e) => { console.log(JSON.stringify({ error: e.message })); process.exit(1); });`;

/** Opens one connection, sends HELD_BYTES and keeps it open until stdin closes. */
const HELD_BYTES = 10_000;
const HOLDER_SCRIPT = `
const socket = require('net').connect(${APP_PORT}, process.argv[1], () => { socket.write(Buffer.alloc(${HELD_BYTES}, 'h'), () => console.log('sent')); });
socket.on('error', (e) => console.log('error ' + e.message));
process.stdin.on('end', () => socket.end());
process.stdin.resume();
socket.on('close', () => process.exit(0));`;

let mesh: LocalMesh;
let server: Pod;
let client: Pod;

test.before(async () => {
  mesh = await createLocalMesh({ nodes: 2, name: 'teltest' });
  server = await mesh.cluster.createPod({ node: 1, namespace: 'shop', name: 'server', serviceAccount: 'server', namespaceLabels: ENROLLED });
  client = await mesh.cluster.createPod({ node: 0, namespace: 'shop', name: 'client', serviceAccount: 'client' });
  const app = server.spawn(process.execPath, ['-e', SERVER_SCRIPT], { stdio: ['ignore', 'pipe', 'inherit'] });
  await waitForOutput(app, '"listening"');
});

test.after.always(async () => {
  await mesh?.destroy();
});

async function waitForOutput(child: ChildProcess, text: string): Promise<void> {
  let output = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  const deadline = Date.now() + 10_000;
  while (!output.includes(text)) {
    if (Date.now() > deadline || child.exitCode !== null) throw new Error(`process did not print ${text}: ${output}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Scrapes an agent's /metrics from inside its node namespace. */
async function scrape(node: ClusterNode): Promise<Sample[]> {
  const result = await node.exec(process.execPath, ['-e', "fetch('http://127.0.0.1:15020/metrics').then((r) => r.text()).then((t) => process.stdout.write(t))"]);
  if (result.code !== 0) throw new Error(`scraping the agent on ${node.name} failed: ${result.stderr}`);
  return parsePrometheusText(result.stdout);
}

/** Scrapes until `done` holds (connections are reported when the agent sees them end, just after the client). */
async function scrapeUntil(node: ClusterNode, done: (samples: Sample[]) => boolean): Promise<Sample[]> {
  const deadline = Date.now() + 10_000;
  let samples = await scrape(node);
  while (!done(samples) && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    samples = await scrape(node);
  }
  return samples;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- access log lines are free-form JSON read by assertions
async function accessLog(node: ClusterNode): Promise<Array<Record<string, any>>> {
  const text = await readFile(node.agentLogFile, 'utf8');
  return text.split('\n').filter((line) => line.includes('"connection closed"')).map((line) => JSON.parse(line));
}

test.serial('counters and bytes on both agents equal what the pods sent, under the right source and destination labels', async (t) => {
  const result = await client.exec(process.execPath, ['-e', CLIENT_SCRIPT, server.ip]);
  t.is(result.code, 0, result.stdout + result.stderr);
  t.deepEqual(JSON.parse(result.stdout), Array(CONNECTIONS).fill(RESPONSE_BYTES), 'every connection got its whole answer');

  const pair = {
    source_workload: 'client',
    source_workload_namespace: 'shop',
    source_principal: CLIENT_PRINCIPAL,
    destination_workload: 'server',
    destination_workload_namespace: 'shop',
    destination_principal: SERVER_PRINCIPAL,
    connection_security_policy: 'mutual_tls',
    request_protocol: 'tcp',
  };
  for (const [node, reporter] of [[mesh.cluster.node(1), 'destination'], [mesh.cluster.node(0), 'source']] as const) {
    const labels = { ...pair, reporter };
    const samples = await scrapeUntil(node, (s) => sumOf(s, 'istio_tcp_connections_closed_total', labels) >= CONNECTIONS);
    t.is(sumOf(samples, 'istio_tcp_connections_opened_total', labels), CONNECTIONS, `${reporter}: opened`);
    t.is(sumOf(samples, 'istio_tcp_connections_closed_total', { ...labels, response_flags: '-' }), CONNECTIONS, `${reporter}: closed cleanly`);
    t.is(sumOf(samples, 'istio_tcp_received_bytes_total', labels), CONNECTIONS * REQUEST_BYTES, `${reporter}: request bytes`);
    t.is(sumOf(samples, 'istio_tcp_sent_bytes_total', labels), CONNECTIONS * RESPONSE_BYTES, `${reporter}: response bytes`);
    t.is(sumOf(samples, 'istio_tcp_connections_failed_total', labels), 0, `${reporter}: no failures`);
  }
});

test.serial('access log lines carry the right identities, addresses and bytes', async (t) => {
  const inbound = (await accessLog(mesh.cluster.node(1))).filter((line) => line.direction === 'inbound' && line.dst.address === `${server.ip}:${APP_PORT}`);
  t.is(inbound.length, CONNECTIONS);
  for (const line of inbound) {
    t.like(line, {
      scope: 'access',
      src: { address: client.ip, workload: 'client', namespace: 'shop', principal: CLIENT_PRINCIPAL },
      dst: { workload: 'server', namespace: 'shop', principal: SERVER_PRINCIPAL },
      mtls: true,
      connection_security_policy: 'mutual_tls',
      bytes_received: REQUEST_BYTES,
      bytes_sent: RESPONSE_BYTES,
      response_flags: '-',
    });
    t.true(line.duration_ms > 0);
    t.is(line.error, undefined);
  }
  const outbound = (await accessLog(mesh.cluster.node(0))).filter((line) => line.direction === 'outbound' && line.dst.address === `${server.ip}:${APP_PORT}`);
  t.is(outbound.length, CONNECTIONS);
  for (const line of outbound) {
    t.like(line, { src: { address: client.ip, workload: 'client', principal: CLIENT_PRINCIPAL }, dst: { workload: 'server', principal: SERVER_PRINCIPAL }, bytes_sent: REQUEST_BYTES, bytes_received: RESPONSE_BYTES });
  }
});

test.serial('a long connection\'s bytes show in /metrics while it is still open', async (t) => {
  const node = mesh.cluster.node(1);
  const labels = { reporter: 'destination', source_workload: 'client', destination_workload: 'server' };
  const before = await scrape(node);
  const holder = client.spawn(process.execPath, ['-e', HOLDER_SCRIPT, server.ip], { stdio: ['pipe', 'pipe', 'inherit'] });
  await waitForOutput(holder, 'sent');
  const during = await scrapeUntil(node, (s) => sumOf(s, 'istio_tcp_received_bytes_total', labels) >= sumOf(before, 'istio_tcp_received_bytes_total', labels) + HELD_BYTES);
  t.is(sumOf(during, 'istio_tcp_connections_opened_total', labels) - sumOf(before, 'istio_tcp_connections_opened_total', labels), 1, 'opened counted at once');
  t.is(sumOf(during, 'istio_tcp_connections_closed_total', labels) - sumOf(before, 'istio_tcp_connections_closed_total', labels), 0, 'not closed yet');
  t.is(sumOf(during, 'istio_tcp_received_bytes_total', labels) - sumOf(before, 'istio_tcp_received_bytes_total', labels), HELD_BYTES, 'bytes counted while open');
  const exited = once(holder, 'exit');
  holder.stdin!.end();
  await exited;
  const after = await scrapeUntil(node, (s) => sumOf(s, 'istio_tcp_connections_closed_total', labels) > sumOf(before, 'istio_tcp_connections_closed_total', labels));
  t.is(sumOf(after, 'istio_tcp_received_bytes_total', labels) - sumOf(before, 'istio_tcp_received_bytes_total', labels), HELD_BYTES, 'not counted twice at close');
  t.is(sumOf(after, 'istio_tcp_sent_bytes_total', labels) - sumOf(before, 'istio_tcp_sent_bytes_total', labels), RESPONSE_BYTES);
});

test.serial('ambitctl reads an agent inside its node namespace (--node)', async (t) => {
  let stdout = '';
  let stderr = '';
  const io = { stdout: (text: string) => (stdout += text), stderr: (text: string) => (stderr += text) };
  t.is(await runAmbitctl(['workloads', '-n', 'shop', '--node', mesh.cluster.node(1).netnsName], io), 0, stderr);
  t.regex(stdout, new RegExp(`shop\\s+server\\s+${server.ip.replace(/\./g, '\\.')}\\s+\\S+\\s+HBONE\\s+${SERVER_PRINCIPAL}`));
  t.regex(stdout, /shop\s+client\s+/);
  stdout = '';
  t.is(await runAmbitctl(['certs', '-o', 'json', '--node', mesh.cluster.node(1).netnsName], io), 0, stderr);
  const certs = JSON.parse(stdout) as Array<{ identity: string; state: string }>;
  t.true(certs.some((cert) => cert.identity === SERVER_PRINCIPAL && cert.state === 'Available'), 'the server pod\'s certificate is held by its node\'s agent');
  stdout = '';
  t.is(await runAmbitctl(['config-dump', '-o', 'json', '--node', mesh.cluster.node(1).netnsName], io), 0, stderr);
  const dump = JSON.parse(stdout) as { node: string; capturedPods: Array<{ name: string }> };
  t.is(dump.node, mesh.cluster.node(1).name);
  t.true(dump.capturedPods.some((pod) => pod.name === 'server'));
  stderr = '';
  t.is(await runAmbitctl(['workloads', '--node', 'ambit-no-such-netns'], io), 1);
  t.regex(stderr, /network namespace "ambit-no-such-netns" does not exist/);
});
