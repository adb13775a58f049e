/**
 * Several tunnels echoing in bulk at once between two real agents (two processes, the real in-pod path): an
 * enrolled client pod on node 1, an enrolled echo server on node 2, every connection captured and carried over one
 * pooled HBONE connection between the agents.
 *
 * What a user would notice if the tunnels stalled: bulk transfers (backups, uploads echoed, proxies) freeze when a
 * few run at once between the same two pods, until the keepalive ends the shared connection and every tunnel on it.
 * Under node:http2 three or more such tunnels stall inside one process (test/unit/hbone-pooled-reads.test.ts), and
 * between two agents too (KNOWN BUG, 2026-12-06: a clean-clone CI and three quiet runs here: every tunnel stalls after
 * 0.2-3 MB and the client agent's keepalive ends the connection 15 s later, response flag UC). Node's Http2Session
 * stops reading its socket while one of its own writes is pending; with bulk both ways on one connection each agent
 * can end up waiting on the other's socket (both send buffers full, neither reading), and then no PING is answered
 * either. The own HTTP/2 layer keeps reading while it writes and carries all six tunnels in about 3 s.
 * So: the own layer is asserted; the node:http2 run (the default layer today) is measured and reported, not asserted,
 * until that deadlock is fixed or the default changes.
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

test.serial(`own HTTP/2 layer: ${STREAMS} tunnels echoing ${BYTES_PER_STREAM / 1024 / 1024} MiB each at once between two agents all finish, every byte intact`, async (t) => {
  t.timeout(TIMEOUT_MS + 60_000);
  const { code, stderr, outcomes } = await runBulk('own');
  t.is(code, 0, stderr);
  t.log(JSON.stringify(outcomes));
  t.is(outcomes.length, STREAMS);
  outcomes.forEach((outcome, index) => {
    t.false(outcome.stalled, `tunnel ${index} stalled with ${outcome.received} of ${BYTES_PER_STREAM} bytes back`);
    t.true(outcome.intact, `tunnel ${index}: ${JSON.stringify(outcome)}`);
  });
});

test.serial(`node:http2 layer (known bug, reported not asserted): ${STREAMS} bulk tunnels at once between two agents`, async (t) => {
  t.timeout(TIMEOUT_MS + 60_000);
  const { code, stderr, outcomes } = await runBulk('node');
  t.is(code, 0, stderr);
  const intact = outcomes.filter((outcome) => outcome.intact).length;
  t.log(`node:http2: ${intact} of ${outcomes.length} tunnels intact${intact < STREAMS ? ' (KNOWN BUG: see the top comment)' : ''}: ${JSON.stringify(outcomes)}`);
  t.is(outcomes.length, STREAMS);
});
