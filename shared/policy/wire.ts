/**
 * The compiled model on the wire: `istio.security.Authorization` messages as delta xDS carries them (type URL
 * type.googleapis.com/istio.security.Authorization), encoded with protobufjs from
 * shared/xds/proto/istio/security/authorization.proto.
 *
 * Owns: model <-> protobuf conversion (addresses as text <-> 4/16 bytes; StringMatch oneof; enums by name).
 * Must not know about: xDS streams, or what the policies mean. `selector` is not sent: Istio resolves it in
 * the control plane (see scope.ts).
 */
import type protobuf from 'protobufjs';
import { messageType, TO_OBJECT_OPTIONS } from '../xds/protos.ts';
import { PolicyError } from './errors.ts';
import { cidrFromBytes, cidrToBytes, parseCidr } from './ip.ts';
import type { AddressMatch, Authorization, Match, ServiceAccountMatch, StringMatch } from './model.ts';

export const AUTHORIZATION_MESSAGE = 'istio.security.Authorization';

export function authorizationType(): protobuf.Type {
  return messageType(AUTHORIZATION_MESSAGE);
}

type WireStringMatch = { exact?: string; prefix?: string; suffix?: string; presence?: Record<string, never> | null; matchType?: string };
type WireAddress = { address: Uint8Array; length: number };
type WireServiceAccount = { namespace: string; serviceAccount: string };
type WireMatch = Record<string, WireStringMatch[] | WireAddress[] | WireServiceAccount[] | number[]>;

const STRING_FIELDS = ['namespaces', 'notNamespaces', 'principals', 'notPrincipals'] as const;
const ADDRESS_FIELDS = ['sourceIps', 'notSourceIps', 'destinationIps', 'notDestinationIps'] as const;
const SERVICE_ACCOUNT_FIELDS = ['serviceAccounts', 'notServiceAccounts'] as const;
const PORT_FIELDS = ['destinationPorts', 'notDestinationPorts'] as const;

function stringMatchToWire(item: StringMatch): WireStringMatch {
  if ('exact' in item) return { exact: item.exact };
  if ('prefix' in item) return { prefix: item.prefix };
  if ('suffix' in item) return { suffix: item.suffix };
  return { presence: {} };
}

function addressToWire(item: AddressMatch): WireAddress {
  const parsed = parseCidr(`${item.address}/${item.length}`);
  if ('error' in parsed) throw new PolicyError('AMBIT_POLICY_BAD_RESOURCE', undefined, [{ path: '', message: parsed.error }]);
  return { address: cidrToBytes(parsed), length: parsed.length };
}

/** The plain object protobufjs's `fromObject` takes for one Authorization. */
export function authorizationToWireObject(policy: Authorization): Record<string, unknown> {
  // proto3 leaves default values (GLOBAL, ALLOW, false) off the wire, as Go's encoder does.
  return {
    name: policy.name,
    namespace: policy.namespace,
    ...(policy.scope !== 'GLOBAL' && { scope: policy.scope }),
    ...(policy.action !== 'ALLOW' && { action: policy.action }),
    ...(policy.dryRun && { dryRun: true }),
    groups: policy.groups.map((group) => ({
      rules: group.rules.map((clause) => ({
        matches: clause.matches.map((match) => {
          const wire: WireMatch = {};
          for (const field of STRING_FIELDS) if (match[field]) wire[field] = match[field].map(stringMatchToWire);
          for (const field of ADDRESS_FIELDS) if (match[field]) wire[field] = match[field].map(addressToWire);
          for (const field of SERVICE_ACCOUNT_FIELDS) if (match[field]) wire[field] = match[field].map((item) => ({ ...item }));
          for (const field of PORT_FIELDS) if (match[field]) wire[field] = [...match[field]];
          return wire;
        }),
      })),
    })),
  };
}

/** Encodes one Authorization to the bytes of an xDS resource. */
export function encodeAuthorization(policy: Authorization): Uint8Array {
  const type = authorizationType();
  return type.encode(type.fromObject(authorizationToWireObject(policy))).finish();
}

function stringMatchFromWire(item: WireStringMatch, where: string): StringMatch {
  const kind = item.matchType ?? (item.exact !== undefined ? 'exact' : item.prefix !== undefined ? 'prefix' : item.suffix !== undefined ? 'suffix' : item.presence ? 'presence' : undefined);
  switch (kind) {
    case 'exact':
      return { exact: item.exact ?? '' };
    case 'prefix':
      return { prefix: item.prefix ?? '' };
    case 'suffix':
      return { suffix: item.suffix ?? '' };
    case 'presence':
      return { presence: true };
    default:
      throw new PolicyError('AMBIT_POLICY_BAD_RESOURCE', undefined, [{ path: where, message: 'StringMatch with no match type set' }]);
  }
}

/**
 * Reads an Authorization from the plain object protobufjs's `toObject(message, TO_OBJECT_OPTIONS)` returns (what
 * the xDS client hands to a type-URL handler). Throws PolicyError when an address is malformed.
 */
export function authorizationFromWireObject(object: Record<string, unknown>): Authorization {
  const name = String(object.name ?? '');
  const namespace = String(object.namespace ?? '');
  const where = `Authorization ${namespace}/${name}`;
  const groups = (object.groups as { rules?: { matches?: WireMatch[] }[] }[] | undefined) ?? [];
  return {
    name,
    namespace,
    scope: (object.scope as Authorization['scope'] | undefined) ?? 'GLOBAL',
    action: (object.action as Authorization['action'] | undefined) ?? 'ALLOW',
    dryRun: Boolean(object.dryRun),
    groups: groups.map((group) => ({
      rules: (group.rules ?? []).map((clause) => ({
        matches: (clause.matches ?? []).map((wire) => {
          const match: Match = {};
          for (const field of STRING_FIELDS) {
            const list = wire[field] as WireStringMatch[] | undefined;
            if (list?.length) match[field] = list.map((item) => stringMatchFromWire(item, where));
          }
          for (const field of ADDRESS_FIELDS) {
            const list = wire[field] as WireAddress[] | undefined;
            if (!list?.length) continue;
            match[field] = list.map((item) => {
              const cidr = cidrFromBytes(item.address, item.length);
              if (!cidr) throw new PolicyError('AMBIT_POLICY_BAD_RESOURCE', where, [{ path: field, message: `address of ${item.address.length} bytes with prefix length ${item.length} is not an IP block` }]);
              return { address: cidr.network, length: cidr.length };
            });
          }
          for (const field of SERVICE_ACCOUNT_FIELDS) {
            const list = wire[field] as WireServiceAccount[] | undefined;
            if (list?.length) match[field] = list.map((item): ServiceAccountMatch => ({ namespace: item.namespace, serviceAccount: item.serviceAccount }));
          }
          for (const field of PORT_FIELDS) {
            const list = wire[field] as number[] | undefined;
            if (list?.length) match[field] = list.map(Number);
          }
          return match;
        }),
      })),
    })),
  };
}

/** Decodes the bytes of an xDS resource into an Authorization. */
export function decodeAuthorization(bytes: Uint8Array): Authorization {
  const type = authorizationType();
  return authorizationFromWireObject(type.toObject(type.decode(bytes), TO_OBJECT_OPTIONS) as Record<string, unknown>);
}
