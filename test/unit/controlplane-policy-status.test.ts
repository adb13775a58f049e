// Kubernetes mode: the control plane writes an Accepted condition on the L7 policies it reads, through the status
// subresource of the stand-in API server (test/helpers/kube-api-server.ts) with the real client library and the
// real Kubernetes source: valid ones Accepted, invalid ones Invalid with the field path, a RequestAuthentication
// without targets NotApplied, a selector AuthorizationPolicy (the agents') left alone; a fix is written with the
// new generation; the watch event of its own write does not make it write again.
import test from 'ava';
import { ObjectStore } from '../../controlplane/store.ts';
import { KubernetesSource } from '../../controlplane/sources/kubernetes.ts';
import { kubernetesStatusPatch } from '../../controlplane/status/kubernetes-status-patch.ts';
import { acceptedCondition } from '../../controlplane/status/policy-status.ts';
import { PolicyStatusWriter } from '../../controlplane/status/status-writer.ts';
import { checkWaypointPolicy } from '../../controlplane/model/waypoint-policy-check.ts';
import type { K8sObject } from '../../shared/k8s/objects.ts';
import { FakeKubeApiServer } from '../helpers/kube-api-server.ts';

const NS = 'shop';
const web = { group: '', kind: 'Service', name: 'web' };
const rateLimit = (unit: string, generation: number): K8sObject => ({
  apiVersion: 'policy.ambit.dev/v1alpha1',
  kind: 'LocalRateLimitPolicy',
  metadata: { name: 'per-client', namespace: NS, generation } as K8sObject['metadata'],
  spec: { targetRefs: [web], limits: [{ requests: 10, unit }] },
});
const requestAuthentication = (name: string, spec: Record<string, unknown>): K8sObject => ({ apiVersion: 'security.istio.io/v1', kind: 'RequestAuthentication', metadata: { name, namespace: NS, generation: 1 } as K8sObject['metadata'], spec });
const authorization = (name: string, spec: Record<string, unknown>): K8sObject => ({ apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name, namespace: NS, generation: 1 } as K8sObject['metadata'], spec });

interface Condition {
  type: string;
  status: string;
  reason: string;
  message: string;
  observedGeneration?: number;
  lastTransitionTime: string;
}

function accepted(api: FakeKubeApiServer, kind: string, name: string): Condition | undefined {
  return ((api.get(kind, NS, name)?.status as { conditions?: Condition[] } | undefined)?.conditions ?? []).find((condition) => condition.type === 'Accepted');
}

async function until<T>(what: string, probe: () => T | undefined, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

test('Accepted/Invalid/NotApplied written on the L7 policies through the status subresource; a fix is written; no write loop', async (t) => {
  const api = await FakeKubeApiServer.start();
  t.teardown(() => api.close());
  api.apply(requestAuthentication('jwt', { targetRefs: [web], jwtRules: [{ issuer: 'https://issuer.example', jwksUri: 'https://issuer.example/jwks' }] }));
  api.apply(rateLimit('Fortnight', 1));
  api.apply(authorization('ext-authz', { targetRefs: [web], action: 'CUSTOM', provider: { name: 'opa' }, rules: [{}] }));
  api.apply(authorization('selector', { selector: { matchLabels: { app: 'web' } }, action: 'ALLOW', rules: [{}] }));
  api.apply(requestAuthentication('untargeted', { jwtRules: [{ issuer: 'https://issuer.example', jwksUri: 'https://issuer.example/jwks' }] }));

  const store = new ObjectStore();
  const source = new KubernetesSource({ kubeConfig: api.kubeConfig(), store, kinds: ['AuthorizationPolicy', 'RequestAuthentication', 'LocalRateLimitPolicy', 'Service'], initialBackoffMs: 50 });
  const errors: string[] = [];
  const writer = new PolicyStatusWriter({ store, patchStatus: kubernetesStatusPatch(api.kubeConfig()), onError: (target, error) => errors.push(`${target.kind} ${target.name}: ${error.message}`) });
  t.teardown(() => {
    writer.stop();
    source.stop();
  });
  await source.start();
  writer.start();

  const jwt = await until('the RequestAuthentication accepted', () => accepted(api, 'RequestAuthentication', 'jwt'));
  t.like(jwt, { status: 'True', reason: 'Accepted', observedGeneration: 1 });
  t.regex(jwt.lastTransitionTime, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
  const invalid = await until('the LocalRateLimitPolicy refused', () => accepted(api, 'LocalRateLimitPolicy', 'per-client'));
  t.like(invalid, { status: 'False', reason: 'Invalid', observedGeneration: 1 });
  t.regex(invalid.message, /spec\.limits\[0\]\.unit: /, 'the field path is in the message');
  const custom = await until('the CUSTOM policy', () => accepted(api, 'AuthorizationPolicy', 'ext-authz'));
  t.like(custom, { status: 'True', reason: 'Accepted' });
  t.regex(custom.message, /action CUSTOM \(provider opa\) is not supported.*denied/);
  const untargeted = await until('the untargeted RequestAuthentication', () => accepted(api, 'RequestAuthentication', 'untargeted'));
  t.like(untargeted, { status: 'False', reason: 'NotApplied' });
  t.regex(untargeted.message, /has no targetRefs/);

  // The fix: a new generation, Accepted, with a new transition time.
  api.apply({ ...rateLimit('Second', 2), status: api.get('LocalRateLimitPolicy', NS, 'per-client')?.status });
  const fixed = await until('the fixed LocalRateLimitPolicy accepted', () => {
    const condition = accepted(api, 'LocalRateLimitPolicy', 'per-client');
    return condition?.observedGeneration === 2 ? condition : undefined;
  });
  t.like(fixed, { status: 'True', reason: 'Accepted' });

  // Settled: our own writes came back through the watch and changed nothing. Signal that they could have: a later
  // event (a Service) reaching the store after them, then the writer idle with no new write.
  await writer.idle();
  const writes = writer.written;
  const versions = ['jwt', 'untargeted'].map((name) => api.get('RequestAuthentication', NS, name)?.metadata?.['resourceVersion' as keyof K8sObject['metadata']]);
  api.apply({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: NS }, spec: { ports: [{ port: 80 }] } });
  await until('the later Service event in the store', () => store.get('Service', `${NS}/web`));
  await writer.idle();
  t.is(writer.written, writes, 'no status written again');
  t.deepEqual(['jwt', 'untargeted'].map((name) => api.get('RequestAuthentication', NS, name)?.metadata?.['resourceVersion' as keyof K8sObject['metadata']]), versions);
  t.is(writes, 5, 'one write per policy needing one, and one for the fix');
  t.is(api.get('AuthorizationPolicy', NS, 'selector')?.status, undefined, "a selector policy is the agents': no status from the waypoint side");
  t.deepEqual(errors, []);
});

test('lastTransitionTime stays while the status stays; changes with it', (t) => {
  const object = rateLimit('Second', 1);
  const verdict = checkWaypointPolicy(object);
  const first = acceptedCondition(object, verdict, new Date('2026-01-01T00:00:00Z'));
  t.is(first.lastTransitionTime, '2026-01-01T00:00:00Z');
  const later = acceptedCondition({ ...object, status: { conditions: [first] } }, verdict, new Date('2026-01-02T00:00:00Z'));
  t.is(later.lastTransitionTime, '2026-01-01T00:00:00Z');
  const broken = rateLimit('Fortnight', 2);
  const changed = acceptedCondition({ ...broken, status: { conditions: [first] } }, checkWaypointPolicy(broken), new Date('2026-01-03T00:00:00Z'));
  t.like(changed, { status: 'False', reason: 'Invalid', lastTransitionTime: '2026-01-03T00:00:00Z', observedGeneration: 2 });
});
