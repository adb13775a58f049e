// The model on its own: what Address resources a set of Kubernetes objects becomes, and that a change touches
// only the resources it affects.
import test from 'ava';
import { AddressModel } from '../../controlplane/model/address-model.ts';
import { PolicyModel } from '../../controlplane/model/policies.ts';
import { ObjectStore } from '../../controlplane/store.ts';
import { ResourceCache } from '../../controlplane/xds/resource-cache.ts';
import type { K8sObject } from '../../shared/k8s/objects.ts';
import { ADDRESS_TYPE_URL, messageType, TO_OBJECT_OPTIONS } from '../../shared/xds/protos.ts';
import { bytesToIp, type XdsAddress } from '../../shared/xds/types.ts';
import { namespaceObject, podObject, serviceObject } from '../helpers/xds-harness.ts';

function setup(objects: K8sObject[]) {
  const store = new ObjectStore();
  const cache = new ResourceCache();
  const model = new AddressModel({ store, cache, trustDomain: 'cluster.local' });
  store.apply(objects.map((object) => ({ type: 'upsert' as const, object })));
  cache.drainChanges();
  const addressType = messageType('istio.workload.Address');
  const read = (name: string) => {
    const entry = cache.get(ADDRESS_TYPE_URL, name);
    return entry ? (addressType.toObject(addressType.decode(entry.value), TO_OBJECT_OPTIONS) as XdsAddress) : undefined;
  };
  return { store, cache, model, read };
}

test('finished pods are not workloads; host-network pods are, with network_mode HOST_NETWORK; others get Istio uids and their identity', (t) => {
  const hostNetwork = podObject({ name: 'node-exporter', namespace: 'mon', ip: '192.168.0.2' });
  (hostNetwork.spec as { hostNetwork?: boolean }).hostNetwork = true;
  const finished = podObject({ name: 'job-1', namespace: 'mon', ip: '10.0.0.9' });
  (finished.status as { phase: string }).phase = 'Succeeded';
  const { cache, read } = setup([namespaceObject('mon'), hostNetwork, finished, podObject({ name: 'api', namespace: 'mon', ip: '10.0.0.3', serviceAccount: 'api-sa', node: 'node-2' })]);
  t.deepEqual([...cache.all(ADDRESS_TYPE_URL).keys()].sort(), ['Kubernetes//Pod/mon/api', 'Kubernetes//Pod/mon/node-exporter']);
  t.like(read('Kubernetes//Pod/mon/node-exporter')!.workload!, { networkMode: 'HOST_NETWORK', tunnelProtocol: 'NONE' });
  const workload = read('Kubernetes//Pod/mon/api')!.workload!;
  t.is(workload.networkMode, 'STANDARD');
  t.is(workload.serviceAccount, 'api-sa');
  t.is(workload.trustDomain, 'cluster.local');
  t.is(workload.node, 'node-2');
  t.is(workload.clusterId, 'Kubernetes');
  t.is(workload.workloadType, 'POD');
});

test('a selector-less service takes its endpoints from EndpointSlices, with the slice port as the target', (t) => {
  const external = serviceObject({ name: 'legacy', namespace: 'shop', vip: '10.96.0.20', selector: {} });
  const slice: K8sObject = {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: 'legacy-abc', namespace: 'shop', labels: { 'kubernetes.io/service-name': 'legacy' } },
    addressType: 'IPv4',
    endpoints: [{ addresses: ['10.0.0.5'], targetRef: { kind: 'Pod', name: 'backend', namespace: 'shop' } }],
    ports: [{ name: 'http', port: 9090 }],
  };
  const { store, read } = setup([namespaceObject('shop'), external, podObject({ name: 'backend', namespace: 'shop', ip: '10.0.0.5' }), slice]);
  t.deepEqual(read('Kubernetes//Pod/shop/backend')!.workload!.services['shop/legacy.shop.svc.cluster.local']?.ports, [{ servicePort: 80, targetPort: 9090, appProtocol: 'UNKNOWN' }]);
  t.deepEqual(read('shop/legacy.shop.svc.cluster.local')!.service!.addresses.map((entry) => bytesToIp(entry.address)), ['10.96.0.20']);
  store.apply([{ type: 'delete', object: slice }]);
  t.deepEqual(read('Kubernetes//Pod/shop/backend')!.workload!.services, {}, 'removing the slice removes the membership');
});

test('as istiod: a selector-less Service\'s non-pod EndpointSlice endpoints become workloads (HOST_NETWORK, no tunnel, ready -> health)', (t) => {
  const database = serviceObject({ name: 'db', namespace: 'shop', vip: '10.96.0.30', selector: {} });
  (database.spec as { ports: unknown[] }).ports = [{ name: 'pg', port: 5432, targetPort: 5432 }, { name: 'metrics', port: 9100 }];
  const slice = (name: string, service: string, endpoints: unknown[], ports: unknown[] = [{ name: 'pg', port: 15432, protocol: 'TCP' }, { name: 'other', port: 1 }, { name: 'metrics', port: 9100, protocol: 'UDP' }]): K8sObject => ({
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name, namespace: 'shop', labels: { 'kubernetes.io/service-name': service } },
    addressType: 'IPv4',
    endpoints,
    ports,
  });
  const manual = slice('db-manual', 'db', [
    { addresses: ['192.0.2.10'] },
    { addresses: ['192.0.2.11'], conditions: { ready: false } },
    { addresses: ['not-an-ip'] },
    { addresses: ['10.0.0.5'], targetRef: { kind: 'Pod', name: 'backend', namespace: 'shop' } },
  ]);
  const { store, cache, read } = setup([namespaceObject('shop'), database, podObject({ name: 'backend', namespace: 'shop', ip: '10.0.0.5' }), manual]);
  const uid = (ip: string) => `Kubernetes/discovery.k8s.io/EndpointSlice/shop/db-manual/${ip}`;
  const first = read(uid('192.0.2.10'))!.workload!;
  t.like(first, { name: 'db-manual', namespace: 'shop', networkMode: 'HOST_NETWORK', tunnelProtocol: 'NONE', status: 'HEALTHY', clusterId: 'Kubernetes' });
  t.deepEqual(first.addresses.map(bytesToIp), ['192.0.2.10']);
  // Slice ports join the Service's by name; TCP only; a name the Service lacks is left out.
  t.deepEqual(first.services['shop/db.shop.svc.cluster.local']?.ports, [{ servicePort: 5432, targetPort: 15432, appProtocol: 'UNKNOWN' }]);
  t.is(read(uid('192.0.2.11'))!.workload!.status, 'UNHEALTHY', 'ready: false');
  t.is(read(uid('not-an-ip')), undefined, 'an address that is no IP is no endpoint');
  t.is(read(uid('10.0.0.5')), undefined, 'a Pod targetRef is the pod\'s own workload');
  t.truthy(read('Kubernetes//Pod/shop/backend')!.workload!.services['shop/db.shop.svc.cluster.local']);

  // Endpoints dropped from the slice: the address's workload goes, the pod no longer lists the Service; nothing else changes.
  cache.drainChanges();
  store.apply([{ type: 'upsert', object: slice('db-manual', 'db', [{ addresses: ['192.0.2.10'] }]) }]);
  t.deepEqual([...(cache.drainChanges().get(ADDRESS_TYPE_URL) ?? [])].sort(), [uid('192.0.2.11'), 'Kubernetes//Pod/shop/backend'].sort());
  t.is(read(uid('192.0.2.11')), undefined);

  // A slice naming a Service with a selector, or one that does not exist, makes no workload; the Service arriving does.
  store.apply([{ type: 'upsert', object: slice('ghost-x', 'ghost', [{ addresses: ['192.0.2.20'] }], [{ name: 'pg', port: 5432 }]) }]);
  t.is(read('Kubernetes/discovery.k8s.io/EndpointSlice/shop/ghost-x/192.0.2.20'), undefined);
  const ghost = serviceObject({ name: 'ghost', namespace: 'shop', vip: '10.96.0.31', selector: { app: 'ghost' } });
  store.apply([{ type: 'upsert', object: ghost }]);
  t.is(read('Kubernetes/discovery.k8s.io/EndpointSlice/shop/ghost-x/192.0.2.20'), undefined, 'a selector Service\'s endpoints are its pods');
  store.apply([{ type: 'upsert', object: serviceObject({ name: 'ghost', namespace: 'shop', vip: '10.96.0.31', selector: {} }) }]);
  t.truthy(read('Kubernetes/discovery.k8s.io/EndpointSlice/shop/ghost-x/192.0.2.20'), 'selector removed: the slice is its endpoints');

  // The Service going away, or the slice being relabelled to nothing, removes the workloads.
  store.apply([{ type: 'delete', object: database }]);
  t.is(read(uid('192.0.2.10')), undefined);
  store.apply([{ type: 'upsert', object: { ...slice('ghost-x', 'ghost', []), metadata: { name: 'ghost-x', namespace: 'shop', labels: {} } } }]);
  t.is(read('Kubernetes/discovery.k8s.io/EndpointSlice/shop/ghost-x/192.0.2.20'), undefined);
});

test('a change touches only what it affects, and an identical recomputation is no change', (t) => {
  const objects: K8sObject[] = [namespaceObject('a'), namespaceObject('b')];
  for (let index = 0; index < 20; index++) objects.push(podObject({ name: `p${index}`, namespace: index < 10 ? 'a' : 'b', ip: `10.0.0.${index + 1}`, labels: { app: `app${index}` } }));
  objects.push(serviceObject({ name: 's', namespace: 'a', vip: '10.96.0.1', selector: { app: 'app3' } }));
  const { store, cache } = setup(objects);

  store.apply([{ type: 'upsert', object: podObject({ name: 'p3', namespace: 'a', ip: '10.0.0.4', labels: { app: 'app3', version: 'v2' } }) }]);
  t.deepEqual([...(cache.drainChanges().get(ADDRESS_TYPE_URL) ?? [])], ['Kubernetes//Pod/a/p3']);

  store.apply([{ type: 'upsert', object: namespaceObject('b', { 'istio.io/dataplane-mode': 'ambient' }) }]);
  t.is(cache.drainChanges().get(ADDRESS_TYPE_URL)?.size, 10, "only namespace b's pods");

  store.apply([{ type: 'upsert', object: serviceObject({ name: 's', namespace: 'a', vip: '10.96.0.1', selector: { app: 'app4' } }) }]);
  // The Service resource carries no selector, so its bytes (and version) stay; only membership moves.
  t.deepEqual([...(cache.drainChanges().get(ADDRESS_TYPE_URL) ?? [])].sort(), ['Kubernetes//Pod/a/p3', 'Kubernetes//Pod/a/p4'], 'the pods it left and joined');

  // Re-applying the same namespace labels changes nothing on the wire.
  store.apply([{ type: 'upsert', object: { ...namespaceObject('b', { 'istio.io/dataplane-mode': 'ambient' }), metadata: { name: 'b', labels: { 'istio.io/dataplane-mode': 'ambient' }, annotations: { note: 'x' } } } }]);
  t.is(cache.drainChanges().size, 0);
});

test("a workload's locality comes from its node's topology labels, and follows a relabelled node", (t) => {
  const node = (zone: string): K8sObject => ({ apiVersion: 'v1', kind: 'Node', metadata: { name: 'node-1', labels: { 'topology.kubernetes.io/region': 'eu', 'topology.kubernetes.io/zone': zone } } });
  const { store, read } = setup([node('eu-1a'), podObject({ name: 'api', namespace: 'default', ip: '10.0.0.3', node: 'node-1' })]);
  t.deepEqual(read('Kubernetes//Pod/default/api')!.workload!.locality, { region: 'eu', zone: 'eu-1a', subzone: '' });
  store.apply([{ type: 'upsert', object: node('eu-1b') }]);
  t.is(read('Kubernetes//Pod/default/api')!.workload!.locality!.zone, 'eu-1b');
});

test('podsOnNode (the CA\'s question) follows pods arriving, leaving and finishing at once, cached or not', (t) => {
  const { store, model } = setup([namespaceObject('shop'), podObject({ name: 'a', namespace: 'shop', ip: '10.0.0.1', node: 'n1', serviceAccount: 'web' })]);
  const accounts = (node: string) => model.podsOnNode(node).map((pod) => `${pod.namespace}/${pod.serviceAccount}`).sort();
  t.deepEqual(accounts('n1'), ['shop/web']);
  t.deepEqual(accounts('n1'), ['shop/web'], 'asked again: the same answer');
  store.apply([{ type: 'upsert', object: podObject({ name: 'b', namespace: 'shop', ip: '10.0.0.2', node: 'n1', serviceAccount: 'db' }) }]);
  t.deepEqual(accounts('n1'), ['shop/db', 'shop/web']);
  store.apply([{ type: 'delete', object: podObject({ name: 'a', namespace: 'shop', ip: '10.0.0.1', node: 'n1', serviceAccount: 'web' }) }]);
  t.deepEqual(accounts('n1'), ['shop/db'], 'a deleted pod no longer vouches for its service account');
  t.deepEqual(accounts('n2'), []);
});

test('a policy problem (an ALLOW rule with HTTP-only fields) is reported once, again only when that policy changes', (t) => {
  const problems: string[] = [];
  const policies = new PolicyModel({ onProblem: (problem) => problems.push(`${problem.kind} ${problem.policy}: ${problem.message}`) });
  const store = new ObjectStore();
  const policy = (name: string, spec: Record<string, unknown>): K8sObject => ({ apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name, namespace: 'shop' }, spec }) as K8sObject;
  const l7 = policy('get-only', { action: 'ALLOW', rules: [{ to: [{ operation: { methods: ['GET'] } }] }] });
  const upsert = (object: K8sObject): void => void store.apply([{ type: 'upsert', object }]);
  upsert(l7);
  policies.compile(store);
  t.is(problems.length, 1);
  t.regex(problems[0]!, /AuthorizationPolicy shop\/get-only: .*HTTP attributes \(methods\)/);
  // Other policies come and go, the same policy is re-listed: every change recompiles everything, nothing is repeated.
  upsert(policy('from-web', { action: 'ALLOW', rules: [{ from: [{ source: { namespaces: ['web'] } }] }] }));
  policies.compile(store);
  upsert({ ...l7, metadata: { ...l7.metadata, resourceVersion: '7' } } as K8sObject);
  policies.compile(store);
  store.apply([{ type: 'delete', object: policy('from-web', {}) }]);
  policies.compile(store);
  t.is(problems.length, 1, problems.join('\n'));
  // Its own change (still with HTTP fields) is reported; removed and added again, it is reported again.
  upsert(policy('get-only', { action: 'ALLOW', rules: [{ to: [{ operation: { methods: ['GET', 'HEAD'] } }] }] }));
  policies.compile(store);
  t.is(problems.length, 2);
  store.apply([{ type: 'delete', object: l7 }]);
  policies.compile(store);
  upsert(l7);
  policies.compile(store);
  t.is(problems.length, 3);
});

test('a Service\'s load_balancing and ip_families come from its spec, as istiod sets them', (t) => {
  const withSpec = (name: string, spec: Record<string, unknown>, annotations?: Record<string, string>): K8sObject => {
    const service = serviceObject({ name, namespace: 'shop', vip: '10.96.0.30', selector: { app: name } });
    Object.assign(service.spec as object, spec);
    if (annotations) service.metadata!.annotations = annotations;
    return service;
  };
  const { read } = setup([
    namespaceObject('shop'),
    withSpec('local', { internalTrafficPolicy: 'Local', trafficDistribution: 'PreferClose' }),
    withSpec('close', { trafficDistribution: 'PreferClose', ipFamilies: ['IPv4', 'IPv6'] }),
    withSpec('annotated', { ipFamilies: ['IPv6'] }, { 'networking.istio.io/traffic-distribution': 'PreferClose' }),
    withSpec('plain', { internalTrafficPolicy: 'Cluster' }),
  ]);
  const service = (name: string) => read(`shop/${name}.shop.svc.cluster.local`)!.service!;
  t.like(service('local').loadBalancing, { routingPreference: ['NODE'], mode: 'STRICT' }, 'Local wins over a traffic distribution');
  t.like(service('close').loadBalancing, { routingPreference: ['NETWORK', 'REGION', 'ZONE', 'SUBZONE'], mode: 'FAILOVER' });
  t.is(service('close').ipFamilies, 'DUAL');
  t.like(service('annotated').loadBalancing, { mode: 'FAILOVER' }, 'Istio\'s annotation stands in for the field');
  t.is(service('annotated').ipFamilies, 'IPV6_ONLY');
  t.falsy(service('plain').loadBalancing, 'Cluster: no load balancing rule');
  t.is(service('plain').ipFamilies, 'AUTOMATIC');
});

test('as istiod: a named targetPort the pod lacks is left out, deleting or unready pods are UNHEALTHY, workload_name is the owner\'s', (t) => {
  const pod = (name: string, extra: { metadata?: object; status?: object; spec?: object } = {}): K8sObject => {
    const object = podObject({ name, namespace: 'shop', ip: `10.0.0.${name.length}`, labels: { app: 'web', 'pod-template-hash': '5d8f7c9b4' } });
    Object.assign(object.metadata!, extra.metadata);
    Object.assign(object.status as object, extra.status);
    Object.assign(object.spec as object, extra.spec);
    return object;
  };
  const { read } = setup([
    namespaceObject('shop'),
    serviceObject({ name: 'web', namespace: 'shop', vip: '10.96.0.40', selector: { app: 'web' } }),
    pod('web-5d8f7c9b4-abcde', { metadata: { ownerReferences: [{ kind: 'ReplicaSet', name: 'web-5d8f7c9b4', controller: true }] }, status: { conditions: [{ type: 'Ready', status: 'True' }] } }),
    pod('unready', { status: { conditions: [{ type: 'Ready', status: 'False' }] } }),
    pod('deleting', { metadata: { deletionTimestamp: '2026-12-06T00:00:00Z' }, status: { conditions: [{ type: 'Ready', status: 'True' }] } }),
    pod('report-29000000-xyz', { metadata: { ownerReferences: [{ kind: 'Job', name: 'report-29000000', controller: true }] } }),
    pod('noport', { spec: { containers: [{ name: 'app' }] } }),
  ]);
  const workload = (name: string) => read(`Kubernetes//Pod/shop/${name}`)!.workload!;
  t.like(workload('web-5d8f7c9b4-abcde'), { workloadName: 'web', workloadType: 'POD', status: 'HEALTHY' }, 'ReplicaSet -> Deployment name');
  t.is(workload('report-29000000-xyz').workloadName, 'report', 'CronJob Job -> CronJob name');
  t.is(workload('unready').workloadName, 'unready', 'no owner: the pod name');
  t.is(workload('unready').status, 'UNHEALTHY');
  t.is(workload('deleting').status, 'UNHEALTHY');
  t.is(workload('report-29000000-xyz').status, 'HEALTHY', 'Running with no conditions reported (the local runtime)');
  t.deepEqual(workload('noport').services['shop/web.shop.svc.cluster.local']?.ports, [], 'the named port "http" the pod lacks is left out, not sent as 0');
  t.deepEqual(workload('unready').services['shop/web.shop.svc.cluster.local']?.ports.map((port) => port.targetPort), [8080]);
});

test('tunnel_protocol: HBONE once the captured pod carries the redirection annotation (istiod), or on enrollment with hboneWhen enrolled', (t) => {
  const annotated = podObject({ name: 'annotated', namespace: 'shop', ip: '10.0.0.5' });
  annotated.metadata!.annotations = { 'ambient.istio.io/redirection': 'enabled' };
  const objects = [namespaceObject('shop', { 'istio.io/dataplane-mode': 'ambient' }), annotated, podObject({ name: 'fresh', namespace: 'shop', ip: '10.0.0.6' })];
  const { read } = setup(objects);
  t.is(read('Kubernetes//Pod/shop/annotated')!.workload!.tunnelProtocol, 'HBONE');
  t.is(read('Kubernetes//Pod/shop/fresh')!.workload!.tunnelProtocol, 'NONE', 'enrolled but not captured yet');
  const store = new ObjectStore();
  const cache = new ResourceCache();
  new AddressModel({ store, cache, trustDomain: 'cluster.local', hboneWhen: 'enrolled' });
  store.apply(objects.map((object) => ({ type: 'upsert' as const, object })));
  const addressType = messageType('istio.workload.Address');
  const fresh = addressType.toObject(addressType.decode(cache.get(ADDRESS_TYPE_URL, 'Kubernetes//Pod/shop/fresh')!.value), TO_OBJECT_OPTIONS) as XdsAddress;
  t.is(fresh.workload!.tunnelProtocol, 'HBONE', 'hboneWhen enrolled: on the label alone');
});

test('as istiod: an ExternalName Service is no Address resource, and no pod lists it even when it has a selector', (t) => {
  const alias = serviceObject({ name: 'ext', namespace: 'shop', vip: '', selector: { app: 'web' } });
  (alias.spec as Record<string, unknown>).type = 'ExternalName';
  (alias.spec as Record<string, unknown>).externalName = 'db.example.com';
  delete (alias.spec as Record<string, unknown>).clusterIP;
  delete (alias.spec as Record<string, unknown>).clusterIPs;
  const web = serviceObject({ name: 'web', namespace: 'shop', vip: '10.96.0.40', selector: { app: 'web' } });
  const { store, read } = setup([namespaceObject('shop'), podObject({ name: 'web-1', namespace: 'shop', ip: '10.0.0.7', labels: { app: 'web' } }), alias, web]);
  t.is(read('shop/ext.shop.svc.cluster.local'), undefined);
  t.deepEqual(Object.keys(read('Kubernetes//Pod/shop/web-1')!.workload!.services), ['shop/web.shop.svc.cluster.local'], 'the ClusterIP Service beside it is unaffected');
  // A Service turned into an ExternalName one is withdrawn; turned back, it returns.
  const { spec: webSpec, ...webRest } = web as { spec: Record<string, unknown> };
  store.apply([{ type: 'upsert', object: { ...webRest, spec: { ...webSpec, type: 'ExternalName', externalName: 'web.example.com' } } as K8sObject }]);
  t.is(read('shop/web.shop.svc.cluster.local'), undefined);
  t.deepEqual(read('Kubernetes//Pod/shop/web-1')!.workload!.services, {});
  store.apply([{ type: 'upsert', object: web }]);
  t.truthy(read('shop/web.shop.svc.cluster.local'));
});

test('as istiod: ingress_use_waypoint (Service field 12) from istio.io/ingress-use-waypoint on the Service, else its namespace', (t) => {
  const labelled = serviceObject({ name: 'a', namespace: 'shop', vip: '10.96.0.50', selector: { app: 'a' }, labels: { 'istio.io/ingress-use-waypoint': 'true' } });
  const optedOut = serviceObject({ name: 'b', namespace: 'shop', vip: '10.96.0.51', selector: { app: 'b' }, labels: { 'istio.io/ingress-use-waypoint': 'false' } });
  const plain = serviceObject({ name: 'c', namespace: 'shop', vip: '10.96.0.52', selector: { app: 'c' } });
  const { store, read } = setup([namespaceObject('shop'), labelled, optedOut, plain]);
  const flag = (name: string) => read(`shop/${name}.shop.svc.cluster.local`)!.service!.ingressUseWaypoint;
  t.deepEqual(['a', 'b', 'c'].map(flag), [true, false, false]);
  // The namespace's label: for every Service without its own; a Service's "false" still wins.
  store.apply([{ type: 'upsert', object: namespaceObject('shop', { 'istio.io/ingress-use-waypoint': 'true' }) }]);
  t.deepEqual(['a', 'b', 'c'].map(flag), [true, false, true]);
});
