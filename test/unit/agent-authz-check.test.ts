/**
 * `GET /authz/check` on the agent's admin endpoint and `ambitctl authz check` without a cluster directory (the
 * Kubernetes case): the agent answers from the workloads and policies it holds, with the same explanation the
 * directory-based check gives.
 */
import test from 'ava';
import { startAdminServer } from '../../agent/admin.ts';
import { checkAuthorization, UnknownPodError } from '../../agent/policy/authz-check.ts';
import { PolicyStore, type LocalPolicy } from '../../agent/policy/policy-store.ts';
import { MeshState } from '../../shared/mesh/mesh-state.ts';
import { isServiceResult, type AuthzCheckResult } from '../../shared/policy/check-result.ts';
import { runAmbitctl } from '../../ambitctl/main.ts';
import { fakeWorkload } from '../helpers/admin-fixture.ts';

function fixture() {
  const state = new MeshState();
  state.upsert(fakeWorkload('web', 'shop', '10.1.1.5', { labels: { app: 'web' } }));
  state.upsert(fakeWorkload('db', 'shop', '10.1.1.6', { labels: { app: 'db' } }));
  state.upsert(fakeWorkload('legacy', 'old', '10.1.2.7', { tunnelProtocol: 'NONE', captureReason: 'namespace old is not enrolled' }));
  const policies = new PolicyStore();
  const allow: LocalPolicy = {
    kind: 'AuthorizationPolicy',
    object: {
      apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'db-from-web', namespace: 'shop' },
      spec: { selector: { matchLabels: { app: 'db' } }, action: 'ALLOW', rules: [{ from: [{ source: { principals: ['cluster.local/ns/shop/sa/web'] } }], to: [{ operation: { ports: ['5432'] } }] }] },
    } as never,
  };
  policies.setLocal([allow]);
  return { state, policies, sources: { nodeName: 'node-1', state, policies } };
}

test('the agent decides from what it holds: the matching ALLOW named, a plaintext client denied, an unknown pod refused', (t) => {
  const { sources } = fixture();
  const allowed = checkAuthorization(sources, { source: 'shop/web', destination: 'db', port: 5432, namespace: 'shop' }) as AuthzCheckResult;
  t.true(allowed.allowed);
  t.is(allowed.decidingPolicy, 'shop/db-from-web');
  t.is(allowed.source.principal, 'spiffe://cluster.local/ns/shop/sa/web');
  t.is(allowed.decidedBy, 'agent on node-1');
  const otherPort = checkAuthorization(sources, { source: 'shop/web', destination: 'shop/db', port: 80, namespace: 'default' });
  t.false(otherPort.allowed, 'ALLOW policies apply and none matches port 80');
  const plaintext = checkAuthorization(sources, { source: 'old/legacy', destination: 'shop/db', port: 5432, namespace: 'default' });
  t.false(plaintext.allowed, 'a client outside the mesh has no principal to match');
  t.is(plaintext.source.principal, undefined);
  const outside = checkAuthorization(sources, { source: 'shop/web', destination: 'old/legacy', port: 80, namespace: 'default' });
  t.true(outside.allowed);
  t.regex(outside.reason, /not in the mesh/);
  const error = t.throws(() => checkAuthorization(sources, { source: 'shop/nope', destination: 'shop/db', port: 80, namespace: 'default' }));
  t.true(error instanceof UnknownPodError);
  t.regex(error.message, /knows no pod shop\/nope \(pods: old\/legacy, shop\/db, shop\/web\)/);
});

test('ambitctl authz check with no directory asks the agent over its admin endpoint', async (t) => {
  const { state, policies } = fixture();
  const server = await startAdminServer({ host: '127.0.0.1', port: 0 }, {
    nodeName: 'node-1', state, log: { level: 'info' },
    authzCheck: (query) => checkAuthorization({ nodeName: 'node-1', state, policies }, query),
  });
  t.teardown(() => server.close());
  const url = `http://127.0.0.1:${server.address.port}`;
  const run = async (...argv: string[]) => {
    let stdout = '';
    let stderr = '';
    const code = await runAmbitctl(argv, { stdout: (text) => (stdout += text), stderr: (text) => (stderr += text) }, {});
    return { code, stdout, stderr };
  };
  const table = await run('authz', 'check', 'shop/web', 'shop/db', '5432', '--admin', url);
  t.is(table.code, 0, table.stderr);
  t.regex(table.stdout, /^decided by the agent on node-1\nfrom shop\/web \(10\.1\.1\.5, identity spiffe:\/\/cluster\.local\/ns\/shop\/sa\/web\)/);
  t.regex(table.stdout, /ALLOWED: ALLOW policy shop\/db-from-web matches this connection/);
  t.is(table.stdout.split('db-from-web').length - 1, 1, 'the deciding ALLOW is explained once');
  const denied = await run('authz', 'check', 'old/legacy', 'shop/db', '5432', '--admin', url, '-o', 'json');
  const json = JSON.parse(denied.stdout);
  t.false(json.allowed);
  // The exit codes of the directory path: 0 allowed, 1 denied, 2 unknown pod or bad argument.
  t.is(denied.code, 1, 'denied: exit 1');
  const unknown = await run('authz', 'check', 'shop/nope', 'shop/db', '5432', '--admin', url);
  t.is(unknown.code, 2, 'an unknown pod: exit 2, as with --cluster-dir');
  t.regex(unknown.stderr, /answered 404 .*knows no pod shop\/nope/);
  // A plaintext workload is shown the same way by both commands: no identity.
  const deniedTable = await run('authz', 'check', 'old/legacy', 'shop/db', '5432', '--admin', url);
  t.regex(deniedTable.stdout, /from old\/legacy \(10\.1\.2\.7, identity none \(plaintext\): not in the mesh \(namespace old is not enrolled\)\)/);
  const workloads = await run('workloads', '--admin', url);
  t.regex(workloads.stdout, /\nold\s+legacy\s+10\.1\.2\.7\s+node-1\s+TCP\s+none \(plaintext\)\n/);
  t.false(workloads.stdout.includes('spiffe://cluster.local/ns/old/sa/legacy'), workloads.stdout);
  const down = await run('authz', 'check', 'shop/web', 'shop/db', '5432', '--admin', 'http://127.0.0.1:1');
  t.is(down.code, 2, 'no agent: exit 2, never 1 (denied)');
  const bad = await fetch(`${url}/authz/check?source=shop/web&destination=shop/db&port=0`);
  t.is(bad.status, 400);
});

test('a Service as destination: the agent decides at each endpoint it holds, on the endpoint\'s target port; by VIP, over the admin endpoint too', async (t) => {
  const { state, policies, sources } = fixture();
  const key = 'shop/pg.shop.svc.cluster.local';
  state.upsertService({ name: 'pg', namespace: 'shop', hostname: 'pg.shop.svc.cluster.local', vips: [{ network: '', address: '10.96.0.7' }], ports: [{ servicePort: 15432, targetPort: 5432 }], subjectAltNames: [], ipFamilies: 'AUTOMATIC' });
  state.upsert(fakeWorkload('db', 'shop', '10.1.1.6', { labels: { app: 'db' }, services: { [key]: [{ servicePort: 15432, targetPort: 5432 }] } }));
  state.upsert(fakeWorkload('db-down', 'shop', '10.1.1.9', { labels: { app: 'db' }, status: 'UNHEALTHY', services: { [key]: [{ servicePort: 15432, targetPort: 5432 }] } }));
  const result = checkAuthorization(sources, { source: 'shop/web', destination: 'svc/shop/pg', port: 15432, namespace: 'default' });
  t.true(result.allowed);
  t.true(isServiceResult(result));
  if (!isServiceResult(result)) return;
  t.like(result.service, { namespace: 'shop', name: 'pg', vips: ['10.96.0.7'] });
  t.deepEqual(result.endpoints.map((endpoint) => [endpoint.endpoint.name, endpoint.targetPort, endpoint.healthy, endpoint.decidingPolicy]), [
    ['db', 5432, true, 'shop/db-from-web'],
    ['db-down', 5432, false, undefined],
  ]);
  const plaintext = checkAuthorization(sources, { source: 'old/legacy', destination: '10.96.0.7', port: 15432, namespace: 'default' });
  t.false(plaintext.allowed, 'by VIP: the client outside the mesh is denied at the endpoint');
  const unknown = t.throws(() => checkAuthorization(sources, { source: 'shop/web', destination: 'svc/shop/nope', port: 80, namespace: 'default' }));
  t.regex(unknown.message, /knows no Service shop\/nope \(services: svc\/shop\/pg\)/);

  const server = await startAdminServer({ host: '127.0.0.1', port: 0 }, {
    nodeName: 'node-1', state, log: { level: 'info' },
    authzCheck: (query) => checkAuthorization({ nodeName: 'node-1', state, policies }, query),
  });
  t.teardown(() => server.close());
  let stdout = '';
  const code = await runAmbitctl(['authz', 'check', 'shop/web', 'svc/shop/pg', '15432', '--admin', `http://127.0.0.1:${server.address.port}`], { stdout: (text) => (stdout += text), stderr: () => undefined }, {});
  t.is(code, 0);
  t.regex(stdout, /to {3}Service shop\/pg \(10\.96\.0\.7\) port 15432\n/);
  t.regex(stdout, /endpoint shop\/db \(10\.1\.1\.6:5432\):\n {4}ALLOWED: ALLOW policy shop\/db-from-web/);
});
