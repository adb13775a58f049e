/**
 * What one client connection may cost the HBONE server: it ends with the client's FIN even on a half-open listener
 * (the agent's in-pod ones), a PING keepalive ends a client that went silent, an idle timeout ends a connection with
 * no streams, and a budget of streams reset before they were answered ends a flood with GOAWAY ENHANCE_YOUR_CALM.
 * The server is fed by `handle()` from a listener that accepts half-open sockets, as the agent's are.
 */
import test from 'ava';
import http2 from 'node:http2';
import net from 'node:net';
import { HboneServer, type HboneRejection, type HboneServerOptions } from '../../shared/hbone/index.ts';
import { makeMesh, rawSession, startFreezableProxy, startTarget, TRUST_DOMAIN, waitFor, type Mesh, type TcpTarget } from '../helpers/hbone.ts';

const { NGHTTP2_CANCEL, NGHTTP2_ENHANCE_YOUR_CALM } = http2.constants;

interface HalfOpenServer {
  server: HboneServer;
  port: number;
  rejections: HboneRejection[];
  close(): Promise<void>;
}

/** An HBONE server behind a listener with allowHalfOpen, like the agent's in-pod 15008 listener. */
async function startHalfOpenServer(mesh: Mesh, options: Partial<HboneServerOptions>): Promise<HalfOpenServer> {
  const rejections: HboneRejection[] = [];
  const server = new HboneServer({
    certificateFor: () => mesh.serverCert,
    rootsPem: [mesh.ca.rootCertPem],
    trustDomain: TRUST_DOMAIN,
    onRejected: (rejection) => rejections.push(rejection),
    ...options,
  });
  const listener = net.createServer({ allowHalfOpen: true }, (socket) => server.handle(socket));
  await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
  return {
    server,
    port: (listener.address() as net.AddressInfo).port,
    rejections,
    close: async () => {
      listener.close();
      await server.shutdown(0);
    },
  };
}

/** A target that holds every connection until the other side ends it; `open` are the connections open now. */
async function holdingTarget(): Promise<TcpTarget & { open: Set<net.Socket> }> {
  const open = new Set<net.Socket>();
  const target = await startTarget((socket) => {
    open.add(socket);
    socket.on('close', () => open.delete(socket));
    socket.resume();
    socket.on('end', () => socket.end());
  });
  return Object.assign(target, { open });
}

/** Opens a CONNECT tunnel on `session` and resolves once it is answered 200. */
function openTunnel(session: http2.ClientHttp2Session, authority: string): Promise<http2.ClientHttp2Stream> {
  return new Promise((resolve, reject) => {
    const stream = session.request({ ':method': 'CONNECT', ':authority': authority }, { endStream: false });
    stream.on('error', () => {});
    stream.once('response', (headers) => (headers[':status'] === 200 ? resolve(stream) : reject(new Error(`status ${String(headers[':status'])}`))));
  });
}

const NO_TIMERS = { keepaliveIntervalMs: 0, idleTimeoutMs: 0 };

test('a client that goes away with a FIN and no GOAWAY takes its session and its tunnels with it, on a half-open listener', async (t) => {
  const mesh = await makeMesh();
  const target = await holdingTarget();
  // No keepalive, no idle timeout: only the FIN can end it.
  const hbone = await startHalfOpenServer(mesh, NO_TIMERS);
  t.teardown(async () => {
    await hbone.close();
    await target.close();
  });
  const { session } = await rawSession({ host: '127.0.0.1', port: hbone.port }, mesh.clientCert, [mesh.ca.rootCertPem]);
  await openTunnel(session, `127.0.0.1:${target.address.port}`);
  t.is(target.open.size, 1);
  t.is(hbone.server.stats().activeSessions, 1);
  // What a killed process does: the kernel closes its socket (FIN), no GOAWAY is ever sent.
  session.socket.destroy();
  t.true(await waitFor(() => hbone.server.stats().activeSessions === 0 && target.open.size === 0, 3000), 'the session and the target connection are gone');
});

test('a client that stops answering PINGs loses its session and tunnels after the keepalive timeout', async (t) => {
  // Set-up alone took most of AVA's 10 s at load 30; 1 s to answer a PING (300 ms was missed by an answering client).
  t.timeout(30_000);
  const mesh = await makeMesh();
  const target = await holdingTarget();
  const hbone = await startHalfOpenServer(mesh, { keepaliveIntervalMs: 200, keepaliveTimeoutMs: 1000, idleTimeoutMs: 0 });
  const relay = await startFreezableProxy({ host: '127.0.0.1', port: hbone.port });
  t.teardown(async () => {
    await relay.close();
    await hbone.close();
    await target.close();
  });
  const { session } = await rawSession(relay.address, mesh.clientCert, [mesh.ca.rootCertPem]);
  await openTunnel(session, `127.0.0.1:${target.address.port}`);
  // A few keepalive rounds pass while the client answers: the session stays.
  const answered = hbone.server.stats().keepaliveTimeouts;
  await new Promise((resolve) => setTimeout(resolve, 800));
  t.is(hbone.server.stats().keepaliveTimeouts, answered);
  t.is(target.open.size, 1);
  relay.freeze();
  t.true(await waitFor(() => target.open.size === 0 && hbone.server.stats().activeSessions === 0, 6000), 'the frozen client lost its tunnel');
  t.is(hbone.server.stats().keepaliveTimeouts, 1);
});

test('a session with no stream is closed after the idle timeout, one with a tunnel is not', async (t) => {
  const mesh = await makeMesh();
  const target = await holdingTarget();
  const hbone = await startHalfOpenServer(mesh, { keepaliveIntervalMs: 0, idleTimeoutMs: 1000 });
  t.teardown(async () => {
    await hbone.close();
    await target.close();
  });
  const idle = await rawSession({ host: '127.0.0.1', port: hbone.port }, mesh.clientCert, [mesh.ca.rootCertPem]);
  // Listen at once: on a busy machine the 1 s may pass while the second session is set up.
  const goaway = new Promise<number>((resolve) => idle.session.once('goaway', resolve));
  const busy = await rawSession({ host: '127.0.0.1', port: hbone.port }, mesh.clientCert, [mesh.ca.rootCertPem]);
  const tunnel = await openTunnel(busy.session, `127.0.0.1:${target.address.port}`);
  t.teardown(() => busy.session.destroy());
  t.is(await goaway, http2.constants.NGHTTP2_NO_ERROR, 'GOAWAY NO_ERROR');
  t.true(await waitFor(() => idle.session.closed || idle.session.destroyed, 3000), 'the idle session closed');
  // Past the busy session's own timeout too (its timer runs from its start; at its end it finds the tunnel open).
  await new Promise((resolve) => setTimeout(resolve, 1200));
  t.false(busy.session.closed, 'the session with a tunnel stays');
  t.is(target.open.size, 1);
  // Once its last stream ends, the busy session becomes idle too.
  tunnel.end();
  t.true(await waitFor(() => hbone.server.stats().activeSessions === 0, 3000));
  t.is(hbone.server.stats().idleTimeouts, 2);
});

test('streams reset before they are answered spend a budget; past it GOAWAY ENHANCE_YOUR_CALM, and no target connection is made for them', async (t) => {
  const mesh = await makeMesh();
  const target = await holdingTarget();
  // Decisions wait for `gate` while it is set: the flood's decisions end only once every reset is on the wire, so
  // the resets arrive while the server is still deciding however slow the machine is.
  const gate: { closed?: Promise<void>; open?: () => void } = {};
  const decide = async (): Promise<{ allow: true }> => {
    await gate.closed;
    return { allow: true };
  };
  const hbone = await startHalfOpenServer(mesh, { ...NO_TIMERS, decide, prematureResetBurst: 20, prematureResetRatePerSecond: 1 });
  t.teardown(async () => {
    await hbone.close();
    await target.close();
  });
  const { session } = await rawSession({ host: '127.0.0.1', port: hbone.port }, mesh.clientCert, [mesh.ca.rootCertPem]);
  t.teardown(() => session.destroy());
  const goaway = new Promise<number>((resolve) => session.once('goaway', resolve));
  // Tunnels answered and then closed never count: 30 of them, more than the budget.
  for (let i = 0; i < 30; i++) {
    const tunnel = await openTunnel(session, `127.0.0.1:${target.address.port}`);
    tunnel.end();
    await new Promise((resolve) => tunnel.once('close', resolve));
  }
  t.false(session.closed, 'resets after the 200 are free');
  gate.closed = new Promise<void>((resolve) => (gate.open = resolve));
  const streams = Array.from({ length: 40 }, () => {
    const stream = session.request({ ':method': 'CONNECT', ':authority': `127.0.0.1:${target.address.port}` }, { endStream: false });
    stream.on('error', () => {});
    return stream;
  });
  // Every request is on the wire (the server's decisions wait for the gate), then each is reset before its answer.
  await new Promise((resolve) => setTimeout(resolve, 20));
  for (const stream of streams) stream.close(NGHTTP2_CANCEL);
  // The decisions end after the resets were written; the server reads them before it would connect (it lets the
  // rest of what arrived be read first).
  setTimeout(() => gate.open?.(), 50);
  t.is(await goaway, NGHTTP2_ENHANCE_YOUR_CALM);
  t.is(hbone.server.stats().streamFloods, 1);
  t.deepEqual(hbone.rejections.map((rejection) => [rejection.reason, rejection.error.code, rejection.peerIdentity?.uri]), [['stream_flood', 'HBONE_STREAM_FLOOD', 'spiffe://cluster.local/ns/shop/sa/client']]);
  t.is(target.accepted.length, 30, 'only the tunnels that were used reached the target');
});

test('the server advertises 200 concurrent streams', async (t) => {
  const mesh = await makeMesh();
  const hbone = await startHalfOpenServer(mesh, NO_TIMERS);
  t.teardown(() => hbone.close());
  const { session } = await rawSession({ host: '127.0.0.1', port: hbone.port }, mesh.clientCert, [mesh.ca.rootCertPem]);
  t.teardown(() => session.destroy());
  t.is(session.remoteSettings.maxConcurrentStreams, 200);
});
