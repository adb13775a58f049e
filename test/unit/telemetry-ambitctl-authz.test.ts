// Unit tests: `ambitctl authz check` on a cluster directory — the decision and the policy (or its absence)
// that made it, in words, as the destination agent would decide (shared/policy's evaluation).
import test from 'ava';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { runAmbitctl } from '../../ambitctl/main.ts';

const CLUSTER = `
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Namespace
metadata: {name: legacy}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {nodeName: n0, serviceAccountName: web, containers: [{name: app}]}
status: {podIP: 10.1.0.5}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: shop, labels: {app: db}}
spec: {nodeName: n1, serviceAccountName: db, containers: [{name: app}]}
status: {podIP: 10.1.1.6}
---
apiVersion: v1
kind: Pod
metadata: {name: old, namespace: legacy}
spec: {nodeName: n0, containers: [{name: app}]}
status: {podIP: 10.1.0.9}
`;

const POLICIES = `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: db-from-web, namespace: shop}
spec:
  selector: {matchLabels: {app: db}}
  action: ALLOW
  rules:
  - from: [{source: {principals: [cluster.local/ns/shop/sa/web]}}]
    to: [{operation: {ports: ["5432"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: broken, namespace: shop}
spec:
  action: ALLOW
  rules: [{from: [{source: {ipBlocks: [10.0.0.0/33]}}]}]
`;

async function clusterDir(t: import('ava').ExecutionContext, extra = ''): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ambit-authz-test-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await writeFile(path.join(dir, 'cluster.yaml'), CLUSTER);
  await writeFile(path.join(dir, 'policies.yaml'), POLICIES + extra);
  return dir;
}

async function ambitctl(...argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const code = await runAmbitctl(argv, { stdout: (text) => (stdout += text), stderr: (text) => (stderr += text) }, {});
  return { code, stdout, stderr };
}

test('allowed by the ALLOW policy that matches, named, with both ends described', async (t) => {
  const dir = await clusterDir(t);
  const { code, stdout, stderr } = await ambitctl('authz', 'check', 'shop/web', 'shop/db', '5432', '--cluster-dir', dir);
  t.is(code, 0, stderr);
  t.regex(stdout, /^decided by the cluster directory .*\nfrom shop\/web \(10\.1\.0\.5, identity spiffe:\/\/cluster\.local\/ns\/shop\/sa\/web\)\nto {3}shop\/db \(10\.1\.1\.6, identity spiffe:\/\/cluster\.local\/ns\/shop\/sa\/db\) port 5432/);
  t.regex(stdout, /ALLOWED: ALLOW policy shop\/db-from-web matches this connection/);
  t.is(stdout.split('db-from-web').length - 1, 1, `the deciding ALLOW is explained once:\n${stdout}`);
  t.notRegex(stdout, /rule 1: matches/);
  t.regex(stdout, /policies not \(fully\) in force:\n {2}AuthorizationPolicy shop\/broken is invalid: .*10\.0\.0\.0\/33.* \(so it is not in force\)/, 'a bad policy is named, and the others stay in force');
});

test('denied when ALLOW policies apply and none matches: the failing condition is spelled out', async (t) => {
  const dir = await clusterDir(t);
  const wrongPort = await ambitctl('authz', 'check', 'web', 'db', '80', '-n', 'shop', '--cluster-dir', dir);
  t.is(wrongPort.code, 1, 'denied: exit 1');
  t.regex(wrongPort.stdout, /DENIED: 1 ALLOW policy applies to this workload and none matches this connection/);
  t.regex(wrongPort.stdout, /destination port is 80/);
  const plaintext = await ambitctl('authz', 'check', 'legacy/old', 'shop/db', '5432', '-o', 'json', '--cluster-dir', dir);
  const result = JSON.parse(plaintext.stdout);
  t.false(result.allowed);
  t.is(plaintext.code, 1, 'denied: exit 1 with -o json too');
  t.like(result.source, { inMesh: false, ip: '10.1.0.9' });
  t.is(result.source.principal, undefined, 'plaintext carries no identity');
  t.regex(result.lines.join('\n'), /source principal is absent \(no verified peer identity: plaintext connection\)/);
});

test('no policy: allowed by default; destination outside the mesh: nothing enforces; STRICT PeerAuthentication denies plaintext', async (t) => {
  const dir = await clusterDir(t, `
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict, namespace: shop}
spec: {mtls: {mode: STRICT}}
`);
  const byDefault = await ambitctl('authz', 'check', 'shop/db', 'shop/web', '8080', '-o', 'yaml', '--cluster-dir', dir);
  const fromYaml = parseYaml(byDefault.stdout);
  t.true(fromYaml.allowed);
  t.regex(fromYaml.reason, /no ALLOW policy applies to this workload, so it is allowed by default/);
  t.false(byDefault.stdout.includes('*a1'), 'no YAML aliases: each line reads on its own');
  const outside = await ambitctl('authz', 'check', 'shop/web', 'legacy/old', '80', '--cluster-dir', dir);
  t.regex(outside.stdout, /ALLOWED: the destination pod is not in the mesh/);
  const strict = JSON.parse((await ambitctl('authz', 'check', 'legacy/old', 'shop/web', '8080', '-o', 'json', '--cluster-dir', dir)).stdout);
  t.false(strict.allowed, 'STRICT rejects a plaintext client');
  t.regex(strict.decidingPolicy, /istio_converted_static_strict/);
  // STRICT reads as what it is, on both sides of the decision.
  const strictTable = await ambitctl('authz', 'check', 'legacy/old', 'shop/web', '8080', '--cluster-dir', dir);
  t.is(strictTable.code, 1);
  t.regex(strictTable.stdout, /from legacy\/old \(10\.1\.0\.9, identity none \(plaintext\): not in the mesh/);
  t.regex(strictTable.stdout, /DENIED: DENY policy istio-system\/istio_converted_static_strict matches this connection \(PeerAuthentication mode STRICT: refuses plaintext\)/);
  const strictPasses = await ambitctl('authz', 'check', 'shop/db', 'shop/web', '8080', '--cluster-dir', dir);
  t.regex(strictPasses.stdout, /\(PeerAuthentication mode STRICT: refuses plaintext\): does not match\n\s+rule 1: does not match: the source has the verified identity "cluster\.local\/ns\/shop\/sa\/db" \(mutual TLS\), but the rule needs a connection without a verified peer identity \(plaintext\)/);
  t.false(strictPasses.stdout.includes('* (any)'), strictPasses.stdout);
});

test('mistakes are explained: no directory and no agent, unknown pod, bad port, wrong verb', async (t) => {
  const dir = await clusterDir(t);
  // Without a directory it asks an agent; none answers on port 1.
  const noDir = await ambitctl('authz', 'check', 'web', 'db', '80', '--admin', 'http://127.0.0.1:1');
  t.is(noDir.code, 2, 'an error is 2, never 1 (denied)');
  t.regex(noDir.stderr, /cannot reach the agent admin endpoint .* or pass --cluster-dir DIR/);
  const unknown = await ambitctl('authz', 'check', 'shop/nope', 'shop/db', '80', '--cluster-dir', dir);
  t.is(unknown.code, 2);
  t.regex(unknown.stderr, /no pod shop\/nope in the cluster directory .* \(pods: shop\/web, shop\/db, legacy\/old\)/);
  const port = await ambitctl('authz', 'check', 'shop/web', 'shop/db', '99999', '--cluster-dir', dir);
  t.regex(port.stderr, /port 99999 is not a port number/);
  t.is(port.code, 2);
  const missingDir = await ambitctl('authz', 'check', 'shop/web', 'shop/db', '80', '--cluster-dir', path.join(dir, 'nope'));
  t.is(missingDir.code, 2);
  const verb = await ambitctl('authz', 'explain', '--cluster-dir', dir);
  t.is(verb.code, 2);
  t.regex(verb.stderr, /usage: ambitctl authz check <source pod> <destination pod> <port>/);
});
