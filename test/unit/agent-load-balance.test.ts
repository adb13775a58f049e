/**
 * Endpoint choice for a connection to a Service VIP (shared/mesh/load-balance.ts), as ztunnel's load_balance:
 * health, ports (named target ports per endpoint), address family, internalTrafficPolicy Local (STRICT by node),
 * PreferClose (FAILOVER by locality), and the reasons given when no endpoint qualifies.
 */
import test from 'ava';
import { NoHealthyUpstreamError, pickEndpoint } from '../../shared/mesh/load-balance.ts';
import type { LoadBalancing, Service, ServiceEndpoint, ServicePort } from '../../shared/mesh/service.ts';
import type { Locality, Workload } from '../../shared/mesh/workload.ts';

const LOCAL: LoadBalancing = { routingPreference: ['NODE'], mode: 'STRICT', healthPolicy: 'ONLY_HEALTHY' };
const PREFER_CLOSE: LoadBalancing = { routingPreference: ['NETWORK', 'REGION', 'ZONE', 'SUBZONE'], mode: 'FAILOVER', healthPolicy: 'ONLY_HEALTHY' };

function service(loadBalancing?: LoadBalancing): Service {
  const result: Service = {
    name: 'web', namespace: 'shop', hostname: 'web.shop.svc.cluster.local', vips: [{ network: '', address: '10.96.0.10' }, { network: '', address: 'fd00:96::10' }],
    ports: [{ servicePort: 80, targetPort: 8080 }, { servicePort: 90, targetPort: 0 }], subjectAltNames: [], ipFamilies: 'DUAL',
  };
  if (loadBalancing) result.loadBalancing = loadBalancing;
  return result;
}

function endpoint(name: string, options: { node?: string; addresses?: string[]; unhealthy?: boolean; ports?: ServicePort[]; locality?: Locality } = {}): ServiceEndpoint {
  const workload: Workload = {
    uid: name, name, namespace: 'shop', serviceAccount: 'web', trustDomain: 'cluster.local', node: options.node ?? 'node-1', addresses: options.addresses ?? ['10.0.1.5', 'fd00::1:5'],
    tunnelProtocol: 'HBONE', captureReason: 'test', canonicalName: 'web', canonicalRevision: 'latest', workloadName: 'web', status: options.unhealthy ? 'UNHEALTHY' : 'HEALTHY',
  };
  if (options.locality) workload.locality = options.locality;
  return { workload, ports: options.ports ?? [{ servicePort: 80, targetPort: 8080 }] };
}

const client = endpoint('client', { node: 'node-1', locality: { region: 'eu', zone: 'eu-a', subzone: '' } }).workload;

function picks(svc: Service, endpoints: ServiceEndpoint[], port = 80, vip = '10.96.0.10', runs = 200): Map<string, number> {
  const counts = new Map<string, number>();
  for (let run = 0; run < runs; run++) {
    const picked = pickEndpoint(client, svc, endpoints, port, vip);
    counts.set(picked.endpoint.workload.name, (counts.get(picked.endpoint.workload.name) ?? 0) + 1);
  }
  return counts;
}

test('the endpoint\'s address of the VIP\'s family and its target port', (t) => {
  const endpoints = [endpoint('a', { addresses: ['10.0.1.5', 'fd00::1:5'], ports: [{ servicePort: 80, targetPort: 8080 }, { servicePort: 90, targetPort: 9091 }] })];
  t.like(pickEndpoint(client, service(), endpoints, 80, '10.96.0.10'), { address: '10.0.1.5', targetPort: 8080 });
  t.like(pickEndpoint(client, service(), endpoints, 80, 'fd00:96::10'), { address: 'fd00::1:5', targetPort: 8080 });
  t.like(pickEndpoint(client, service(), endpoints, 90, '10.96.0.10'), { targetPort: 9091 }, 'named target port resolved on this endpoint');
});

test('every healthy endpoint is chosen, uniformly enough; unhealthy ones never', (t) => {
  const counts = picks(service(), [endpoint('a'), endpoint('b'), endpoint('c'), endpoint('sick', { unhealthy: true })], 80, '10.96.0.10', 600);
  t.false(counts.has('sick'), 'UNHEALTHY is never chosen');
  for (const name of ['a', 'b', 'c']) t.true((counts.get(name) ?? 0) > 100, `${name} chosen ${counts.get(name)} of 600`);
});

test('endpoints without the port or the family are passed over', (t) => {
  const endpoints = [endpoint('v4only', { addresses: ['10.0.1.6'] }), endpoint('noNamed', { ports: [{ servicePort: 80, targetPort: 8080 }] }), endpoint('named', { ports: [{ servicePort: 90, targetPort: 9091 }] })];
  t.deepEqual([...picks(service(), endpoints, 90).keys()], ['named'], 'only the endpoint that declares the named port serves port 90');
  t.false(picks(service(), endpoints, 80, 'fd00:96::10').has('v4only'), 'an IPv6 VIP goes to an endpoint with an IPv6 address');
});

test('internalTrafficPolicy Local: only endpoints on the client\'s node, none elsewhere even if healthy', (t) => {
  const endpoints = [endpoint('here', { node: 'node-1' }), endpoint('there', { node: 'node-2' })];
  t.deepEqual([...picks(service(LOCAL), endpoints).keys()], ['here']);
  const error = t.throws(() => pickEndpoint(client, service(LOCAL), [endpoint('there', { node: 'node-2' })], 80, '10.96.0.10'), { instanceOf: NoHealthyUpstreamError });
  t.regex(error.message, /web\.shop\.svc\.cluster\.local port 80; of 1 endpoint: 1 excluded by the service's load balancing \(NODE STRICT\)/);
  t.is(error.responseFlags, 'UH');
});

test('PreferClose: the closest locality present wins, and traffic fails over when it has no healthy endpoint', (t) => {
  const sameZone = endpoint('sameZone', { locality: { region: 'eu', zone: 'eu-a', subzone: '' } });
  const sameRegion = endpoint('sameRegion', { locality: { region: 'eu', zone: 'eu-b', subzone: '' } });
  const far = endpoint('far', { locality: { region: 'us', zone: 'us-a', subzone: '' } });
  t.deepEqual([...picks(service(PREFER_CLOSE), [far, sameRegion, sameZone]).keys()], ['sameZone']);
  const sickZone = endpoint('sameZone', { unhealthy: true, locality: { region: 'eu', zone: 'eu-a', subzone: '' } });
  t.deepEqual([...picks(service(PREFER_CLOSE), [far, sameRegion, sickZone]).keys()], ['sameRegion'], 'fails over to the same region');
  t.deepEqual([...picks(service(PREFER_CLOSE), [far]).keys()], ['far'], 'and then anywhere');
  t.deepEqual([...picks(service(), [far, sameZone]).keys()].sort(), ['far', 'sameZone'], 'without load balancing, locality does not matter');
});

test('no endpoint: the error says which service and port and why each endpoint was passed over', (t) => {
  t.regex(t.throws(() => pickEndpoint(client, service(), [], 80, '10.96.0.10'))!.message, /^no healthy upstream: service web\.shop\.svc\.cluster\.local port 80; it has no endpoints$/);
  const error = t.throws(() => pickEndpoint(client, service(), [endpoint('a', { unhealthy: true }), endpoint('b', { unhealthy: true }), endpoint('c', { addresses: ['10.0.1.9'] })], 80, 'fd00:96::10'), { instanceOf: NoHealthyUpstreamError });
  t.is(error.message, 'no healthy upstream: service web.shop.svc.cluster.local port 80; of 3 endpoints: 2 unhealthy, 1 without an address of this family');
  t.deepEqual(error.passedOver, { unhealthy: 2, noPort: 0, otherFamily: 1, notLocal: 0 });
  t.regex(t.throws(() => pickEndpoint(client, service(), [endpoint('a')], 81, '10.96.0.10'))!.message, /has no port 81; of 1 endpoint: 1 without port 81/);
});

test('healthPolicy ALLOW_ALL lets an unhealthy endpoint take traffic', (t) => {
  const allowAll: LoadBalancing = { routingPreference: [], mode: 'UNSPECIFIED_MODE', healthPolicy: 'ALLOW_ALL' };
  t.is(pickEndpoint(client, service(allowAll), [endpoint('sick', { unhealthy: true })], 80, '10.96.0.10').endpoint.workload.name, 'sick');
});
