/**
 * Wire compatibility of compiled policies: `istio.security.Authorization` encoded with protobufjs from ambit's
 * .proto carries Istio's field numbers, and decodes back to the same policy.
 */
import test from 'ava';
import protobuf from 'protobufjs';
import { assertValidPolicy, compileAuthorizationPolicy, decodeAuthorization, encodeAuthorization, evaluate, type AuthorizationPolicyObject } from '../../shared/policy/index.ts';

function compiled() {
  const object = assertValidPolicy({
    apiVersion: 'security.istio.io/v1',
    kind: 'AuthorizationPolicy',
    metadata: { name: 'deny-legacy', namespace: 'web', annotations: { 'istio.io/dry-run': 'true' } },
    spec: {
      action: 'DENY',
      selector: { matchLabels: { app: 'api' } },
      rules: [
        {
          from: [{ source: { serviceAccounts: ['legacy/batch'], ipBlocks: ['10.9.0.0/16', 'fd00::/8'] } }],
          to: [{ operation: { ports: ['8080'] } }],
          when: [{ key: 'source.principal', values: ['cluster.local/ns/legacy/*'] }],
        },
      ],
    },
  }).object as AuthorizationPolicyObject;
  return compileAuthorizationPolicy(object).authorization!;
}

/** The (field number, wire type) pairs at the top level of a message. */
function topLevelTags(bytes: Uint8Array): Map<number, number> {
  const reader = protobuf.Reader.create(bytes);
  const tags = new Map<number, number>();
  while (reader.pos < reader.len) {
    const tag = reader.uint32();
    tags.set(tag >>> 3, tag & 7);
    reader.skipType(tag & 7);
  }
  return tags;
}

function field(bytes: Uint8Array, number: number): Uint8Array {
  const reader = protobuf.Reader.create(bytes);
  while (reader.pos < reader.len) {
    const tag = reader.uint32();
    if (tag >>> 3 === number && (tag & 7) === 2) return reader.bytes();
    reader.skipType(tag & 7);
  }
  throw new Error(`field ${number} not found`);
}

test('an encoded Authorization uses Istio\'s field numbers', (t) => {
  const bytes = encodeAuthorization(compiled());
  const tags = topLevelTags(bytes);
  t.is(tags.get(1), 2, 'name = 1 (length-delimited)');
  t.is(tags.get(2), 2, 'namespace = 2');
  t.is(tags.get(3), 0, 'scope = 3 (varint)');
  t.is(tags.get(4), 0, 'action = 4 (varint)');
  t.is(tags.get(5), 2, 'groups = 5');
  t.is(tags.get(6), 0, 'dry_run = 6');
  t.is(bytes[0], 0x0a);
  t.is(Buffer.from(field(bytes, 1)).toString(), 'deny-legacy');

  // groups(5) -> rules(1) -> matches(2) -> service_accounts(11) / source_ips(5)
  const group = field(bytes, 5);
  const clauses: Uint8Array[] = [];
  const reader = protobuf.Reader.create(group);
  while (reader.pos < reader.len) {
    const tag = reader.uint32();
    t.is(tag >>> 3, 1, 'Group.rules = 1');
    clauses.push(reader.bytes());
  }
  t.is(clauses.length, 3, 'to, from and one when');
  const fromMatch = field(clauses[1]!, 2);
  const matchTags = topLevelTags(fromMatch);
  t.true(matchTags.has(11), 'Match.service_accounts = 11');
  t.true(matchTags.has(5), 'Match.source_ips = 5');
  const address = field(field(fromMatch, 5), 1);
  t.deepEqual([...address], [10, 9, 0, 0], 'Address.address = 1 holds the 4 network-order bytes');
  const toMatch = field(clauses[0]!, 2);
  t.true(topLevelTags(toMatch).has(9), 'Match.destination_ports = 9');
});

test('defaults stay off the wire, as Go encodes them', (t) => {
  const policy = { ...compiled(), scope: 'GLOBAL' as const, action: 'ALLOW' as const, dryRun: false };
  const tags = topLevelTags(encodeAuthorization(policy));
  t.false(tags.has(3));
  t.false(tags.has(4));
  t.false(tags.has(6));
});

test('decoding gives back the policy, minus the selector Istio resolves in the control plane', (t) => {
  const policy = compiled();
  const decoded = decodeAuthorization(encodeAuthorization(policy));
  const { selector, ...onTheWire } = policy;
  t.deepEqual(selector, { app: 'api' });
  t.deepEqual(decoded, onTheWire);
  const connection = { sourcePrincipal: 'spiffe://cluster.local/ns/legacy/sa/batch', sourceIp: '10.9.3.4', destinationIp: '10.0.0.1', destinationPort: 8080 };
  t.deepEqual(evaluate(connection, [decoded]), evaluate(connection, [policy]));
  t.true(evaluate(connection, [decoded]).dryRun?.wouldDeny);
});
