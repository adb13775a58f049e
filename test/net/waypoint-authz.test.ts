/**
 * L7 authorization through a real waypoint on a 2-node local mesh (control plane reading the cluster directory,
 * real agents, a real waypoint process), following Istio's ambient L7 authorization task: an AuthorizationPolicy
 * attached to a Service with targetRefs allows GET from one client identity, so DELETE is answered 403
 * `RBAC: access denied` by the waypoint and another client is refused too; a `when` on a request header; a
 * RequestAuthentication attached to the waypoint's Gateway whose JWKS is served by a pod in the mesh (fetched by the
 * waypoint over HBONE), with policies on the JWT's principal and claims (401 for a bad token, 403 without one); a
 * CUSTOM policy refused by the control plane with a warning and enforced as DENY. Every decision names its policy
 * and rule in the waypoint's log and counts in its metrics.
 */
import test from 'ava';
import { readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey } from 'jose';
import { stringify } from 'yaml';
import { createLocalMesh, type LocalMesh } from '../../runtime/local-mesh.ts';
import { createWaypoint, type LocalWaypoint } from '../../runtime/waypoint.ts';
import { startEchoServer, type Pod } from '../../runtime/index.ts';
import { until, writeAtomically } from './helpers/cluster-edits.ts';

const ENROLLED = { 'istio.io/dataplane-mode': 'ambient' };
const HTTP_PORT = 8080;
const JWKS_PORT = 8081;
const WEB_VIP = '10.240.3.10';
const JWKS_VIP = '10.240.3.11';
const ISSUER = 'https://issuer.shop.example';
const HTTP_CALLS = path.join(import.meta.dirname, 'helpers', 'http-calls.ts');
const JWKS_SERVER = path.join(import.meta.dirname, 'helpers', 'jwks-server.ts');

let mesh: LocalMesh;
let waypoint: LocalWaypoint;
let client: Pod;
let intruder: Pod;
let jwksPod: Pod;
let jwksServer: ChildProcess;
let jwksLog = '';
let signingKey: CryptoKey;

const policyFile = (name: string): string => path.join(mesh.cluster.clusterDir, 'policies', `${name}.yaml`);

async function applyPolicy(object: { apiVersion: string; kind: string; metadata: { name: string; namespace: string }; spec: object }): Promise<void> {
  await writeAtomically(policyFile(object.metadata.name), stringify(object));
}

interface CallResult {
  method: string;
  path: string;
  status: number;
  /** ms since the client started. */
  at: number;
  rateLimit?: string;
  retryAfter?: string;
  body: { name?: string; headers?: Record<string, string> } | string;
  wwwAuthenticate?: string;
}

async function calls(from: Pod, requests: { method?: string; path: string; headers?: Record<string, string>; repeat?: number; durationMs?: number }[]): Promise<CallResult[]> {
  const result = await from.exec(process.execPath, [HTTP_CALLS, JSON.stringify({ host: WEB_VIP, port: 80, requests })], { timeoutMs: 60_000 });
  if (result.code !== 0) throw new Error(`http-calls failed: ${result.stderr}`);
  return JSON.parse(result.stdout) as CallResult[];
}

async function status(from: Pod, request: { method?: string; path: string; headers?: Record<string, string> }): Promise<number> {
  return (await calls(from, [request]))[0]!.status;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- log lines are free-form JSON read by assertions
type LogLine = Record<string, any>;

async function waypointDecisions(): Promise<LogLine[]> {
  const text = await readFile(waypoint.logFile, 'utf8').catch(() => '');
  return text.split('\n').filter((line) => line.startsWith('{')).map((line) => JSON.parse(line) as LogLine).filter((line) => line.msg === 'request' && line.authz !== undefined);
}

async function waypointMetrics(): Promise<string> {
  const script = "fetch('http://127.0.0.1:15020/metrics').then((r) => r.text()).then((text) => process.stdout.write(text))";
  return (await waypoint.pod.exec(process.execPath, ['-e', script])).stdout;
}

function service(name: string, vip: string, targetPort: number, labels: Record<string, string>, selector: Record<string, string>): string {
  return stringify({ apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: 'shop', labels }, spec: { clusterIP: vip, selector, ports: [{ name: 'http', port: 80, targetPort }] } });
}

async function jwt(claims: Record<string, unknown>, options: { key?: CryptoKey; subject?: string } = {}): Promise<string> {
  return new SignJWT(claims).setProtectedHeader({ alg: 'ES256', kid: 'shop-1' }).setIssuer(ISSUER).setSubject(options.subject ?? 'alice').setAudience('web').setIssuedAt().setExpirationTime('1h').sign(options.key ?? signingKey);
}

test.before(async () => {
  const keys = await generateKeyPair('ES256', { extractable: true });
  signingKey = keys.privateKey;
  const jwks = JSON.stringify({ keys: [{ ...(await exportJWK(keys.publicKey)), kid: 'shop-1', alg: 'ES256', use: 'sig' }] });
  mesh = await createLocalMesh({ nodes: 2, name: 'wpz' });
  const web = await mesh.cluster.createPod({ node: 1, namespace: 'shop', name: 'web', serviceAccount: 'web', labels: { app: 'web' }, namespaceLabels: ENROLLED });
  client = await mesh.cluster.createPod({ node: 0, namespace: 'shop', name: 'client', serviceAccount: 'client' });
  intruder = await mesh.cluster.createPod({ node: 0, namespace: 'shop', name: 'intruder', serviceAccount: 'intruder' });
  jwksPod = await mesh.cluster.createPod({ node: 0, namespace: 'shop', name: 'jwks', serviceAccount: 'jwks', labels: { app: 'jwks' } });
  await startEchoServer(web, { port: HTTP_PORT, http: true, name: 'web' });
  jwksServer = jwksPod.spawn(process.execPath, [JWKS_SERVER, String(JWKS_PORT), jwks], { stdio: ['ignore', 'pipe', 'pipe'] });
  jwksServer.stdout?.setEncoding('utf8').on('data', (chunk: string) => (jwksLog += chunk));
  await until('the JWKS server listens', async () => jwksLog.includes('"listening"'));
  waypoint = await createWaypoint(mesh, { node: 1, namespace: 'shop', name: 'wp' });
  await writeAtomically(path.join(mesh.cluster.clusterDir, 'services', 'web.yaml'), service('web', WEB_VIP, HTTP_PORT, { 'istio.io/use-waypoint': 'wp' }, { app: 'web' }));
  await writeAtomically(path.join(mesh.cluster.clusterDir, 'services', 'jwks.yaml'), service('jwks', JWKS_VIP, JWKS_PORT, {}, { app: 'jwks' }));
  await until('the web Service answers through the waypoint', async () => (await status(client, { path: '/' })) === 200);
});

test.after.always(async () => {
  jwksServer?.kill();
  await mesh?.destroy();
});

/** Istio's task: `productpage-viewer` allows GET from one service account, attached to the Service. */
const VIEWER = {
  apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'web-viewer', namespace: 'shop' },
  spec: {
    targetRefs: [{ kind: 'Service', group: '', name: 'web' }],
    action: 'ALLOW',
    rules: [{ from: [{ source: { principals: ['cluster.local/ns/shop/sa/client'] } }], to: [{ operation: { methods: ['GET'] } }] }],
  },
};

test.serial('ALLOW GET from the client: GET passes, DELETE and another identity get 403 RBAC: access denied', async (t) => {
  await applyPolicy(VIEWER);
  try {
    await until('DELETE refused (the policy is in force)', async () => (await status(client, { method: 'DELETE', path: '/items/1' })) === 403);
    const results = await calls(client, [{ path: '/items/1' }, { method: 'DELETE', path: '/items/1' }, { method: 'POST', path: '/items' }]);
    t.deepEqual(results.map((result) => result.status), [200, 403, 403], JSON.stringify(results));
    t.is((results[0]!.body as { name: string }).name, 'web');
    t.is(results[1]!.body, 'RBAC: access denied');
    const other = await calls(intruder, [{ path: '/items/1' }]);
    t.is(other[0]!.status, 403, 'another service account is refused');
    t.is(other[0]!.body, 'RBAC: access denied');
    // The decision, the policy and the rule are in the waypoint's log and its metrics.
    let lines: LogLine[] = [];
    await until('decisions in the waypoint log', async () => (lines = await waypointDecisions()).some((line) => line.method === 'DELETE'));
    const deleteLine = lines.findLast((line) => line.method === 'DELETE')!;
    t.like(deleteLine.authz, { decision: 'deny', reason: 'denied: ALLOW policies apply and none matched' });
    const getLine = lines.findLast((line) => line.method === 'GET' && line.authz.decision === 'allow')!;
    t.like(getLine.authz, { decision: 'allow', policy: 'shop/web-viewer', rule: 0 });
    const metrics = await waypointMetrics();
    t.regex(metrics, /ambit_waypoint_authz_decisions_total\{decision="allow",policy="shop\/web-viewer"\} [1-9]/);
    t.regex(metrics, /ambit_waypoint_authz_decisions_total\{decision="deny",policy="none"\} [1-9]/);
    t.regex(metrics, /istio_requests_total\{[^}]*response_code="403"[^}]*\} [1-9]/);
  } finally {
    await rm(policyFile('web-viewer'), { force: true });
  }
  await until('the policy is gone (DELETE passes)', async () => (await status(client, { method: 'DELETE', path: '/items/1' })) === 200);
});

test.serial('a DENY policy with a request header condition; path normalisation cannot dodge it', async (t) => {
  await applyPolicy({
    apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'no-admin-v1', namespace: 'shop' },
    spec: { targetRefs: [{ kind: 'Gateway', group: 'gateway.networking.k8s.io', name: 'wp' }], action: 'DENY', rules: [{ to: [{ operation: { paths: ['/admin*'] } }], when: [{ key: 'request.headers[x-version]', values: ['v1'] }] }] },
  });
  try {
    await until('the DENY policy is in force', async () => (await status(client, { path: '/admin', headers: { 'x-version': 'v1' } })) === 403);
    const results = await calls(client, [
      { path: '/admin/users', headers: { 'x-version': 'v1' } },
      { path: '/admin/users', headers: { 'x-version': 'v2' } },
      { path: '/admin/users' },
      { path: '/public/../admin/users', headers: { 'x-version': 'v1' } },
      { path: '/%61dmin/users', headers: { 'x-version': 'v1' } },
      { path: '/public', headers: { 'x-version': 'v1' } },
    ]);
    t.deepEqual(results.map((result) => result.status), [403, 200, 200, 403, 403, 200], JSON.stringify(results));
    const denied = (await waypointDecisions()).findLast((line) => line.authz.decision === 'deny')!;
    t.like(denied.authz, { policy: 'shop/no-admin-v1', rule: 0 });
  } finally {
    await rm(policyFile('no-admin-v1'), { force: true });
  }
});

test.serial('JWT from a JWKS served in the mesh: claims and request principals in policy, 401 for a bad token', async (t) => {
  await applyPolicy({
    apiVersion: 'security.istio.io/v1', kind: 'RequestAuthentication', metadata: { name: 'shop-jwt', namespace: 'shop' },
    spec: {
      targetRefs: [{ kind: 'Gateway', group: 'gateway.networking.k8s.io', name: 'wp' }],
      jwtRules: [{ issuer: ISSUER, audiences: ['web'], jwksUri: 'http://jwks.shop.svc.cluster.local/keys.json', outputClaimToHeaders: [{ header: 'x-jwt-team', claim: 'team' }] }],
    },
  });
  await applyPolicy({
    apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'admins-only', namespace: 'shop' },
    spec: {
      targetRefs: [{ kind: 'Service', group: '', name: 'web' }],
      action: 'ALLOW',
      rules: [{ from: [{ source: { requestPrincipals: [`${ISSUER}/*`] } }], when: [{ key: 'request.auth.claims[groups]', values: ['admin'] }] }],
    },
  });
  try {
    const admin = await jwt({ groups: ['admin', 'dev'], team: 'blue' });
    await until('a valid admin token passes', async () => (await status(client, { path: '/orders', headers: { authorization: `Bearer ${admin}` } })) === 200, 45_000);
    const other = await generateKeyPair('ES256');
    const results = await calls(client, [
      { path: '/orders', headers: { authorization: `Bearer ${admin}`, 'x-jwt-team': 'spoofed' }, repeat: 3 },
      { path: '/orders', headers: { authorization: `Bearer ${await jwt({ groups: ['dev'] }, { subject: 'bob' })}` } },
      { path: '/orders' },
      { path: '/orders', headers: { authorization: `Bearer ${await jwt({ groups: ['admin'] }, { key: other.privateKey })}` } },
      { path: '/orders', headers: { authorization: 'Bearer not-a-jwt' } },
    ]);
    t.deepEqual(results.map((result) => result.status), [200, 200, 200, 403, 403, 401, 401], JSON.stringify(results.map((result) => [result.status, result.body])));
    const seen = results[0]!.body as { headers: Record<string, string> };
    t.is(seen.headers['x-jwt-team'], 'blue', 'outputClaimToHeaders set the claim, over what the client sent');
    t.is(seen.headers.authorization, undefined, 'the token is not forwarded (forwardOriginalToken false)');
    t.is(results[5]!.body, 'Jwt verification fails');
    t.regex(results[5]!.wwwAuthenticate ?? '', /^Bearer realm=".*", error="invalid_token"$/);
    // The keys came from the pod in the mesh, reached from the waypoint over HBONE (the pod sees the waypoint's address).
    const fetches = jwksLog.split('\n').filter((line) => line.includes('"served"')).map((line) => JSON.parse(line) as { peer: string; path: string });
    t.true(fetches.length >= 1);
    t.is(fetches[0]!.path, '/keys.json');
    t.is(fetches.at(-1)!.peer.replace('::ffff:', ''), waypoint.pod.ip);
    const allowed = (await waypointDecisions()).findLast((line) => line.authz.decision === 'allow')!;
    t.like(allowed.authz, { policy: 'shop/admins-only', rule: 0, jwt: `${ISSUER}/alice` });
    // A steady client costs one verification: the repeated token is a cache hit.
    const metrics = await waypointMetrics();
    const cached = Number(/ambit_waypoint_jwt_total\{result="cached"\} (\d+)/.exec(metrics)?.[1] ?? 0);
    t.true(cached >= 2, `cached JWT checks: ${cached}`);
  } finally {
    await rm(policyFile('admins-only'), { force: true });
    await rm(policyFile('shop-jwt'), { force: true });
  }
});

test.serial('CUSTOM is refused by the control plane with a warning and enforced as DENY (fail closed)', async (t) => {
  await applyPolicy({
    apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'ext', namespace: 'shop' },
    spec: { targetRefs: [{ kind: 'Service', group: '', name: 'web' }], action: 'CUSTOM', provider: { name: 'ext-authz' }, rules: [{ to: [{ operation: { paths: ['/private*'] } }] }] },
  });
  try {
    await until('the CUSTOM policy is in force', async () => (await status(client, { path: '/private/x' })) === 403);
    t.is(await status(client, { path: '/public' }), 200);
    const log = await readFile(mesh.controlPlaneLogFile!, 'utf8');
    t.regex(log, /AuthorizationPolicy shop\/ext: action CUSTOM \(provider ext-authz\) is not supported/);
  } finally {
    await rm(policyFile('ext'), { force: true });
  }
});

test.serial("LocalRateLimitPolicy (ambit's own): 10 requests/s per client principal held within 5% over 10 s, 429 with retry-after", async (t) => {
  await applyPolicy({
    apiVersion: 'policy.ambit.dev/v1alpha1', kind: 'LocalRateLimitPolicy', metadata: { name: 'per-client', namespace: 'shop' },
    spec: { targetRefs: [{ kind: 'Service', group: '', name: 'web' }], limits: [{ name: 'orders', requests: 10, unit: 'Second', burst: 10, key: { type: 'SourcePrincipal' }, match: { paths: ['/orders*'] } }] },
  });
  try {
    await until('the limit is in force', async () => (await calls(client, [{ path: '/orders', repeat: 15 }])).some((result) => result.status === 429));
    // The bucket refills at 10/s up to its burst of 10: after 1.5 s idle it is full when the measured run starts.
    await new Promise((resolve) => setTimeout(resolve, 1500));
    const results = await calls(client, [{ path: '/orders/1', durationMs: 10_000 }]);
    const allowed = results.filter((result) => result.status === 200).length;
    const limited = results.filter((result) => result.status === 429);
    const seconds = (results.at(-1)!.at - results[0]!.at) / 1000;
    const expected = 10 + 10 * seconds;
    t.log(`${results.length} requests in ${seconds.toFixed(2)} s: ${allowed} allowed (expected ${expected.toFixed(1)}), ${limited.length} limited`);
    // Sent well over the limit (one request at a time: a machine at load 30 managed 1.5-2x): with no limit in force
    // every one of them would be allowed, far outside the 5 % below.
    t.true(results.length > 1.5 * expected, `the client sent faster than the limit (${results.length} requests)`);
    t.true(Math.abs(allowed - expected) <= 0.05 * expected, `allowed ${allowed}, expected ${expected.toFixed(1)} +- 5%`);
    t.true(results.every((result) => result.status === 200 || result.status === 429), JSON.stringify(results.find((result) => result.status !== 200 && result.status !== 429)));
    t.is(limited[0]!.body, 'local_rate_limited');
    t.is(limited[0]!.rateLimit, '10, 10;w=1');
    t.is(limited[0]!.retryAfter, '1');
    t.is((await calls(client, [{ path: '/public' }]))[0]!.status, 200, 'requests the limit does not match are not counted');
    t.regex(await waypointMetrics(), /ambit_waypoint_rate_limited_total\{limit="shop\/per-client\/orders"\} [1-9]/);
    t.regex(await waypointMetrics(), /istio_requests_total\{[^}]*response_code="429",grpc_response_status="",response_flags="RL"/);
  } finally {
    await rm(policyFile('per-client'), { force: true });
  }
});

