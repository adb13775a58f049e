// Delta xDS end to end over real gRPC + TLS: the control plane on a YAML directory, a client receiving Address
// resources as an agent would.
import test from 'ava';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import tls from 'node:tls';
import { bytesToIp } from '../../shared/xds/types.ts';
import { workloadFromXds } from '../../shared/mesh/xds-source.ts';
import { namespaceYaml, podYaml, serviceYaml, startRecordingClient, startTestControlPlane, tempDir, workloadNamed, writeManifest } from '../helpers/xds-harness.ts';

test('initial sync delivers workloads and services, and a pod added then deleted arrives as added then removed', async (t) => {
  const dir = await tempDir(t);
  await writeManifest(dir, 'ns.yaml', namespaceYaml('shop', { 'istio.io/dataplane-mode': 'ambient' }));
  await writeManifest(dir, 'pods.yaml', podYaml({ name: 'web-1', namespace: 'shop', ip: '10.0.1.5', labels: { app: 'web', version: 'v2' }, serviceAccount: 'web' }));
  await writeManifest(dir, 'svc.yaml', serviceYaml({ name: 'web', namespace: 'shop', vip: '10.96.0.10', selector: { app: 'web' } }));
  const plane = await startTestControlPlane(t, { dir });
  const agent = startRecordingClient(t, plane);
  await agent.client.synced;

  const workload = workloadNamed(agent, 'shop', 'web-1');
  t.truthy(workload, 'the pod is a workload after the first sync');
  t.is(workload!.tunnelProtocol, 'NONE', 'not HBONE until the node agent annotates it as captured (istiod\'s rule)');
  t.is(workloadFromXds(workload!).enrolled, true, 'but enrolled: the agent will capture it');
  t.is(workload!.serviceAccount, 'web');
  t.is(workload!.canonicalName, 'web');
  t.is(workload!.canonicalRevision, 'v2');
  t.deepEqual(workload!.addresses.map((bytes) => bytesToIp(bytes)), ['10.0.1.5']);
  t.deepEqual(workload!.services['shop/web.shop.svc.cluster.local']?.ports, [{ servicePort: 80, targetPort: 8080, appProtocol: 'UNKNOWN' }]);
  const service = agent.addresses.get('shop/web.shop.svc.cluster.local')?.service;
  t.truthy(service);
  t.deepEqual(service!.addresses.map((entry) => bytesToIp(entry.address)), ['10.96.0.10']);

  await writeManifest(dir, 'pod2.yaml', podYaml({ name: 'web-2', namespace: 'shop', ip: '10.0.1.6', labels: { app: 'web' } }));
  await agent.until(() => workloadNamed(agent, 'shop', 'web-2') !== undefined, 'web-2 to be added');
  const addCall = agent.calls.at(-1)!;
  t.deepEqual(addCall.added, ['Kubernetes//Pod/shop/web-2'], 'only the new pod is pushed');

  await rm(path.join(dir, 'pod2.yaml'));
  await agent.until(() => workloadNamed(agent, 'shop', 'web-2') === undefined, 'web-2 to be removed');
  t.deepEqual(agent.calls.at(-1)!.removed, ['Kubernetes//Pod/shop/web-2']);
  t.truthy(workloadNamed(agent, 'shop', 'web-1'), 'the other pod stays');
});

function servedSerial(port: number, rootCertPem: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, ca: rootCertPem, ALPNProtocols: ['h2'], servername: 'istiod.istio-system.svc', checkServerIdentity: () => undefined }, () => {
      const serial = socket.getPeerCertificate().serialNumber;
      socket.destroy();
      resolve(serial);
    });
    socket.on('error', reject);
  });
}

test('the serving certificate is the istiod identity and rotates without dropping the agents', async (t) => {
  const dir = await tempDir(t);
  await writeManifest(dir, 'ns.yaml', namespaceYaml('shop'));
  const plane = await startTestControlPlane(t, { dir });
  t.is(plane.cp.serverIdentity, 'spiffe://cluster.local/ns/istio-system/sa/istiod');
  const statuses: string[] = [];
  const agent = startRecordingClient(t, plane, { onStatus: (status) => statuses.push(status.state) });
  await agent.client.synced;
  const [stream, ...others] = plane.cp.xds.connections();
  t.truthy(stream);
  t.is(others.length, 0);
  const before = await servedSerial(plane.cp.port, plane.ca.rootCertPem);
  t.is(before.toLowerCase(), plane.cp.credentials.serialNumber.toLowerCase());

  await plane.cp.credentials.rotate();
  const after = await servedSerial(plane.cp.port, plane.ca.rootCertPem);
  t.not(after, before, 'new connections get the new certificate');

  await writeManifest(dir, 'pod.yaml', podYaml({ name: 'late', namespace: 'shop', ip: '10.0.1.9' }));
  await agent.until(() => workloadNamed(agent, 'shop', 'late') !== undefined, 'a push after the rotation');
  // The push came on the stream opened before the rotation: the client never lost it (a reconnect would also
  // deliver the pod, through a new stream's initial sync).
  t.deepEqual(plane.cp.xds.connections().map((connection) => connection.id), [stream!.id], 'the same server-side stream, and only it');
  t.deepEqual(statuses.filter((state) => state !== 'connected'), ['connecting'], `the client connected once and never dropped: ${statuses.join(', ')}`);
});

test('the serving certificate carries istiod\'s DNS names, so a client that checks the host name it dials (ztunnel) accepts it', async (t) => {
  const dir = await tempDir(t);
  await writeManifest(dir, 'ns.yaml', namespaceYaml('shop'));
  const plane = await startTestControlPlane(t, { dir });
  const handshake = (servername: string) =>
    new Promise<tls.PeerCertificate>((resolve, reject) => {
      // Node's default checkServerIdentity: the certificate must name `servername` in a DNS SAN.
      const socket = tls.connect({ host: '127.0.0.1', port: plane.cp.port, ca: plane.ca.rootCertPem, ALPNProtocols: ['h2'], servername }, () => {
        const certificate = socket.getPeerCertificate();
        socket.destroy();
        resolve(certificate);
      });
      socket.on('error', reject);
    });
  const certificate = await handshake('istiod.istio-system.svc');
  t.regex(certificate.subjectaltname ?? '', /URI:spiffe:\/\/cluster\.local\/ns\/istio-system\/sa\/istiod/);
  t.regex(certificate.subjectaltname ?? '', /DNS:istiod\.istio-system\.svc/);
  await t.notThrowsAsync(handshake('istio-pilot.istio-system.svc'));
  await t.throwsAsync(handshake('evil.example.com'), { code: 'ERR_TLS_CERT_ALTNAME_INVALID' });
});
