import test from 'ava';
import { Forwarder } from '../../agent/dns/forwarder.ts';
import { MeshServiceRecords } from '../../agent/dns/mesh-records.ts';
import { DnsServer } from '../../agent/dns/server.ts';
import { plainSocketFactory } from '../../agent/inpod/socket-factory.ts';
import { MeshState } from '../../shared/mesh/mesh-state.ts';
import type { Service } from '../../shared/mesh/service.ts';
import type { Workload } from '../../shared/mesh/workload.ts';
import { answerData, decode, query } from '../helpers/dns.ts';

const DB = 'shop/db.shop.svc.cluster.local';

function service(overrides: Partial<Service> = {}): Service {
  return {
    name: 'db', namespace: 'shop', hostname: 'db.shop.svc.cluster.local', vips: [], ports: [{ servicePort: 80, targetPort: 8080 }],
    subjectAltNames: [], ipFamilies: 'DUAL', ...overrides,
  };
}

function pod(name: string, addresses: string[], overrides: Partial<Workload> = {}): Workload {
  return {
    uid: name, name, namespace: 'shop', serviceAccount: 'db', trustDomain: 'cluster.local', node: 'node-1', addresses,
    tunnelProtocol: 'HBONE', captureReason: 'test', canonicalName: 'db', canonicalRevision: 'latest', workloadName: 'db',
    services: { [DB]: [{ servicePort: 80, targetPort: 8080 }] }, ...overrides,
  };
}

test('VIPs on the default network for a Service with VIPs; unknown hostname undefined', (t) => {
  const state = new MeshState();
  state.upsertService(service({ vips: [{ network: '', address: '10.96.0.5' }, { network: 'west', address: '10.96.9.5' }, { network: '', address: 'fd00::5' }] }));
  const records = new MeshServiceRecords(state);
  t.deepEqual(records.addressesOf('db.shop.svc.cluster.local'), ['10.96.0.5', 'fd00::5']);
  t.is(records.addressesOf('nosuch.shop.svc.cluster.local'), undefined);
});

test('headless: one address per family per endpoint, UNHEALTHY endpoints and a family the Service excludes left out', (t) => {
  const state = new MeshState();
  state.upsertService(service());
  state.upsert(pod('db-0', ['10.0.1.5', 'fd00:1::5', '10.0.1.99']));
  state.upsert(pod('db-1', ['10.0.2.6'], { status: 'UNHEALTHY' }));
  const records = new MeshServiceRecords(state);
  t.deepEqual(records.addressesOf('db.shop.svc.cluster.local'), ['10.0.1.5', 'fd00:1::5']);
  state.upsertService(service({ ipFamilies: 'IPV4_ONLY' }));
  t.deepEqual(records.addressesOf('db.shop.svc.cluster.local'), ['10.0.1.5'], 'a change to the state is seen at once (cache dropped)');
  state.upsert(pod('db-1', ['10.0.2.6']));
  t.deepEqual(records.addressesOf('db.shop.svc.cluster.local'), ['10.0.1.5', '10.0.2.6'], 'the endpoint became healthy');
  state.remove('db-0');
  state.remove('db-1');
  t.deepEqual(records.addressesOf('db.shop.svc.cluster.local'), [], 'a headless Service without endpoints exists but has no addresses');
});

test('the DNS server answers from its response cache only until the mesh state changes', async (t) => {
  const state = new MeshState();
  state.upsertService(service({ vips: [{ network: '', address: '10.96.0.5' }] }));
  const server = new DnsServer({ domain: 'cluster.local', records: new MeshServiceRecords(state), forwarder: new Forwarder({ upstreams: [] }) });
  const client = { namespace: 'shop', sockets: plainSocketFactory() };
  const ask = async (id: number): Promise<string[]> => {
    const reply = await server.answer(query('db', 'A', { id }), 'udp', client);
    const decoded = decode(reply!);
    t.is(decoded.id, id, 'the cached response carries the new query\'s id');
    return answerData(decoded, 'A');
  };
  t.deepEqual(await ask(1), ['10.96.0.5']);
  t.deepEqual(await ask(2), ['10.96.0.5']);
  state.upsertService(service({ vips: [{ network: '', address: '10.96.0.6' }] }));
  t.deepEqual(await ask(3), ['10.96.0.6']);
  state.removeService(DB);
  // No longer the mesh's: forwarded, and this server has no upstream to ask.
  t.is(decode((await server.answer(query('db.shop.svc.cluster.local', 'A', { id: 4 }), 'udp', client))!).rcode, 'SERVFAIL');
});
