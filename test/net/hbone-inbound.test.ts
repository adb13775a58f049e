/**
 * The agent's inbound HBONE server on the real in-pod path, driven by an independent client: a python3 process
 * (test/net/helpers/hbone_raw_client.py: Python's TLS, HTTP/2 frames written by hand) with a valid mesh certificate,
 * run in an unenrolled pod of a 1-node local mesh and dialing the enrolled server pod's port 15008, where the real
 * agent accepts it on its in-pod listener. The application listeners are real sockets in the pods' namespaces.
 *
 * What a client can make the agent hold: a client killed with -9 mid-tunnel or after its handshake, a frozen
 * client, an idle one, a flood of reset CONNECTs, more streams than allowed; that the agent refuses relaying and
 * tunnels into itself with ztunnel's status codes; and that every rejection is counted and logged.
 */
import test from 'ava';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type net from 'node:net';
import type { ChildProcess } from 'node:child_process';
import { createLocalMesh, type LocalMesh } from '../../runtime/local-mesh.ts';
import type { Pod } from '../../runtime/index.ts';
import { CertificateAuthority, spiffeId } from '../../shared/identity/index.ts';
import { closeServer, listenIn } from './helpers/inpod-topology.ts';
import { parsePrometheusText, sumOf, type Sample } from '../helpers/prometheus-text.ts';
import { hboneImplementation } from '../../shared/hbone/config.ts';

const PYTHON = '/usr/bin/python3';
const CLIENT_SCRIPT = path.join(import.meta.dirname, 'helpers', 'hbone_raw_client.py');
const ENROLLED = { 'istio.io/dataplane-mode': 'ambient' };
const APP_PORT = 9090;
/** Short server timers for this mesh (AMBIT_HBONE_*): the interval is much longer than the FIN path may take. */
const KEEPALIVE_INTERVAL_MS = 10_000;
const KEEPALIVE_TIMEOUT_MS = 3_000;
const IDLE_TIMEOUT_MS = 6_000;
/** Slack for a machine shared by many test runs, added to the timers a frozen or idle client must wait out. */
const SLACK_MS = 5_000;
const CLIENT_PRINCIPAL = 'spiffe://cluster.local/ns/outside/sa/prober';
/** The HTTP/2 implementation under the agent's HBONE (the agents inherit AMBIT_HBONE_IMPL from this process). */
const IMPLEMENTATION = hboneImplementation();

let mesh: LocalMesh;
let server: Pod;
let other: Pod;
let bystander: Pod;
let client: Pod;
let agentPid: number;
let certDir: string;
const apps: net.Server[] = [];

/** One application listener: what it accepted and what is open now. */
interface App {
  accepted: number;
  open: Set<net.Socket>;
}
const serverApp: App = { accepted: 0, open: new Set() };
const otherApp: App = { accepted: 0, open: new Set() };
const bystanderApp: App = { accepted: 0, open: new Set() };

async function listenApp(pod: Pod, app: App): Promise<void> {
  apps.push(
    await listenIn(pod.netnsPath, '0.0.0.0', APP_PORT, (socket) => {
      app.accepted++;
      app.open.add(socket);
      socket.on('error', () => {});
      socket.on('close', () => app.open.delete(socket));
      // Reads what the tunnel carries and holds the connection until the other side ends it.
      socket.resume();
      socket.on('end', () => socket.end());
    }),
  );
}

const available = existsSync(PYTHON) && (await import('node:child_process')).spawnSync(PYTHON, ['-c', 'import hpack']).status === 0;
const netTest = available ? test.serial : test.skip;
if (!available) console.warn('skipping the HBONE inbound tests: /usr/bin/python3 with hpack (python3-h2) is missing');

test.before(async () => {
  if (!available) return;
  mesh = await createLocalMesh({
    nodes: 1,
    name: 'hbinb',
    agentEnv: {
      AMBIT_WORKER_THREADS: '1',
      AMBIT_HBONE_KEEPALIVE_INTERVAL_MS: String(KEEPALIVE_INTERVAL_MS),
      AMBIT_HBONE_KEEPALIVE_TIMEOUT_MS: String(KEEPALIVE_TIMEOUT_MS),
      AMBIT_HBONE_IDLE_TIMEOUT_MS: String(IDLE_TIMEOUT_MS),
    },
  });
  server = await mesh.cluster.createPod({ node: 0, namespace: 'shop', name: 'server', serviceAccount: 'server', namespaceLabels: ENROLLED });
  other = await mesh.cluster.createPod({ node: 0, namespace: 'shop', name: 'other', serviceAccount: 'other' });
  bystander = await mesh.cluster.createPod({ node: 0, namespace: 'outside', name: 'bystander', serviceAccount: 'bystander' });
  client = await mesh.cluster.createPod({ node: 0, namespace: 'outside', name: 'prober', serviceAccount: 'prober' });
  await listenApp(server, serverApp);
  await listenApp(other, otherApp);
  await listenApp(bystander, bystanderApp);
  // `ip netns exec` execs the agent: the child's pid is the agent process.
  agentPid = mesh.cluster.node(0).agent!.pid!;
  certDir = await mkdtemp(path.join(os.tmpdir(), 'ambit-hbinb-'));
  const certificate = await mesh.ca!.issueWorkloadCertificate(spiffeId('cluster.local', 'outside', 'prober'));
  await writeFile(path.join(certDir, 'cert.pem'), certificate.certPem);
  await writeFile(path.join(certDir, 'key.pem'), certificate.keyPem, { mode: 0o600 });
  await writeFile(path.join(certDir, 'root.pem'), mesh.ca!.rootCertPem);
  // A valid certificate from another mesh's root: its handshake must fail.
  const foreign = await CertificateAuthority.createRoot({ trustDomain: 'cluster.local' });
  const foreignCertificate = await foreign.issueWorkloadCertificate(spiffeId('cluster.local', 'outside', 'prober'));
  await writeFile(path.join(certDir, 'foreign-cert.pem'), foreignCertificate.certPem);
  await writeFile(path.join(certDir, 'foreign-key.pem'), foreignCertificate.keyPem, { mode: 0o600 });
  // The agent serves HBONE in the pod once its mesh state knows the pod (pushed by the control plane).
  const deadline = Date.now() + 20_000;
  for (;;) {
    const result = await request('CONNECT', `${server.ip}:${APP_PORT}`).catch((error: Error) => ({ error: error.message }));
    if ((result as { status?: number }).status === 200) break;
    if (Date.now() > deadline) throw new Error(`the server pod never served HBONE: ${JSON.stringify(result)}`);
    await sleep(200);
  }
  await waitUntil(() => serverApp.open.size === 0, 5_000);
});

test.after.always(async () => {
  for (const app of apps) await closeServer(app);
  if (certDir) await rm(certDir, { recursive: true, force: true });
  await mesh?.destroy();
});

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `condition` every 50 ms; resolves with how long it took, or -1 past `timeoutMs`. */
async function waitUntil(condition: () => boolean | Promise<boolean>, timeoutMs: number): Promise<number> {
  const started = Date.now();
  while (!(await condition())) {
    if (Date.now() - started > timeoutMs) return -1;
    await sleep(50);
  }
  return Date.now() - started;
}

function clientArgs(cert = 'cert.pem', key = 'key.pem'): string[] {
  return [CLIENT_SCRIPT, server.ip, '15008', path.join(certDir, cert), path.join(certDir, key), path.join(certDir, 'root.pem')];
}

/** A long-lived client process in the prober pod; `lines` are its JSON outputs. */
interface ClientProcess {
  child: ChildProcess;
  lines: unknown[];
  exited: Promise<unknown>;
}

function startClient(mode: string, ...args: string[]): ClientProcess {
  const child = client.spawn(PYTHON, [...clientArgs(), mode, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: unknown[] = [];
  let buffered = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    buffered += chunk;
    let newline: number;
    while ((newline = buffered.indexOf('\n')) >= 0) {
      lines.push(JSON.parse(buffered.slice(0, newline)));
      buffered = buffered.slice(newline + 1);
    }
  });
  child.stderr!.resume();
  return { child, lines, exited: once(child, 'exit') };
}

async function waitForLine(process: ClientProcess, expected: unknown, timeoutMs = 10_000): Promise<void> {
  const took = await waitUntil(() => process.lines.some((line) => JSON.stringify(line) === JSON.stringify(expected)) || process.child.exitCode !== null, timeoutMs);
  if (took < 0 || !process.lines.some((line) => JSON.stringify(line) === JSON.stringify(expected))) {
    throw new Error(`the client never printed ${JSON.stringify(expected)}: ${JSON.stringify(process.lines)}`);
  }
}

/** Runs the client to completion in the prober pod and returns its last JSON line. */
async function runClient(args: string[]): Promise<Record<string, unknown>> {
  const result = await client.exec(PYTHON, args, { timeoutMs: 60_000 });
  const lines = result.stdout.trim().split('\n').filter(Boolean);
  if (lines.length === 0) throw new Error(`the client printed nothing (exit ${result.code}): ${result.stderr}`);
  return JSON.parse(lines.at(-1)!) as Record<string, unknown>;
}

function request(method: string, authority: string): Promise<Record<string, unknown>> {
  return runClient([...clientArgs(), 'request', method, authority]);
}

/** The agent's open descriptors. */
async function agentFds(): Promise<number> {
  return (await readdir(`/proc/${agentPid}/fd`)).length;
}

async function agentRssBytes(): Promise<number> {
  const status = await readFile(`/proc/${agentPid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) * 1024;
}

async function scrape(): Promise<Sample[]> {
  const result = await mesh.cluster.node(0).exec(process.execPath, ['-e', "fetch('http://127.0.0.1:15020/metrics').then((r) => r.text()).then((t) => process.stdout.write(t))"]);
  if (result.code !== 0) throw new Error(`scraping the agent failed: ${result.stderr}`);
  return parsePrometheusText(result.stdout);
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- log lines are free-form JSON read by assertions
async function agentLog(message: string): Promise<Array<Record<string, any>>> {
  const text = await readFile(mesh.cluster.node(0).agentLogFile, 'utf8');
  return text.split('\n').filter((line) => line.includes(`"msg":"${message}"`)).map((line) => JSON.parse(line));
}

const MB = 1024 * 1024;

netTest('a client killed with -9 mid-tunnel: its HTTP/2 connection and its connection to the app are gone within the keepalive timeout, descriptors and memory back to baseline', async (t) => {
  const fdsBefore = await agentFds();
  const rssBefore = await agentRssBytes();
  const runs = 20;
  let slowest = 0;
  for (let i = 0; i < runs; i++) {
    const holder = startClient('hold', `${server.ip}:${APP_PORT}`);
    await waitForLine(holder, 'open');
    t.is(serverApp.open.size, 1, 'the tunnel reached the application');
    holder.child.kill('SIGKILL');
    await holder.exited;
    const killedAt = Date.now();
    const took = await waitUntil(async () => serverApp.open.size === 0 && (await agentFds()) <= fdsBefore, KEEPALIVE_TIMEOUT_MS);
    t.true(took >= 0, `run ${i}: ${KEEPALIVE_TIMEOUT_MS} ms after the kill the app still has ${serverApp.open.size} connection(s) and the agent ${(await agentFds()) - fdsBefore} descriptor(s) more than before`);
    if (took < 0) return;
    slowest = Math.max(slowest, Date.now() - killedAt);
  }
  t.log(`slowest cleanup after a kill: ${slowest} ms; descriptors ${fdsBefore} -> ${await agentFds()}`);
  const rssGrowth = (await agentRssBytes()) - rssBefore;
  t.log(`agent RSS after ${runs} killed clients: ${rssGrowth >= 0 ? '+' : ''}${(rssGrowth / MB).toFixed(1)} MB`);
  t.true(rssGrowth < 10 * MB, `the agent grew by ${(rssGrowth / MB).toFixed(1)} MB`);
});

netTest('a client killed with -9 right after its handshake: the agent lets go of its connection within the keepalive timeout', async (t) => {
  const fdsBefore = await agentFds();
  for (let i = 0; i < 10; i++) {
    const idle = startClient('handshake');
    await waitForLine(idle, 'ready');
    t.true((await agentFds()) > fdsBefore, 'the agent holds the HBONE connection');
    idle.child.kill('SIGKILL');
    await idle.exited;
    const took = await waitUntil(async () => (await agentFds()) <= fdsBefore, KEEPALIVE_TIMEOUT_MS);
    t.true(took >= 0, `run ${i}: the agent still holds ${(await agentFds()) - fdsBefore} more descriptor(s) ${KEEPALIVE_TIMEOUT_MS} ms after the kill`);
    if (took < 0) return;
  }
});

netTest('tunnels the client resets (an application aborting its connections) give back every descriptor', async (t) => {
  const fdsBefore = await agentFds();
  const resetter = startClient('resets', '50', `${server.ip}:${APP_PORT}`);
  t.teardown(() => {
    resetter.child.kill('SIGKILL');
  });
  await waitForLine(resetter, 'reset', 30_000);
  // The HBONE connection stays open: one descriptor for it, none for the 50 application connections.
  const took = await waitUntil(async () => serverApp.open.size === 0 && (await agentFds()) <= fdsBefore + 1, 3_000);
  t.true(took >= 0, `50 reset tunnels left ${(await agentFds()) - fdsBefore - 1} descriptor(s) in the agent and ${serverApp.open.size} application connection(s)`);
});

netTest('a frozen client (no FIN, no PING answer) loses its connection and its tunnel to the keepalive', async (t) => {
  const holder = startClient('hold', `${server.ip}:${APP_PORT}`);
  t.teardown(() => {
    holder.child.kill('SIGKILL');
  });
  await waitForLine(holder, 'open');
  t.is(serverApp.open.size, 1);
  holder.child.kill('SIGSTOP');
  const took = await waitUntil(() => serverApp.open.size === 0, KEEPALIVE_INTERVAL_MS + KEEPALIVE_TIMEOUT_MS + SLACK_MS);
  t.true(took >= 0, 'the application connection of a frozen client was never closed');
  t.log(`tunnel of the frozen client closed ${took} ms after the freeze`);
  // Not before the PING had time to go unanswered: a FIN did not end it (the process is frozen, not dead).
  t.true(took >= KEEPALIVE_TIMEOUT_MS, `closed after ${took} ms: sooner than a PING can time out`);
});

netTest('a client that opens no stream is closed after the idle timeout', async (t) => {
  const idle = startClient('handshake');
  t.teardown(() => {
    idle.child.kill('SIGKILL');
  });
  await waitForLine(idle, 'ready');
  const started = Date.now();
  await idle.exited;
  const took = Date.now() - started;
  t.true(took < IDLE_TIMEOUT_MS + SLACK_MS, `closed after ${took} ms`);
  t.true(took >= IDLE_TIMEOUT_MS - 1_000, `closed after ${took} ms, before the idle timeout: it answered every PING`);
});

/** Runs a flood of `count` reset CONNECTs, `batch` per write; returns the client's report and what the agent did. */
async function flood(count: number, batch: number): Promise<{ result: Record<string, unknown>; appConnections: number; rssGrowth: number }> {
  const acceptedBefore = serverApp.accepted;
  const rssBefore = await agentRssBytes();
  const result = await runClient([...clientArgs(), 'flood', String(count), `${server.ip}:${APP_PORT}`, String(batch)]);
  // A later event: a fresh tunnel on a new connection works, so the agent had its chance to open what it would.
  const after = await request('CONNECT', `${server.ip}:${APP_PORT}`);
  if (after.status !== 200) throw new Error(`the agent no longer serves the pod after the flood: ${JSON.stringify(after)}`);
  await waitUntil(() => serverApp.open.size === 0, 5_000);
  return { result, appConnections: serverApp.accepted - acceptedBefore - 1, rssGrowth: (await agentRssBytes()) - rssBefore };
}

netTest('5,000 CONNECTs reset at once on one connection: the connection is closed, no app connection opened, no memory growth', async (t) => {
  const { result, appConnections, rssGrowth } = await flood(5000, 5000);
  t.log(JSON.stringify(result), `app connections: ${appConnections}, agent RSS ${(rssGrowth / MB).toFixed(1)} MB`);
  // Node stops taking streams past the 200 allowed at once (RST ENHANCE_YOUR_CALM, then GOAWAY after 100 such) and
  // closes the connection. The GOAWAY itself may be lost: the agent closes with the rest of the flood unread, and
  // the kernel's RST can overtake it.
  t.true(result.closed, 'the agent closed the connection');
  if (result.goaway !== null) t.true((result.lastStreamId as number) < 2 * 400, `the agent read streams up to ${String(result.lastStreamId)}, not the whole flood`);
  t.true(appConnections <= 20, `the agent opened ${appConnections} application connections for streams reset in the same packet`);
  t.true(rssGrowth < 20 * MB, `the agent grew by ${(rssGrowth / MB).toFixed(1)} MB`);
});

netTest('5,000 CONNECTs reset in batches of 50: GOAWAY ENHANCE_YOUR_CALM once the reset budget is spent, counted and logged', async (t) => {
  const before = await scrape();
  const { result, appConnections, rssGrowth } = await flood(5000, 50);
  t.log(JSON.stringify(result), `app connections: ${appConnections}, agent RSS ${(rssGrowth / MB).toFixed(1)} MB`);
  t.is(result.goaway, 0xb, 'GOAWAY ENHANCE_YOUR_CALM');
  t.true(result.closed, 'the agent closed the connection');
  t.true((result.sent as number) <= 400, `the client got to send ${String(result.sent)} resets before being cut off`);
  t.true(appConnections <= 20, `the agent opened ${appConnections} application connections`);
  t.true(rssGrowth < 20 * MB, `the agent grew by ${(rssGrowth / MB).toFixed(1)} MB`);
  const floods = (samples: Sample[]): number => sumOf(samples, 'ambit_connections_rejected_total', { reason: 'stream_flood' });
  t.is(floods(await scrape()) - floods(before), 1, 'the flood is counted');
  t.true((await agentLog('connection rejected')).some((line) => line.reason === 'stream_flood' && line.src.principal === CLIENT_PRINCIPAL), 'and logged with the client identity');
});

netTest('streams beyond the advertised 200 at once are refused (node:http2 ends the connection, the own layer answers REFUSED_STREAM), and no more than 200 reach the app', async (t) => {
  const before = serverApp.accepted;
  const streams = startClient('streams', '250', `${server.ip}:${APP_PORT}`);
  t.teardown(() => {
    streams.child.kill('SIGKILL');
  });
  const took = await waitUntil(() => streams.lines.length > 0 || streams.child.exitCode !== null, 30_000);
  t.true(took >= 0, 'the client got no answer to its streams');
  const result = streams.lines[0] as { ok: number; resets: Record<string, number>; goaway: number | null; lastStreamId?: number; closed: boolean };
  t.log(JSON.stringify(result));
  t.true(result.ok <= 200, `${result.ok} tunnels answered 200`);
  if (IMPLEMENTATION === 'node') {
    // nghttp2 answers a stream past the acknowledged SETTINGS_MAX_CONCURRENT_STREAMS with a connection error: GOAWAY
    // PROTOCOL_ERROR naming the 200th stream as the last, then the close (whose RST, the rest being unread, may
    // overtake the GOAWAY).
    t.true(result.closed, 'the agent closed the connection');
    if (result.goaway !== null) {
      t.is(result.goaway, 1, 'GOAWAY PROTOCOL_ERROR');
      t.is(result.lastStreamId, 2 * 200 - 1, 'the last stream the agent took is the 200th');
    }
  } else {
    // The own layer refuses each stream past the limit with RST_STREAM REFUSED_STREAM (RFC 9113 5.1.2), charged to
    // the connection's reset budget; the 200 it took stay served.
    t.is(result.resets['7'], 50, 'the 50 streams past the limit refused with REFUSED_STREAM');
    t.is(result.ok, 200, 'the 200 within the limit answered 200');
    streams.child.kill('SIGKILL');
  }
  t.true(serverApp.accepted - before <= 200, `${serverApp.accepted - before} application connections`);
  t.true((await waitUntil(() => serverApp.open.size === 0, KEEPALIVE_TIMEOUT_MS)) >= 0, 'the application connections close with the client connection');
});

netTest('garbage frames and an HPACK bomb from a client with a valid certificate: GOAWAY or RST_STREAM, the agent keeps serving, descriptors back to baseline', async (t) => {
  const fdsBefore = await agentFds();
  const acceptedBefore = serverApp.accepted;
  const runs: Array<[string, string[]]> = [
    ['a SETTINGS frame of 7 bytes', ['garbage', 'settings']],
    ['a WINDOW_UPDATE frame of 3 bytes', ['garbage', 'window']],
    ['4 KiB of random bytes', ['garbage', 'noise']],
    ['a header block decoding to 4 MB', ['hpackbomb', `${server.ip}:${APP_PORT}`]],
  ];
  for (const [what, args] of runs) {
    const result = (await runClient([...clientArgs(), ...args])) as { status: number | null; resets: Record<string, number>; goaway: number | null; closed: boolean };
    t.log(what, JSON.stringify(result));
    if (args[0] === 'garbage' && args[1] !== 'noise') {
      // A frame of the wrong size is a connection error of type FRAME_SIZE_ERROR (RFC 9113 6.5, 6.9).
      if (result.goaway !== null) t.is(result.goaway, 0x6, `${what}: GOAWAY FRAME_SIZE_ERROR`);
      t.true(result.closed, `${what}: the agent closed the connection`);
    } else if (args[0] === 'garbage') {
      t.true(result.closed, `${what}: the agent closed the connection`);
    } else {
      // Refused one way or another (GOAWAY, RST_STREAM or 431), never relayed.
      t.true(result.goaway !== null || Object.keys(result.resets).length > 0 || (result.status !== null && result.status >= 400) || result.closed, `${what}: refused`);
      t.not(result.status, 200, `${what}: not answered 200`);
    }
  }
  t.is(serverApp.accepted - acceptedBefore, 0, 'nothing reached the application');
  t.is(mesh.cluster.node(0).agent!.exitCode, null, 'the agent is still running');
  // A later event on the same agent: a well-formed CONNECT is served.
  t.deepEqual(await request('CONNECT', `${server.ip}:${APP_PORT}`), { status: 200 });
  const took = await waitUntil(async () => serverApp.open.size === 0 && (await agentFds()) <= fdsBefore, KEEPALIVE_TIMEOUT_MS + SLACK_MS);
  t.true(took >= 0, `the agent holds ${(await agentFds()) - fdsBefore} descriptor(s) more than before`);
});

netTest('status codes as ztunnel: 400 not CONNECT, 400 another address (never relayed), 503 the pod\'s own proxy ports', async (t) => {
  const otherBefore = otherApp.accepted;
  const bystanderBefore = bystanderApp.accepted;
  t.deepEqual(await request('GET', `${server.ip}:${APP_PORT}`), { status: 400 }, 'GET');
  t.deepEqual(await request('CONNECT', `${other.ip}:${APP_PORT}`), { status: 400 }, 'another pod of the mesh');
  t.deepEqual(await request('CONNECT', `${bystander.ip}:${APP_PORT}`), { status: 400 }, 'an address outside the mesh');
  for (const port of [15008, 15006, 15001]) t.deepEqual(await request('CONNECT', `${server.ip}:${port}`), { status: 503 }, `port ${port}`);
  // A later event on the same agent: the pod's own address is served, so the refusals above were decisions.
  t.deepEqual(await request('CONNECT', `${server.ip}:${APP_PORT}`), { status: 200 });
  t.is(otherApp.accepted - otherBefore, 0, 'nothing reached the other pod');
  t.is(bystanderApp.accepted - bystanderBefore, 0, 'nothing reached the address outside the mesh');
});

netTest('rejections are counted in Istio\'s metrics and ambit_connections_rejected_total, and logged at a bounded rate', async (t) => {
  const before = await scrape();
  // 15 handshakes with a certificate of another mesh: more than the 10 lines a reason may log per window.
  t.deepEqual(await runClient([...clientArgs('foreign-cert.pem', 'foreign-key.pem'), 'handshakes', '15']), { failed: 15 }, 'every handshake fails');
  t.deepEqual(await request('CONNECT', `${other.ip}:${APP_PORT}`), { status: 400 });
  t.deepEqual(await request('CONNECT', `${server.ip}:15006`), { status: 503 });
  t.deepEqual(await request('PUT', `${server.ip}:${APP_PORT}`), { status: 400 });
  const delta = async (name: string, labels: Record<string, string>): Promise<number> => {
    let after = await scrape();
    // Handshake failures are counted as the agent sees them, just after the client gave up.
    await waitUntil(async () => sumOf((after = await scrape()), name, labels) - sumOf(before, name, labels) > 0, 5_000);
    return sumOf(after, name, labels) - sumOf(before, name, labels);
  };
  t.is(await delta('ambit_connections_rejected_total', { direction: 'inbound', reason: 'tls' }), 15);
  t.is(await delta('ambit_connections_rejected_total', { direction: 'inbound', reason: 'misdirected' }), 1);
  t.is(await delta('ambit_connections_rejected_total', { direction: 'inbound', reason: 'proxy_port' }), 1);
  t.is(await delta('ambit_connections_rejected_total', { direction: 'inbound', reason: 'bad_method' }), 1);
  const refused = { reporter: 'destination', destination_workload: 'server', source_principal: CLIENT_PRINCIPAL, response_flags: 'DPE' };
  t.is(await delta('istio_tcp_connections_closed_total', refused), 2, 'the misdirected CONNECT and the PUT, under the verified client identity');
  t.is(await delta('istio_tcp_connections_closed_total', { ...refused, response_flags: 'UF' }), 1, 'the proxy-port CONNECT');
  t.is(await delta('istio_tcp_connections_closed_total', { reporter: 'destination', destination_workload: 'server', source_principal: 'unknown', response_flags: 'UF' }), 15, 'the failed handshakes');
  const lines = await agentLog('connection rejected');
  const tlsLines = lines.filter((line) => line.reason === 'tls');
  t.true(tlsLines.length >= 1 && tlsLines.length <= 10, `${tlsLines.length} lines for 15 failed handshakes`);
  t.true(tlsLines.every((line) => line.src.address === client.ip && line.level === 40), 'warnings naming the client address');
  const misdirected = lines.find((line) => line.reason === 'misdirected');
  t.truthy(misdirected, 'the relay attempt is logged');
  t.is(misdirected?.src.principal, CLIENT_PRINCIPAL);
  t.regex(String(misdirected?.error), new RegExp(`${other.ip.replaceAll('.', '\\.')} is not an address of pod shop/server`));
});
