// Wire compatibility with Istio's protos: field numbers of a few Workload fields, checked on the encoded bytes.
import test from 'ava';
import { messageType, TO_OBJECT_OPTIONS } from '../../shared/xds/protos.ts';
import { bytesToIp, ipToBytes, type XdsAddress } from '../../shared/xds/types.ts';
import { serviceFromXds, workloadFromXds } from '../../shared/mesh/xds-source.ts';

test('Workload fields carry Istio field numbers on the wire', (t) => {
  const workloadType = messageType('istio.workload.Workload');
  const encode = (fields: object) => Buffer.from(workloadType.encode(workloadType.fromObject(fields)).finish());
  // uid = 20, length-delimited: tag (20 << 3) | 2 = 162 = varint a2 01.
  t.deepEqual(encode({ uid: 'u' }), Buffer.from([0xa2, 0x01, 0x01, 0x75]));
  // tunnel_protocol = 5, varint: tag 0x28; HBONE = 1.
  t.deepEqual(encode({ tunnelProtocol: 'HBONE' }), Buffer.from([0x28, 0x01]));
  // addresses = 3 (bytes): tag 0x1a, length 4, the raw IPv4 bytes.
  t.deepEqual(encode({ addresses: [ipToBytes('10.0.0.7')] }), Buffer.from([0x1a, 0x04, 10, 0, 0, 7]));
  // services = 22 (map): tag (22 << 3) | 2 = 0xb2 0x01.
  t.deepEqual(encode({ services: { 'ns/h': { ports: [] } } }).subarray(0, 2), Buffer.from([0xb2, 0x01]));
  // service_account = 7, cluster_id = 18.
  t.deepEqual(encode({ serviceAccount: 's' }), Buffer.from([0x3a, 0x01, 0x73]));
  t.deepEqual(encode({ clusterId: 'c' }), Buffer.from([0x92, 0x01, 0x01, 0x63]));
});

test('Address is a oneof of workload (1) and service (2), and decodes back to the types the agent reads', (t) => {
  const addressType = messageType('istio.workload.Address');
  const bytes = addressType.encode({ service: { name: 'web', namespace: 'shop', hostname: 'web.shop.svc.cluster.local', addresses: [{ network: '', address: ipToBytes('10.96.0.1') }] } }).finish();
  t.is(bytes[0], (2 << 3) | 2);
  const decoded = addressType.toObject(addressType.decode(bytes), TO_OBJECT_OPTIONS) as { type: string; service: { addresses: { address: Buffer }[] } };
  t.is(decoded.type, 'service');
  t.is(bytesToIp(decoded.service.addresses[0]!.address), '10.96.0.1');
});

test('a Service as istiod encodes it (canonical = 11 as a bool, Port.app_protocol = 3, dns_connect_strategy = 4) decodes', (t) => {
  // Bytes written by hand from Istio's field numbers, not by our own proto, so a wrong field type here shows.
  const varint = (value: number): number[] => (value < 0x80 ? [value] : [(value & 0x7f) | 0x80, ...varint(value >>> 7)]);
  const field = (number: number, wireType: number): number[] => varint((number << 3) | wireType);
  const text = (number: number, value: string): number[] => [...field(number, 2), value.length, ...Buffer.from(value)];
  const message = (number: number, body: number[]): number[] => [...field(number, 2), ...varint(body.length), ...body];
  const port = [...field(1, 0), 80, ...field(2, 0), ...varint(8080), ...field(3, 0), 2 /* HTTP2 */];
  const loadBalancing = [...field(1, 0), 4 /* NODE */, ...field(2, 0), 1 /* STRICT */, ...field(4, 0), 1 /* FIRST_HEALTHY_RACE */];
  const service = [
    ...text(1, 'web'), ...text(2, 'shop'), ...text(3, 'web.shop.svc.cluster.local'), ...message(5, port), ...message(8, loadBalancing),
    ...field(11, 0), 1 /* canonical: true */, ...field(12, 0), 1 /* ingress_use_waypoint */,
  ];
  const addressType = messageType('istio.workload.Address');
  const decoded = addressType.toObject(addressType.decode(Buffer.from(message(2, service))), TO_OBJECT_OPTIONS) as XdsAddress;
  t.is(decoded.service?.canonical, true);
  t.is(decoded.service?.ingressUseWaypoint, true);
  t.deepEqual(decoded.service?.ports, [{ servicePort: 80, targetPort: 8080, appProtocol: 'HTTP2' }]);
  t.like(decoded.service?.loadBalancing, { routingPreference: ['NODE'], mode: 'STRICT' });
  const agentView = serviceFromXds(decoded.service!);
  t.is(agentView.canonical, true);
  t.deepEqual(agentView.ports, [{ servicePort: 80, targetPort: 8080, appProtocol: 'HTTP2' }]);
  // A workload whose tunnel_protocol is LEGACY_ISTIO_MTLS (2) decodes too, and is not sent HBONE.
  const workload = [...text(20, 'u1'), ...text(1, 'p'), ...text(2, 'shop'), ...field(5, 0), 2];
  const legacy = addressType.toObject(addressType.decode(Buffer.from(message(1, workload))), TO_OBJECT_OPTIONS) as XdsAddress;
  t.is(legacy.workload?.tunnelProtocol, 'LEGACY_ISTIO_MTLS');
  t.is(workloadFromXds(legacy.workload!).tunnelProtocol, 'NONE');
});

test('DeltaDiscoveryRequest and Response use Envoy field numbers', (t) => {
  const request = messageType('envoy.service.discovery.v3.DeltaDiscoveryRequest');
  // initial_resource_versions = 5 (map), response_nonce = 6, error_detail = 7.
  t.is(request.encode({ responseNonce: 'n' }).finish()[0], (6 << 3) | 2);
  t.is(request.encode({ initialResourceVersions: { a: 'v' } }).finish()[0], (5 << 3) | 2);
  t.is(request.encode({ errorDetail: { code: 13, message: 'x' } }).finish()[0], (7 << 3) | 2);
  const response = messageType('envoy.service.discovery.v3.DeltaDiscoveryResponse');
  t.is(response.encode({ removedResources: ['x'] }).finish()[0], (6 << 3) | 2);
  t.is(response.encode({ nonce: 'x' }).finish()[0], (5 << 3) | 2);
});

test('IPv6 addresses round-trip through their 16 raw bytes', (t) => {
  for (const ip of ['fd00::1', '2001:db8::1:0:0:2', '::1']) t.is(bytesToIp(ipToBytes(ip)), ip);
  t.is(bytesToIp(ipToBytes('2001:db8:0:0:1::2')), '2001:db8::1:0:0:2', 'printed in the canonical form');
  t.is(ipToBytes('fd00::1').length, 16);
});
