// Route status (HTTPRoute and GRPCRoute through one function): per parent, Accepted with the reason a route attaches
// to nothing, ResolvedRefs from the compiler's backend findings; and the writer that puts it on the routes in the
// stand-in API server, leaving other controllers' entries alone and not writing an unchanged status again.
import test from 'ava';
import { ApiServerWriter } from '../../controlplane/kube-writer.ts';
import { compileHttpRoutes, type RouteProblem } from '../../controlplane/model/http-routes.ts';
import { routeStatuses } from '../../controlplane/model/route-status.ts';
import { RouteStatusWriter } from '../../controlplane/route-status-writer.ts';
import { KubernetesSource } from '../../controlplane/sources/kubernetes.ts';
import { ObjectStore } from '../../controlplane/store.ts';
import type { K8sObject } from '../../shared/k8s/objects.ts';
import { FakeKubeApiServer } from '../helpers/kube-api-server.ts';
import { eventually, namespaceObject, serviceObject, waypointGateway } from '../helpers/xds-harness.ts';

function httpRoute(name: string, parentRefs: object[], backend = 'web'): K8sObject {
  return {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'HTTPRoute',
    metadata: { name, namespace: 'shop', generation: 2 } as K8sObject['metadata'],
    spec: { parentRefs, rules: [{ backendRefs: [{ name: backend, port: 80 }] }] },
  };
}

function grpcRoute(name: string, parentRefs: object[]): K8sObject {
  return { apiVersion: 'gateway.networking.k8s.io/v1', kind: 'GRPCRoute', metadata: { name, namespace: 'shop' }, spec: { parentRefs, rules: [{ backendRefs: [{ name: 'web', port: 80 }] }] } };
}

const BOUND = { 'istio.io/use-waypoint': 'waypoint' };

function statusOf(objects: K8sObject[]) {
  const store = new ObjectStore();
  store.apply(objects.map((object) => ({ type: 'upsert' as const, object })));
  const problems: RouteProblem[] = [];
  compileHttpRoutes(store, 'cluster.local', (problem) => problems.push(problem));
  const reports = routeStatuses(store, problems);
  const summary = (name: string) =>
    reports
      .find((report) => report.name === name)!
      .parents.map((parent) => parent.conditions.map((condition) => `${condition.type}=${condition.status}/${condition.reason}: ${condition.message}`));
  return { reports, summary };
}

test('a route attached to a Service bound to a waypoint is Accepted and ResolvedRefs, per parent, with its generation', (t) => {
  const { reports, summary } = statusOf([
    namespaceObject('shop'),
    waypointGateway({ name: 'waypoint', namespace: 'shop' }),
    serviceObject({ name: 'web', namespace: 'shop', vip: '10.96.0.1', selector: { app: 'web' }, labels: BOUND }),
    httpRoute('ok', [{ group: '', kind: 'Service', name: 'web', port: 80 }]),
  ]);
  t.deepEqual(summary('ok'), [['Accepted=True/Accepted: Route was valid', 'ResolvedRefs=True/ResolvedRefs: All references resolved']]);
  const parent = reports[0]!.parents[0]!;
  t.deepEqual(parent.parentRef, { group: '', kind: 'Service', name: 'web', port: 80 });
  t.is(parent.controllerName, 'istio.io/gateway-controller');
  t.true(parent.conditions.every((condition) => condition.observedGeneration === 2));
});

test('a route that attaches to nothing says why: no such Service, no waypoint, a missing waypoint, a workload-only one', (t) => {
  const { summary } = statusOf([
    namespaceObject('shop'),
    waypointGateway({ name: 'workloads-only', namespace: 'shop', waypointFor: 'workload' }),
    serviceObject({ name: 'web', namespace: 'shop', vip: '10.96.0.1', selector: { app: 'web' } }),
    serviceObject({ name: 'lost', namespace: 'shop', vip: '10.96.0.2', selector: { app: 'lost' }, labels: { 'istio.io/use-waypoint': 'gone' } }),
    serviceObject({ name: 'wl', namespace: 'shop', vip: '10.96.0.3', selector: { app: 'wl' }, labels: { 'istio.io/use-waypoint': 'workloads-only' } }),
    httpRoute('missing', [{ group: '', kind: 'Service', name: 'nope' }]),
    httpRoute('unbound', [{ group: '', kind: 'Service', name: 'web' }]),
    httpRoute('lost', [{ group: '', kind: 'Service', name: 'lost' }]),
    httpRoute('wl', [{ group: '', kind: 'Service', name: 'wl' }]),
  ]);
  t.regex(summary('missing')[0]![0]!, /^Accepted=False\/NoMatchingParent: parent Service shop\/nope not found/);
  t.regex(summary('unbound')[0]![0]!, /^Accepted=False\/NoMatchingParent: Service shop\/web is not bound to a waypoint/);
  t.regex(summary('lost')[0]![0]!, /^Accepted=False\/NoMatchingParent: Service shop\/lost uses waypoint shop\/gone, which does not exist/);
  t.regex(summary('wl')[0]![0]!, /^Accepted=False\/NoMatchingParent: .*serves workload traffic only/);
});

test('a missing backend is ResolvedRefs False (BackendNotFound); a refused rule is Accepted False on every parent', (t) => {
  const { summary } = statusOf([
    namespaceObject('shop', BOUND),
    waypointGateway({ name: 'waypoint', namespace: 'shop' }),
    serviceObject({ name: 'web', namespace: 'shop', vip: '10.96.0.1', selector: { app: 'web' } }),
    httpRoute('nobackend', [{ group: '', kind: 'Service', name: 'web' }], 'ghost'),
    {
      ...httpRoute('refused', [{ group: '', kind: 'Service', name: 'web' }]),
      spec: { parentRefs: [{ group: '', kind: 'Service', name: 'web' }], rules: [{ filters: [{ type: 'NoSuchFilter' }], backendRefs: [{ name: 'web', port: 80 }] }] },
    },
  ]);
  t.deepEqual(summary('nobackend')[0]!.map((line) => line.split(':')[0]), ['Accepted=True/Accepted', 'ResolvedRefs=False/BackendNotFound']);
  t.regex(summary('nobackend')[0]![1]!, /ghost/);
  t.regex(summary('refused')[0]![0]!, /^Accepted=False\/UnsupportedValue/);
});

test('GRPCRoutes get their status from the same function', (t) => {
  const { reports, summary } = statusOf([
    namespaceObject('shop', BOUND),
    waypointGateway({ name: 'waypoint', namespace: 'shop' }),
    serviceObject({ name: 'web', namespace: 'shop', vip: '10.96.0.1', selector: { app: 'web' } }),
    grpcRoute('grpc', [{ group: '', kind: 'Service', name: 'web' }, { kind: 'Gateway', name: 'nope' }]),
  ]);
  t.is(reports[0]!.kind, 'GRPCRoute');
  t.deepEqual(summary('grpc').map((conditions) => conditions[0]!.split(':')[0]), ['Accepted=True/Accepted', 'Accepted=False/NoMatchingParent']);
});

test('the writer puts the status on the route in the API server, keeps other controllers\' entries, and follows changes', async (t) => {
  const api = await FakeKubeApiServer.start();
  t.teardown(() => api.close());
  const store = new ObjectStore();
  const source = new KubernetesSource({ kubeConfig: api.kubeConfig(), store, kinds: ['Namespace', 'Gateway', 'Service', 'HTTPRoute', 'GRPCRoute'], initialBackoffMs: 50 });
  t.teardown(() => source.stop());
  api.apply(namespaceObject('shop'));
  const foreign = { parentRef: { kind: 'Gateway', name: 'ingress' }, controllerName: 'example.com/other', conditions: [{ type: 'Accepted', status: 'True', reason: 'Accepted', message: 'theirs' }] };
  api.apply({ ...httpRoute('r', [{ group: '', kind: 'Service', name: 'web' }]), status: { parents: [foreign] } });
  await source.start();
  let problems: RouteProblem[] = [];
  store.onChanges(() => {
    problems = [];
    compileHttpRoutes(store, 'cluster.local', (problem) => problems.push(problem));
  });
  const writer = new RouteStatusWriter({ store, writer: new ApiServerWriter(api.kubeConfig()), problems: () => problems, clusterDomain: 'cluster.local', debounceMs: 10 });
  t.teardown(() => writer.stop());
  const parents = () => ((api.get('HTTPRoute', 'shop', 'r')?.status as { parents?: { controllerName: string; conditions: { type: string; status: string; reason: string }[] }[] } | undefined)?.parents ?? []);
  const ours = () => parents().find((parent) => parent.controllerName === 'istio.io/gateway-controller');
  await eventually(() => ours() !== undefined, 'the first status');
  t.is(ours()!.conditions[0]!.reason, 'NoMatchingParent');
  t.deepEqual(parents()[0], foreign, 'the other controller\'s entry stays');

  api.apply(waypointGateway({ name: 'waypoint', namespace: 'shop' }));
  api.apply(serviceObject({ name: 'web', namespace: 'shop', vip: '10.96.0.1', selector: { app: 'web' }, labels: BOUND }));
  await eventually(() => ours()?.conditions[0]?.status === 'True', 'Accepted once the Service is bound');
  const version = (object: K8sObject | undefined) => (object?.metadata as { resourceVersion?: string } | undefined)?.resourceVersion;
  await eventually(() => version(store.get('HTTPRoute', 'shop/r')) === version(api.get('HTTPRoute', 'shop', 'r')), 'the status write\'s own event');
  const writes = writer.writes;
  // An unrelated change later: the pass it causes looks at the route and does not write its status again.
  api.apply(serviceObject({ name: 'other', namespace: 'shop', vip: '10.96.0.9', selector: { app: 'other' } }));
  await eventually(() => store.get('Service', 'shop/other') !== undefined, 'the unrelated Service');
  const changes = store.changesApplied;
  await eventually(() => writer.consideredThrough >= changes, 'a pass after the unrelated change');
  t.is(writer.writes, writes);
});
