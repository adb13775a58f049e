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
  t.regex(verb.stderr, /usage: ambitctl authz check <source pod> <destination pod \| svc\/NS\/NAME \| cluster IP> <port>/);
});

const SERVICES = `
apiVersion: v1
kind: Pod
metadata: {name: db-a, namespace: shop, labels: {app: db}}
spec: {nodeName: n1, serviceAccountName: db, containers: [{name: app, ports: [{name: pg, containerPort: 5432}]}]}
status: {phase: Running, podIP: 10.1.1.7}
---
apiVersion: v1
kind: Pod
metadata: {name: db-b, namespace: shop, labels: {app: db}}
spec: {nodeName: n1, serviceAccountName: db, containers: [{name: app, ports: [{name: pg, containerPort: 5432}]}]}
status: {phase: Running, podIP: 10.1.1.8, conditions: [{type: Ready, status: "False"}]}
---
apiVersion: v1
kind: Service
metadata: {name: pg, namespace: shop}
spec: {clusterIP: 10.96.0.7, selector: {app: db}, ports: [{name: tcp, port: 15432, targetPort: pg}]}
---
apiVersion: v1
kind: Service
metadata: {name: ext, namespace: shop}
spec: {clusterIP: 10.96.0.8, ports: [{name: tcp, port: 80, targetPort: 9999}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: ext-1, namespace: shop, labels: {kubernetes.io/service-name: ext}}
addressType: IPv4
endpoints: [{addresses: [192.0.2.10]}]
ports: [{name: tcp, port: 5432, protocol: TCP}]
`;

test('a Service as destination (svc/ns/name or its cluster IP): each endpoint that could be chosen is decided on its target port', async (t) => {
  const dir = await clusterDir(t);
  await writeFile(path.join(dir, 'services.yaml'), SERVICES);
  const allowed = await ambitctl('authz', 'check', 'shop/web', 'svc/shop/pg', '15432', '--cluster-dir', dir);
  t.is(allowed.code, 0, allowed.stderr);
  t.regex(allowed.stdout, /\nto {3}Service shop\/pg \(10\.96\.0\.7\) port 15432\n/);
  t.regex(allowed.stdout, /ALLOWED: every endpoint that could be chosen \(1\) allows it/);
  // The named target port resolved on the ready pod; the policy decides there on 5432, not on the service port.
  t.regex(allowed.stdout, /endpoint shop\/db-a \(10\.1\.1\.7:5432\):\n {4}ALLOWED: ALLOW policy shop\/db-from-web matches this connection/);
  t.regex(allowed.stdout, /endpoint shop\/db-b \(10\.1\.1\.8:5432\): unhealthy: never chosen/);
  t.false(allowed.stdout.includes('shop/db ('), 'the pod without the named port is no endpoint of it');

  const byVip = await ambitctl('authz', 'check', 'shop/web', '10.96.0.7', '15432', '--cluster-dir', dir, '-o', 'json');
  t.is(byVip.code, 0, byVip.stderr);
  const json = JSON.parse(byVip.stdout);
  t.like(json, { allowed: true, service: { namespace: 'shop', name: 'pg', vips: ['10.96.0.7'] }, port: 15432 });
  t.deepEqual(json.endpoints.map((endpoint: { endpoint: { name: string }; targetPort: number; healthy: boolean; allowed: boolean; decidingPolicy?: string }) => [endpoint.endpoint.name, endpoint.targetPort, endpoint.healthy, endpoint.allowed, endpoint.decidingPolicy]), [
    ['db-a', 5432, true, true, 'shop/db-from-web'],
    ['db-b', 5432, false, false, undefined],
  ]);

  const plaintext = await ambitctl('authz', 'check', 'legacy/old', 'svc/shop/pg', '15432', '--cluster-dir', dir);
  t.is(plaintext.code, 1, 'denied at the endpoint: exit 1');
  t.regex(plaintext.stdout, /DENIED: 1 of 1 endpoints that could be chosen deny it/);

  const noPort = await ambitctl('authz', 'check', 'shop/web', 'svc/shop/pg', '80', '--cluster-dir', dir);
  t.is(noPort.code, 1);
  t.regex(noPort.stdout, /DENIED: no healthy endpoint of pg\.shop\.svc\.cluster\.local serves port 80: the client's agent refuses the connection \(no healthy upstream\)/);

  // A selector-less Service's EndpointSlice address is outside the mesh: nothing there enforces.
  const external = await ambitctl('authz', 'check', 'shop/web', 'svc/ext', '80', '-n', 'shop', '--cluster-dir', dir);
  t.is(external.code, 0, external.stderr);
  t.regex(external.stdout, /endpoint shop\/ext-1 \(192\.0\.2\.10:5432\):\n {4}ALLOWED: the destination pod is not in the mesh \(an EndpointSlice address, no pod\)/);

  const unknown = await ambitctl('authz', 'check', 'shop/web', 'svc/shop/nope', '80', '--cluster-dir', dir);
  t.is(unknown.code, 2);
  t.regex(unknown.stderr, /no Service shop\/nope in the cluster directory .* \(services: svc\/shop\/ext, svc\/shop\/pg\)/);
  const notVip = await ambitctl('authz', 'check', 'shop/web', '10.96.9.9', '80', '--cluster-dir', dir);
  t.is(notVip.code, 2);
  t.regex(notVip.stderr, /10\.96\.9\.9 is the cluster IP of no Service/);
});
