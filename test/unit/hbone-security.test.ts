import test from 'ava';
import net from 'node:net';
import tls from 'node:tls';
import { CertificateAuthority, spiffeId } from '../../shared/identity/index.ts';
import type { HboneError } from '../../shared/hbone/index.ts';
import { CLIENT_ID, expiredCertificate, makeMesh, rawSession, readAll, SERVER_ID, startEcho, startPair, TRUST_DOMAIN } from '../helpers/hbone.ts';

test('a client certificate from another CA is rejected and nothing reaches the target', async (t) => {
  const echo = await startEcho();
  const mesh = await makeMesh();
  const stranger = await makeMesh();
  const errors: HboneError[] = [];
  const pair = await startPair({ mesh, client: { certificateFor: () => stranger.clientCert }, server: { onError: (error) => errors.push(error) } });
  t.teardown(async () => {
    await pair.close();
    await echo.close();
  });
  // The stranger trusts our server's root, so only the server's check can stop it.
  const strangerCert = { ...stranger.clientCert, rootsPem: [mesh.ca.rootCertPem] };
  const pool = new (pair.pool.constructor as typeof import('../../shared/hbone/index.ts').HboneClientPool)({
    certificateFor: () => strangerCert,
    trustDomain: TRUST_DOMAIN,
  });
  t.teardown(() => pool.destroy());
  const error = await t.throwsAsync(pool.open(pair.target(echo.address)));
  t.is((error as HboneError).code, 'HBONE_TLS');
  t.regex(error!.message, /did not accept our client certificate/);
  t.is(echo.accepted.length, 0, 'nothing reached the target');
  t.is(pair.server.stats().connectionsRejected, 1);
  t.is(pair.server.stats().sessionsAccepted, 0);
  t.regex(errors.map((e) => e.message).join('\n'), /no acceptable certificate/);
});

test('a client without a certificate is rejected', async (t) => {
  const pair = await startPair();
  t.teardown(() => pair.close());
  const { session, outcome } = await rawSession(pair.serverAddress, undefined, [pair.mesh.ca.rootCertPem]);
  t.teardown(() => session.destroy());
  t.is(outcome, 'closed');
  t.is(pair.server.stats().sessionsAccepted, 0);
});

test('a client from another trust domain is rejected even when its root is trusted', async (t) => {
  const mesh = await makeMesh();
  const foreignCa = await CertificateAuthority.createRoot({ trustDomain: 'other.example' });
  const foreign = await foreignCa.issueWorkloadCertificate(spiffeId('other.example', 'shop', 'client'));
  const errors: HboneError[] = [];
  const pair = await startPair({ mesh, server: { rootsPem: [mesh.ca.rootCertPem, foreignCa.rootCertPem], onError: (error) => errors.push(error) } });
  t.teardown(() => pair.close());
  const { session, outcome } = await rawSession(pair.serverAddress, foreign, [mesh.ca.rootCertPem]);
  t.teardown(() => session.destroy());
  t.is(outcome, 'closed');
  t.is(errors[0]?.code, 'HBONE_PEER_IDENTITY');
  t.regex(errors[0]!.message, /outside trust domain cluster.local/);
});

test('the client rejects a server with an unexpected SPIFFE identity', async (t) => {
  const echo = await startEcho();
  const pair = await startPair();
  t.teardown(async () => {
    await pair.close();
    await echo.close();
  });
  const expected = 'spiffe://cluster.local/ns/shop/sa/payments';
  const error = await t.throwsAsync(pair.pool.open(pair.target(echo.address, { expectedIdentities: [expected] })));
  t.is((error as HboneError).code, 'HBONE_PEER_IDENTITY');
  t.regex(error!.message, new RegExp(`presented ${SERVER_ID.uri}.*${expected}`));
  t.is(echo.accepted.length, 0);
  t.is(pair.server.stats().tunnelsOpened, 0);
  // With the right expectation the same server is fine.
  const stream = await pair.pool.open(pair.target(echo.address, { expectedIdentities: [expected, SERVER_ID.uri] }));
  stream.end('ok');
  t.is((await readAll(stream)).toString(), 'ok');
});

test('the client rejects a server whose certificate comes from another CA', async (t) => {
  const echo = await startEcho();
  const mesh = await makeMesh();
  const stranger = await makeMesh();
  const pair = await startPair({ mesh: { ...mesh, serverCert: { ...stranger.serverCert, rootsPem: [mesh.ca.rootCertPem] } } });
  t.teardown(async () => {
    await pair.close();
    await echo.close();
  });
  const error = await t.throwsAsync(pair.pool.open(pair.target(echo.address)));
  t.is((error as HboneError).code, 'HBONE_TLS');
  t.regex(error!.message, /same mesh root/);
  t.is(echo.accepted.length, 0);
});

test('expired certificates are rejected on both sides', async (t) => {
  const echo = await startEcho();
  const mesh = await makeMesh();
  const [expiredServer, expiredClient] = await Promise.all([expiredCertificate(mesh.ca, SERVER_ID), expiredCertificate(mesh.ca, CLIENT_ID)]);
  // A server presenting an expired certificate: the client's handshake fails.
  const badServer = await startPair({ mesh: { ...mesh, serverCert: expiredServer } });
  // A client holding only an expired certificate: our pool refuses to use it, and the server refuses it too.
  const pair = await startPair({ mesh, client: { certificateFor: () => expiredClient } });
  t.teardown(async () => {
    await badServer.close();
    await pair.close();
    await echo.close();
  });
  const serverSide = await t.throwsAsync(badServer.pool.open(badServer.target(echo.address)));
  t.is((serverSide as HboneError).code, 'HBONE_TLS');
  t.regex(serverSide!.message, /expired/);
  const clientSide = await t.throwsAsync(pair.pool.open(pair.target(echo.address)));
  t.is((clientSide as HboneError).code, 'HBONE_NO_CERTIFICATE');
  const { session, outcome } = await rawSession(pair.serverAddress, expiredClient, [mesh.ca.rootCertPem]);
  t.teardown(() => session.destroy());
  t.is(outcome, 'closed', 'the server closed the connection of a client with an expired certificate');
  t.is(pair.server.stats().connectionsRejected, 1);
  t.is(echo.accepted.length, 0);
});

test('garbage from a peer does not crash the server, which keeps serving', async (t) => {
  const echo = await startEcho();
  const pair = await startPair();
  t.teardown(async () => {
    await pair.close();
    await echo.close();
  });
  // 1. Junk instead of a TLS ClientHello.
  const plain = net.connect(pair.serverAddress.port, '127.0.0.1');
  plain.on('error', () => {});
  plain.resume();
  plain.end(Buffer.alloc(4096, 0x41));
  await new Promise((resolve) => plain.on('close', resolve));
  // 2. A valid mutual-TLS handshake, then junk instead of HTTP/2 frames.
  const junk = tls.connect({
    port: pair.serverAddress.port,
    host: '127.0.0.1',
    cert: pair.mesh.clientCert.certPem,
    key: pair.mesh.clientCert.keyPem,
    ca: [pair.mesh.ca.rootCertPem],
    ALPNProtocols: ['h2'],
    checkServerIdentity: () => undefined,
  });
  junk.on('error', () => {});
  junk.resume();
  await new Promise((resolve) => junk.once('secureConnect', resolve));
  junk.write(Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'));
  junk.write(Buffer.from([0, 0, 4, 0xff, 0xff, 0, 0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8]));
  junk.end(Buffer.alloc(1000, 0xfe));
  await new Promise((resolve) => junk.on('close', resolve));
  // 3. A client that vanishes mid-handshake.
  const vanishing = net.connect(pair.serverAddress.port, '127.0.0.1');
  vanishing.on('error', () => {});
  vanishing.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]));
  await new Promise((resolve) => setTimeout(resolve, 20));
  vanishing.resetAndDestroy();
  // Still serving.
  const stream = await pair.pool.open(pair.target(echo.address));
  stream.end('still here');
  t.is((await readAll(stream)).toString(), 'still here');
  t.true(pair.server.stats().connectionErrors >= 2, `counted ${pair.server.stats().connectionErrors} connection errors`);
});
