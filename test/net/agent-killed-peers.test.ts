/**
 * A peer killed (SIGKILL) while an agent's writes to it are backed up, on the real in-pod path: two real agents (two
 * processes), an enrolled client pod on node 1 and an enrolled server pod on node 2, one HBONE tunnel carrying a
 * flood that the other end never reads. The server application, or the client application, is then killed; the
 * kernel resets its connection, with the agent's handle write to it in flight (shared/hbone/direct-writes.ts) and
 * pieces of pooled TLS read buffers waiting behind it (shared/hbone/pooled-reads.ts).
 *
 * What a user would notice otherwise: an agent that keeps a pooled buffer's hold, or a write it still waits for,
 * after each killed peer grows its memory (16 KiB buffers out of the pool for good) and its descriptors with every
 * crashed pod, until the node runs out. Each agent's admin /memory says how many read buffers are held and how many
 * handle writes are pending; both must be back to zero, and the agent's descriptors back to the count before the
 * tunnel, on both agents. Run in both write modes: the sockets' handles (the default) and Node's public
 * `socket.write` (AMBIT_HBONE_STREAM_WRITES=1). test/unit/hbone-killed-peer-writes.test.ts covers the library alone.
 */
import test, { type ExecutionContext } from 'ava';
import type { ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { createLocalMesh, type LocalMesh } from '../../runtime/local-mesh.ts';
import { runClient, startEchoServer, type Pod } from '../../runtime/index.ts';

const ENROLLED = { 'istio.io/dataplane-mode': 'ambient' };
const STALLED_PORT = 8080;
const ECHO_PORT = 8090;
const STALLED_PEER = path.join(import.meta.dirname, 'helpers', 'stalled-peer.ts');
/** Enough to fill both sockets' kernel buffers and the stream window behind them, so the agent's write stays in flight. */
const FLOOD_BYTES = 24 * 1024 * 1024;

interface SpliceReads {
  heldReadBuffers: number;
  droppedReadBuffers: number;
  writesPending: number;
  writesInFlight: number;
}

/** The agent's node process: the runtime starts `ip netns exec <node> node ... agent/main.ts`. */
function agentPid(mesh: LocalMesh, index: number): number {
  let pid = mesh.cluster.node(index).agent!.pid!;
  for (let depth = 0; depth < 3 && readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'ip'; depth++) {
    pid = Number(readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/)[0]);
  }
  return pid;
}

function descriptors(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

async function spliceReads(mesh: LocalMesh, index: number): Promise<SpliceReads> {
  const script = "fetch('http://127.0.0.1:15000/memory').then((r) => r.json()).then((m) => process.stdout.write(JSON.stringify(m.spliceReads)))";
  const result = await mesh.cluster.node(index).exec(process.execPath, ['-e', script]);
  if (result.code !== 0) throw new Error(`node ${index + 1}'s admin /memory: ${result.stderr.trim()}`);
  return JSON.parse(result.stdout) as SpliceReads;
}

async function waitFor(condition: () => Promise<boolean> | boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await condition()) return true;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return condition();
}

/** Starts the stalled peer in `pod`; resolves with its process once it printed `line` (listening or connected). */
function startStalledPeer(pod: Pod, spec: object, line: string): Promise<ChildProcess> {
  const child = pod.spawn(process.execPath, [STALLED_PEER, JSON.stringify(spec)]);
  return new Promise((resolve, reject) => {
    let stdout = '';
    const timer = setTimeout(() => reject(new Error(`the stalled peer in ${pod.name} never said ${line}: ${stdout}`)), 20_000);
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
      if (stdout.includes(line)) {
        clearTimeout(timer);
        resolve(child);
      }
    });
    let stderr = '';
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.once('exit', (code) => reject(new Error(`the stalled peer in ${pod.name} exited (${code}): ${stdout} ${stderr}`)));
  });
}

/** SIGKILL to the peer's node process (the child of `ip netns exec`, or the wrapper itself once it exec'd). */
function killPeer(child: ChildProcess): void {
  let pid = child.pid!;
  if (readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'ip') pid = Number(readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/)[0]);
  process.kill(pid, 'SIGKILL');
}

for (const mode of ['handle', 'stream'] as const) {
  test.serial(`${mode} writes: a killed server application and a killed client application, each with the agent's writes to it backed up: every pooled read hold comes back, no write stays pending, both agents' descriptors return to the baseline`, async (t) => {
    t.timeout(180_000);
    const mesh = await createLocalMesh({ nodes: 2, name: `killed${mode === 'handle' ? 'h' : 's'}`, agentEnv: mode === 'stream' ? { AMBIT_HBONE_STREAM_WRITES: '1' } : {} });
    t.teardown(() => mesh.destroy());
    const server = await mesh.cluster.createPod({ node: 1, namespace: 'crash', name: 'server', serviceAccount: 'server', namespaceLabels: ENROLLED });
    const client = await mesh.cluster.createPod({ node: 0, namespace: 'crash', name: 'client', serviceAccount: 'client' });
    await startEchoServer(server, { port: ECHO_PORT });
    const agents = [agentPid(mesh, 0), agentPid(mesh, 1)];

    // One tunnel first, so the pooled HBONE connection and whatever the agents make lazily are in the baseline.
    const warm = await runClient(client, { host: server.ip, port: ECHO_PORT, count: 2, size: 64 * 1024 });
    t.true(warm.ok, warm.errors.join('; '));
    await new Promise((resolve) => setTimeout(resolve, 500));
    const baseline = agents.map(descriptors);

    await killedPeer(t, mesh, mode, agents, baseline, 'server', async () => {
      const target = await startStalledPeer(server, { role: 'server', port: STALLED_PORT, flood: 0 }, '"listening"');
      await startStalledPeer(client, { role: 'client', host: server.ip, port: STALLED_PORT, flood: FLOOD_BYTES }, '"connected"');
      return { victim: target, writer: 1 };
    });
    await killedPeer(t, mesh, mode, agents, baseline, 'client', async () => {
      await startStalledPeer(server, { role: 'server', port: STALLED_PORT + 1, flood: FLOOD_BYTES }, '"listening"');
      const application = await startStalledPeer(client, { role: 'client', host: server.ip, port: STALLED_PORT + 1, flood: 0 }, '"connected"');
      return { victim: application, writer: 0 };
    });
  });
}

/**
 * `start` makes the stalled pair and says which process to kill and which agent (0: node 1, 1: node 2) writes to
 * it. Waits until that agent's writes to it are backed up, kills it, then checks both agents came back.
 */
async function killedPeer(
  t: ExecutionContext,
  mesh: LocalMesh,
  mode: 'handle' | 'stream',
  agents: number[],
  baseline: number[],
  which: 'server' | 'client',
  start: () => Promise<{ victim: ChildProcess; writer: number }>,
): Promise<void> {
  const { victim, writer } = await start();
  // Backed up: read buffers held behind the agent's write to the victim, and (handle mode) that write in flight.
  let seen: SpliceReads | undefined;
  const backedUp = await waitFor(async () => {
    seen = await spliceReads(mesh, writer);
    return seen.heldReadBuffers > 0 && (mode === 'stream' || seen.writesPending > 0);
  }, 30_000);
  if (!backedUp) {
    for (const index of [0, 1]) t.log(`node ${index + 1}'s agent log: ${readFileSync(mesh.cluster.node(index).agentLogFile, 'utf8').split('\n').slice(-6).join('\n')}`);
  }
  t.true(backedUp, `the ${which} application's agent (node ${writer + 1}) backed up: ${JSON.stringify(seen)}`);
  // Let the backlog settle with the write in flight, then kill the application.
  await new Promise((resolve) => setTimeout(resolve, 200));
  killPeer(victim);
  for (const index of [0, 1]) {
    let reads: SpliceReads | undefined;
    const settled = await waitFor(async () => {
      reads = await spliceReads(mesh, index);
      return reads.heldReadBuffers === 0 && reads.writesPending === 0;
    }, 10_000);
    t.true(settled, `killed ${which}: node ${index + 1}'s agent still holds read buffers or waits for writes: ${JSON.stringify(reads)}`);
  }
  // The other application of the pair gets a reset from its agent and is killed with the pod's processes later: its
  // tunnel is gone from both agents once the reset went through.
  for (const index of [0, 1]) {
    const back = await waitFor(() => descriptors(agents[index]!) <= baseline[index]!, 10_000);
    t.true(back, `killed ${which}: node ${index + 1}'s agent has ${descriptors(agents[index]!) - baseline[index]!} descriptors more than before the tunnel`);
  }
  t.log(`killed ${which}: node ${writer + 1}'s agent backed up with ${JSON.stringify(seen)}; after: ${JSON.stringify([await spliceReads(mesh, 0), await spliceReads(mesh, 1)])}`);
}
