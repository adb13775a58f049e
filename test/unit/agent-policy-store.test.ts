/**
 * The agent's policy store and local policy feed: scope resolution per destination workload (mesh, namespace,
 * selector; xDS keys), PeerAuthentication's converted DENY policies biting only on plaintext, the index cache
 * and change events, the xDS feed, a bad policy in the cluster directory reported and skipped while the
 * others stay in force, and the enforcer's late enforcement.
 */
import test from 'ava';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { authorizationToWireObject, compilePolicyObject, type Authorization, type Connection } from '../../shared/policy/index.ts';
import { ClusterDirPolicySource } from '../../agent/policy/cluster-dir-policy-source.ts';
import { PolicyEnforcer } from '../../agent/policy/enforcer.ts';
import { PolicyStore, ROOT_NAMESPACE, type LocalPolicy } from '../../agent/policy/policy-store.ts';
import { MeshState } from '../../shared/mesh/mesh-state.ts';
import type { Workload } from '../../shared/mesh/workload.ts';

function workload(namespace: string, name: string, labels: Record<string, string> = {}, extra: Partial<Workload> = {}): Workload {
  return {
    uid: `${namespace}/${name}`,
    name,
    namespace,
    serviceAccount: name,
    trustDomain: 'cluster.local',
    node: 'node0',
    addresses: ['10.0.1.5'],
    tunnelProtocol: 'HBONE',
    captureReason: 'test',
    canonicalName: name,
    canonicalRevision: 'latest',
    workloadName: name,
    labels,
    ...extra,
  };
}

function authz(namespace: string, name: string, spec: Record<string, unknown>, annotations?: Record<string, string>): LocalPolicy {
  const object = { apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name, namespace, ...(annotations && { annotations }) }, spec };
  return { kind: 'AuthorizationPolicy', object: object as never };
}

function peerAuth(namespace: string, name: string, spec: Record<string, unknown>): LocalPolicy {
  return { kind: 'PeerAuthentication', object: { apiVersion: 'security.istio.io/v1', kind: 'PeerAuthentication', metadata: { name, namespace }, spec } as never };
}

const mtls = (ns: string, sa: string, port = 8080): Connection => ({ sourcePrincipal: `spiffe://cluster.local/ns/${ns}/sa/${sa}`, sourceIp: '10.0.0.9', destinationIp: '10.0.1.5', destinationPort: port });
const plaintext = (port = 8080): Connection => ({ sourceIp: '10.0.0.9', destinationIp: '10.0.1.5', destinationPort: port });

interface Line {
  level: string;
  object: Record<string, unknown>;
  message: string;
}

function memoryLog(): { lines: Line[]; info: (o: object, m: string) => void; warn: (o: object, m: string) => void; error: (o: object, m: string) => void } {
  const lines: Line[] = [];
  const at = (level: string) => (object: object, message: string) => lines.push({ level, object: object as Record<string, unknown>, message });
  return { lines, info: at('info'), warn: at('warn'), error: at('error') };
}

const allowClient = authz('shop', 'allow-client', { selector: { matchLabels: { app: 'server' } }, rules: [{ from: [{ source: { principals: ['cluster.local/ns/shop/sa/client'] } }] }] });

test('the root namespace constant is Istio\'s', (t) => {
  t.is(ROOT_NAMESPACE, 'istio-system');
  t.is(new PolicyStore().rootNamespace, 'istio-system');
});

test('scope: mesh-wide, namespace and selector policies reach the right workloads', (t) => {
  const store = new PolicyStore();
  store.setLocal([
    authz('istio-system', 'mesh-deny-legacy', { action: 'DENY', rules: [{ from: [{ source: { namespaces: ['legacy'] } }] }] }),
    authz('shop', 'ns-wide', { action: 'DENY', rules: [{ to: [{ operation: { ports: ['9999'] } }] }] }),
    allowClient,
  ]);
  const keys = (w: Workload): string[] => store.policyListFor(w).map((p) => `${p.namespace}/${p.name}`).sort();
  t.deepEqual(keys(workload('shop', 'server', { app: 'server' })), ['istio-system/mesh-deny-legacy', 'shop/allow-client', 'shop/ns-wide']);
  t.deepEqual(keys(workload('shop', 'other', { app: 'other' })), ['istio-system/mesh-deny-legacy', 'shop/ns-wide']);
  t.deepEqual(keys(workload('web', 'server', { app: 'server' })), ['istio-system/mesh-deny-legacy'], 'a selector policy stays in its namespace');
  t.deepEqual(keys(workload('web', 'nolabels', undefined, { labels: undefined })), ['istio-system/mesh-deny-legacy']);

  const server = workload('shop', 'server', { app: 'server' });
  t.true(store.policiesFor(server).evaluate(mtls('shop', 'client')).allowed);
  t.false(store.policiesFor(server).evaluate(mtls('shop', 'intruder')).allowed, 'an ALLOW policy denies what it does not allow');
  t.true(store.policiesFor(workload('shop', 'other', { app: 'other' })).evaluate(mtls('shop', 'intruder')).allowed);
  t.false(store.policiesFor(workload('web', 'x')).evaluate(mtls('legacy', 'x')).allowed, 'the mesh-wide DENY applies in every namespace');
});

test('PeerAuthentication STRICT denies plaintext only; PERMISSIVE and port-level exceptions let it in', (t) => {
  const store = new PolicyStore();
  const server = workload('shop', 'server', { app: 'server' });
  store.setLocal([peerAuth('shop', 'strict', { mtls: { mode: 'STRICT' } })]);
  const index = store.policiesFor(server);
  t.false(index.evaluate(plaintext()).allowed, 'STRICT: plaintext denied');
  t.true(index.evaluate(mtls('shop', 'client')).allowed, 'STRICT: mTLS (a verified identity) is never affected');
  t.true(index.evaluate(mtls('other', 'x')).allowed);

  store.setLocal([peerAuth('shop', 'strict', { mtls: { mode: 'PERMISSIVE' } })]);
  t.true(store.policiesFor(server).evaluate(plaintext()).allowed, 'PERMISSIVE: plaintext allowed');

  store.setLocal([
    peerAuth('istio-system', 'mesh', { mtls: { mode: 'STRICT' } }),
    peerAuth('shop', 'server-ports', { selector: { matchLabels: { app: 'server' } }, portLevelMtls: { '9090': { mode: 'PERMISSIVE' } } }),
  ]);
  const withOverride = store.policiesFor(server);
  t.false(withOverride.evaluate(plaintext(8080)).allowed, 'mesh STRICT on the other ports');
  t.true(withOverride.evaluate(plaintext(9090)).allowed, 'the port-level PERMISSIVE override');
  t.true(withOverride.evaluate(mtls('shop', 'client', 8080)).allowed);
  t.false(store.policiesFor(workload('shop', 'other', { app: 'other' })).evaluate(plaintext(9090)).allowed, 'the override is for the selected workload only');
});

test('the index is cached per workload and rebuilt after a change, which is announced', (t) => {
  const store = new PolicyStore();
  const server = workload('shop', 'server', { app: 'server' });
  let changes = 0;
  store.onChange(() => changes++);
  const first = store.policiesFor(server);
  t.is(store.policiesFor(server), first, 'cached');
  store.setLocal([allowClient]);
  t.is(changes, 1);
  const second = store.policiesFor(server);
  t.not(second, first, 'invalidated by the change');
  t.is(second.policies.length, 1);
  store.setLocal([allowClient]);
  t.is(changes, 1, 'the same policies again are no change');
  t.is(store.policiesFor(server), second);
  t.is(store.policiesFor({ ...server, labels: { app: 'other' } }).policies.length, 0, 'a workload with other labels gets its own index');
});

test('dry-run policies are in the index but never enforced; HTTP-only rules warn once per policy', (t) => {
  const log = memoryLog();
  const store = new PolicyStore({ log });
  const dryDeny = authz('shop', 'dry-deny', { action: 'DENY', rules: [{ from: [{ source: { principals: ['cluster.local/ns/shop/sa/client'] } }] }] }, { 'istio.io/dry-run': 'true' });
  const http = authz('shop', 'http-allow', { rules: [{ to: [{ operation: { methods: ['GET'] } }] }] });
  // A policy the node agent does not enforce at all (targetRef: a waypoint's) warns once too, across other changes.
  const waypointOnly = authz('shop', 'waypoint-only', { targetRefs: [{ group: 'gateway.networking.k8s.io', kind: 'Gateway', name: 'waypoint' }], rules: [{}] });
  store.setLocal([dryDeny, http, waypointOnly]);
  store.setLocal([dryDeny, http, waypointOnly]);
  store.setLocal([dryDeny, http, waypointOnly, allowClient]);
  store.setLocal([dryDeny, http, waypointOnly]);
  const targetRefWarnings = log.lines.filter((line) => line.level === 'warn' && line.object.policy === 'shop/waypoint-only');
  t.is(targetRefWarnings.length, 1, 'the targetRef warning is logged once, not on every policy change');
  t.regex(targetRefWarnings[0]!.message, /targetRef/);
  const warnings = log.lines.filter((line) => line.level === 'warn' && line.object.policy !== 'shop/waypoint-only');
  t.is(warnings.length, 1, 'the HTTP warning is logged once');
  t.regex(warnings[0]!.message, /waypoint/);
  t.is(warnings[0]!.object.policy, 'shop/http-allow');
  const decision = store.policiesFor(workload('shop', 'server')).evaluate(mtls('shop', 'client'));
  t.false(decision.allowed, 'the HTTP-only ALLOW rule never matches at L4, so the ALLOW policy denies');
  t.true(decision.dryRun?.matchedPolicies.includes('shop/dry-deny'));
});

test('xDS: Authorization resources by key; selector policies only for workloads that name them', (t) => {
  const store = new PolicyStore();
  const selectorPolicy = compilePolicyObject({
    apiVersion: 'security.istio.io/v1',
    kind: 'AuthorizationPolicy',
    metadata: { name: 'deny-legacy', namespace: 'shop' },
    spec: { action: 'DENY', selector: { matchLabels: { app: 'server' } }, rules: [{ from: [{ source: { namespaces: ['legacy'] } }] }] },
  }).authorization as Authorization;
  const result = store.applyXds(
    [
      { name: 'shop/deny-legacy', resource: authorizationToWireObject(selectorPolicy) },
      { name: 'bad', resource: { name: 'bad', namespace: 'shop', groups: [{ rules: [{ matches: [{ sourceIps: [{ address: new Uint8Array([1, 2, 3]), length: 8 }] }] }] }] } },
    ],
    [],
  );
  t.is(result?.rejected?.length, 1, 'the unreadable resource is rejected by name');
  t.is(result?.rejected?.[0]?.name, 'bad');
  const named = workload('shop', 'server', {}, { authorizationPolicies: ['shop/deny-legacy'], labels: undefined });
  const unnamed = workload('shop', 'other', {}, { authorizationPolicies: [], labels: undefined });
  t.false(store.policiesFor(named).evaluate(mtls('legacy', 'x')).allowed);
  t.true(store.policiesFor(unnamed).evaluate(mtls('legacy', 'x')).allowed);
  store.applyXds([], ['shop/deny-legacy']);
  t.true(store.policiesFor(named).evaluate(mtls('legacy', 'x')).allowed, 'removed');
  t.true(store.dump().length === 0);
});

test('cluster directory: a bad policy is reported with its file and skipped; the others stay in force', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ambit-policy-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await writeFile(
    path.join(dir, 'good.yaml'),
    `apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: allow-client, namespace: shop}
spec:
  selector: {matchLabels: {app: server}}
  rules: [{from: [{source: {principals: ["cluster.local/ns/shop/sa/client"]}}]}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict, namespace: shop}
spec: {mtls: {mode: STRICT}}
---
apiVersion: v1
kind: Pod
metadata: {name: ignored, namespace: shop}
`,
  );
  const bad = [
    `apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: typo, namespace: shop}\nspec:\n  action: DENY\n  rules: [{from: [{source: {principal: ["x"]}}]}]\n`,
    `apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: badcidr, namespace: shop}\nspec:\n  action: DENY\n  rules: [{from: [{source: {ipBlocks: ["10.0.0.300/8"]}}]}]\n`,
    `apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: badprincipal, namespace: shop}\nspec:\n  action: DENY\n  rules: [{from: [{source: {principals: ["spiffe://cluster.local/ns/shop/sa/client"]}}]}]\n`,
  ];
  await writeFile(path.join(dir, 'bad.yaml'), bad.join('---\n'));
  const log = memoryLog();
  const store = new PolicyStore({ log });
  const source = new ClusterDirPolicySource({ dir, store, log });
  await source.refresh();
  await source.refresh();
  const errors = log.lines.filter((line) => line.level === 'error');
  t.is(errors.length, 3, `each bad policy reported once: ${JSON.stringify(errors.map((e) => e.message))}`);
  t.true(errors.every((line) => String(line.object.file).startsWith(path.join(dir, 'bad.yaml:'))));
  t.regex(errors.find((line) => line.object.policy === 'shop/typo')!.message, /principal/);
  t.regex(errors.find((line) => line.object.policy === 'shop/badcidr')!.message, /10\.0\.0\.300/);
  t.regex(errors.find((line) => line.object.policy === 'shop/badprincipal')!.message, /spiffe/);
  const server = workload('shop', 'server', { app: 'server' });
  const index = store.policiesFor(server);
  t.deepEqual(index.policies.map((p) => p.name).sort(), ['allow-client', 'istio_converted_static_strict']);
  t.true(index.evaluate(mtls('shop', 'client')).allowed);
  t.false(index.evaluate(mtls('shop', 'other')).allowed);
  t.false(index.evaluate(plaintext()).allowed);
  const dump = store.dump();
  t.is(dump.length, 2);
  t.true(dump.some((view) => view.kind === 'PeerAuthentication' && view.source?.startsWith(path.join(dir, 'good.yaml'))));
});

test('enforcer: open connections are re-checked on a change and the denied ones closed', (t) => {
  const log = memoryLog();
  const store = new PolicyStore({ log });
  const enforcer = new PolicyEnforcer({ store, log });
  enforcer.start();
  t.teardown(() => enforcer.stop());
  const server = workload('shop', 'server', { app: 'server' });
  const closed: string[] = [];
  t.true(enforcer.check(server, 'hbone', mtls('shop', 'client')).allowed);
  const untrackClient = enforcer.track(server, 'hbone', mtls('shop', 'client'), () => closed.push('client'));
  enforcer.track(server, 'hbone', mtls('shop', 'intruder'), (reason) => closed.push(`intruder: ${reason}`));
  enforcer.track(server, 'plaintext', plaintext(), () => closed.push('plaintext'));
  t.is(enforcer.openConnections, 3);
  store.setLocal([allowClient]);
  t.deepEqual(closed.sort(), ['intruder: 1 ALLOW policy applies to this workload and none matches this connection; once a workload has ALLOW policies, anything they do not allow is denied', 'plaintext'].sort());
  t.is(enforcer.openConnections, 1);
  t.true(log.lines.some((line) => line.level === 'warn' && line.message.startsWith('policy changed')));
  untrackClient();
  t.is(enforcer.openConnections, 0);
});

test('enforcer: dry-run results are logged, not enforced', (t) => {
  const log = memoryLog();
  const store = new PolicyStore({ log });
  const enforcer = new PolicyEnforcer({ store, log });
  store.setLocal([authz('shop', 'dry', { action: 'DENY', rules: [{}] }, { 'istio.io/dry-run': 'true' })]);
  const decision = enforcer.check(workload('shop', 'server'), 'hbone', mtls('shop', 'client'));
  t.true(decision.allowed);
  const line = log.lines.find((entry) => entry.message === 'dry-run policy evaluated');
  t.is(line?.object.dry_run_result, 'deny');
  t.deepEqual(line?.object.dry_run_policies, ['shop/dry']);
});

test('enforcer: relabelling a tracked pod into a selector policy re-checks its open connections (no policy change)', (t) => {
  const log = memoryLog();
  const store = new PolicyStore({ log });
  const state = new MeshState();
  const enforcer = new PolicyEnforcer({ store, state, log });
  enforcer.start();
  t.teardown(() => enforcer.stop());
  store.setLocal([authz('shop', 'deny-locked', { selector: { matchLabels: { lock: 'on' } }, action: 'DENY', rules: [{ from: [{ source: { principals: ['cluster.local/ns/shop/sa/other'] } }] }] })]);
  const server = workload('shop', 'server', { app: 'server' });
  state.upsert(server);
  const closed: string[] = [];
  t.true(enforcer.check(server, 'hbone', mtls('shop', 'other')).allowed, 'the policy selects no pod yet');
  enforcer.track(server, 'hbone', mtls('shop', 'other'), () => closed.push('other'));
  enforcer.track(server, 'hbone', mtls('shop', 'client'), () => closed.push('client'));
  const generation = store.generation;
  state.upsert({ ...server, labels: { app: 'server', lock: 'on' } });
  t.is(store.generation, generation, 'no policy changed');
  t.deepEqual(closed, ['other'], 'the connection the relabelled pod\'s policy denies is closed, the other kept');
  t.is(enforcer.openConnections, 1);
  t.false(enforcer.check(server, 'hbone', mtls('shop', 'other')).allowed, 'a new one is decided on the current labels, whatever the caller held');
});
