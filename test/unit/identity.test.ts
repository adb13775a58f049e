import test from 'ava';
import { X509Certificate } from 'node:crypto';
import type net from 'node:net';
import tls from 'node:tls';
import {
  CertificateAuthority,
  CertificateStore,
  checkExpectedIdentity,
  createCsr,
  generateKeyPair,
  parseSpiffeId,
  spiffeId,
  verifyCertificateChain,
} from '../../shared/identity/index.ts';
import { x509 } from '../../shared/identity/crypto-provider.ts';
import { readTlv } from '../../shared/identity/der.ts';

test('SPIFFE IDs parse and format in Istio form', (t) => {
  const id = parseSpiffeId('spiffe://cluster.local/ns/default/sa/sleep');
  t.deepEqual({ ...id }, { trustDomain: 'cluster.local', namespace: 'default', serviceAccount: 'sleep', uri: 'spiffe://cluster.local/ns/default/sa/sleep' });
  t.is(spiffeId('example.org', 'a', 'b').uri, 'spiffe://example.org/ns/a/sa/b');
});

test('malformed SPIFFE IDs are rejected with the reason', (t) => {
  const cases: Array<[string, RegExp]> = [
    ['http://cluster.local/ns/a/sa/b', /scheme must be spiffe/],
    ['spiffe://cluster.local/ns/a', /exactly ns/],
    ['spiffe://cluster.local/ns/a/sa/b/extra', /exactly ns/],
    ['spiffe:///ns/a/sa/b', /trust domain is empty/],
    ['spiffe://Cluster.Local/ns/a/sa/b', /lowercase/],
    ['spiffe://cluster.local/namespace/a/sa/b', /\/ns\//],
    ['spiffe://cluster.local/ns//sa/b', /namespace is empty/],
    ['spiffe://cluster.local/ns/a/sa/b?x=1', /query/],
    ['spiffe://cluster.local/ns/a b/sa/b', /characters/],
    ['spiffe://cluster.local/ns/../sa/b', /may not be/],
  ];
  for (const [input, reason] of cases) {
    const error = t.throws(() => parseSpiffeId(input), { message: reason }, input);
    t.is((error as { code?: string }).code, 'AMBIT_IDENTITY_INVALID_SPIFFE_ID');
  }
});

test('the CA signs a P-256 CSR for exactly its one identity, with the requested lifetime', async (t) => {
  const ca = await CertificateAuthority.createRoot({ trustDomain: 'cluster.local' });
  const keys = await generateKeyPair();
  const identity = spiffeId('cluster.local', 'shop', 'cart');
  const { certPem } = await ca.signCsr(await createCsr(keys, identity), { ttlMs: 60 * 60 * 1000 });
  const cert = new X509Certificate(certPem);
  t.is(cert.subjectAltName, 'URI:spiffe://cluster.local/ns/shop/sa/cart');
  t.is(cert.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');
  t.false(cert.ca);
  const lifetime = cert.validToDate.getTime() - Date.now();
  t.true(lifetime > 59 * 60 * 1000 && lifetime <= 60 * 60 * 1000, `lifetime ${lifetime}`);
  t.is(verifyCertificateChain({ leafPem: certPem, rootsPem: [ca.rootCertPem], trustDomain: 'cluster.local' }).uri, identity.uri);
});

test('createCsr (DER built with node:crypto) is a PKCS#10 request another parser accepts: signature, empty subject, one critical URI SAN', async (t) => {
  const keys = await generateKeyPair();
  const identity = spiffeId('cluster.local', 'shop', 'cart');
  const csr = new x509.Pkcs10CertificateRequest(await createCsr(keys, identity));
  t.true(await csr.verify());
  t.is(csr.subject, '');
  t.like(csr.signatureAlgorithm as object, { name: 'ECDSA', hash: { name: 'SHA-256' } });
  const san = csr.extensions.find((extension) => extension.type === '2.5.29.17') as x509.SubjectAlternativeNameExtension | undefined;
  t.true(san?.critical);
  t.deepEqual(san?.names.toJSON(), [{ type: 'url', value: identity.uri }]);
  // What is signed is byte for byte what @peculiar/x509's generator signs for the same key and identity.
  const reference = await x509.Pkcs10CertificateRequestGenerator.create({
    keys: { privateKey: keys.privateKey, publicKey: keys.publicKey },
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: identity.uri }], true)],
  });
  // CertificationRequest is SEQUENCE { certificationRequestInfo (what is signed), algorithm, signature }.
  const signedPart = (raw: ArrayBuffer) => {
    const bytes = Buffer.from(raw);
    const info = readTlv(bytes, readTlv(bytes, 0).valueStart);
    return bytes.subarray(info.start, info.end);
  };
  t.deepEqual(signedPart(csr.rawData), signedPart(reference.rawData));
});

test('a process that only asks for certificates does not load @peculiar/x509 (18 MB of RSS): the waypoint\'s modules', async (t) => {
  const script = `await import(${JSON.stringify(new URL('../../waypoint/main.ts', import.meta.url).pathname)}); const { createRequire } = await import('node:module'); const cache = Object.keys(createRequire(import.meta.url).cache); console.log(JSON.stringify(cache.filter((file) => file.includes('@peculiar'))));`;
  const { execFileSync } = await import('node:child_process');
  const loaded = JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' }).trim()) as string[];
  t.deepEqual(loaded, []);
});

test('the CA refuses a CSR with two identities, a foreign trust domain, a mismatch, or garbage', async (t) => {
  const ca = await CertificateAuthority.createRoot({ trustDomain: 'cluster.local' });
  const keys = await generateKeyPair();
  const two = await x509.Pkcs10CertificateRequestGenerator.create({
    keys: { privateKey: keys.privateKey, publicKey: keys.publicKey },
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    extensions: [new x509.SubjectAlternativeNameExtension([
      { type: 'url', value: 'spiffe://cluster.local/ns/a/sa/a' },
      { type: 'url', value: 'spiffe://cluster.local/ns/b/sa/b' },
    ])],
  });
  await t.throwsAsync(ca.signCsr(two.toString('pem')), { message: /carries 2 subjectAltNames/ });
  await t.throwsAsync(ca.signCsr(await createCsr(keys, spiffeId('evil.org', 'a', 'a'))), { message: /trust domain evil.org/ });
  await t.throwsAsync(
    ca.signCsr(await createCsr(keys, spiffeId('cluster.local', 'a', 'a')), { expectedIdentity: spiffeId('cluster.local', 'b', 'b') }),
    { message: /may only have spiffe:\/\/cluster.local\/ns\/b\/sa\/b/ },
  );
  await t.throwsAsync(ca.signCsr('-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n'), { message: /not a valid PKCS#10/ });
});

test('chain verification rejects another CA and expired certificates', async (t) => {
  const ca = await CertificateAuthority.createRoot({ trustDomain: 'cluster.local' });
  const other = await CertificateAuthority.createRoot({ trustDomain: 'cluster.local' });
  const workload = await other.issueWorkloadCertificate(spiffeId('cluster.local', 'a', 'a'));
  t.throws(() => verifyCertificateChain({ leafPem: workload.certPem, rootsPem: [ca.rootCertPem], trustDomain: 'cluster.local' }), { message: /trusted mesh root/ });
  const short = await ca.issueWorkloadCertificate(spiffeId('cluster.local', 'a', 'a'), 1000);
  t.throws(
    () => verifyCertificateChain({ leafPem: short.certPem, rootsPem: [ca.rootCertPem], trustDomain: 'cluster.local', now: new Date(Date.now() + 5000) }),
    { message: /expired/ },
  );
  t.throws(() => checkExpectedIdentity(parseSpiffeId('spiffe://cluster.local/ns/a/sa/a'), ['spiffe://cluster.local/ns/b/sa/b']), { message: /but one of/ });
});

test('a persisted root loads back and keeps signing', async (t) => {
  const ca = await CertificateAuthority.createRoot({ trustDomain: 'cluster.local' });
  const loaded = await CertificateAuthority.load({ trustDomain: 'cluster.local', certPem: ca.rootCertPem, keyPem: ca.rootKeyPem });
  const workload = await loaded.issueWorkloadCertificate(spiffeId('cluster.local', 'a', 'a'));
  t.is(verifyCertificateChain({ leafPem: workload.certPem, rootsPem: [ca.rootCertPem], trustDomain: 'cluster.local' }).uri, 'spiffe://cluster.local/ns/a/sa/a');
  const other = await CertificateAuthority.createRoot({ trustDomain: 'cluster.local' });
  await t.throwsAsync(CertificateAuthority.load({ trustDomain: 'cluster.local', certPem: ca.rootCertPem, keyPem: other.rootKeyPem }), { message: /does not match/ });
});

test('the certificate store knows expiry and hands out only valid certificates', async (t) => {
  const ca = await CertificateAuthority.createRoot({ trustDomain: 'cluster.local' });
  const store = new CertificateStore();
  const long = await ca.issueWorkloadCertificate(spiffeId('cluster.local', 'a', 'long'));
  const short = await ca.issueWorkloadCertificate(spiffeId('cluster.local', 'a', 'short'), 10_000);
  store.set(long);
  store.set(short);
  t.truthy(store.get('spiffe://cluster.local/ns/a/sa/short'));
  t.is(store.get('spiffe://cluster.local/ns/a/sa/short', Date.now() + 20_000), undefined);
  t.deepEqual(store.expiringBefore(new Date(Date.now() + 60_000)).map((c) => c.identity.serviceAccount), ['short']);
  const context = store.secureContext(long.identity);
  t.is(store.secureContext(long.identity), context, 'secure context is cached');
  t.is(store.secureContext(short.identity, Date.now() + 20_000), undefined, 'none for an expired certificate');
  // The context presents the stored certificate in a real handshake (as the HBONE client uses it) and trusts the root.
  const serverCert = await ca.issueWorkloadCertificate(spiffeId('cluster.local', 'a', 'server'));
  let presented: X509Certificate | undefined;
  const server = tls.createServer({ cert: serverCert.certPem, key: serverCert.keyPem, ca: ca.rootCertPem, requestCert: true, rejectUnauthorized: true }, (socket) => {
    presented = socket.getPeerX509Certificate();
    socket.end();
  });
  t.teardown(() => server.close());
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  await new Promise<void>((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port: (server.address() as net.AddressInfo).port, secureContext: context!, checkServerIdentity: () => undefined }, () => socket.resume());
    socket.on('close', () => resolve());
    socket.on('error', reject);
  });
  t.is(presented?.fingerprint256, new X509Certificate(long.certPem).fingerprint256);
  t.is(presented?.subjectAltName, 'URI:spiffe://cluster.local/ns/a/sa/long');
});
