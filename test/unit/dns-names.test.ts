import test from 'ava';
import { ClusterNames } from '../../agent/dns/cluster-names.ts';
import { DnsError } from '../../agent/dns/errors.ts';
import { nameserversOf, parseUpstream, parseUpstreamList } from '../../agent/dns/upstream.ts';
import { configFromEnv } from '../../agent/config.ts';
import { StaticServiceRecords } from '../helpers/dns.ts';

const records = new StaticServiceRecords({ 'web.shop.svc.cluster.local': ['10.96.0.1'], 'db.data.svc.cluster.local': ['10.96.0.2'] });
const names = new ClusterNames('cluster.local');

test('which names the agent answers, for a client in namespace shop', (t) => {
  const answer = (owner: string, viaCname = false) => ({ kind: 'answer', owner, viaCname, addresses: ['10.96.0.1'] });
  t.deepEqual(names.resolve('web', 'shop', records), answer('web'));
  t.deepEqual(names.resolve('web.shop', 'shop', records), answer('web.shop'));
  t.deepEqual(names.resolve('web.shop.svc', 'shop', records), answer('web.shop.svc'));
  t.deepEqual(names.resolve('Web.Shop.SVC.cluster.local.', 'shop', records), answer('web.shop.svc.cluster.local'));
  t.deepEqual(names.resolve('web.shop.svc.cluster.local.shop.svc.cluster.local', 'shop', records), answer('web.shop.svc.cluster.local', true));
  t.deepEqual(names.resolve('web.shop.shop.svc.cluster.local', 'shop', records), answer('web.shop', true));
  t.deepEqual(names.resolve('web.svc.cluster.local', 'shop', records), answer('web', true), 'search domain svc.cluster.local stripped');
  t.is(names.resolve('db.data', 'shop', records).kind, 'answer', 'another namespace by <svc>.<ns>');
  t.is(names.resolve('db', 'shop', records).kind, 'forward', '<svc> alone is the client\'s own namespace only');
});

test('every name the mesh does not hold is forwarded, unknown Service-shaped ones too (an ExternalName Service is the cluster DNS\'s, as ztunnel forwards)', (t) => {
  for (const name of ['nosuch.shop.svc.cluster.local', 'NoSuch.data.svc.cluster.local.', 'nosuch.shop.shop.svc.cluster.local', 'example.com', 'www.example.com', 'nosuch', 'svc.cluster.local', 'shop.svc.cluster.local', 'pod-0.sub.shop.svc.cluster.local', 'cluster.local', '']) {
    t.is(names.resolve(name, 'shop', records).kind, 'forward', JSON.stringify(name));
  }
  t.is(new ClusterNames('corp.example').resolve('web.shop.svc.cluster.local', 'shop', records).kind, 'forward', 'another cluster domain');
});

test('upstream addresses: forms accepted, anything else refused with a code', (t) => {
  t.deepEqual(parseUpstream('10.96.0.10'), { address: '10.96.0.10', port: 53, family: 4 });
  t.deepEqual(parseUpstream('10.96.0.10:5353'), { address: '10.96.0.10', port: 5353, family: 4 });
  t.deepEqual(parseUpstream('fd00::a'), { address: 'fd00::a', port: 53, family: 6 });
  t.deepEqual(parseUpstream('[fd00::a]:5353'), { address: 'fd00::a', port: 5353, family: 6 });
  for (const bad of ['kube-dns', '10.96.0.10:0', '10.96.0.10:99999', '[fd00::a]:x', '']) {
    t.is(t.throws(() => parseUpstream(bad), { instanceOf: DnsError })?.code, 'BAD_UPSTREAM', bad);
  }
  t.is(parseUpstreamList('10.0.0.1, 10.0.0.2:54').length, 2);
  t.deepEqual(nameserversOf('# c\nsearch a b\nnameserver 10.96.0.10\nnameserver fe80::1%eth0\nnameserver  fd00::53\noptions ndots:5\n').map((u) => u.address), ['10.96.0.10', 'fd00::53']);
});

test('agent config: DNS capture on by default, upstream and domain from the environment, a bad upstream refused', (t) => {
  const base = { AMBIT_NODE_NAME: 'n', AMBIT_CLUSTER_DIR: '/tmp/x', AMBIT_LOCAL_CA_DIR: '/tmp/y' };
  const defaults = configFromEnv(base);
  t.true(defaults.dns.capture);
  t.is(defaults.dns.upstreams, undefined, 'the agent\'s resolv.conf then');
  t.is(defaults.dns.clusterDomain, 'cluster.local');
  const set = configFromEnv({ ...base, AMBIT_DNS_CAPTURE: 'false', AMBIT_DNS_UPSTREAM: '10.96.0.10', AMBIT_CLUSTER_DOMAIN: 'corp.example' });
  t.false(set.dns.capture);
  t.deepEqual(set.dns.upstreams, [{ address: '10.96.0.10', port: 53, family: 4 }]);
  t.is(set.dns.clusterDomain, 'corp.example');
  t.throws(() => configFromEnv({ ...base, AMBIT_DNS_UPSTREAM: 'kube-dns.kube-system' }), { message: /AMBIT_DNS_UPSTREAM/ });
});
