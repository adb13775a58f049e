/**
 * `ambitctl authz check SRC SERVICE PORT --method --path --header` on a cluster directory: an HTTP request through
 * the Service's waypoint decided by the L7 policies that target the Service, the waypoint or the waypoint class,
 * with the deciding policy and rule and every policy in scope in words; exit 0 allowed, 1 denied, 2 usage.
 */
import test from 'ava';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { runAmbitctl } from '../../ambitctl/main.ts';

const CLUSTER = `
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: shop}
spec: {nodeName: n0, serviceAccountName: client, containers: [{name: app}]}
status: {podIP: 10.1.0.5}
---
apiVersion: v1
kind: Pod
metadata: {name: intruder, namespace: shop}
spec: {nodeName: n0, serviceAccountName: intruder, containers: [{name: app}]}
status: {podIP: 10.1.0.6}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop, labels: {istio.io/use-waypoint: wp}}
spec: {clusterIP: 10.240.0.10, selector: {app: web}, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: plain, namespace: shop}
spec: {clusterIP: 10.240.0.11, selector: {app: web}, ports: [{name: http, port: 80}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: web-viewer, namespace: shop}
spec:
  targetRefs: [{kind: Service, group: "", name: web}]
  rules:
  - from: [{source: {principals: [cluster.local/ns/shop/sa/client]}}]
    to: [{operation: {methods: [GET]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: shop}
spec:
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: wp}]
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin*"]}}]
    when: [{key: "request.headers[x-version]", values: [v1]}]
`;

async function ambitctl(...argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const code = await runAmbitctl(argv, { stdout: (text) => (stdout += text), stderr: (text) => (stderr += text) }, {});
  return { code, stdout, stderr };
}

async function clusterDir(t: import('ava').ExecutionContext): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ambit-l7-check-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await writeFile(path.join(dir, 'cluster.yaml'), CLUSTER);
  return dir;
}

test('GET from the client is allowed by the viewer policy, rule 0; DELETE is denied; the policies in scope are listed', async (t) => {
  const dir = await clusterDir(t);
  const get = await ambitctl('authz', 'check', 'shop/client', 'shop/web', '80', '--method', 'GET', '--path', '/items', '--cluster-dir', dir);
  t.is(get.code, 0, get.stderr);
  t.regex(get.stdout, /^ALLOWED \(forwarded\): allowed by ALLOW policy shop\/web-viewer rule 0/);
  t.regex(get.stdout, /through waypoint shop\/wp/);
  t.regex(get.stdout, / {2}ALLOW shop\/web-viewer: rule 0 matches\n {2}DENY shop\/no-admin: no rule matches/);
  const remove = await ambitctl('authz', 'check', 'shop/client', 'shop/web', '80', '--method', 'DELETE', '--path', '/items', '--cluster-dir', dir);
  t.is(remove.code, 1);
  t.regex(remove.stdout, /^DENIED \(403 RBAC: access denied\): denied: ALLOW policies apply and none matched/);
});

test('a header decides: the DENY with a request.headers condition, path normalised first; JSON output', async (t) => {
  const dir = await clusterDir(t);
  const denied = await ambitctl('authz', 'check', 'client', 'web', '80', '-n', 'shop', '--method', 'GET', '--path', '/public/../admin/x', '--header', 'X-Version: v1', '-o', 'json', '--cluster-dir', dir);
  t.is(denied.code, 1);
  const result = JSON.parse(denied.stdout);
  t.like(result, { allowed: false, decidingPolicy: 'shop/no-admin', rule: 0, request: { path: '/admin/x', headers: { 'x-version': 'v1' } } });
  const otherVersion = await ambitctl('authz', 'check', 'client', 'web', '80', '-n', 'shop', '--method', 'GET', '--path', '/admin/x', '--header', 'x-version:v2', '--cluster-dir', dir);
  t.is(otherVersion.code, 0);
  const intruder = await ambitctl('authz', 'check', 'intruder', 'web', '80', '-n', 'shop', '--method', 'GET', '--path', '/', '--cluster-dir', dir);
  t.is(intruder.code, 1);
});

test('usage errors: a Service without a waypoint, a bad header, no cluster directory', async (t) => {
  const dir = await clusterDir(t);
  const plain = await ambitctl('authz', 'check', 'shop/client', 'shop/plain', '80', '--method', 'GET', '--cluster-dir', dir);
  t.is(plain.code, 2);
  t.regex(plain.stderr, /uses no waypoint/);
  const badHeader = await ambitctl('authz', 'check', 'shop/client', 'shop/web', '80', '--header', 'novalue', '--cluster-dir', dir);
  t.is(badHeader.code, 2);
  t.regex(badHeader.stderr, /is not name:value/);
  const noDir = await ambitctl('authz', 'check', 'shop/client', 'shop/web', '80', '--method', 'GET');
  t.is(noDir.code, 2);
  t.regex(noDir.stderr, /pass --cluster-dir/);
});
