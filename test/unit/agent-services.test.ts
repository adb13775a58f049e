/**
 * Services in the agent's mesh state (shared/mesh/mesh-state.ts, service.ts): lookups by VIP and hostname, the
 * join of services with the workloads that back them (whichever arrives first), and the two sources that feed
 * them: delta xDS from the real control plane over gRPC + TLS, and the cluster directory.
 */
import test from 'ava';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { ClusterDirSource } from '../../agent/state/cluster-dir-source.ts';
import { MeshState, type ServiceChange } from '../../shared/mesh/mesh-state.ts';
import { targetPortOf, type Service } from '../../shared/mesh/service.ts';
import type { Workload } from '../../shared/mesh/workload.ts';
import { XdsSource } from '../../shared/mesh/xds-source.ts';
import { eventually, namespaceYaml, podYaml, serviceYaml, startTestControlPlane, tempDir, TEST_TOKEN, writeManifest } from '../helpers/xds-harness.ts';

const WEB = 'shop/web.shop.svc.cluster.local';

function service(overrides: Partial<Service> = {}): Service {
  return {
    name: 'web', namespace: 'shop', hostname: 'web.shop.svc.cluster.local',
    vips: [{ network: '', address: '10.96.0.10' }, { network: '', address: 'fd00:96::10' }],
    ports: [{ servicePort: 80, targetPort: 8080 }, { servicePort: 9090, targetPort: 0 }],
    subjectAltNames: [], ipFamilies: 'DUAL', ...overrides,
  };
}

function workload(name: string, overrides: Partial<Workload> = {}): Workload {
  return {
    uid: `Kubernetes//Pod/shop/${name}`, name, namespace: 'shop', serviceAccount: 'web', trustDomain: 'cluster.local', node: 'node-1',
    addresses: ['10.0.1.5'], tunnelProtocol: 'HBONE', captureReason: 'test', canonicalName: 'web', canonicalRevision: 'latest', workloadName: 'web',
    ...overrides,
  };
}

test('a service is found by each VIP (both families), by hostname and by key; another network needs its name', (t) => {
  const state = new MeshState();
  state.upsertService(service());
  state.upsertService(service({ name: 'db', hostname: 'db.shop.svc.cluster.local', vips: [{ network: 'west', address: '10.96.0.20' }] }));
  t.is(state.serviceByVip('10.96.0.10')?.name, 'web');
  t.is(state.serviceByVip('fd00:96::10')?.name, 'web');
  t.deepEqual(state.servicesByHostname('web.shop.svc.cluster.local').map((entry) => entry.name), ['web']);
  t.is(state.serviceByKey(WEB)?.name, 'web');
  t.is(state.serviceByVip('10.96.0.20'), undefined, 'a VIP on another network is not on the default one');
  t.is(state.serviceByVip('10.96.0.20', 'west')?.name, 'db');
  t.is(state.serviceByVip('10.0.1.5'), undefined, 'a pod IP is not a VIP');
});

test('endpoints join their service whichever arrives first, and leave when the workload goes or drops the service', (t) => {
  const state = new MeshState();
  const before = workload('web-1', { services: { [WEB]: [{ servicePort: 80, targetPort: 8080 }, { servicePort: 9090, targetPort: 9091 }] } });
  state.upsert(before);
  t.is(state.endpointsOf(WEB).length, 1, 'staged before the service exists');
  state.upsertService(service());
  state.upsert(workload('web-2', { addresses: ['10.0.2.7'], services: { [WEB]: [{ servicePort: 80, targetPort: 8080 }] } }));
  state.upsert(workload('other', { addresses: ['10.0.3.1'] }));
  const endpoints = state.endpointsOf(state.serviceByVip('10.96.0.10')!);
  t.deepEqual(endpoints.map((endpoint) => endpoint.workload.name).sort(), ['web-1', 'web-2']);
  t.is(state.endpointsOf(WEB), endpoints, 'the list is reused while nothing changed (the proxy reads it per connection)');

  const web1 = endpoints.find((endpoint) => endpoint.workload.name === 'web-1')!;
  const web2 = endpoints.find((endpoint) => endpoint.workload.name === 'web-2')!;
  const svc = state.serviceByKey(WEB)!;
  t.is(targetPortOf(svc, web1, 80), 8080);
  t.is(targetPortOf(svc, web1, 9090), 9091, 'a named target port resolves per endpoint');
  t.is(targetPortOf(svc, web2, 9090), undefined, 'an endpoint without the named port cannot serve it');
  t.is(targetPortOf(svc, web2, 81), undefined, 'a port the service does not have');

  state.upsert(workload('web-1', { services: {} }));
  t.deepEqual(state.endpointsOf(WEB).map((endpoint) => endpoint.workload.name), ['web-2'], 'dropping the service from its map leaves it');
  state.remove('Kubernetes//Pod/shop/web-2');
  t.deepEqual(state.endpointsOf(WEB), [], 'a removed workload is no endpoint');
});

test('a workload update replaces its endpoint (health, ports), and a removed service keeps endpoints staged', (t) => {
  const state = new MeshState();
  state.upsertService(service());
  state.upsert(workload('web-1', { services: { [WEB]: [{ servicePort: 80, targetPort: 8080 }] } }));
  state.upsert(workload('web-1', { status: 'UNHEALTHY', services: { [WEB]: [{ servicePort: 80, targetPort: 8081 }] } }));
  const [endpoint] = state.endpointsOf(WEB);
  t.is(endpoint?.workload.status, 'UNHEALTHY');
  t.is(targetPortOf(state.serviceByKey(WEB)!, endpoint!, 80), 8081);

  state.removeService(WEB);
  t.is(state.serviceByVip('10.96.0.10'), undefined);
  t.deepEqual(state.servicesByHostname('web.shop.svc.cluster.local'), []);
  state.upsertService(service());
  t.is(state.endpointsOf(WEB).length, 1, 'the service finds its endpoints again when it comes back');
});

test('a changed service drops VIPs it no longer has; changes are announced and bump the version', (t) => {
  const state = new MeshState();
  const changes: string[] = [];
  state.onServiceChange((change: ServiceChange) => changes.push(`${change.type} ${change.service.vips.map((vip) => vip.address).join(',')}${change.type === 'upsert' && change.previous ? ' (replaced)' : ''}`));
  const version = state.version;
  state.upsertService(service());
  state.upsertService(service({ vips: [{ network: '', address: '10.96.0.11' }] }));
  t.is(state.serviceByVip('10.96.0.10'), undefined);
  t.is(state.serviceByVip('10.96.0.11')?.name, 'web');
  t.is(state.servicesByHostname('web.shop.svc.cluster.local').length, 1, 'one entry per service, not per update');
  state.removeService(WEB);
  t.deepEqual(changes, ['upsert 10.96.0.10,fd00:96::10', 'upsert 10.96.0.11 (replaced)', 'remove 10.96.0.11']);
  t.is(state.version, version + 3);
});

test('replaceAll with services: removes services that are gone, leaves services alone when given none', (t) => {
  const state = new MeshState();
  state.replaceAll([], [service(), service({ name: 'api', hostname: 'api.shop.svc.cluster.local', vips: [] })]);
  t.is(state.services().length, 2);
  state.replaceAll([workload('web-1')]);
  t.is(state.services().length, 2, 'a workload-only snapshot keeps the services');
  state.replaceAll([workload('web-1')], [service()]);
  t.deepEqual(state.services().map((entry) => entry.name), ['web']);
});

test('xDS: the control plane\'s Service resources and memberships reach the mesh state; a deleted Service leaves it', async (t) => {
  const dir = await tempDir(t);
  await writeManifest(dir, 'ns.yaml', namespaceYaml('shop', { 'istio.io/dataplane-mode': 'ambient' }));
  await writeManifest(dir, 'pod.yaml', podYaml({ name: 'web-1', namespace: 'shop', ip: '10.0.1.5', labels: { app: 'web' } }));
  await writeManifest(dir, 'svc.yaml', serviceYaml({ name: 'web', namespace: 'shop', vip: '10.96.0.10', selector: { app: 'web' } }));
  const plane = await startTestControlPlane(t, { dir });
  const state = new MeshState();
  const source = new XdsSource({ address: plane.address, rootCertPem: plane.ca.rootCertPem, token: TEST_TOKEN, nodeName: 'node-1', trustDomain: 'cluster.local', state });
  t.teardown(() => source.stop());
  await source.start();

  const web = state.serviceByVip('10.96.0.10');
  t.truthy(web, 'the VIP is known after the first sync');
  t.is(web!.hostname, 'web.shop.svc.cluster.local');
  t.deepEqual(state.servicesByHostname('web.shop.svc.cluster.local'), [web!]);
  const endpoints = state.endpointsOf(web!);
  t.deepEqual(endpoints.map((endpoint) => endpoint.workload.addresses), [['10.0.1.5']]);
  t.is(targetPortOf(web!, endpoints[0]!, 80), 8080, 'the named target port "http" resolved to the pod\'s containerPort');
  t.is(endpoints[0]!.workload.status, 'HEALTHY');

  await rm(path.join(dir, 'svc.yaml'));
  await eventually(() => state.serviceByVip('10.96.0.10') === undefined, 'the service to be removed');
  await eventually(() => state.endpointsOf(web!).length === 0, 'the pod to stop listing the service');
});

test('cluster directory: selector Services become services with their pods as endpoints; headless and Local ones too', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ambit-svc-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await writeFile(path.join(dir, 'ns.yaml'), namespaceYaml('shop', { 'istio.io/dataplane-mode': 'ambient' }));
  await writeFile(path.join(dir, 'pod.yaml'), podYaml({ name: 'web-1', namespace: 'shop', ip: '10.0.1.5', labels: { app: 'web' } }));
  await writeFile(path.join(dir, 'svc.yaml'), serviceYaml({ name: 'web', namespace: 'shop', vip: '10.96.0.10', selector: { app: 'web' } }));
  await writeFile(path.join(dir, 'more.yaml'), [
    'apiVersion: v1\nkind: Service\nmetadata:\n  name: web-headless\n  namespace: shop\nspec:\n  clusterIP: None\n  selector:\n    app: web\n  ports:\n  - port: 80\n',
    'apiVersion: v1\nkind: Service\nmetadata:\n  name: web-local\n  namespace: shop\nspec:\n  clusterIPs: [10.96.0.12, "fd00:96::12"]\n  internalTrafficPolicy: Local\n  selector:\n    app: web\n  ports:\n  - port: 80\n    targetPort: 8080\n  - port: 81\n    targetPort: metrics\n',
    // An ExternalName Service is a DNS alias for the cluster DNS, not a mesh Service (as istiod), selector or not.
    'apiVersion: v1\nkind: Service\nmetadata:\n  name: ext\n  namespace: shop\nspec:\n  type: ExternalName\n  externalName: db.example.com\n  selector:\n    app: web\n',
  ].join('---\n'));
  const state = new MeshState();
  const source = new ClusterDirSource({ dir, state, trustDomain: 'cluster.local' });
  t.teardown(() => source.stop());
  await source.start();

  const web = state.serviceByVip('10.96.0.10')!;
  t.is(web.hostname, 'web.shop.svc.cluster.local');
  t.is(targetPortOf(web, state.endpointsOf(web)[0]!, 80), 8080, 'named target port "http" resolved from the pod spec');
  const headless = state.servicesByHostname('web-headless.shop.svc.cluster.local')[0]!;
  t.deepEqual(headless.vips, [], 'clusterIP None: headless');
  t.deepEqual(state.endpointsOf(headless).map((endpoint) => endpoint.workload.addresses[0]), ['10.0.1.5'], 'its pods\' IPs are what DNS answers');
  const local = state.serviceByVip('fd00:96::12')!;
  t.is(local.name, 'web-local');
  t.deepEqual(local.loadBalancing, { routingPreference: ['NODE'], mode: 'STRICT', healthPolicy: 'ONLY_HEALTHY' });
  t.is(targetPortOf(local, state.endpointsOf(local)[0]!, 81), undefined, 'a named port the pod lacks is left out');
  t.deepEqual(state.servicesByHostname('ext.shop.svc.cluster.local'), [], 'no ExternalName Service in the mesh state');

  t.is(state.endpointsOf(web)[0]!.workload.status, 'HEALTHY', 'Running, no conditions reported');
  await writeFile(path.join(dir, 'pod.yaml'), podYaml({ name: 'web-1', namespace: 'shop', ip: '10.0.1.5', labels: { app: 'web' } }) + '  conditions:\n  - type: Ready\n    status: "False"\n');
  await rm(path.join(dir, 'more.yaml'));
  await source.refresh();
  t.deepEqual(state.services().map((entry) => entry.name), ['web']);
  t.is(state.endpointsOf(web)[0]!.workload.status, 'UNHEALTHY', 'Ready False: unhealthy');
});

test('a host-network workload is known by name but never by IP (its addresses are its node\'s)', (t) => {
  const state = new MeshState();
  state.upsert(workload('node-exporter', { addresses: ['192.168.0.2'], networkMode: 'HOST_NETWORK', tunnelProtocol: 'NONE' }));
  t.is(state.workloadByName('shop', 'node-exporter')?.networkMode, 'HOST_NETWORK');
  t.is(state.workloadByIp('192.168.0.2'), undefined);
});

test('a host-network workload (an EndpointSlice address, named after its slice) never takes a pod\'s name, whichever comes first', (t) => {
  for (const podFirst of [true, false]) {
    const state = new MeshState();
    const pod = workload('db', { addresses: ['10.0.1.9'] });
    const sliceAddress = workload('db', { uid: 'Kubernetes/discovery.k8s.io/EndpointSlice/shop/db/192.0.2.10', addresses: ['192.0.2.10'], networkMode: 'HOST_NETWORK', tunnelProtocol: 'NONE' });
    if (podFirst) {
      state.upsert(pod);
      state.upsert(sliceAddress);
    } else {
      state.upsert(sliceAddress);
      state.upsert(pod);
    }
    t.is(state.workloadByName('shop', 'db')?.uid, pod.uid, `pod first: ${podFirst}`);
    state.upsert({ ...sliceAddress, status: 'UNHEALTHY' });
    t.is(state.workloadByName('shop', 'db')?.uid, pod.uid, 'an update of the slice address does not take it either');
  }
});
