/**
 * Several tunnels echoing in bulk at once between two real agents (two processes, the real in-pod path): an
 * enrolled client pod on node 1, an enrolled echo server on node 2, every connection captured and carried over one
 * pooled HBONE connection between the agents.
 *
 * What a user would notice if the tunnels stalled: bulk transfers (backups, uploads echoed, proxies) freeze when a
 * few run at once between the same two pods, until the keepalive ends the shared connection and every tunnel on it.
 * Under node:http2 three or more such tunnels stall inside one process (test/unit/hbone-pooled-reads.test.ts); this
 * asks whether they do between two agents, on each HTTP/2 layer the agents can run.
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
const TIMEOUT_MS = 90_000;

let mesh: LocalMesh;
let server: Pod;
let client: Pod;

test.before(async () => {
  mesh = await createLocalMesh({ nodes: 2, name: 'bulktest' });
  server = await mesh.cluster.createPod({ node: 1, namespace: 'bulk', name: 'server', serviceAccount: 'server', namespaceLabels: ENROLLED });
  client = await mesh.cluster.createPod({ node: 0, namespace: 'bulk', name: 'client', serviceAccount: 'client' });
  await startEchoServer(server, { port: APP_PORT });
});

test.after.always(async () => {
  await mesh?.destroy();
});

test(`${STREAMS} tunnels echoing ${BYTES_PER_STREAM / 1024 / 1024} MiB each at once between two agents all finish, every byte intact`, async (t) => {
  t.timeout(TIMEOUT_MS + 60_000);
  const result = await client.exec(process.execPath, [BULK_CLIENT, JSON.stringify({ host: server.ip, port: APP_PORT, streams: STREAMS, bytes: BYTES_PER_STREAM, timeoutMs: TIMEOUT_MS })]);
  t.is(result.code, 0, result.stderr);
  const { outcomes } = JSON.parse(result.stdout) as { outcomes: Array<{ intact: boolean; received: number; stalled: boolean; error?: string }> };
  t.log(JSON.stringify(outcomes));
  outcomes.forEach((outcome, index) => {
    t.false(outcome.stalled, `tunnel ${index} stalled with ${outcome.received} of ${BYTES_PER_STREAM} bytes back`);
    t.true(outcome.intact, `tunnel ${index}: ${JSON.stringify(outcome)}`);
  });
});
