/**
 * Builds the waypoint's L7 policy step (waypoint/authz/request-gate.ts) for the L7 benchmark, fed the way the
 * waypoint is fed: each compiled policy encoded as the control plane sends it (ambit.waypoint.HttpAuthorization /
 * RequestAuthentication) and decoded as the waypoint's xDS client decodes it, then handed to the policy table.
 *
 * Owns: that wiring. Must not know about: timing.
 */
import { Registry } from 'prom-client';
import { HTTP_AUTHORIZATION_TYPE_URL, REQUEST_AUTHENTICATION_TYPE_URL, TO_OBJECT_OPTIONS, typeForUrl } from '../shared/xds/protos.ts';
import { AuthzMetrics } from '../waypoint/authz/metrics.ts';
import { PolicyTable } from '../waypoint/authz/policy-table.ts';
import { RequestGate } from '../waypoint/authz/request-gate.ts';
import { RequestAuthenticator } from '../waypoint/jwt/request-authenticator.ts';
import type { L7Scenario } from './l7-scenario.ts';

function overTheWire(typeUrl: string, resource: object): unknown {
  const type = typeForUrl(typeUrl)!;
  return type.toObject(type.decode(type.encode(type.fromObject(resource)).finish()), TO_OBJECT_OPTIONS);
}

export function benchGate(scenario: L7Scenario | undefined): { gate: RequestGate; authenticator: RequestAuthenticator; table: PolicyTable } {
  const authenticator = new RequestAuthenticator({ fetchText: () => Promise.reject(new Error('the bench has no network')) });
  const table = new PolicyTable('shop/wp', authenticator);
  if (scenario) {
    const rejectedAuthz = table.applyAuthorizations(scenario.authorizations.map(({ name, resource }) => ({ name, version: '1', resource: overTheWire(HTTP_AUTHORIZATION_TYPE_URL, resource) })), []);
    const rejectedJwt = table.applyRequestAuthentications([{ name: 'shop/jwt', version: '1', resource: overTheWire(REQUEST_AUTHENTICATION_TYPE_URL, scenario.requestAuthentication) }], []);
    if (rejectedAuthz || rejectedJwt) throw new Error(`bench policies rejected: ${JSON.stringify([rejectedAuthz, rejectedJwt])}`);
  }
  const gate = new RequestGate({ table, metrics: new AuthzMetrics(new Registry()) });
  return { gate, authenticator, table };
}
