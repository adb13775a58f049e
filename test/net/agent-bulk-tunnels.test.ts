/**
 * Several tunnels echoing in bulk at once between two real agents (two processes, the real in-pod path): an
 * enrolled client pod on node 1, an enrolled echo server on node 2, every connection captured and carried over one
 * pooled HBONE connection between the agents.
 *
 * What a user would notice if the tunnels stalled: bulk transfers (backups, uploads echoed, proxies) freeze when a
 * few run at once between the same two pods, until the keepalive ends the shared connection and every tunnel on it.
 * That happened under node:http2 until 2026-12-06 (a clean-clone CI and three quiet runs: every tunnel stalled after
 * 0.2-3 MB and the client agent's keepalive ended the connection 15 s later, response flag UC): Node's Http2Session
 * stops reading its socket while one of its own writes is pending, and with bulk both ways each agent waited on the
 * other's full socket. The node layer now runs its sessions on a SessionSocket (shared/hbone/session-socket.ts)
 * whose writes complete once queued, so both layers are asserted here.
 */
import test from 'ava';
import path from 'node:path';
import { createLocalMesh, type LocalMesh } from '../../runtime/local-mesh.ts';
import { startEchoServer, type Pod } from '../../runtime/index.ts';

const ENROLLED = { 'istio.io/dataplane-mode': 'ambient' };
const APP_PORT = 8080;
const BULK_CLIENT = path.join(import.meta.dirname, 'helpers', 'bulk-echo-client.ts');
const STREAMS = 6;
const BYTES_PER_STREAM = 32 * 1024 * 1024;
/** 4 x 32 MiB each way take a few seconds here even at load 20; a stall lasts until the keepalive (minutes). */
const TIMEOUT_MS = 60_000;

interface Outcome {
  intact: boolean;
  received: number;
  stalled: boolean;
  error?: string;
}

async function runBulk(implementation: 'own' | 'node'): Promise<{ code: number | null; stderr: string; outcomes: Outcome[] }> {
  let mesh: LocalMesh | undefined;
  try {
    mesh = await createLocalMesh({ nodes: 2, name: `bulk${implementation}`, agentEnv: { AMBIT_HBONE_IMPL: implementation } });
    const server: Pod = await mesh.cluster.createPod({ node: 1, namespace: 'bulk', name: 'server', serviceAccount: 'server', namespaceLabels: ENROLLED });
    const client: Pod = await mesh.cluster.createPod({ node: 0, namespace: 'bulk', name: 'client', serviceAccount: 'client' });
    await startEchoServer(server, { port: APP_PORT });
    const result = await client.exec(process.execPath, [BULK_CLIENT, JSON.stringify({ host: server.ip, port: APP_PORT, streams: STREAMS, bytes: BYTES_PER_STREAM, timeoutMs: TIMEOUT_MS })]);
    const outcomes = result.code === 0 ? (JSON.parse(result.stdout) as { outcomes: Outcome[] }).outcomes : [];
    return { code: result.code, stderr: result.stderr, outcomes };
  } finally {
    await mesh?.destroy();
  }
}

for (const implementation of ['own', 'node'] as const) {
  const layer = implementation === 'own' ? 'own HTTP/2 layer' : 'node:http2 layer';
  test.serial(`${layer}: ${STREAMS} tunnels echoing ${BYTES_PER_STREAM / 1024 / 1024} MiB each at once between two agents all finish, every byte intact`, async (t) => {
    t.timeout(TIMEOUT_MS + 60_000);
    const started = performance.now();
    const { code, stderr, outcomes } = await runBulk(implementation);
    t.is(code, 0, stderr);
    t.log(`${layer}: ${Math.round(performance.now() - started)} ms with the mesh's set-up: ${JSON.stringify(outcomes)}`);
    t.is(outcomes.length, STREAMS);
    outcomes.forEach((outcome, index) => {
      t.false(outcome.stalled, `tunnel ${index} stalled with ${outcome.received} of ${BYTES_PER_STREAM} bytes back`);
      t.true(outcome.intact, `tunnel ${index}: ${JSON.stringify(outcome)}`);
    });
  });
}
