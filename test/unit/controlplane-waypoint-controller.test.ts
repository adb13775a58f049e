// The waypoint deployment controller against the stand-in API server (test/helpers/kube-api-server.ts): a Gateway of
// class istio-waypoint becomes a ServiceAccount, Service and Deployment owned by it, written over HTTP by the
// control plane's writer; the Gateway's status gets the Service's cluster IP and Accepted/Programmed with reasons;
// the controller's own status write does not make it write again.
import test from 'ava';
import { ApiServerWriter } from '../../controlplane/kube-writer.ts';
import { KubernetesSource } from '../../controlplane/sources/kubernetes.ts';
import { ObjectStore } from '../../controlplane/store.ts';
import { WaypointController } from '../../controlplane/waypoint-controller.ts';
import type { K8sObject } from '../../shared/k8s/objects.ts';
import { FakeKubeApiServer } from '../helpers/kube-api-server.ts';
import { eventually } from '../helpers/xds-harness.ts';

const SETTINGS = { image: 'ghcr.io/ambit/ambit:test', xdsAddress: 'ambit-controlplane.istio-system.svc:15012', trustDomain: 'cluster.local', appDir: '/opt/ambit' };

function gateway(name: string, listener = { name: 'mesh', port: 15008, protocol: 'HBONE' }, className = 'istio-waypoint'): K8sObject {
  return {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'Gateway',
    metadata: { name, namespace: 'shop', generation: 1, labels: { 'istio.io/waypoint-for': 'service' } } as K8sObject['metadata'],
    spec: { gatewayClassName: className, listeners: [listener] },
  };
}

async function start(t: { teardown(fn: () => unknown): void }) {
  const api = await FakeKubeApiServer.start();
  t.teardown(() => api.close());
  const store = new ObjectStore();
  const source = new KubernetesSource({ kubeConfig: api.kubeConfig(), store, kinds: ['Gateway', 'Service'], initialBackoffMs: 50 });
  t.teardown(() => source.stop());
  await source.start();
  const controller = new WaypointController({ store, writer: new ApiServerWriter(api.kubeConfig()), settings: SETTINGS, clusterDomain: 'cluster.local', retryInitialMs: 50 });
  t.teardown(() => controller.stop());
  return { api, store, controller };
}

interface DeploymentShape {
  metadata: { ownerReferences: { kind: string; name: string; uid: string }[]; labels: Record<string, string> };
  spec: {
    selector: { matchLabels: Record<string, string> };
    template: {
      metadata: { labels: Record<string, string> };
      spec: {
        serviceAccountName: string;
        containers: {
          ports: { containerPort: number }[];
          env: { name: string; value?: string; valueFrom?: { fieldRef: { fieldPath: string } } }[];
          securityContext: { runAsNonRoot: boolean; runAsUser: number; readOnlyRootFilesystem: boolean; allowPrivilegeEscalation: boolean; capabilities: { drop: string[]; add?: string[] } };
          volumeMounts: { name: string; mountPath: string }[];
        }[];
        volumes: { name: string; projected?: { sources: { serviceAccountToken?: { audience: string; path: string } }[] } }[];
      };
    };
  };
}

test('a waypoint Gateway gets a ServiceAccount, Service and Deployment it owns, and an address and conditions in its status', async (t) => {
  const { api, controller } = await start(t);
  const stored = api.apply(gateway('waypoint'));
  const uid = stored.metadata?.uid;
  await eventually(() => api.get('Deployment', 'shop', 'waypoint') !== undefined, 'the Deployment');
  for (const kind of ['ServiceAccount', 'Service', 'Deployment']) {
    const object = api.get(kind, 'shop', 'waypoint') as unknown as DeploymentShape;
    t.deepEqual(object.metadata.ownerReferences.map((owner) => `${owner.kind}/${owner.name}/${owner.uid}`), [`Gateway/waypoint/${uid}`], `${kind} is owned by the Gateway`);
    t.is(object.metadata.labels['gateway.networking.k8s.io/gateway-name'], 'waypoint');
  }
  const deployment = api.get('Deployment', 'shop', 'waypoint') as unknown as DeploymentShape;
  const pod = deployment.spec.template;
  t.like(pod.metadata.labels, { 'istio.io/dataplane-mode': 'none', 'gateway.networking.k8s.io/gateway-name': 'waypoint' });
  t.is(pod.spec.serviceAccountName, 'waypoint');
  const container = pod.spec.containers[0]!;
  t.deepEqual(container.ports.map((port) => port.containerPort).sort(), [15008, 15020, 15021]);
  t.like(container.securityContext, { runAsNonRoot: true, runAsUser: 1337, readOnlyRootFilesystem: true, allowPrivilegeEscalation: false });
  t.deepEqual(container.securityContext.capabilities, { drop: ['ALL'] });
  const env = new Map(container.env.map((entry) => [entry.name, entry.value ?? `fieldRef:${entry.valueFrom?.fieldRef.fieldPath}`]));
  t.is(env.get('AMBIT_WAYPOINT_NAME'), 'waypoint');
  t.is(env.get('AMBIT_NODE_NAME'), 'fieldRef:spec.nodeName');
  t.is(env.get('AMBIT_XDS_ADDRESS'), SETTINGS.xdsAddress);
  // Sized for a proxy's memory (waypoint/config.ts): the compile cache on the writable /tmp, V8's small nursery, glibc's 2 arenas.
  t.is(env.get('NODE_COMPILE_CACHE'), '/tmp/node-compile-cache');
  t.true(container.volumeMounts.some((mount) => mount.mountPath === '/tmp'), 'the compile cache has a writable place');
  t.regex(env.get('NODE_OPTIONS') ?? '', /--max-semi-space-size=4\b/);
  t.is(env.get('GLIBC_TUNABLES'), 'glibc.malloc.arena_max=2');
  const tokenFile = env.get('AMBIT_TOKEN_FILE')!;
  const tokenVolume = pod.spec.volumes.find((volume) => volume.projected);
  t.is(tokenVolume?.projected?.sources[0]?.serviceAccountToken?.audience, 'istio-ca', 'the token is for the control plane, not the API server');
  const mount = container.volumeMounts.find((entry) => entry.name === tokenVolume?.name);
  t.is(`${mount?.mountPath}/${tokenVolume?.projected?.sources[0]?.serviceAccountToken?.path}`, tokenFile);

  const service = api.get('Service', 'shop', 'waypoint') as { spec: { clusterIP: string; selector: Record<string, string>; ports: { port: number }[] } };
  t.deepEqual(service.spec.selector, deployment.spec.selector.matchLabels);
  t.deepEqual(service.spec.ports.map((port) => port.port).sort(), [15008, 15021]);
  await eventually(() => (api.get('Gateway', 'shop', 'waypoint')?.status as { addresses?: unknown } | undefined)?.addresses !== undefined, 'the Gateway status');
  const status = api.get('Gateway', 'shop', 'waypoint')!.status as { addresses: { type: string; value: string }[]; conditions: { type: string; status: string; reason: string; observedGeneration: number; lastTransitionTime: string }[] };
  t.deepEqual(status.addresses, [{ type: 'IPAddress', value: service.spec.clusterIP }]);
  t.deepEqual(status.conditions.map((condition) => `${condition.type}=${condition.status}/${condition.reason}/${condition.observedGeneration}`), ['Accepted=True/Accepted/1', 'Programmed=True/Programmed/1']);
  t.true(status.conditions.every((condition) => /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/.test(condition.lastTransitionTime)));

  // The status write came back as a Gateway event: nothing more is written for it. A later, unrelated Gateway is
  // reconciled after that event, so the first one had its chance to loop.
  await controller.idle();
  const writes = controller.writes;
  const statusWrites = api.statusWrites.length;
  api.apply(gateway('other'));
  await eventually(() => api.statusWrites.includes('Gateway shop/other'), 'the second Gateway status');
  await controller.idle();
  t.is(controller.writes, writes + 4, 'three objects and one status for the new Gateway, nothing again for the first');
  t.is(api.statusWrites.length, statusWrites + 1);
});

test('a Gateway of another class is left alone; a waypoint Gateway without the HBONE listener is not accepted', async (t) => {
  const { api, controller } = await start(t);
  api.apply(gateway('ingress', { name: 'http', port: 80, protocol: 'HTTP' }, 'istio'));
  api.apply(gateway('broken', { name: 'http', port: 80, protocol: 'HTTP' }));
  await eventually(() => api.statusWrites.includes('Gateway shop/broken'), 'the broken Gateway status');
  await controller.idle();
  t.is(api.get('Deployment', 'shop', 'ingress'), undefined, 'another class is not ours');
  t.is(api.get('Gateway', 'shop', 'ingress')?.status, undefined);
  const conditions = (api.get('Gateway', 'shop', 'broken')!.status as { conditions: { type: string; status: string; reason: string; message: string }[] }).conditions;
  t.deepEqual(conditions.map((condition) => `${condition.type}=${condition.status}/${condition.reason}`), ['Accepted=False/UnsupportedValue', 'Programmed=False/Invalid']);
  t.regex(conditions[0]!.message, /HBONE/);
});

test('a write the API server refuses is retried, and succeeds once it answers again', async (t) => {
  const { api } = await start(t);
  api.apply(gateway('waypoint'));
  // The source's watch is up: an outage now fails the controller's writes, not the informer's first list.
  api.fail(503);
  await new Promise((resolve) => setTimeout(resolve, 200));
  t.is(api.get('Deployment', 'shop', 'waypoint'), undefined);
  api.recover();
  await eventually(() => api.get('Deployment', 'shop', 'waypoint') !== undefined, 'the Deployment after the outage');
  t.pass();
});
