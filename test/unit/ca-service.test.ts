import test from 'ava';
import { X509Certificate, type webcrypto as WebCrypto } from 'node:crypto';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { status, type Metadata, type ServiceError } from '@grpc/grpc-js';
import { CaClient } from '../../shared/ca/ca-client.ts';
import { registerCaService } from '../../controlplane/ca/ca-service.ts';
import { MAX_WORKLOAD_CERT_TTL_MS } from '../../controlplane/ca/config.ts';
import { nodeAuthenticatorFromCaller } from '../../controlplane/ca/node-authenticator.ts';
import { publishRootFile } from '../../controlplane/ca/root-publisher.ts';
import { openLocalRoot } from '../../controlplane/ca/root-store.ts';
import { x509 } from '../../shared/identity/crypto-provider.ts';
import { CertificateAuthority, createCsr, generateKeyPair, spiffeId, verifyCertificateChain } from '../../shared/identity/index.ts';
import { rawCreateCertificate, startCaServer, type TestCaServer } from '../helpers/ca-server.ts';

type WebCryptoKey = WebCrypto.CryptoKey;

const TD = 'cluster.local';
const TOKENS = { 'token-node-1': 'node-1', 'token-node-2': 'node-2' };
const PODS = [
  { node: 'node-1', namespace: 'shop', serviceAccount: 'cart' },
  { node: 'node-2', namespace: 'bank', serviceAccount: 'ledger' },
];
const cart = spiffeId(TD, 'shop', 'cart');
const ledger = spiffeId(TD, 'bank', 'ledger');

async function setup(t: { teardown(fn: () => unknown): void }, options: { ca?: CertificateAuthority } = {}): Promise<{ ca: CertificateAuthority; server: TestCaServer }> {
  const ca = options.ca ?? (await CertificateAuthority.createRoot({ trustDomain: TD }));
  const server = await startCaServer({ ca, tokens: TOKENS, pods: PODS.map((pod) => ({ ...pod })) });
  t.teardown(() => server.stop());
  return { ca, server };
}

function client(t: { teardown(fn: () => unknown): void }, server: TestCaServer, token: string, ttlMs?: number): CaClient {
  const caClient = new CaClient({ address: server.address, rootsPem: server.rootsPem, token, ...(ttlMs === undefined ? {} : { ttlMs }) });
  t.teardown(() => caClient.close());
  return caClient;
}

async function csrPem(...uris: string[]): Promise<string> {
  const keys = await generateKeyPair();
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    keys: { privateKey: keys.privateKey, publicKey: keys.publicKey },
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    extensions: [new x509.SubjectAlternativeNameExtension(uris.map((value) => ({ type: 'url' as const, value })), true)],
  });
  return csr.toString('pem');
}

test('an agent gets a certificate for a pod on its node: chain to the root, the identity as SAN, the lifetime asked', async (t) => {
  const { ca, server } = await setup(t);
  const certificate = await client(t, server, 'token-node-1', 3600_000).fetch(cart);
  t.is(certificate.identity.uri, cart.uri);
  t.deepEqual(certificate.chainPem, [], 'a self-signed root has no intermediates');
  t.true(certificate.rootsPem.includes(ca.rootCertPem));
  t.is(verifyCertificateChain({ leafPem: certificate.certPem, rootsPem: [ca.rootCertPem], trustDomain: TD }).uri, cart.uri);
  const leaf = new X509Certificate(certificate.certPem);
  t.is(leaf.subjectAltName, `URI:${cart.uri}`);
  t.is(leaf.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');
  t.true(leaf.checkPrivateKey((await import('node:crypto')).createPrivateKey(certificate.keyPem)), 'the key we hold matches the certificate');
  const lifetime = certificate.notAfter.getTime() - Date.now();
  t.true(lifetime > 3500_000 && lifetime <= 3600_000, `lifetime ${lifetime} ms`);
  t.is(server.counters.signed, 1);
});

test('a longer lifetime than the maximum is shortened to the maximum; none asked gives the default', async (t) => {
  const { server } = await setup(t);
  const long = await client(t, server, 'token-node-1', 7 * 24 * 3600_000).fetch(cart);
  const lifetime = long.notAfter.getTime() - Date.now();
  t.true(lifetime <= MAX_WORKLOAD_CERT_TTL_MS && lifetime > MAX_WORKLOAD_CERT_TTL_MS - 120_000, `lifetime ${lifetime} ms`);
  const fallback = await client(t, server, 'token-node-1').fetch(cart);
  t.true(fallback.notAfter.getTime() - Date.now() > 23 * 3600_000);
});

test('an agent asking for an identity whose pods run only on another node is refused with PERMISSION_DENIED', async (t) => {
  const { server } = await setup(t);
  const error = await t.throwsAsync<ServiceError>(client(t, server, 'token-node-1').fetch(ledger));
  t.is(error?.code, status.PERMISSION_DENIED);
  t.is(error?.details, 'node node-1 may not get spiffe://cluster.local/ns/bank/sa/ledger: no pod with that service account runs on node-1');
  t.is(server.counters.refused.permissionDenied, 1);
  t.is(server.counters.signed, 0);
  // The owner of that node gets it.
  t.is((await client(t, server, 'token-node-2').fetch(ledger)).identity.uri, ledger.uri);
});

test('the node check matches the service account, not only the namespace: one namespace, two service accounts on two nodes', async (t) => {
  const { server } = await setup(t);
  // shop/cart runs on node-1 (the fixture); shop/payments runs only on node-2.
  server.pods.push({ node: 'node-2', namespace: 'shop', serviceAccount: 'payments' });
  const payments = spiffeId(TD, 'shop', 'payments');
  const error = await t.throwsAsync<ServiceError>(client(t, server, 'token-node-1').fetch(payments));
  t.is(error?.code, status.PERMISSION_DENIED, 'node-1 runs a pod of namespace shop, but none with service account payments');
  t.is(error?.details, 'node node-1 may not get spiffe://cluster.local/ns/shop/sa/payments: no pod with that service account runs on node-1');
  const denied = await t.throwsAsync<ServiceError>(client(t, server, 'token-node-2').fetch(cart));
  t.is(denied?.code, status.PERMISSION_DENIED, 'node-2 runs shop/payments, not shop/cart');
  // The same service account name in another namespace is another identity.
  const otherCart = await t.throwsAsync<ServiceError>(client(t, server, 'token-node-1').fetch(spiffeId(TD, 'bank', 'cart')));
  t.is(otherCart?.code, status.PERMISSION_DENIED, 'node-1 runs shop/cart, not bank/cart');
  t.is(server.counters.signed, 0);
  t.is((await client(t, server, 'token-node-2').fetch(payments)).identity.uri, payments.uri);
  t.is((await client(t, server, 'token-node-1').fetch(cart)).identity.uri, cart.uri);
});

test('a pod moving onto the node makes its identity available to that node', async (t) => {
  const { server } = await setup(t);
  await t.throwsAsync(client(t, server, 'token-node-1').fetch(ledger), { message: /PERMISSION_DENIED/ });
  server.pods.push({ node: 'node-1', namespace: 'bank', serviceAccount: 'ledger' });
  t.is((await client(t, server, 'token-node-1').fetch(ledger)).identity.uri, ledger.uri);
});

test('a bad token is refused with UNAUTHENTICATED', async (t) => {
  const { server } = await setup(t);
  const error = await t.throwsAsync<ServiceError>(client(t, server, 'not-a-node-token').fetch(cart));
  t.is(error?.code, status.UNAUTHENTICATED);
  t.regex(error?.details ?? '', /not a known node token/);
  t.is(server.counters.refused.unauthenticated, 1);
});

test('a malformed CSR is refused with INVALID_ARGUMENT', async (t) => {
  const { server } = await setup(t);
  for (const csr of ['', 'hello', '-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n']) {
    const error = await t.throwsAsync<ServiceError>(rawCreateCertificate(server, 'token-node-1', { csr }));
    t.is(error?.code, status.INVALID_ARGUMENT, csr);
    t.regex(error?.details ?? '', /not a valid PKCS#10 request/);
  }
  t.is(server.counters.refused.invalidArgument, 3);
});

test('a CSR with two identities is refused with INVALID_ARGUMENT, even when the node may have both', async (t) => {
  const { server } = await setup(t);
  server.pods.push({ node: 'node-1', namespace: 'bank', serviceAccount: 'ledger' });
  const error = await t.throwsAsync<ServiceError>(rawCreateCertificate(server, 'token-node-1', { csr: await csrPem(cart.uri, ledger.uri) }));
  t.is(error?.code, status.INVALID_ARGUMENT);
  t.regex(error?.details ?? '', /carries 2 subjectAltNames; exactly one SPIFFE URI is allowed/);
});

test('a CSR for another trust domain is refused with INVALID_ARGUMENT', async (t) => {
  const { server } = await setup(t);
  const error = await t.throwsAsync<ServiceError>(rawCreateCertificate(server, 'token-node-1', { csr: await csrPem('spiffe://evil.org/ns/shop/sa/cart') }));
  t.is(error?.code, status.INVALID_ARGUMENT);
  t.regex(error?.details ?? '', /trust domain evil.org/);
});

test('ImpersonatedIdentity must match the CSR; a CSR alone is authorized by its own identity', async (t) => {
  const { server } = await setup(t);
  // The node may have cart and claims cart, but the CSR asks for ledger (a pod of another node).
  const mismatch = await t.throwsAsync<ServiceError>(rawCreateCertificate(server, 'token-node-1', {
    csr: await csrPem(ledger.uri),
    metadata: { fields: { ImpersonatedIdentity: { stringValue: cart.uri } } },
  }));
  t.is(mismatch?.code, status.INVALID_ARGUMENT);
  t.is(mismatch?.details, `ImpersonatedIdentity is ${cart.uri} but the CSR asks for ${ledger.uri}: they must be the same identity`);
  // Without ImpersonatedIdentity the CSR's SAN is what is authorized.
  const noMetadata = await rawCreateCertificate(server, 'token-node-1', { csr: await csrPem(cart.uri) });
  t.is(noMetadata.cert_chain.length, 2, '[leaf, root]');
  t.is(new X509Certificate(noMetadata.cert_chain[0]!).subjectAltName, `URI:${cart.uri}`);
  const denied = await t.throwsAsync<ServiceError>(rawCreateCertificate(server, 'token-node-1', { csr: await csrPem(ledger.uri) }));
  t.is(denied?.code, status.PERMISSION_DENIED);
});

test('the root persists in its directory: a restarted CA has the same root and old certificates still verify', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'ambit-ca-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const first = await openLocalRoot({ dir, trustDomain: TD });
  t.true(first.created);
  t.is((await stat(path.join(dir, 'ca-key.pem'))).mode & 0o777, 0o600, 'the root key is readable by its owner only');
  const before = await startCaServer({ ca: first.ca, tokens: TOKENS, pods: PODS });
  const beforeClient = new CaClient({ address: before.address, rootsPem: before.rootsPem, token: 'token-node-1' });
  const oldCertificate = await beforeClient.fetch(cart);
  beforeClient.close();
  await before.stop();

  const second = await openLocalRoot({ dir, trustDomain: TD });
  t.false(second.created);
  t.is(second.ca.rootCertPem, first.ca.rootCertPem);
  const { server } = await setup(t, { ca: second.ca });
  const newCertificate = await client(t, server, 'token-node-1').fetch(cart);
  for (const certificate of [oldCertificate, newCertificate]) {
    t.is(verifyCertificateChain({ leafPem: certificate.certPem, rootsPem: [second.ca.rootCertPem], trustDomain: TD }).uri, cart.uri);
  }

  const published = path.join(dir, 'published-root.pem');
  await publishRootFile(published, second.ca.rootCertPem);
  t.is(await readFile(published, 'utf8'), first.ca.rootCertPem);
});

test('a root directory with a certificate but no key is refused rather than replaced', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'ambit-ca-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await openLocalRoot({ dir, trustDomain: TD });
  await rm(path.join(dir, 'ca-key.pem'));
  await t.throwsAsync(openLocalRoot({ dir, trustDomain: TD }), { message: /has root-cert.pem but not ca-key.pem/ });
});

test('the agent client sends CSRs the CA signs with its own key (no key leaves the agent)', async (t) => {
  const { server } = await setup(t);
  const keys = await generateKeyPair();
  const response = await rawCreateCertificate(server, 'token-node-1', { csr: await createCsr(keys, cart), validity_duration: '60' });
  const leaf = new X509Certificate(response.cert_chain[0]!);
  t.true(leaf.checkPrivateKey((await import('node:crypto')).createPrivateKey(keys.privateKeyPem)));
  t.true(leaf.validToDate.getTime() - Date.now() <= 60_000);
});

test('over the shared caller authentication: the node from the credential (or x-ambit-node with a shared local token), only trusted agents', async (t) => {
  const ca = await CertificateAuthority.createRoot({ trustDomain: TD });
  const pods = [...PODS];
  const authenticator = {
    async authenticate(metadata: Metadata) {
      const token = String(metadata.get('authorization')[0] ?? '');
      if (token === 'Bearer shared-local-token') return { identity: 'bootstrap-token' };
      if (token === 'Bearer bound-token-node-2') return { identity: 'system:serviceaccount:istio-system:ztunnel', node: 'node-2' };
      if (token === 'Bearer workload-token-node-2') return { identity: 'system:serviceaccount:bank:ledger', node: 'node-2' };
      throw new Error('the bearer token does not match the bootstrap token');
    },
  };
  const authenticate = nodeAuthenticatorFromCaller((metadata) => authenticator.authenticate(metadata), {
    nodeFromHeader: true,
    trustedNodeAgents: ['bootstrap-token', 'system:serviceaccount:istio-system:ztunnel'],
  });
  const server = await startCaServer({
    ca,
    tokens: {},
    pods: [],
    register: (grpcServer) => registerCaService(grpcServer, { ca, authenticate, podsOnNode: (node) => pods.filter((pod) => pod.node === node) }),
  });
  t.teardown(() => server.stop());
  const as = (token: string, node?: string) => {
    const caClient = new CaClient({ address: server.address, rootsPem: server.rootsPem, token, ...(node ? { node } : {}) });
    t.teardown(() => caClient.close());
    return caClient;
  };
  t.is((await as('shared-local-token', 'node-1').fetch(cart)).identity.uri, cart.uri);
  const elsewhere = await t.throwsAsync<ServiceError>(as('shared-local-token', 'node-1').fetch(ledger));
  t.is(elsewhere?.code, status.PERMISSION_DENIED);
  const noNode = await t.throwsAsync<ServiceError>(as('shared-local-token').fetch(cart));
  t.is(noNode?.code, status.UNAUTHENTICATED);
  t.regex(noNode?.details ?? '', /x-ambit-node/);
  // A credential that names its node wins over the header.
  t.is((await as('bound-token-node-2', 'node-1').fetch(ledger)).identity.uri, ledger.uri);
  const claimed = await t.throwsAsync<ServiceError>(as('bound-token-node-2', 'node-1').fetch(cart));
  t.is(claimed?.code, status.PERMISSION_DENIED);
  t.regex(claimed?.details ?? '', /^node node-2 may not get/);
  const workload = await t.throwsAsync<ServiceError>(as('workload-token-node-2').fetch(ledger));
  t.is(workload?.code, status.PERMISSION_DENIED, 'a workload token naming the node is not a node agent');
  t.regex(workload?.details ?? '', /caller system:serviceaccount:bank:ledger is not a node agent/);
  const bad = await t.throwsAsync<ServiceError>(as('wrong', 'node-1').fetch(cart));
  t.is(bad?.code, status.UNAUTHENTICATED);
  t.is(server.counters.signed, 2);
});

test('a CSR whose key is not ECDSA P-256 is refused with INVALID_ARGUMENT naming the key', async (t) => {
  const { server } = await setup(t);
  const { webcrypto } = await import('node:crypto');
  const rsa = (await webcrypto.subtle.generateKey(
    { name: 'RSASSA-PKCS1-v1_5', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' },
    true,
    ['sign', 'verify'],
  )) as unknown as { privateKey: WebCryptoKey; publicKey: WebCryptoKey };
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    keys: rsa,
    signingAlgorithm: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' },
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: cart.uri }], true)],
  });
  const error = await t.throwsAsync<ServiceError>(rawCreateCertificate(server, 'token-node-1', { csr: csr.toString('pem') }));
  t.is(error?.code, status.INVALID_ARGUMENT);
  t.regex(error?.details ?? '', /ECDSA/);
});
