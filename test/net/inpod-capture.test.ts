/**
 * In-pod capture on real namespaces and real rules: a pod namespace and a peer namespace on a veth pair;
 * the capture manager runs in this process (root namespace) and opens its listeners inside the pod's
 * namespace through the addon. Nothing is added to the root namespace.
 */
import test, { type ExecutionContext } from 'ava';
import { existsSync } from 'node:fs';
import { stat, writeFile } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { CaptureManager, type ReleaseReason } from '../../agent/inpod/capture-manager.ts';
import type { CapturedPod, CapturedTrafficHandler, ListenerKind, OriginalDestination, PodInfo } from '../../agent/inpod/pod-listeners.ts';
import { saveRules } from '../../agent/inpod/iptables.ts';
import type { InboundCapture, IptablesBackend } from '../../agent/inpod/rules.ts';
import { nativeSockets } from '../../agent/inpod/sockets.ts';
import { startCniServer } from '../../agent/cni-server.ts';
import { CaptureError } from '../../agent/inpod/errors.ts';
import {
  closeServer, connectFrom, createPodTopology, exchange, listenIn, uniquePrefix, type PodTopology,
} from './helpers/inpod-topology.ts';

const exec = promisify(execFile);

const ECHO_PORT = 7000;
const APP_PORT = 8080;

interface Seen {
  kind: ListenerKind;
  dst: OriginalDestination;
  podUid: string;
}

/**
 * What the proxy will do, reduced to TCP: outbound and inbound are spliced to their original destination
 * through the pod's own (marked) sockets, inbound keeping the client's address with IP_TRANSPARENT;
 * 'hbone' answers with the destination it was given.
 */
class SplicingHandler implements CapturedTrafficHandler {
  readonly seen: Seen[] = [];
  private readonly open = new Set<net.Socket>();

  accepted(kind: ListenerKind, socket: net.Socket, dst: OriginalDestination, pod: CapturedPod): void {
    this.seen.push({ kind, dst: { address: dst.address, port: dst.port }, podUid: pod.uid });
    this.track(socket);
    if (kind === 'hbone') {
      socket.end(`hbone ${dst.address}:${dst.port}`);
      return;
    }
    const upstream = kind === 'outbound'
      ? pod.sockets.connect({ host: dst.address, port: dst.port })
      : pod.sockets.connect({ host: dst.address, port: dst.port, localAddress: socket.remoteAddress, transparent: true });
    this.track(upstream);
    socket.pipe(upstream);
    upstream.pipe(socket);
    socket.on('error', () => upstream.destroy());
    upstream.on('error', () => socket.destroy());
  }

  count(kind: ListenerKind): number {
    return this.seen.filter((seen) => seen.kind === kind).length;
  }

  destroyAll(): void {
    for (const socket of this.open) socket.destroy();
  }

  private track(socket: net.Socket): void {
    this.open.add(socket);
    socket.on('close', () => this.open.delete(socket));
  }
}

interface Fixture {
  topology: PodTopology;
  pod: PodInfo;
  handler: SplicingHandler;
  manager: CaptureManager;
}

const backends: IptablesBackend[] = existsSync('/usr/sbin/iptables-legacy-restore') ? ['nft', 'legacy'] : ['nft'];

/** Topology, an echo server on the peer, an app on the pod reporting the client address it sees, a manager. */
async function setUp(
  t: ExecutionContext, backend: IptablesBackend, inbound: InboundCapture,
  extra: { netnsCheckIntervalMs?: number; onReleased?: (pod: CapturedPod, reason: ReleaseReason) => void; dualStack?: boolean } = {},
): Promise<Fixture> {
  const topology = await createPodTopology(undefined, { dualStack: extra.dualStack ?? false });
  const servers: net.Server[] = [];
  const handler = new SplicingHandler();
  const manager = new CaptureManager({ handler, backend, inbound, netnsCheckIntervalMs: extra.netnsCheckIntervalMs ?? 0, onReleased: extra.onReleased });
  t.teardown(async () => {
    await manager.close();
    handler.destroyAll();
    await Promise.all(servers.map(closeServer));
    await topology.destroy();
  });
  // '::' (dual-stack socket) takes IPv4 and IPv6 alike; IPv4 clients appear as ::ffff:a.b.c.d, so the app reports
  // the address in its plain form.
  const host = extra.dualStack ? '::' : '0.0.0.0';
  servers.push(await listenIn(topology.peer.path, host, ECHO_PORT, (socket) => socket.pipe(socket)));
  servers.push(await listenIn(topology.pod.path, host, APP_PORT, (socket) => socket.end(`app saw ${socket.remoteAddress?.replace(/^::ffff:/, '')}`)));
  const pod: PodInfo = {
    uid: `uid-${topology.pod.name}`, name: 'client', namespace: 'default', netns: topology.pod.path, ips: [topology.pod.ip, ...(topology.pod.ip6 ? [topology.pod.ip6] : [])],
  };
  return { topology, pod, handler, manager };
}

for (const backend of backends) {
  for (const inbound of ['tproxy', 'redirect'] as const) {
    test(`${backend}/${inbound}: outbound, inbound and HBONE traffic reach the right listener with the original destination`, async (t) => {
      const { topology, pod, handler, manager } = await setUp(t, backend, inbound);
      await manager.add(pod);
      t.true(manager.isCaptured(pod.uid));

      // Outbound: the pod's app dials the peer; the agent sees it on 15001 and dials out itself, marked.
      const echo = await exchange(connectFrom(topology.pod.path, topology.peer.ip, ECHO_PORT), 'ping');
      t.is(echo, 'ping');
      t.deepEqual(handler.seen.filter((seen) => seen.kind === 'outbound'), [
        { kind: 'outbound', dst: { address: topology.peer.ip, port: ECHO_PORT }, podUid: pod.uid },
      ], 'captured once: the marked dial out was not captured again');

      // Inbound plaintext: the peer dials the pod's app; the agent dials the app transparently as the peer.
      const reply = await exchange(connectFrom(topology.peer.path, topology.pod.ip, APP_PORT), '');
      t.is(reply, `app saw ${topology.peer.ip}`, 'the app sees the real client address and its reply found the way back');
      t.deepEqual(handler.seen.filter((seen) => seen.kind === 'inbound').map((seen) => seen.dst), [
        { address: topology.pod.ip, port: APP_PORT },
      ]);

      // HBONE port: not redirected, arrives on 15008 itself.
      const hbone = await exchange(connectFrom(topology.peer.path, topology.pod.ip, 15008), '');
      t.is(hbone, `hbone ${topology.pod.ip}:15008`);
      t.is(handler.count('hbone'), 1);
      t.is(handler.count('inbound'), 1, 'the HBONE connection did not go to 15006');
    });
  }
}

for (const inbound of ['tproxy', 'redirect'] as const) {
  test(`dual stack (nft/${inbound}): IPv6 outbound, inbound and HBONE are captured like IPv4; removal clears both families`, async (t) => {
    const { topology, pod, handler, manager } = await setUp(t, 'nft', inbound, { dualStack: true });
    await manager.add(pod);
    const pod6 = topology.pod.ip6!;
    const peer6 = topology.peer.ip6!;
    t.is(await exchange(connectFrom(topology.pod.path, peer6, ECHO_PORT), 'ping6'), 'ping6');
    t.deepEqual(handler.seen.filter((seen) => seen.kind === 'outbound').map((seen) => seen.dst), [{ address: peer6, port: ECHO_PORT }], 'IPv6 outbound captured once, with its original destination');
    t.is(await exchange(connectFrom(topology.peer.path, pod6, APP_PORT), ''), `app saw ${peer6}`, 'the app sees the IPv6 client address and its reply found the way back');
    t.deepEqual(handler.seen.filter((seen) => seen.kind === 'inbound').map((seen) => seen.dst), [{ address: pod6, port: APP_PORT }]);
    t.is(await exchange(connectFrom(topology.peer.path, pod6, 15008), ''), `hbone ${pod6}:15008`);
    // IPv4 is unchanged beside it.
    t.is(await exchange(connectFrom(topology.pod.path, topology.peer.ip, ECHO_PORT), 'ping4'), 'ping4');
    t.is(await exchange(connectFrom(topology.peer.path, topology.pod.ip, APP_PORT), ''), `app saw ${topology.peer.ip}`);
    t.is(handler.count('outbound'), 2);
    t.is(handler.count('inbound'), 2);
    t.true((await saveRules(pod.netns, 'nft', 6)).includes('ISTIO_OUTPUT'));
    await manager.del({ uid: pod.uid });
    t.false((await saveRules(pod.netns, 'nft', 6)).includes('ISTIO'), 'no ip6tables rule left');
    t.false((await saveRules(pod.netns, 'nft', 4)).includes('ISTIO'), 'no iptables rule left');
    t.is(await exchange(connectFrom(topology.pod.path, peer6, ECHO_PORT), 'direct'), 'direct', 'released: IPv6 flows directly again');
    t.is(handler.count('outbound'), 2);
  });
}

test('an IPv4-only pod gets no ip6tables rules', async (t) => {
  const { pod, manager } = await setUp(t, 'nft', 'tproxy');
  await manager.add(pod);
  t.false((await saveRules(pod.netns, 'nft', 6)).includes('ISTIO'));
});

test('loopback traffic and a pod calling its own IP are not captured', async (t) => {
  const { topology, pod, handler, manager } = await setUp(t, 'nft', 'tproxy');
  const local = await listenIn(topology.pod.path, '127.0.0.1', 9000, (socket) => socket.end('local'));
  t.teardown(() => closeServer(local));
  await manager.add(pod);
  t.is(await exchange(connectFrom(topology.pod.path, '127.0.0.1', 9000), ''), 'local');
  t.is(await exchange(connectFrom(topology.pod.path, topology.pod.ip, APP_PORT), ''), `app saw ${topology.pod.ip}`);
  t.deepEqual(handler.seen, []);
});

test('a connection dialled straight at the outbound port is refused instead of looping', async (t) => {
  const { topology, pod, handler, manager } = await setUp(t, 'nft', 'tproxy');
  await manager.add(pod);
  const socket = connectFrom(topology.pod.path, '127.0.0.1', 15001);
  const outcome = await exchange(socket, 'x').then((reply) => `reply ${reply}`, (error: NodeJS.ErrnoException) => error.code);
  t.true(outcome === 'reply ' || outcome === 'ECONNRESET', `closed without a reply, got ${outcome}`);
  t.deepEqual(handler.seen, []);
  t.is(manager.listenerStats(pod.uid)?.refused, 1);
});

test('re-adding and reconciling in a new manager keeps exactly one copy of the rules', async (t) => {
  const { topology, pod, manager } = await setUp(t, 'nft', 'tproxy');
  await manager.add(pod);
  await manager.add(pod);
  const second = new CaptureManager({ handler: new SplicingHandler(), backend: 'nft', netnsCheckIntervalMs: 0 });
  t.teardown(() => second.close());
  const result = await second.reconcile([pod]);
  t.deepEqual(result.captured, [pod.uid]);
  t.deepEqual(result.failed, []);
  const rules = await saveRules(topology.pod.path, 'nft');
  t.is(rules.split('\n').filter((line) => line === '-A OUTPUT -j ISTIO_OUTPUT').length, 2, 'one jump in mangle, one in nat');
  t.is(rules.split('\n').filter((line) => line.includes('REDIRECT --to-ports 15001')).length, 1);
  const { stdout } = await exec('ip', ['-n', topology.pod.name, 'rule', 'show', 'pref', '32764']);
  t.is(stdout.trim().split('\n').length, 1, 'one policy-routing rule');
});

test('agent restart: new connections made while the old listeners close all succeed', async (t) => {
  const { topology, pod, manager: oldAgent, handler: oldHandler } = await setUp(t, 'nft', 'tproxy');
  await oldAgent.add(pod);
  const newHandler = new SplicingHandler();
  const newAgent = new CaptureManager({ handler: newHandler, backend: 'nft', netnsCheckIntervalMs: 0 });
  t.teardown(async () => {
    await newAgent.close();
    newHandler.destroyAll();
  });
  const { stdout } = await exec('ip', ['netns', 'exec', topology.pod.name, 'cat', '/proc/sys/net/ipv4/tcp_migrate_req']);
  t.is(stdout.trim(), '1', 'capture turns on tcp_migrate_req in the pod');

  let failures = 0;
  let successes = 0;
  let running = true;
  const errors: string[] = [];
  const loop = async (): Promise<void> => {
    while (running) {
      try {
        const reply = await exchange(connectFrom(topology.pod.path, topology.peer.ip, ECHO_PORT), 'x');
        if (reply === 'x') successes++;
        else { failures++; errors.push(`reply ${JSON.stringify(reply)}`); }
      } catch (error) {
        failures++;
        errors.push((error as Error).message);
      }
    }
  };
  // Count-based phases (not timed ones), so a slow machine only makes the test slower, not flaky.
  const waitForMore = async (count: number): Promise<void> => {
    const target = successes + count;
    for (let waited = 0; successes < target && failures === 0 && waited < 30_000; waited += 10) await delay(10);
  };
  const clients = [loop(), loop(), loop(), loop()];
  await waitForMore(20);
  t.deepEqual((await newAgent.reconcile([pod])).failed, [], 'the new listeners open next to the old ones (SO_REUSEPORT)');
  await waitForMore(20);
  await oldAgent.close();
  await waitForMore(40);
  running = false;
  await Promise.all(clients);
  t.is(failures, 0, errors.slice(0, 5).join('; '));
  t.true(successes >= 80, `made ${successes} connections`);
  t.true(oldHandler.count('outbound') > 0, 'the old agent served before the handover');
  const beforeLast = newHandler.count('outbound');
  t.is(await exchange(connectFrom(topology.pod.path, topology.peer.ip, ECHO_PORT), 'y'), 'y');
  t.is(newHandler.count('outbound'), beforeLast + 1, 'after the handover the new agent serves');
});

test('del closes the listeners and removes the rules while the namespace still exists; del is idempotent', async (t) => {
  const { topology, pod, handler, manager } = await setUp(t, 'nft', 'tproxy');
  await manager.add(pod);
  await manager.del({ uid: pod.uid, netns: pod.netns });
  await manager.del({ uid: pod.uid, netns: pod.netns });
  await manager.del({ uid: pod.uid });
  t.false(manager.isCaptured(pod.uid));
  t.false((await saveRules(topology.pod.path, 'nft')).includes('ISTIO'));
  // Traffic now goes straight to the peer, past no agent.
  t.is(await exchange(connectFrom(topology.pod.path, topology.peer.ip, ECHO_PORT), 'direct'), 'direct');
  t.deepEqual(handler.seen, []);
  const hbone = await exchange(connectFrom(topology.peer.path, topology.pod.ip, 15008), '').catch((error: NodeJS.ErrnoException) => error.code);
  t.is(hbone, 'ECONNREFUSED', '15008 is closed');
});

test('del by an agent that never captured the pod removes the rules another agent left (iptables-save shows them)', async (t) => {
  const { topology, pod, manager } = await setUp(t, 'nft', 'tproxy');
  await manager.add(pod);
  const stranger = new CaptureManager({ handler: new SplicingHandler(), backend: 'nft', netnsCheckIntervalMs: 0 });
  t.teardown(() => stranger.close());
  await stranger.del({ uid: pod.uid, netns: pod.netns });
  t.false((await saveRules(pod.netns, 'nft')).includes('ISTIO'), 'no iptables rule left');
  const { stdout } = await exec('ip', ['-n', topology.pod.name, 'rule', 'show', 'pref', '32764']);
  t.is(stdout.trim(), '', 'no policy-routing rule left');
});

test('del removes every copy when the rules differ from what the agent installed (a duplicated jump)', async (t) => {
  const { topology, pod, manager } = await setUp(t, 'nft', 'tproxy');
  await manager.add(pod);
  await exec('ip', ['netns', 'exec', topology.pod.name, 'iptables-nft', '-t', 'nat', '-A', 'OUTPUT', '-j', 'ISTIO_OUTPUT']);
  await manager.del({ uid: pod.uid, netns: pod.netns });
  t.false((await saveRules(pod.netns, 'nft')).includes('ISTIO'), 'no iptables rule left');
  t.is(await exchange(connectFrom(topology.pod.path, topology.peer.ip, ECHO_PORT), 'direct'), 'direct');
});

test('install over a chain of the other inbound mode (nat ISTIO_PRERT left by a REDIRECT agent) drops it', async (t) => {
  const { topology, pod, handler, manager } = await setUp(t, 'nft', 'tproxy');
  const inPod = (...args: string[]) => exec('ip', ['netns', 'exec', topology.pod.name, 'iptables-nft', '-t', 'nat', ...args]);
  await inPod('-N', 'ISTIO_PRERT');
  await inPod('-A', 'PREROUTING', '-j', 'ISTIO_PRERT');
  await inPod('-A', 'ISTIO_PRERT', '-p', 'tcp', '-j', 'REDIRECT', '--to-ports', '15006');
  await manager.add(pod);
  const nat = (await saveRules(pod.netns, 'nft')).split('*nat')[1] ?? '';
  t.false(nat.includes('ISTIO_PRERT'), 'the REDIRECT chain and its jump are gone');
  t.is(await exchange(connectFrom(topology.peer.path, topology.pod.ip, APP_PORT), ''), `app saw ${topology.peer.ip}`);
  t.deepEqual(handler.seen.map((seen) => seen.kind), ['inbound'], 'inbound reached the TPROXY listener');
});

test('a pod whose namespace disappears is released without a crash', async (t) => {
  const released: ReleaseReason[] = [];
  const { topology, pod, manager } = await setUp(t, 'nft', 'tproxy', {
    netnsCheckIntervalMs: 50, onReleased: (_pod, reason) => released.push(reason),
  });
  await manager.add(pod);
  await exec('ip', ['netns', 'del', topology.pod.name]);
  for (let i = 0; i < 100 && manager.isCaptured(pod.uid); i++) await delay(20);
  t.false(manager.isCaptured(pod.uid));
  t.deepEqual(released, ['netns-gone']);
  await t.notThrowsAsync(manager.del({ uid: pod.uid, netns: pod.netns }));
});

test('when a listener cannot open, add fails with a clear error and leaves no rules behind', async (t) => {
  const { topology, pod, manager } = await setUp(t, 'nft', 'tproxy');
  // Something in the pod already holds 15008 without SO_REUSEPORT.
  const squatter = await listenIn(topology.pod.path, '0.0.0.0', 15008, (socket) => socket.destroy());
  t.teardown(() => closeServer(squatter));
  const error = await t.throwsAsync(manager.add(pod), { instanceOf: CaptureError });
  t.is(error?.code, 'LISTEN_FAILED');
  t.regex(error?.message ?? '', /15008.*EADDRINUSE/);
  t.false(manager.isCaptured(pod.uid));
  t.false((await saveRules(topology.pod.path, 'nft')).includes('ISTIO'), 'rules rolled back');
  t.is(await exchange(connectFrom(topology.pod.path, topology.peer.ip, ECHO_PORT), 'still works'), 'still works');
});

test('a socket from the pod factory lives in the pod namespace and carries the agent mark', async (t) => {
  const { topology, pod, manager } = await setUp(t, 'nft', 'tproxy');
  await manager.add(pod);
  const captured = manager.capturedPods()[0]!;
  const socket = captured.sockets.connect({ host: topology.peer.ip, port: ECHO_PORT });
  t.teardown(() => socket.destroy());
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  t.is(socket.localAddress, topology.pod.ip);
  t.is(nativeSockets.getMark((socket as unknown as { _handle: { fd: number } })._handle.fd), 0x539);
});

test.serial('deliveries into the pod: each in the pod, marked, with its own client\'s address', async (t) => {
  // The TPROXY path end to end: the agent's delivery into the pod must be made in the pod's namespace (the app listens
  // only there), carry the mark (or the pod's rules capture it again) and be bound to this connection's client (the
  // reply is routed back to the agent by that address). Two clients take turns, so a delivery bound to the previous
  // one's address would show.
  const { topology, pod, manager } = await setUp(t, 'nft', 'tproxy');
  const second = '10.77.0.5';
  await exec('ip', ['-n', topology.peer.name, 'addr', 'add', `${second}/32`, 'dev', 'veth0']);
  await manager.add(pod);
  for (let index = 0; index < 30; index++) {
    const source = index % 3 === 1 ? second : topology.peer.ip;
    const fd = nativeSockets.socketTcp({ netns: topology.peer.path, family: 4, bindHost: source });
    t.is(await exchange(new net.Socket({ fd }).connect({ host: topology.pod.ip, port: APP_PORT }), ''), `app saw ${source}`);
  }
});

test('a pod socket whose namespace is gone fails through its error event with a typed error, once the pod is released', async (t) => {
  // The pod's factory holds its namespace while the pod is captured (as ztunnel holds a pod's netns): when the namespace
  // goes, the agent's check releases the pod, which lets the namespace go; a socket asked for then finds it gone.
  let released!: () => void;
  const releasedNow = new Promise<void>((resolve) => (released = resolve));
  const { topology, pod, manager } = await setUp(t, 'nft', 'tproxy', { netnsCheckIntervalMs: 100, onReleased: () => released() });
  await manager.add(pod);
  const captured = manager.capturedPods()[0]!;
  await exec('ip', ['netns', 'del', topology.pod.name]);
  await releasedNow;
  const socket = captured.sockets.connect({ host: topology.peer.ip, port: ECHO_PORT });
  const error = await new Promise<Error>((resolve, reject) => {
    socket.once('error', resolve);
    // A namespace still held would take this socket and leave it waiting for an answer that never comes.
    setTimeout(() => reject(new Error('no error within 10 s: the released pod\'s namespace is still held')), 10_000).unref();
  });
  t.true(error instanceof CaptureError);
  t.is((error as CaptureError).code, 'SOCKET_FAILED');
  t.is((error as CaptureError).errnoCode, 'ENOENT');
  t.regex(error.message, /namespace is gone/);
});

// ---- CNI endpoint ----

interface HttpReply {
  status: number;
  body: Record<string, unknown>;
}

function post(socketPath: string, path: string, body: string): Promise<HttpReply> {
  return new Promise((resolve, reject) => {
    const request = http.request({ socketPath, path, method: 'POST', headers: { 'content-type': 'application/json' } }, (response) => {
      let text = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (text += chunk));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body: text === '' ? {} : JSON.parse(text) as Record<string, unknown> }));
    });
    request.on('error', reject);
    request.end(body);
  });
}

test('CNI endpoint: captures on pod-add, answers bad input with 400 and keeps serving, pod-del twice is fine', async (t) => {
  const { topology, pod, manager } = await setUp(t, 'nft', 'tproxy');
  const socketPath = `/tmp/${uniquePrefix()}cni.sock`;
  await writeFile(socketPath, ''); // not a socket: the server must refuse to clobber it
  await t.throwsAsync(startCniServer({ socketPath, capture: manager }), { message: /not a socket/ });
  await exec('rm', ['-f', socketPath]);
  // A stale socket file from a crashed agent: bound, never closed.
  await exec('/usr/bin/python3', ['-c', `import socket; socket.socket(socket.AF_UNIX).bind(${JSON.stringify(socketPath)})`]);
  t.true((await stat(socketPath)).isSocket());
  const server = await startCniServer({ socketPath, capture: manager });
  t.teardown(async () => {
    await server.close();
    await exec('rm', ['-f', socketPath]);
  });
  t.is((await stat(socketPath)).mode & 0o777, 0o600);

  const malformed = await post(socketPath, '/v1/pod-add', '{"podName": ');
  t.is(malformed.status, 400);
  t.regex(String(malformed.body.error), /not valid JSON/);
  const missing = await post(socketPath, '/v1/pod-add', JSON.stringify({ podName: 'x' }));
  t.is(missing.status, 400);
  t.regex(String(missing.body.error), /podNamespace/);

  const request = {
    podName: pod.name, podNamespace: pod.namespace, podUid: pod.uid, containerId: 'c1', netns: pod.netns, ips: [topology.pod.ip],
  };
  const gone = await post(socketPath, '/v1/pod-add', JSON.stringify({ ...request, podUid: 'other', netns: '/run/netns/ambit-does-not-exist' }));
  t.is(gone.status, 500);
  t.regex(String(gone.body.error), /network namespace \/run\/netns\/ambit-does-not-exist .*does not exist/);

  const added = await post(socketPath, '/v1/pod-add', JSON.stringify(request));
  t.deepEqual(added, { status: 200, body: { captured: true } });
  t.true(manager.isCaptured(pod.uid));

  const { ips: _ips, ...delRequest } = request;
  t.is((await post(socketPath, '/v1/pod-del', JSON.stringify(delRequest))).status, 200);
  t.is((await post(socketPath, '/v1/pod-del', JSON.stringify({ ...delRequest, netns: '' }))).status, 200);
  t.false(manager.isCaptured(pod.uid));
  t.is((await post(socketPath, '/v1/nope', '{}')).status, 404);
});

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
