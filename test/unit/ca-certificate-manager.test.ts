import test from 'ava';
import { X509Certificate } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { CaClient } from '../../shared/ca/ca-client.ts';
import { CertificateManager, MAX_CONCURRENT_FETCHES } from '../../shared/ca/certificate-manager.ts';
import type { CertificateSource } from '../../shared/ca/certificate-source.ts';
import { CertificateAuthority, spiffeId, verifyCertificateChain, type SpiffeId, type WorkloadCertificate } from '../../shared/identity/index.ts';
import { startCaServer, type TestCaServer, type TestPod } from '../helpers/ca-server.ts';

const TD = 'cluster.local';
const TOKENS = { 'token-node-1': 'node-1' };
type Teardown = { teardown(fn: () => unknown): void };

async function setup(t: Teardown, pods: TestPod[], ttlMs?: number): Promise<{ ca: CertificateAuthority; server: TestCaServer; caClient: CaClient }> {
  const ca = await CertificateAuthority.createRoot({ trustDomain: TD });
  const server = await startCaServer({ ca, tokens: TOKENS, pods });
  t.teardown(() => server.stop());
  const caClient = new CaClient({ address: server.address, rootsPem: server.rootsPem, token: 'token-node-1', ...(ttlMs === undefined ? {} : { ttlMs }) });
  t.teardown(() => caClient.close());
  return { ca, server, caClient };
}

function manager(t: Teardown, source: CertificateSource, options: ConstructorParameters<typeof CertificateManager>[1] = {}): CertificateManager {
  const certificates = new CertificateManager(source, options);
  t.teardown(() => certificates.close());
  return certificates;
}

/** Polls `condition` until it holds or `limitMs` passes (a bound on waiting, not a timing assertion). */
async function eventually(condition: () => boolean, limitMs = 30_000): Promise<boolean> {
  const deadline = Date.now() + limitMs;
  while (!condition()) {
    if (Date.now() > deadline) return false;
    await sleep(25);
  }
  return true;
}

function serial(certificate: WorkloadCertificate | undefined): string | undefined {
  return certificate && new X509Certificate(certificate.certPem).serialNumber;
}

const cart = spiffeId(TD, 'shop', 'cart');
const onNode1 = (namespace: string, serviceAccount: string): TestPod => ({ node: 'node-1', namespace, serviceAccount });

test('a certificate is rotated at half life, with no moment without a valid one', async (t) => {
  const { ca, caClient } = await setup(t, [onNode1('shop', 'cart')], 6_000);
  const certificates = manager(t, caClient);
  const first = await certificates.certificateFor(cart);
  let gaps = 0;
  const rotated = await eventually(() => {
    const held = certificates.current(cart);
    if (!held) gaps++;
    return held !== undefined && serial(held) !== serial(first);
  }, 20_000);
  t.true(rotated, 'a new certificate replaced the first');
  t.is(gaps, 0, 'current() always had a valid certificate');
  const second = certificates.current(cart)!;
  t.true(second.notAfter.getTime() > first.notAfter.getTime());
  t.is(verifyCertificateChain({ leafPem: second.certPem, rootsPem: [ca.rootCertPem], trustDomain: TD }).uri, cart.uri);
});

test('while the CA is down the still-valid certificate keeps serving, and renewal recovers when the CA is back', async (t) => {
  const ca = await CertificateAuthority.createRoot({ trustDomain: TD });
  const pods = [onNode1('shop', 'cart')];
  const first = await startCaServer({ ca, tokens: TOKENS, pods });
  const caClient = new CaClient({ address: first.address, rootsPem: first.rootsPem, token: 'token-node-1', ttlMs: 10_000 });
  t.teardown(() => caClient.close());
  const errors: Error[] = [];
  const certificates = manager(t, caClient, { onError: (_identity, error) => errors.push(error), retryInitialMs: 200, retryMaxMs: 1_000 });
  const original = await certificates.certificateFor(cart);
  await first.stop();

  t.true(await eventually(() => errors.length >= 1), 'a renewal was attempted and failed');
  t.is(serial(certificates.current(cart)), serial(original), 'the old certificate is still served');
  t.true(await Promise.resolve(certificates.certificateFor(cart)) === original, 'certificateFor answers with it, without waiting for the CA');

  const second = await startCaServer({ ca, tokens: TOKENS, pods, port: first.port });
  t.teardown(() => second.stop());
  t.true(await eventually(() => {
    const held = certificates.current(cart);
    return held !== undefined && serial(held) !== serial(original);
  }), 'a new certificate arrived once the CA was back');
  t.true(second.counters.signed >= 1);
});

test(`100 identities asked at once never run more than ${MAX_CONCURRENT_FETCHES} fetches at a time, and all arrive`, async (t) => {
  const pods = Array.from({ length: 100 }, (_, i) => onNode1('load', `sa-${i}`));
  const { caClient } = await setup(t, pods);
  let inFlight = 0;
  let maxInFlight = 0;
  const counting: CertificateSource = {
    rootsPem: () => caClient.rootsPem(),
    async fetch(identity) {
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      try {
        return await caClient.fetch(identity);
      } finally {
        inFlight--;
      }
    },
  };
  const certificates = manager(t, counting);
  const identities = pods.map((pod) => spiffeId(TD, pod.namespace, pod.serviceAccount));
  const results = await Promise.all(identities.map((identity) => certificates.certificateFor(identity)));
  t.deepEqual(results.map((certificate) => certificate.identity.uri), identities.map((identity) => identity.uri));
  t.true(maxInFlight <= MAX_CONCURRENT_FETCHES, `at most ${MAX_CONCURRENT_FETCHES} in flight, saw ${maxInFlight}`);
  t.true(maxInFlight > 1, 'fetches do run in parallel');
  t.is(certificates.fetchesInFlight, 0);
  t.is(certificates.fetchesQueued, 0);
});

test('a certificate traffic is waiting for goes ahead of queued renewals', async (t) => {
  const renewing = Array.from({ length: 5 }, (_, i) => onNode1('renew', `sa-${i}`));
  const { caClient } = await setup(t, [...renewing, onNode1('shop', 'cart')], 2_000);
  /** Identities whose fetch started while the CA was held, in order. */
  const started: string[] = [];
  let openGate!: () => void;
  const gate = new Promise<void>((resolve) => (openGate = resolve));
  let holding = false;
  const gated: CertificateSource = {
    rootsPem: () => caClient.rootsPem(),
    async fetch(identity: SpiffeId) {
      if (holding) {
        started.push(identity.uri);
        await gate;
      }
      return caClient.fetch(identity);
    },
  };
  const certificates = manager(t, gated, { maxConcurrentFetches: 1 });
  const renewIdentities = renewing.map((pod) => spiffeId(TD, pod.namespace, pod.serviceAccount));
  for (const identity of renewIdentities) await certificates.certificateFor(identity);

  // Hold the CA so the renewals (due at half of ~2 s) pile up: one running, four queued.
  holding = true;
  t.true(await eventually(() => certificates.fetchesInFlight === 1 && certificates.fetchesQueued === 4, 20_000), 'renewals are queued');
  const waiting = certificates.certificateFor(cart);
  t.is(certificates.fetchesQueued, 5);
  openGate();
  t.is((await waiting).identity.uri, cart.uri);
  // The slot holder may have started before the CA was held (then cart is first) or after (then cart is second).
  const cartIndex = started.indexOf(cart.uri);
  t.true(cartIndex === 0 || (cartIndex === 1 && renewIdentities.some((identity) => identity.uri === started[0])), `cart started at ${cartIndex}: ${started.join(', ')}`);
  t.true(await eventually(() => started.length >= cartIndex + 5), 'the queued renewals ran afterwards');
  const renewalUris = new Set(renewIdentities.map((identity) => identity.uri));
  t.true(started.slice(cartIndex + 1, cartIndex + 5).every((uri) => renewalUris.has(uri)), 'the four queued renewals came after the new identity');
});

test('a forgotten identity is neither stored nor renewed', async (t) => {
  const { caClient } = await setup(t, [onNode1('shop', 'cart')], 2_000);
  let fetches = 0;
  const counting: CertificateSource = { rootsPem: () => caClient.rootsPem(), fetch: (identity) => (fetches++, caClient.fetch(identity)) };
  const certificates = manager(t, counting);
  await certificates.certificateFor(cart);
  certificates.forget(cart);
  t.is(certificates.current(cart), undefined);
  await sleep(2_500);
  t.is(fetches, 1, 'no renewal after forget');
  t.is(certificates.current(cart), undefined);
});
