/**
 * The per-Service bookkeeping of the waypoint's xDS tables (waypoint/service-resource-table.ts, used by the route
 * table and the DestinationRule policy table): values kept by Service, a malformed resource NACKed with the last
 * good value kept, a resource that names another Service moving its value, removal, and every change heard.
 */
import test from 'ava';
import { ServiceResourceTable } from '../../waypoint/service-resource-table.ts';
import { DestinationPolicyTable } from '../../waypoint/destination/policy-table.ts';
import { RouteTable } from '../../waypoint/route-table.ts';

interface Decoded {
  service?: string;
  weight?: number;
}

function table() {
  const changes: string[] = [];
  const resources = new ServiceResourceTable<number>((resource) => {
    const decoded = resource as Decoded;
    if (!decoded.service) throw new Error('no service');
    if (decoded.weight === undefined || decoded.weight < 0) throw new Error(`bad weight ${String(decoded.weight)}`);
    return { service: decoded.service, value: decoded.weight };
  }, (service) => changes.push(service));
  return { resources, changes };
}

const update = (name: string, resource: Decoded) => ({ name, version: '1', resource });

test('values are kept by the Service the resource names; a malformed one is NACKed and the last good value stays', (t) => {
  const { resources, changes } = table();
  t.is(resources.apply([update('r1', { service: 'shop/a', weight: 1 }), update('r2', { service: 'shop/b', weight: 2 })], []), undefined);
  t.is(resources.get('shop/a'), 1);
  t.is(resources.get('shop/b'), 2);
  t.deepEqual(changes, ['shop/a', 'shop/b']);
  const result = resources.apply([update('r1', { service: 'shop/a', weight: -1 }), update('r3', {})], []);
  t.deepEqual(result, { rejected: [{ name: 'r1', reason: 'bad weight -1' }, { name: 'r3', reason: 'no service' }] });
  t.is(resources.get('shop/a'), 1, 'the last good value is kept');
  t.deepEqual(changes, ['shop/a', 'shop/b'], 'a NACK changes nothing');
});

test('a resource that names another Service moves its value; removal drops it; each change is heard', (t) => {
  const { resources, changes } = table();
  resources.apply([update('r1', { service: 'shop/a', weight: 1 })], []);
  resources.apply([update('r1', { service: 'shop/c', weight: 3 })], []);
  t.is(resources.get('shop/a'), undefined, 'the old Service lost it');
  t.is(resources.get('shop/c'), 3);
  resources.apply([], ['r1', 'unknown']);
  t.is(resources.get('shop/c'), undefined);
  t.deepEqual([...resources.entries()], []);
  t.deepEqual(changes, ['shop/a', 'shop/a', 'shop/c', 'shop/c']);
});

test('the route table and the DestinationRule table keep their resources through it', (t) => {
  const routes = new RouteTable();
  t.is(routes.apply([update('web', { service: 'shop/web' } as Decoded)], []), undefined);
  t.deepEqual(routes.entriesFor('shop/web'), []);
  t.truthy(routes.apply([{ name: 'bad', version: '1', resource: { service: 'shop/x', entries: [{ match: { path: { type: 'NOPE' } } }] } }], [])?.rejected);
  routes.apply([], ['web']);
  t.is(routes.entriesFor('shop/web'), undefined);
  const heard: string[] = [];
  const policies = new DestinationPolicyTable((service) => heard.push(service));
  policies.apply([{ name: 'dr', version: '1', resource: { service: 'shop/web', rule: 'shop/web', loadBalancer: { simple: 'RANDOM' } } }], []);
  t.is(policies.policyFor('shop/web')?.loadBalancer.simple, 'RANDOM');
  policies.apply([], ['dr']);
  t.is(policies.policyFor('shop/web'), undefined);
  t.deepEqual(heard, ['shop/web', 'shop/web']);
});
