// A waypoint's credentials in Kubernetes mode, against the whole control plane as main.ts starts it over the stand-in
// API server: the waypoint's own service account token (bound to its node, audience istio-ca) opens an xDS stream and
// gets its own identity's certificate; it gets no other identity's, not even one whose pod runs on the same node
// (the node check alone would allow that); a service account with no waypoint Gateway gets neither. The control
// plane also makes the waypoint's Deployment when it knows its image (AMBIT_WAYPOINT_IMAGE).
import test from 'ava';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { status, type ServiceError } from '@grpc/grpc-js';
import { parseConfig, runControlPlane } from '../../controlplane/main.ts';
import { CaClient } from '../../shared/ca/ca-client.ts';
import { CertificateAuthority, spiffeId } from '../../shared/identity/index.ts';
import { controlPlaneIdentity, type XdsClientStatus } from '../../shared/xds/client.ts';
import { FakeKubeApiServer } from '../helpers/kube-api-server.ts';
import { eventually, namespaceObject, podObject, startRecordingClient, tempDir, waypointGateway } from '../helpers/xds-harness.ts';

test('a waypoint token reads the mesh over xDS and gets only its own identity; a token of no waypoint gets nothing', async (t) => {
  const api = await FakeKubeApiServer.start();
  t.teardown(() => api.close());
  api.apply(namespaceObject('shop', { 'istio.io/dataplane-mode': 'ambient' }));
  api.apply(waypointGateway({ name: 'waypoint', namespace: 'shop' }));
  // The waypoint's pod and an application pod on the same node.
  api.apply(podObject({ name: 'waypoint-abc', namespace: 'shop', ip: '10.0.0.9', node: 'node-1', serviceAccount: 'waypoint', labels: { 'istio.io/dataplane-mode': 'none' } }));
  api.apply(podObject({ name: 'server-1', namespace: 'shop', ip: '10.0.0.2', node: 'node-1', serviceAccount: 'server' }));
  const waypointToken = api.issueServiceAccountToken('shop', 'waypoint', 'node-1', ['istio-ca']);
  const serverToken = api.issueServiceAccountToken('shop', 'server', 'node-1', ['istio-ca']);
  const kubeconfig = path.join(await tempDir(t), 'kubeconfig');
  await writeFile(kubeconfig, api.kubeConfigYaml());
  const cp = await runControlPlane(parseConfig(['--source', 'kubernetes', '--kubeconfig', kubeconfig, '--listen', '127.0.0.1:0', '--log-level', 'silent'], { AMBIT_WAYPOINT_IMAGE: 'example.com/ambit:test' }));
  t.teardown(() => cp.close());
  const secret = api.secrets.get('istio-system/istio-ca-secret') as { data: Record<string, string> };
  const ca = await CertificateAuthority.load({
    trustDomain: 'cluster.local',
    certPem: Buffer.from(secret.data['ca-cert.pem']!, 'base64').toString(),
    keyPem: Buffer.from(secret.data['ca-key.pem']!, 'base64').toString(),
  });

  // xDS: the waypoint's stream is served; the server's is refused.
  const waypoint = startRecordingClient(t, { address: `127.0.0.1:${cp.port}`, ca, cp }, { token: waypointToken });
  await waypoint.client.synced;
  t.true(waypoint.addresses.size > 0, 'the waypoint received the Address resources');
  const statuses: XdsClientStatus[] = [];
  startRecordingClient(t, { address: `127.0.0.1:${cp.port}`, ca, cp }, { token: serverToken, onStatus: (entry) => statuses.push(entry), initialBackoffMs: 1000 });
  await eventually(() => statuses.some((entry) => entry.state === 'disconnected'), 'the refusal of a workload token');
  t.regex((statuses.find((entry) => entry.state === 'disconnected') as { error: string }).error, /may not read the mesh configuration/);

  // CA: its own identity, and nothing else.
  const rootPem = ca.rootCertPem;
  const client = (token: string) => {
    const created = new CaClient({ address: `127.0.0.1:${cp.port}`, rootsPem: [rootPem], token, serverIdentity: controlPlaneIdentity('cluster.local') });
    t.teardown(() => created.close());
    return created;
  };
  const own = spiffeId('cluster.local', 'shop', 'waypoint');
  t.is((await client(waypointToken).fetch(own)).identity.uri, own.uri);
  const other = await t.throwsAsync(client(waypointToken).fetch(spiffeId('cluster.local', 'shop', 'server')));
  t.is((other as ServiceError).code, status.PERMISSION_DENIED);
  t.regex(other!.message, /may get only its own identity/);
  const notWaypoint = await t.throwsAsync(client(serverToken).fetch(spiffeId('cluster.local', 'shop', 'server')));
  t.is((notWaypoint as ServiceError).code, status.PERMISSION_DENIED, 'a workload token is no node agent\'s');

  // The Gateway removed: its service account is no waypoint's any more.
  api.remove('Gateway', 'shop', 'waypoint');
  await eventually(() => cp.store.get('Gateway', 'shop/waypoint') === undefined, 'the Gateway deletion');
  const gone = await t.throwsAsync(client(waypointToken).fetch(own));
  t.is((gone as ServiceError).code, status.PERMISSION_DENIED);

  // The deployment controller ran with the control plane (AMBIT_WAYPOINT_IMAGE set).
  await eventually(() => api.get('Deployment', 'shop', 'waypoint') !== undefined, 'the waypoint Deployment');
  const deployment = api.get('Deployment', 'shop', 'waypoint') as { spec: { template: { spec: { containers: { image: string; env: { name: string; value?: string }[] }[] } } } } | undefined;
  t.is(deployment?.spec.template.spec.containers[0]?.image, 'example.com/ambit:test');
  t.is(deployment?.spec.template.spec.containers[0]?.env.find((entry) => entry.name === 'AMBIT_XDS_ADDRESS')?.value, 'ambit-controlplane.istio-system.svc:15012');
});
