/**
 * The agent's outbound glue (agent/proxy/outbound.ts) with its real collaborators on loopback: the mesh state, the
 * HBONE client pool, a real HBONE server presenting a mesh certificate, and the reporter that telemetry implements.
 * What pinning means to a user: a destination that proves another identity than the workload table's is never
 * reached, and what is logged as the destination's identity is what its certificate proved.
 */
import test from 'ava';
import net from 'node:net';
import { OutboundProxy } from '../../agent/proxy/outbound.ts';
import type { ConnectionRecord, ConnectionReporter } from '../../agent/proxy/report.ts';
import { plainSocketFactory } from '../../agent/inpod/socket-factory.ts';
import { MeshState } from '../../shared/mesh/mesh-state.ts';
import type { Workload } from '../../shared/mesh/workload.ts';
import { HboneClientPool, HboneServer, isHboneError } from '../../shared/hbone/index.ts';
import { spiffeId, type WorkloadCertificate } from '../../shared/identity/index.ts';
import { makeMesh, startEcho, TRUST_DOMAIN, type Mesh } from '../helpers/hbone.ts';

function workload(name: string, address: string): Workload {
  return {
    uid: `shop-${name}`, name, namespace: 'shop', serviceAccount: name, trustDomain: TRUST_DOMAIN, node: 'n1', addresses: [address],
    tunnelProtocol: 'HBONE', captureReason: 'test', canonicalName: name, canonicalRevision: 'v1', workloadName: name,
  };
}

/**
 * An outbound proxy for pod shop/client whose table says 127.0.0.1 is pod shop/server, an HBONE server on loopback
 * presenting `presented`, and an echo application behind it. `connect` sends one message through the proxy.
 */
async function setup(t: { teardown(fn: () => unknown): void }, mesh: Mesh, presented: WorkloadCertificate, sourceAddressWanted?: boolean) {
  const echo = await startEcho();
  const connects: string[] = [];
  const hbone = new HboneServer({
    certificateFor: () => presented,
    rootsPem: [mesh.ca.rootCertPem],
    trustDomain: TRUST_DOMAIN,
    decide: (request) => {
      connects.push(request.peerIdentity.uri);
      return { allow: true };
    },
  });
  const hboneAddress = await hbone.listen({ host: '127.0.0.1', port: 0 });
  const state = new MeshState();
  const client = workload('client', '127.0.0.2');
  state.upsert(client);
  state.upsert(workload('server', '127.0.0.1'));
  const opened: ConnectionRecord[] = [];
  const closed: ConnectionRecord[] = [];
  const report: ConnectionReporter = { opened: (record) => opened.push(record), closed: (record) => closed.push(record) };
  if (sourceAddressWanted !== undefined) report.sourceAddressWanted = () => sourceAddressWanted;
  const proxy = new OutboundProxy({ state, report });
  // The pool dials the destination's port 15008; here that is the loopback server's port.
  const pool = new HboneClientPool({ certificateFor: () => mesh.clientCert, trustDomain: TRUST_DOMAIN, connect: () => net.connect(hboneAddress.port, '127.0.0.1') });
  // The pod's listener: what it accepts goes to the proxy with the original destination (the echo application).
  const listener = net.createServer((socket) => proxy.handle(socket, echo.address, { source: client, factory: plainSocketFactory(), pool }));
  await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
  t.teardown(async () => {
    pool.destroy();
    listener.close();
    await hbone.shutdown(0);
    await echo.close();
  });
  const connect = (message: string): Promise<{ echoed: string; error?: string }> =>
    new Promise((resolve) => {
      const socket = net.connect((listener.address() as net.AddressInfo).port, '127.0.0.1', () => socket.end(message));
      let echoed = '';
      socket.on('data', (chunk: Buffer) => (echoed += chunk.toString()));
      socket.on('error', (error: NodeJS.ErrnoException) => resolve({ echoed, error: error.code ?? error.message }));
      socket.on('close', () => resolve({ echoed }));
    });
  /** Resolves once the proxy reported `count` closed connections (it reports after the client side ends). */
  const closedCount = async (count: number): Promise<void> => {
    for (const deadline = Date.now() + 5000; closed.length < count; await new Promise((resolve) => setTimeout(resolve, 10))) {
      if (Date.now() > deadline) throw new Error(`the proxy reported ${closed.length} closed connections, not ${count}`);
    }
  };
  return { connect, opened, closed, closedCount, connects };
}

test('the destination proving the identity the table names is reached; the record carries the identity it proved', async (t) => {
  const mesh = await makeMesh();
  const server = await mesh.ca.issueWorkloadCertificate(spiffeId(TRUST_DOMAIN, 'shop', 'server'));
  const { connect, opened, closed, closedCount, connects } = await setup(t, mesh, server);
  t.deepEqual(await connect('hello'), { echoed: 'hello' });
  await closedCount(1);
  t.deepEqual(connects, ['spiffe://cluster.local/ns/shop/sa/client'], 'the server saw the client pod\'s identity');
  t.is(opened.length, 1, 'reported opened once established');
  t.is(opened[0], closed[0]);
  t.is(closed[0]!.destinationPrincipal, 'spiffe://cluster.local/ns/shop/sa/server');
  t.is(closed[0]!.error, undefined);
  t.true(closed[0]!.mtls);
  t.is(closed[0]!.sourceAddress, '127.0.0.1', 'telemetry that wants every address gets it');
});

test('telemetry that logs only failures: a clean tunnel\'s record has no source address, a refused one still has it', async (t) => {
  const mesh = await makeMesh();
  const impostor = await mesh.ca.issueWorkloadCertificate(spiffeId(TRUST_DOMAIN, 'shop', 'other'));
  const refused = await setup(t, mesh, impostor, false);
  await refused.connect('secret');
  await refused.closedCount(1);
  t.truthy(refused.closed[0]!.error);
  t.is(refused.closed[0]!.sourceAddress, '127.0.0.1', 'the failure\'s log line names where it came from');
  const server = await mesh.ca.issueWorkloadCertificate(spiffeId(TRUST_DOMAIN, 'shop', 'server'));
  const clean = await setup(t, mesh, server, false);
  t.deepEqual(await clean.connect('hello'), { echoed: 'hello' });
  await clean.closedCount(1);
  t.is(clean.closed[0]!.error, undefined);
  t.is(clean.closed[0]!.sourceAddress, undefined, 'no getpeername for a line nobody writes');
});

test('a destination proving another valid mesh identity is refused before any byte or CONNECT reaches it', async (t) => {
  const mesh = await makeMesh();
  const impostor = await mesh.ca.issueWorkloadCertificate(spiffeId(TRUST_DOMAIN, 'shop', 'other'));
  const { connect, opened, closed, closedCount, connects } = await setup(t, mesh, impostor);
  const result = await connect('secret');
  t.is(result.echoed, '', 'nothing came back');
  await closedCount(1);
  t.deepEqual(connects, [], 'no CONNECT reached the impostor');
  t.is(opened.length, 0, 'never reported opened');
  const error = closed[0]!.error;
  t.true(isHboneError(error) && error.code === 'HBONE_PEER_IDENTITY', String(error));
  t.regex(error!.message, /presented spiffe:\/\/cluster\.local\/ns\/shop\/sa\/other but one of \[spiffe:\/\/cluster\.local\/ns\/shop\/sa\/server\] was expected/);
  t.is(closed[0]!.destinationPrincipal, undefined, 'an identity never accepted is not reported');
  t.is(closed[0]!.destination?.name, 'server', 'the workload it was meant for is still named');
});
