/**
 * The agent end to end on a real 2-node local cluster: pods are network namespaces wired by Debian's CNI plugins
 * chained with ambit-cni, each node runs the real agent (agent/main.ts) in its namespace, traffic is real TCP.
 */
import test, { type ExecutionContext } from 'ava';
import { once } from 'node:events';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { parse } from 'yaml';
import { podFile, removePod, writePod } from '../../runtime/cluster-store.ts';
import { randomBytes } from 'node:crypto';
import { AMBIT_CNI_DIR } from '../../runtime/index.ts';
import { run } from '../../runtime/exec.ts';
import { addNetns, deleteNetns, ipIn } from '../../runtime/netns.ts';
import type { PodObject } from '../../shared/k8s/objects.ts';
import path from 'node:path';
import { createLocalMesh, type LocalMesh } from '../../runtime/local-mesh.ts';
import { runClient, startEchoServer, type Pod } from '../../runtime/index.ts';
import { spiffeId } from '../../shared/identity/index.ts';

const ENROLLED = { 'istio.io/dataplane-mode': 'ambient' };
const APP_PORT = 8080;
const IMPOSTOR = path.join(import.meta.dirname, 'helpers', 'impostor-hbone-server.ts');

let mesh: LocalMesh;
let server: Pod;
let client: Pod;

test.before(async () => {
  mesh = await createLocalMesh({ nodes: 2, name: 'agenttest' });
  server = await mesh.cluster.createPod({ node: 1, namespace: 'shop', name: 'server', serviceAccount: 'server', namespaceLabels: ENROLLED });
  client = await mesh.cluster.createPod({ node: 0, namespace: 'shop', name: 'client', serviceAccount: 'client' });
  await startEchoServer(server, { port: APP_PORT });
});

test.after.always(async () => {
  await mesh?.destroy();
});

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- access log lines are free-form JSON read by assertions
async function accessLog(nodeIndex: number): Promise<Array<Record<string, any>>> {
  const text = await readFile(mesh.cluster.node(nodeIndex).agentLogFile, 'utf8');
  return text.split('\n').filter((line) => line.includes('"connection closed"')).map((line) => JSON.parse(line));
}

/** Polls `condition` until it holds; throws naming `what` after `timeoutMs`. */
async function waitUntil(condition: () => Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Inbound connections node 1's agent logged from `from` to the server pod. */
async function inboundToServer(from: Pod): Promise<Awaited<ReturnType<typeof accessLog>>> {
  return (await accessLog(1)).filter((entry) => entry.direction === 'inbound' && entry.src.address === from.ip && entry.dst.address === `${server.ip}:${APP_PORT}`);
}

/**
 * A connection from the client to the server pod, returning once node 1's agent has logged it: a later event that
 * shows node 1 has logged whatever it did with connections made before (the signal for "did not happen" checks).
 */
async function markerThroughNode1(): Promise<void> {
  const seen = (await inboundToServer(client)).length;
  const result = await runClient(client, { host: server.ip, port: APP_PORT });
  if (!result.ok) throw new Error(`the marker connection failed: ${result.errors.join('; ')}`);
  await waitUntil(async () => (await inboundToServer(client)).length > seen, 'node 1 to log the marker connection');
}

/** The control plane pushes asynchronously: wait until node `nodeIndex`'s agent sees pod `name` as `tunnelProtocol`. */
async function waitForAgentView(nodeIndex: number, name: string, tunnelProtocol: 'HBONE' | 'NONE'): Promise<void> {
  const script = `fetch('http://127.0.0.1:15000/config_dump').then((r) => r.json()).then((d) => { const w = d.workloads.find((x) => x.name === ${JSON.stringify(name)}); process.exit(w && w.tunnelProtocol === ${JSON.stringify(tunnelProtocol)} ? 0 : 1); }, () => process.exit(1))`;
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if ((await mesh.cluster.node(nodeIndex).exec(process.execPath, ['-e', script])).code === 0) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`node ${nodeIndex}'s agent never saw ${name} as ${tunnelProtocol}`);
}

test.serial('each agent runs with the V8 flags sized for a proxy, and its admin endpoint says where its memory is', async (t) => {
  for (const index of [0, 1]) {
    // The runtime starts `ip netns exec <node> node <flags> agent/main.ts`: the node process is the wrapper's child.
    let pid = mesh.cluster.node(index).agent!.pid!;
    if ((await readFile(`/proc/${pid}/comm`, 'utf8')).trim() === 'ip') pid = Number((await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8')).trim().split(/\s+/)[0]);
    const argv = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0');
    t.true(argv.includes('--max-semi-space-size=8'), `node ${index + 1}'s agent: ${argv.join(' ')}`);
    t.true(argv.indexOf('--max-semi-space-size=8') < argv.findIndex((arg) => arg.endsWith('agent/main.ts')), 'a node flag, before the main module');
    const script = "fetch('http://127.0.0.1:15000/memory').then((r) => r.text()).then((text) => process.stdout.write(text))";
    const result = await mesh.cluster.node(index).exec(process.execPath, ['-e', script]);
    const report = JSON.parse(result.stdout) as { rss: { total: number; anonymous: number; file: number }; spaces: { name: string; committed: number }[] };
    t.true(report.rss.total > 0 && report.rss.anonymous > 0);
    t.true(report.spaces.some((space) => space.name === 'new_space'));
  }
});

test.serial('an enrolled client reaches an enrolled server on another node through HBONE, identities verified', async (t) => {
  const result = await runClient(client, { host: server.ip, port: APP_PORT, count: 5, size: 64 * 1024 });
  t.true(result.ok, result.errors.join('; '));
  t.is(result.succeeded, 5);
  const inbound = (await accessLog(1)).filter((entry) => entry.direction === 'inbound' && entry.src.address === client.ip);
  t.true(inbound.length >= 5, 'the server node agent delivered the connections');
  t.true(inbound.every((entry) => entry.mtls === true && entry.src.principal === 'spiffe://cluster.local/ns/shop/sa/client'));
  const outbound = (await accessLog(0)).filter((entry) => entry.direction === 'outbound' && entry.dst.address === `${server.ip}:${APP_PORT}`);
  t.true(outbound.length >= 5 && outbound.every((entry) => entry.mtls === true));
});

test.serial('both agents\' splices read the tunnel\'s TCP sockets into pooled buffers (admin /memory), none left on plain reads', async (t) => {
  // After the tunnels above: node 1's splice reads the client's socket, node 2's the server application's.
  const result = await runClient(client, { host: server.ip, port: APP_PORT, count: 2, size: 1024 });
  t.true(result.ok, result.errors.join('; '));
  for (const index of [0, 1]) {
    const script = "fetch('http://127.0.0.1:15000/memory').then((r) => r.text()).then((text) => process.stdout.write(text))";
    const report = JSON.parse((await mesh.cluster.node(index).exec(process.execPath, ['-e', script])).stdout) as {
      spliceReads?: { pooledSockets: number; unsupportedSockets: number; scavenges: number };
    };
    t.truthy(report.spliceReads, `node ${index + 1}'s agent shows its splice reads`);
    // Both HTTP/2 layers' splices (AMBIT_HBONE_IMPL=node or own) read their TCP sockets into pooled buffers.
    t.true(report.spliceReads!.pooledSockets >= 2, `node ${index + 1}: ${JSON.stringify(report.spliceReads)}`);
    t.is(report.spliceReads!.unsupportedSockets, 0);
  }
});

test.serial('the server application sees the client pod as the source address', async (t) => {
  const httpServer = await mesh.cluster.createPod({ node: 1, namespace: 'shop', name: 'web', serviceAccount: 'web' });
  t.teardown(() => mesh.cluster.deletePod(httpServer));
  await startEchoServer(httpServer, { port: 8081, http: true });
  const result = await runClient(client, { host: httpServer.ip, port: 8081, http: true });
  t.true(result.ok, result.errors.join('; '));
  t.is((result.response?.body as { peer: string }).peer, client.ip);
});

test.serial('captured traffic between two pods on the same node goes through HBONE too', async (t) => {
  const neighbour = await mesh.cluster.createPod({ node: 1, namespace: 'shop', name: 'neighbour', serviceAccount: 'neighbour' });
  t.teardown(() => mesh.cluster.deletePod(neighbour));
  const result = await runClient(neighbour, { host: server.ip, port: APP_PORT, count: 3 });
  t.true(result.ok, result.errors.join('; '));
  const inbound = (await accessLog(1)).filter((entry) => entry.direction === 'inbound' && entry.src.address === neighbour.ip);
  t.true(inbound.length >= 3 && inbound.every((entry) => entry.src.principal === 'spiffe://cluster.local/ns/shop/sa/neighbour'));
});

/** Starts the impostor HBONE server in `pod`, presenting a mesh certificate for `serviceAccount`; resolves once it listens. */
async function startImpostor(t: ExecutionContext, pod: Pod, serviceAccount: string): Promise<{ lines: Array<Record<string, string>>; stop(): Promise<void> }> {
  const certificate = await mesh.ca!.issueWorkloadCertificate(spiffeId('cluster.local', pod.namespace, serviceAccount));
  const dir = await mkdtemp(path.join(tmpdir(), 'ambit-impostor-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'certificate.json');
  await writeFile(file, JSON.stringify(certificate), { mode: 0o600 });
  const child = pod.spawn(process.execPath, [IMPOSTOR, file, String(APP_PORT)], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = once(child, 'exit');
  const lines: Array<Record<string, string>> = [];
  let buffered = '';
  child.stdout!.on('data', (chunk: Buffer) => {
    buffered += chunk;
    for (let end = buffered.indexOf('\n'); end >= 0; end = buffered.indexOf('\n')) {
      lines.push(JSON.parse(buffered.slice(0, end)) as Record<string, string>);
      buffered = buffered.slice(end + 1);
    }
  });
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      await exited;
    }
  };
  t.teardown(stop);
  while (!lines.some((line) => 'listening' in line)) {
    if (child.exitCode !== null) throw new Error('the impostor HBONE server exited before listening');
    await Promise.race([once(child.stdout!, 'data'), exited]);
  }
  return { lines, stop };
}

test.serial('the client agent pins the destination identity: a destination presenting another valid mesh identity is refused, and the access log names the identity presented', async (t) => {
  const pinned = await mesh.cluster.createPod({ node: 1, namespace: 'shop', name: 'pinned', serviceAccount: 'pinned' });
  t.teardown(() => mesh.cluster.deletePod(pinned));
  await startEchoServer(pinned, { port: APP_PORT });
  // The pod stays captured and in every agent's workload table as shop/sa/pinned; with its node agent gone, a
  // stand-in HBONE server in the pod answers on 15008 with whatever certificate the mesh CA gave it.
  const node = mesh.cluster.node(1);
  await node.stopAgent();
  t.teardown(() => node.startAgent());
  const toPinned = async () => (await accessLog(0)).filter((entry) => entry.direction === 'outbound' && entry.dst.address === `${pinned.ip}:${APP_PORT}`);

  // The identity the table names: accepted, and the log reports the identity the certificate carried.
  const honest = await startImpostor(t, pinned, 'pinned');
  const accepted = await runClient(client, { host: pinned.ip, port: APP_PORT, count: 2 });
  t.true(accepted.ok, `the stand-in serving the expected identity carries traffic: ${accepted.errors.join('; ')}`);
  t.is(honest.lines.filter((line) => line.stream === 'spiffe://cluster.local/ns/shop/sa/client').length, 2);
  const honestLines = await toPinned();
  t.is(honestLines.length, 2);
  t.true(honestLines.every((entry) => entry.mtls === true && entry.dst.principal === 'spiffe://cluster.local/ns/shop/sa/pinned' && entry.response_flags === '-'), JSON.stringify(honestLines[0]));
  await honest.stop();

  // Another valid mesh identity (a real workload's, signed by the same root): the client agent refuses the server.
  const impostor = await startImpostor(t, pinned, 'server');
  const refused = await runClient(client, { host: pinned.ip, port: APP_PORT, count: 1, timeoutMs: 10_000 });
  t.false(refused.ok, 'the client must not reach a destination that proved another identity');
  t.is(refused.succeeded, 0);
  // The handshake reached the impostor (it saw the client walk away) and no stream was ever opened on it.
  const deadline = Date.now() + 10_000;
  while (!impostor.lines.some((line) => 'rejected' in line) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
  t.true(impostor.lines.some((line) => 'rejected' in line), `the client reached the impostor and broke off the handshake: ${JSON.stringify(impostor.lines)}`);
  t.false(impostor.lines.some((line) => 'stream' in line), 'no CONNECT reached the impostor');
  const refusedLines = (await toPinned()).slice(honestLines.length);
  t.is(refusedLines.length, 1);
  t.is(refusedLines[0]!.response_flags, 'UF');
  t.regex(String(refusedLines[0]!.error), /is not who we expected: .*spiffe:\/\/cluster\.local\/ns\/shop\/sa\/server/);
  t.is(refusedLines[0]!.dst.principal, undefined, 'an identity never accepted is not reported as the destination\'s');
  t.is(refusedLines[0]!.dst.workload, 'pinned');
  await impostor.stop();
  await node.startAgent();
});

test.serial('a destination outside the mesh is passed through as plain TCP', async (t) => {
  const outside = await mesh.cluster.createPod({ node: 1, namespace: 'legacy', name: 'outside' });
  t.teardown(() => mesh.cluster.deletePod(outside));
  await startEchoServer(outside, { port: APP_PORT });
  await waitForAgentView(0, 'outside', 'NONE');
  const result = await runClient(client, { host: outside.ip, port: APP_PORT, count: 3 });
  t.true(result.ok, result.errors.join('; '));
  const outbound = (await accessLog(0)).filter((entry) => entry.dst.address === `${outside.ip}:${APP_PORT}`);
  t.true(outbound.length >= 3 && outbound.every((entry) => entry.mtls === false), 'passthrough, not HBONE');
});

test.serial('a pod that is not enrolled reaches an enrolled server in plaintext (PERMISSIVE)', async (t) => {
  const legacy = await mesh.cluster.createPod({ node: 0, namespace: 'legacy', name: 'legacy-client' });
  t.teardown(() => mesh.cluster.deletePod(legacy));
  const result = await runClient(legacy, { host: server.ip, port: APP_PORT, count: 2 });
  t.true(result.ok, result.errors.join('; '));
  const inbound = (await accessLog(1)).filter((entry) => entry.src.address === legacy.ip);
  t.true(inbound.length >= 2 && inbound.every((entry) => entry.mtls === false));
});

test.serial('deleting a pod with connections open closes them and the agent keeps serving', async (t) => {
  const doomed = await mesh.cluster.createPod({ node: 1, namespace: 'shop', name: 'doomed', serviceAccount: 'doomed' });
  await startEchoServer(doomed, { port: APP_PORT });
  // A client that holds one connection open and reports when it ends.
  const holder = client.spawn(process.execPath, ['-e', `
    const s = require('net').connect(${APP_PORT}, '${doomed.ip}', () => { s.write('x'); });
    s.once('data', () => console.log('connected'));
    s.on('error', (e) => console.log('ended ' + e.code));
    s.on('close', () => { console.log('closed'); process.exit(0); });
    setTimeout(() => { console.log('still-open'); process.exit(1); }, 20000);
  `], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = once(holder, 'exit') as Promise<[number]>;
  let output = '';
  holder.stdout!.on('data', (chunk: Buffer) => (output += chunk));
  while (!output.includes('connected')) await once(holder.stdout!, 'data');
  await mesh.cluster.deletePod(doomed);
  const [code] = await exited;
  t.is(code, 0, `the open connection was closed after the pod went away: ${output}`);
  const after = await runClient(client, { host: server.ip, port: APP_PORT, count: 3 });
  t.true(after.ok, 'the agent still serves other pods');
  t.is(mesh.cluster.node(1).agent?.exitCode, null, 'the agent did not exit');
});

test.serial('an enrolled pod cannot start while its node agent is down, and is captured once it is back', async (t) => {
  const node = mesh.cluster.node(0);
  await node.stopAgent();
  t.teardown(() => node.startAgent());
  const error = await t.throwsAsync(mesh.cluster.createPod({ node: 0, namespace: 'shop', name: 'early', serviceAccount: 'early' }));
  t.regex(error!.message, /agent/i);
  await node.startAgent();
  const late = await mesh.cluster.createPod({ node: 0, namespace: 'shop', name: 'early', serviceAccount: 'early' });
  t.teardown(() => mesh.cluster.deletePod(late));
  const result = await runClient(late, { host: server.ip, port: APP_PORT });
  t.true(result.ok, result.errors.join('; '));
  const inbound = (await accessLog(1)).filter((entry) => entry.src.address === late.ip);
  t.true(inbound.some((entry) => entry.src.principal === 'spiffe://cluster.local/ns/shop/sa/early'));
});

test.serial('a connection open while the server node agent restarts keeps working: the old agent drains its tunnels before it exits', async (t) => {
  // A client that holds one connection open, and on "go" on stdin sends once more, expects the echo, and ends cleanly.
  const holder = client.spawn(process.execPath, ['-e', `
    const s = require('net').connect(${APP_PORT}, '${server.ip}', () => s.write('x'));
    let echoed = '';
    s.on('data', (chunk) => { echoed += chunk; if (echoed === 'x') console.log('connected'); if (echoed === 'xy') s.end(); });
    s.on('error', (e) => { console.log('error ' + e.code); process.exit(1); });
    s.on('close', () => { console.log(echoed === 'xy' ? 'clean' : 'short ' + echoed); process.exit(echoed === 'xy' ? 0 : 1); });
    process.stdin.once('data', () => s.write('y'));
    setTimeout(() => { console.log('timeout'); process.exit(2); }, 30000);
  `], { stdio: ['pipe', 'pipe', 'inherit'] });
  const exited = once(holder, 'exit') as Promise<[number]>;
  let output = '';
  holder.stdout!.on('data', (chunk: Buffer) => (output += chunk));
  while (!output.includes('connected')) await once(holder.stdout!, 'data');
  const node = mesh.cluster.node(1);
  const released = (await readFile(node.agentLogFile, 'utf8')).split('pod released').length;
  const restart = node.restartAgent({ overlap: true });
  // The old agent has closed its listeners and released its pods: it is draining.
  while ((await readFile(node.agentLogFile, 'utf8')).split('pod released').length === released) await new Promise((resolve) => setTimeout(resolve, 50));
  holder.stdin!.write('go\n');
  const [code] = await exited;
  await restart;
  t.is(code, 0, `the tunnel carried data after the restart began and ended cleanly: ${output}`);
  // The old agent let go of its pods on the way out, but they stay captured: the record the next start reads still
  // lists them (emptied, the next restart would re-open no listeners and refuse connections meanwhile).
  const record = JSON.parse(await readFile(path.join(node.dir, `captured-pods-${node.name}.json`), 'utf8')) as unknown;
  t.true(JSON.stringify(record).includes(server.uid), 'the captured-pods record still lists the server pod');
});

/**
 * Sequential connections from `pod` to the server (256 bytes each way) until told to stop: "m" on stdin prints how
 * many succeeded so far, "s" stops and prints the totals. Shows when connections were made, not only how many.
 */
function startLoad(pod: Pod): { mark(): Promise<number>; stop(): Promise<{ ok: number; failed: number; errors: string[] }> } {
  const child = pod.spawn(process.execPath, ['-e', `
    const net = require('net');
    let ok = 0, failed = 0, stop = false;
    const errors = [];
    process.stdin.on('data', (data) => {
      for (const c of String(data)) {
        if (c === 'm') console.log(JSON.stringify({ mark: ok }));
        if (c === 's') stop = true;
      }
    });
    const payload = Buffer.alloc(256, 97);
    function one() {
      if (stop) { console.log(JSON.stringify({ ok, failed, errors: errors.slice(0, 5) })); process.exit(0); }
      const s = net.connect(${APP_PORT}, '${server.ip}');
      let got = 0, error;
      s.setTimeout(10000, () => s.destroy(new Error('timed out')));
      s.on('connect', () => s.write(payload));
      s.on('data', (chunk) => { got += chunk.length; if (got >= 256) s.end(); });
      s.on('error', (e) => { error = e.code || e.message; });
      s.on('close', () => {
        if (!error && got >= 256) ok++; else { failed++; errors.push(error || 'short echo: ' + got); }
        setImmediate(one);
      });
    }
    one();
  `], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines: Array<Record<string, unknown>> = [];
  let buffered = '';
  child.stdout!.on('data', (chunk: Buffer) => {
    buffered += chunk;
    for (let end = buffered.indexOf('\n'); end >= 0; end = buffered.indexOf('\n')) {
      lines.push(JSON.parse(buffered.slice(0, end)) as Record<string, unknown>);
      buffered = buffered.slice(end + 1);
    }
  });
  const next = async (key: string): Promise<Record<string, unknown>> => {
    const seen = lines.length;
    while (!lines.slice(seen).some((line) => key in line)) {
      if (child.exitCode !== null) throw new Error('the load client exited');
      await once(child.stdout!, 'data');
    }
    return lines.slice(seen).find((line) => key in line)!;
  };
  return {
    async mark() {
      const reply = next('mark');
      child.stdin!.write('m');
      return (await reply).mark as number;
    },
    async stop() {
      const reply = next('ok');
      child.stdin!.write('s');
      return (await reply) as { ok: number; failed: number; errors: string[] };
    },
  };
}

test.serial('agent restarts on both nodes lose no new connection (SO_REUSEPORT overlap)', async (t) => {
  const startedAt = Date.now();
  const load = startLoad(client);
  await waitUntil(async () => (await load.mark()) > 0, 'the load to get going');
  const atStart = await load.mark();
  await mesh.cluster.node(0).restartAgent({ overlap: true });
  const afterFirst = await load.mark();
  await mesh.cluster.node(1).restartAgent({ overlap: true });
  const afterSecond = await load.mark();
  // Some more on the new agents alone.
  await waitUntil(async () => (await load.mark()) >= afterSecond + 50, 'connections through both new agents');
  const result = await load.stop();
  t.log(`connections: ${atStart} before, ${afterFirst - atStart} during node 0's restart, ${afterSecond - afterFirst} during node 1's, ${result.ok} in all`);
  if (result.failed > 0) {
    // What the agents saw, for the record: which hop reset the connection.
    for (const node of [0, 1]) {
      const text = await readFile(mesh.cluster.node(node).agentLogFile, 'utf8');
      // eslint-disable-next-line @typescript-eslint/no-explicit-any -- log lines are free-form JSON
      const lines = text.split('\n').filter((line) => line.startsWith('{')).map((line) => JSON.parse(line) as Record<string, any>).filter((line) => line.time >= startedAt);
      const access = lines.filter((line) => line.msg === 'connection closed');
      const unusual = access.filter((line) => line.error || line.response_flags !== '-');
      const other = lines.filter((line) => line.msg !== 'connection closed');
      t.log(`node ${node}: ${access.length} connections logged (${access.filter((line) => line.direction === 'outbound').length} outbound), unusual: ${JSON.stringify(unusual.slice(0, 5))}; other lines: ${other.map((line) => `${line.time - startedAt}ms ${line.msg} ${line.err ?? line.reason ?? ''}`).join(' | ')}`);
    }
  }
  t.is(result.failed, 0, result.errors.join('; '));
  // The load overlapped both restarts: connections succeeded while each one was under way.
  t.true(afterFirst > atStart, 'connections were made while node 0\'s agent restarted');
  t.true(afterSecond > afterFirst, 'connections were made while node 1\'s agent restarted');
  // The restarted agents re-captured the running pods: traffic still goes through HBONE.
  const before = (await inboundToServer(client)).length;
  t.true((await runClient(client, { host: server.ip, port: APP_PORT })).ok);
  await waitUntil(async () => (await inboundToServer(client)).slice(before).some((entry) => entry.mtls === true && entry.src.principal === 'spiffe://cluster.local/ns/shop/sa/client'), 'the new node 1 agent to log an HBONE connection');
  t.pass();
});

/** The pod's ambient.istio.io/redirection annotation, as published in the cluster directory. */
async function redirection(pod: Pod): Promise<string | undefined> {
  const object = parse(await readFile(podFile(mesh.cluster.clusterDir, pod.namespace, pod.name), 'utf8')) as { metadata?: { annotations?: Record<string, string> } };
  return object.metadata?.annotations?.['ambient.istio.io/redirection'];
}

test.serial('labelling a namespace captures its running pods, and removing the label releases them', async (t) => {
  const flip = await mesh.cluster.createPod({ node: 1, namespace: 'flip', name: 'flip', serviceAccount: 'flip' });
  t.teardown(() => mesh.cluster.deletePod(flip));
  await startEchoServer(flip, { port: APP_PORT });
  const inboundFromClient = async (): Promise<number> =>
    (await accessLog(1)).filter((entry) => entry.direction === 'inbound' && entry.dst.address === `${flip.ip}:${APP_PORT}` && entry.src.principal === 'spiffe://cluster.local/ns/shop/sa/client').length;

  t.true((await runClient(client, { host: flip.ip, port: APP_PORT })).ok);
  t.is(await inboundFromClient(), 0, 'not enrolled: the server node agent is not involved');

  await mesh.cluster.setNamespaceLabels('flip', ENROLLED);
  await waitForAgentView(0, 'flip', 'HBONE');
  await waitForAgentView(1, 'flip', 'HBONE');
  let captured = false;
  for (let attempt = 0; attempt < 50 && !captured; attempt++) {
    t.true((await runClient(client, { host: flip.ip, port: APP_PORT })).ok);
    await new Promise((resolve) => setTimeout(resolve, 100));
    captured = (await inboundFromClient()) > 0;
  }
  t.true(captured, 'after the label, the running pod is captured and reached through HBONE with the client identity');
  t.is(await redirection(flip), 'enabled', 'the captured pod carries Istio\'s ambient.istio.io/redirection annotation');

  await mesh.cluster.setNamespaceLabels('flip', {});
  await waitForAgentView(1, 'flip', 'NONE');
  await waitForAgentView(0, 'flip', 'NONE');
  // The agent removes the annotation last, after the pod's listeners and rules.
  await waitUntil(async () => (await redirection(flip)) === undefined, 'the released pod\'s annotation to go');
  // Every connection node 1's agent handles for the pod, whoever sent it and however (HBONE or captured plaintext).
  const throughNode1 = async (): Promise<number> => (await accessLog(1)).filter((entry) => entry.direction === 'inbound' && entry.dst.address === `${flip.ip}:${APP_PORT}`).length;
  const before = await throughNode1();
  t.true((await runClient(client, { host: flip.ip, port: APP_PORT, count: 3 })).ok, 'released: plain networking works again');
  await markerThroughNode1();
  t.is(await throughNode1(), before, 'released: node 1\'s agent is no longer in the path to the pod (neither HBONE nor captured plaintext)');
  const outbound = (await accessLog(0)).filter((entry) => entry.direction === 'outbound' && entry.dst.address === `${flip.ip}:${APP_PORT}`).slice(-3);
  t.true(outbound.length === 3 && outbound.every((entry) => entry.mtls === false), 'the client side passes it through as plain TCP');
});

test.serial('a pod captured at its start carries the redirection annotation, kept through the runtime\'s status update', async (t) => {
  t.is(await redirection(client), 'enabled');
  t.is(await redirection(server), 'enabled');
  const published = parse(await readFile(podFile(mesh.cluster.clusterDir, client.namespace, client.name), 'utf8')) as { status?: { podIP?: string } };
  t.is(published.status?.podIP, client.ip, 'the status the runtime wrote after ADD is there too');
});

test.serial('a control plane restart: agents keep serving their last config, then resync and capture new pods', async (t) => {
  const before = (await inboundToServer(client)).length;
  await mesh.stopControlPlane();
  t.teardown(() => mesh.startControlPlane());
  const during = await runClient(client, { host: server.ip, port: APP_PORT, count: 5 });
  t.true(during.ok, `traffic keeps flowing on the last config: ${during.errors.join('; ')}`);
  await waitUntil(async () => (await inboundToServer(client)).length >= before + 5, 'node 1 to log the connections made while the control plane was away');
  const away = (await inboundToServer(client)).slice(before);
  t.true(away.every((entry) => entry.mtls === true && entry.src.principal === 'spiffe://cluster.local/ns/shop/sa/client' && entry.dst.principal === 'spiffe://cluster.local/ns/shop/sa/server'), `still mutual TLS with both identities, no fallback to plaintext: ${JSON.stringify(away[0])}`);

  const restartedAt = Date.now();
  await mesh.startControlPlane();
  // The agent retries with a growing backoff (up to 15 s) while the control plane is away: wait for its resync.
  await waitUntil(async () => (await readFile(mesh.cluster.node(0).agentLogFile, 'utf8')).split('\n').some((line) => line.includes('"msg":"xDS"') && line.includes('"state":"connected"') && (JSON.parse(line) as { time: number }).time >= restartedAt), 'node 0\'s agent to resync with the restarted control plane', 30_000);
  const later = await mesh.cluster.createPod({ node: 0, namespace: 'shop', name: 'after-restart', serviceAccount: 'after' });
  t.teardown(() => mesh.cluster.deletePod(later));
  const result = await runClient(later, { host: server.ip, port: APP_PORT });
  t.true(result.ok, result.errors.join('; '));
  const inbound = (await accessLog(1)).filter((entry) => entry.src.address === later.ip);
  t.true(inbound.some((entry) => entry.src.principal === 'spiffe://cluster.local/ns/shop/sa/after'), 'the new pod got its certificate from the restarted CA and went through HBONE');
});

test.serial('an enrolled pod whose certificate the CA refuses fails its ADD and is left with no rules or listeners (the certificate is fetched while the rules go in)', async (t) => {
  // The Pod names node 1, its sandbox is on node 0: the CA signs an identity only for the node a pod of that
  // service account runs on, so node 0's agent cannot have this pod's certificate.
  const netnsName = `ambit-agenttest-${randomBytes(3).toString('hex')}-nocert`;
  t.teardown(() => deleteNetns(netnsName).catch(() => undefined));
  await addNetns(netnsName);
  await ipIn(netnsName, ['link', 'set', 'lo', 'up']);
  await ipIn(netnsName, ['link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0p']);
  await ipIn(netnsName, ['addr', 'add', '10.251.0.5/24', 'dev', 'eth0']);
  await ipIn(netnsName, ['link', 'set', 'eth0', 'up']);
  const uid = `uid-${randomBytes(6).toString('hex')}`;
  const pod = { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'nocert', namespace: 'shop', uid }, spec: { nodeName: mesh.cluster.node(1).name, serviceAccountName: 'nocert', containers: [{ name: 'app' }] } } as PodObject;
  await writePod(mesh.cluster.clusterDir, pod);
  t.teardown(() => removePod(mesh.cluster.clusterDir, 'shop', 'nocert'));
  const netnsPath = `/run/netns/${netnsName}`;
  const containerId = randomBytes(32).toString('hex');
  const config = JSON.stringify({
    cniVersion: '1.0.0', name: 'pods', type: 'ambit-cni', agentSocket: mesh.cluster.node(0).agentSocket, clusterDir: mesh.cluster.clusterDir,
    prevResult: { cniVersion: '1.0.0', interfaces: [{ name: 'eth0', sandbox: netnsPath }], ips: [{ address: '10.251.0.5/24', interface: 0 }] },
  });
  const added = await run(path.join(AMBIT_CNI_DIR, 'ambit-cni'), [], {
    input: config,
    timeoutMs: 30_000,
    env: {
      PATH: process.env.PATH, CNI_COMMAND: 'ADD', CNI_CONTAINERID: containerId, CNI_NETNS: netnsPath, CNI_IFNAME: 'eth0', CNI_PATH: '/usr/lib/cni',
      CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=nocert;K8S_POD_INFRA_CONTAINER_ID=${containerId};K8S_POD_UID=${uid}`,
    },
  });
  t.not(added.code, 0, `the ADD must fail: ${added.stdout}`);
  t.regex(added.stdout, /refused to capture pod shop\/nocert/);
  t.regex(added.stdout, /nocert/);
  const saved = await run('ip', ['netns', 'exec', netnsName, 'iptables-nft-save']);
  t.notRegex(saved.stdout, /ISTIO_/, 'no capture rules left in the pod');
  const listening = await run('ip', ['netns', 'exec', netnsName, 'ss', '-Htln']);
  t.is(listening.stdout.trim(), '', 'no listener left in the pod');
  const record = await readFile(path.join(mesh.cluster.node(0).dir, `captured-pods-${mesh.cluster.node(0).name}.json`), 'utf8');
  t.false(record.includes(uid), 'not recorded as captured');
});
