// Control plane scenarios, each run on both sources (the YAML directory and Kubernetes through the stand-in API
// server), observed by an xDS client over real gRPC + TLS as an agent would see them.
import test from 'ava';
import { enrollmentFromExtensions } from '../../shared/xds/enrollment-extension.ts';
import { bytesToIp } from '../../shared/xds/types.ts';
import { ADDRESS_TYPE_URL } from '../../shared/xds/protos.ts';
import {
  authorizationPolicyObject,
  CLUSTER_DRIVERS,
  eventually,
  namespaceObject,
  podObject,
  serviceObject,
  startRecordingClient,
  startTestControlPlane,
  waypointGateway,
  workloadNamed,
} from '../helpers/xds-harness.ts';

for (const makeDriver of CLUSTER_DRIVERS) {
  const source = makeDriver.name === 'yamlDirDriver' ? 'yaml-dir' : 'kubernetes';

  test(`[${source}] a pod added, relabelled and deleted reaches the agent as added, updated, removed`, async (t) => {
    const cluster = await makeDriver(t);
    await cluster.apply(namespaceObject('shop', { 'istio.io/dataplane-mode': 'ambient' }));
    await cluster.apply(serviceObject({ name: 'web', namespace: 'shop', vip: '10.96.0.10', selector: { app: 'web' } }));
    await cluster.apply(podObject({ name: 'web-1', namespace: 'shop', ip: '10.0.1.5', labels: { app: 'web' } }));
    const plane = await startTestControlPlane(t, { createSource: cluster.createSource });
    const agent = startRecordingClient(t, plane);
    await agent.client.synced;
    t.truthy(workloadNamed(agent, 'shop', 'web-1'), 'present after the initial sync');

    await cluster.apply(podObject({ name: 'web-2', namespace: 'shop', ip: '10.0.1.6', labels: { app: 'web' } }));
    await agent.until(() => workloadNamed(agent, 'shop', 'web-2') !== undefined, 'web-2 added');
    t.deepEqual(agent.calls.at(-1)!.added, ['Kubernetes//Pod/shop/web-2'], 'only the new pod is pushed');
    t.deepEqual(Object.keys(workloadNamed(agent, 'shop', 'web-2')!.services), ['shop/web.shop.svc.cluster.local']);

    // Relabel: no longer selected by the service, new canonical name.
    await cluster.apply(podObject({ name: 'web-2', namespace: 'shop', ip: '10.0.1.6', labels: { app: 'admin' } }));
    await agent.until(() => workloadNamed(agent, 'shop', 'web-2')?.canonicalName === 'admin', 'web-2 relabelled');
    t.deepEqual(workloadNamed(agent, 'shop', 'web-2')!.services, {}, 'the service no longer lists it');

    await cluster.remove('Pod', 'shop', 'web-2');
    await agent.until(() => workloadNamed(agent, 'shop', 'web-2') === undefined, 'web-2 removed');
    t.deepEqual(agent.calls.at(-1)!.removed, ['Kubernetes//Pod/shop/web-2']);
    t.truthy(workloadNamed(agent, 'shop', 'web-1'));
  });

  test(`[${source}] enrolling and unenrolling the namespace flips the workloads' enrollment; HBONE follows the redirection annotation`, async (t) => {
    const cluster = await makeDriver(t);
    await cluster.apply(namespaceObject('shop'));
    await cluster.apply(podObject({ name: 'web-1', namespace: 'shop', ip: '10.0.1.5' }));
    await cluster.apply(podObject({ name: 'opted-out', namespace: 'shop', ip: '10.0.1.7', labels: { 'istio.io/dataplane-mode': 'none' } }));
    const plane = await startTestControlPlane(t, { createSource: cluster.createSource });
    const agent = startRecordingClient(t, plane);
    await agent.client.synced;
    const web1 = () => workloadNamed(agent, 'shop', 'web-1');
    const enrolled = (name: string) => enrollmentFromExtensions(workloadNamed(agent, 'shop', name)?.extensions);
    t.is(web1()?.tunnelProtocol, 'NONE');
    t.is(enrolled('web-1'), false);

    await cluster.apply(namespaceObject('shop', { 'istio.io/dataplane-mode': 'ambient' }));
    await agent.until(() => enrolled('web-1') === true, 'web-1 enrolled');
    t.is(web1()?.tunnelProtocol, 'NONE', 'as istiod: not HBONE until the node agent has captured it');
    t.is(enrolled('opted-out'), false, 'a pod labelled none stays out');

    // The node agent captured it and said so with Istio's annotation: now peers may tunnel to it.
    const captured = podObject({ name: 'web-1', namespace: 'shop', ip: '10.0.1.5' });
    captured.metadata!.annotations = { 'ambient.istio.io/redirection': 'enabled' };
    await cluster.apply(captured);
    await agent.until(() => web1()?.tunnelProtocol === 'HBONE', 'web-1 HBONE once annotated');

    await cluster.apply(namespaceObject('shop'));
    await agent.until(() => enrolled('web-1') === false && web1()?.tunnelProtocol === 'NONE', 'web-1 unenrolled');
    t.pass();
  });

  test(`[${source}] a waypoint Gateway attaches to the services and workloads that ask for it`, async (t) => {
    const cluster = await makeDriver(t);
    await cluster.apply(namespaceObject('shop', { 'istio.io/dataplane-mode': 'ambient', 'istio.io/use-waypoint': 'waypoint' }));
    await cluster.apply(serviceObject({ name: 'web', namespace: 'shop', vip: '10.96.0.10', selector: { app: 'web' } }));
    await cluster.apply(podObject({ name: 'web-1', namespace: 'shop', ip: '10.0.1.5', labels: { app: 'web' } }));
    const plane = await startTestControlPlane(t, { createSource: cluster.createSource });
    const agent = startRecordingClient(t, plane);
    await agent.client.synced;
    const serviceName = 'shop/web.shop.svc.cluster.local';
    t.falsy(agent.addresses.get(serviceName)?.service?.waypoint, 'no waypoint before the Gateway exists');

    await cluster.apply(waypointGateway({ name: 'waypoint', namespace: 'shop', ip: '10.96.0.99' }));
    await agent.until(() => Boolean(agent.addresses.get(serviceName)?.service?.waypoint), 'service waypoint');
    const waypoint = agent.addresses.get(serviceName)!.service!.waypoint!;
    t.is(bytesToIp(waypoint.address!.address), '10.96.0.99');
    t.is(waypoint.hboneMtlsPort, 15008);
    t.falsy(workloadNamed(agent, 'shop', 'web-1')?.waypoint, 'a service waypoint does not capture workload traffic');

    await cluster.apply(waypointGateway({ name: 'waypoint', namespace: 'shop', ip: '10.96.0.99', waypointFor: 'all' }));
    await agent.until(() => Boolean(workloadNamed(agent, 'shop', 'web-1')?.waypoint), 'workload waypoint');
    t.pass();
  });

  test(`[${source}] a NACKed resource keeps the last good version and the next good version applies`, async (t) => {
    const cluster = await makeDriver(t);
    await cluster.apply(namespaceObject('shop'));
    await cluster.apply(podObject({ name: 'web-1', namespace: 'shop', ip: '10.0.1.5', labels: { app: 'web', version: 'v1' } }));
    const plane = await startTestControlPlane(t, { createSource: cluster.createSource });
    const agent = startRecordingClient(t, plane, {
      rejectAddress: (update) => (update.resource.workload?.canonicalRevision === 'broken' ? `workload ${update.name} has a broken revision` : undefined),
    });
    await agent.client.synced;
    const goodVersion = agent.client.versions(ADDRESS_TYPE_URL).get('Kubernetes//Pod/shop/web-1');

    await cluster.apply(podObject({ name: 'web-1', namespace: 'shop', ip: '10.0.1.5', labels: { app: 'web', version: 'broken' } }));
    await agent.until(() => agent.nacks.length > 0, 'the client to NACK');
    await eventually(() => plane.logger.records.some((record) => record.level === 'warn' && /NACK/.test(record.message)), 'the server to log the NACK');
    const logged = plane.logger.records.find((record) => /NACK/.test(record.message))!;
    t.regex(logged.message, /broken revision/);
    t.deepEqual((logged.object as { resources: string[] }).resources, ['Kubernetes//Pod/shop/web-1']);
    t.is(workloadNamed(agent, 'shop', 'web-1')?.canonicalRevision, 'v1', 'the last good version keeps serving');
    t.is(agent.client.versions(ADDRESS_TYPE_URL).get('Kubernetes//Pod/shop/web-1'), goodVersion);

    await cluster.apply(podObject({ name: 'web-1', namespace: 'shop', ip: '10.0.1.5', labels: { app: 'web', version: 'v3' } }));
    await agent.until(() => workloadNamed(agent, 'shop', 'web-1')?.canonicalRevision === 'v3', 'the next good version');
    t.pass();
  });

  test(`[${source}] a control plane restart: the agent keeps its state, resumes with its versions and gets only the diff`, async (t) => {
    const cluster = await makeDriver(t);
    await cluster.apply(namespaceObject('shop', { 'istio.io/dataplane-mode': 'ambient' }));
    for (let index = 1; index <= 5; index++) await cluster.apply(podObject({ name: `web-${index}`, namespace: 'shop', ip: `10.0.1.${index}`, labels: { app: 'web' } }));
    const first = await startTestControlPlane(t, { createSource: cluster.createSource });
    const agent = startRecordingClient(t, first);
    await agent.client.synced;
    t.is(agent.addresses.size, 5);

    await first.cp.close();
    await cluster.remove('Pod', 'shop', 'web-5');
    await cluster.apply(podObject({ name: 'web-6', namespace: 'shop', ip: '10.0.1.6', labels: { app: 'web' } }));
    t.is(agent.addresses.size, 5, 'stale config keeps serving while the control plane is away');
    const callsBefore = agent.calls.length;

    await startTestControlPlane(t, { createSource: cluster.createSource, port: first.cp.port, tokenFile: first.tokenFile });
    await agent.until(() => workloadNamed(agent, 'shop', 'web-6') !== undefined && workloadNamed(agent, 'shop', 'web-5') === undefined, 'the resync');
    const resync = agent.calls.slice(callsBefore).filter((call) => call.typeUrl === ADDRESS_TYPE_URL);
    t.deepEqual(resync.flatMap((call) => call.added), ['Kubernetes//Pod/shop/web-6'], 'unchanged workloads are not resent');
    t.deepEqual(resync.flatMap((call) => call.removed), ['Kubernetes//Pod/shop/web-5']);
    t.is(agent.addresses.size, 5);
  });
}

for (const makeDriver of CLUSTER_DRIVERS) {
  const source = makeDriver.name === 'yamlDirDriver' ? 'yaml-dir' : 'kubernetes';

  test(`[${source}] AuthorizationPolicies reach the agent as Authorization resources, selector ones listed on their workloads`, async (t) => {
    const cluster = await makeDriver(t);
    await cluster.apply(namespaceObject('shop', { 'istio.io/dataplane-mode': 'ambient' }));
    await cluster.apply(podObject({ name: 'db-1', namespace: 'shop', ip: '10.0.1.5', labels: { app: 'db' } }));
    await cluster.apply(podObject({ name: 'web-1', namespace: 'shop', ip: '10.0.1.6', labels: { app: 'web' } }));
    await cluster.apply(authorizationPolicyObject({ name: 'db-from-web', namespace: 'shop', selector: { app: 'db' } }));
    const plane = await startTestControlPlane(t, { createSource: cluster.createSource });
    const agent = startRecordingClient(t, plane);
    await agent.client.synced;

    const policy = agent.authorizations.get('shop/db-from-web');
    t.truthy(policy, 'the compiled policy is served');
    t.is(policy!.scope, 'WORKLOAD_SELECTOR');
    t.deepEqual(workloadNamed(agent, 'shop', 'db-1')!.authorizationPolicies, ['shop/db-from-web']);
    t.deepEqual(workloadNamed(agent, 'shop', 'web-1')!.authorizationPolicies, []);

    await cluster.apply(authorizationPolicyObject({ name: 'ns-wide', namespace: 'shop', action: 'DENY' }));
    await agent.until(() => agent.authorizations.has('shop/ns-wide'), 'the namespace policy');
    t.is(agent.authorizations.get('shop/ns-wide')!.scope, 'NAMESPACE');

    await cluster.remove('AuthorizationPolicy', 'shop', 'db-from-web');
    await agent.until(() => !agent.authorizations.has('shop/db-from-web'), 'the policy removed');
    await agent.until(() => workloadNamed(agent, 'shop', 'db-1')!.authorizationPolicies.length === 0, 'the workload no longer lists it');
    t.pass();
  });
}
