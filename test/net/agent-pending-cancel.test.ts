/**
 * A client that resets while its tunnel is still being opened, on the real in-pod path: two real agents on a
 * 2-node local cluster, an enrolled client pod on node 1 and an enrolled server pod on node 2.
 *
 * What a user would notice if the client's agent let the pending CONNECT go ahead: the server's agent keeps
 * connecting to the application for a client that is gone, and the application accepts a connection nobody
 * wanted (for a request-per-connection protocol: work done for nobody, a log line, a counter). The server agent's
 * connect is held back by dropping its SYNs in the server pod, so the CONNECT is pending when the client resets;
 * the drop is lifted right after the reset, so a connect still going ahead then reaches the application.
 */
import test from 'ava';
import type { ChildProcess } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';
import { createLocalMesh, type LocalMesh } from '../../runtime/local-mesh.ts';
import type { Pod } from '../../runtime/index.ts';

const ENROLLED = { 'istio.io/dataplane-mode': 'ambient' };
const APP_PORT = 8080;
const LINE_PEERS = path.join(import.meta.dirname, 'helpers', 'line-peers.ts');
/** SYNs of the server agent's connects to the application, dropped in the server pod while the rule is there. */
const DROP_APP_SYN = ['INPUT', '-p', 'tcp', '--dport', String(APP_PORT), '--syn', '-j', 'DROP'];
/**
 * Bound for the server agent's connect to the application to end either way: cancelled (at once) or, without the
 * cancel, connected by a SYN retransmission (1 s, then 3 s after the first SYN) once the drop is lifted. Below the
 * agent's 10 s target connect timeout, which would end it without a connection and hide the difference.
 */
const CONNECT_ENDS_MS = 8_000;

let mesh: LocalMesh;
let server: Pod;
let client: Pod;

test.before(async () => {
  mesh = await createLocalMesh({ nodes: 2, name: 'pendcancel' });
  server = await mesh.cluster.createPod({ node: 1, namespace: 'pending', name: 'server', serviceAccount: 'server', namespaceLabels: ENROLLED });
  client = await mesh.cluster.createPod({ node: 0, namespace: 'pending', name: 'client', serviceAccount: 'client' });
});

test.after.always(async () => {
  await mesh?.destroy();
});

/** The JSON lines a helper prints, awaited one by one. */
class Lines {
  readonly #seen: Array<Record<string, unknown>> = [];
  readonly #waiters: Array<() => void> = [];

  constructor(child: ChildProcess) {
    readline.createInterface({ input: child.stdout! }).on('line', (line) => {
      try {
        this.#seen.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        return;
      }
      for (const wake of this.#waiters.splice(0)) wake();
    });
  }

  get all(): ReadonlyArray<Record<string, unknown>> {
    return this.#seen;
  }

  async next(key: string, timeoutMs = 10_000): Promise<Record<string, unknown>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.#seen.find((line) => key in line);
      if (found) return found;
      if (Date.now() > deadline) throw new Error(`no ${key} line within ${timeoutMs} ms (saw ${JSON.stringify(this.#seen)})`);
      await new Promise<void>((resolve) => {
        this.#waiters.push(resolve);
        setTimeout(resolve, 200);
      });
    }
  }

  count(key: string): number {
    return this.#seen.filter((line) => key in line).length;
  }
}

/** Sockets in `pod`'s namespace still connecting (SYN-SENT) to the application's port. */
async function connectingToApp(pod: Pod): Promise<number> {
  const result = await pod.exec('ss', ['-Htan', 'state', 'syn-sent', `( dport = :${APP_PORT} )`]);
  return result.stdout.split('\n').filter((line) => line.trim() !== '').length;
}

async function until(what: string, check: () => Promise<boolean>, boundMs: number): Promise<void> {
  const deadline = Date.now() + boundMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${boundMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

test('a client that resets while its CONNECT is pending: the tunnel is cancelled and the application never sees the connection', async (t) => {
  t.timeout(90_000);
  const app = server.spawn(process.execPath, [LINE_PEERS, 'server', String(APP_PORT)], { stdio: ['ignore', 'pipe', 'pipe'] });
  const appLines = new Lines(app);
  await appLines.next('listening');

  // Warm-up through the mesh: the HBONE connection between the agents and the certificates exist, the app works.
  const warm = client.spawn(process.execPath, [LINE_PEERS, 'client', server.ip, String(APP_PORT)], { stdio: ['pipe', 'pipe', 'pipe'] });
  const warmLines = new Lines(warm);
  await warmLines.next('connected');
  warm.stdin!.write('echo\n');
  t.is((await warmLines.next('echoed')).echoed, 'hello', 'the mesh path works before the test');
  warm.kill();
  t.is(appLines.count('accepted'), 1);

  let dropping = false;
  const lift = async (): Promise<void> => {
    if (!dropping) return;
    dropping = false;
    const removed = await server.exec('iptables', ['-D', ...DROP_APP_SYN]);
    if (removed.code !== 0) throw new Error(`iptables -D in the server pod: ${removed.stderr.trim()}`);
  };
  t.teardown(lift);
  const added = await server.exec('iptables', ['-I', ...DROP_APP_SYN]);
  t.is(added.code, 0, `iptables -I in the server pod: ${added.stderr.trim()}`);
  dropping = true;

  const leaving = client.spawn(process.execPath, [LINE_PEERS, 'client', server.ip, String(APP_PORT)], { stdio: ['pipe', 'pipe', 'pipe'] });
  const leavingLines = new Lines(leaving);
  await leavingLines.next('connected');
  // The CONNECT reached the server's agent, which allowed it and is connecting to the application: it is pending.
  await until('the server agent connecting to the application', async () => (await connectingToApp(server)) > 0, 15_000);
  leaving.stdin!.write('reset\n');
  await leavingLines.next('reset');
  await lift();

  // Either the connect was cancelled, or a SYN retransmission went through now that nothing drops it.
  await until('the server agent\'s connect to the application ended', async () => (await connectingToApp(server)) === 0, CONNECT_ENDS_MS);
  // A later connection through the same path is accepted after any the leftover connect made (one listener, in order).
  const after = client.spawn(process.execPath, [LINE_PEERS, 'client', server.ip, String(APP_PORT)], { stdio: ['pipe', 'pipe', 'pipe'] });
  const afterLines = new Lines(after);
  await afterLines.next('connected');
  after.stdin!.write('echo\n');
  t.is((await afterLines.next('echoed')).echoed, 'hello', 'the path works after the test');
  after.kill();
  t.deepEqual(appLines.all.filter((line) => 'accepted' in line), [{ accepted: 1 }, { accepted: 2 }], 'the application accepted the warm-up and the later connection, nothing for the client that reset');
});
