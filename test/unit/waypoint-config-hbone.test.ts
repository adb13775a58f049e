/**
 * AMBIT_WAYPOINT_HBONE (waypoint/config.ts): the HTTP/2 layer of the waypoint's two HBONE legs. The own layer by
 * default, node:http2 selectable, anything else refused with the setting's name before the waypoint starts.
 */
import test from 'ava';
import { configFromEnv, DEFAULT_WAYPOINT_H2_DOWNSTREAM, WaypointConfigError } from '../../waypoint/config.ts';

const base = {
  AMBIT_WAYPOINT_NAMESPACE: 'shop',
  AMBIT_WAYPOINT_NAME: 'waypoint',
  AMBIT_NODE_NAME: 'node-1',
  AMBIT_XDS_ADDRESS: '10.0.0.1:15012',
  AMBIT_ROOT_CERT_FILE: '/var/run/ambit/root.pem',
  AMBIT_TOKEN_FILE: '/var/run/ambit/token',
};

test('both HBONE legs on the own layer unless AMBIT_WAYPOINT_HBONE says node', (t) => {
  t.is(configFromEnv(base).hbone, 'own');
  t.is(configFromEnv({ ...base, AMBIT_WAYPOINT_HBONE: '' }).hbone, 'own');
  t.is(configFromEnv({ ...base, AMBIT_WAYPOINT_HBONE: 'node' }).hbone, 'node');
  t.is(configFromEnv({ ...base, AMBIT_WAYPOINT_HBONE: ' own ' }).hbone, 'own');
  // The agents' switch is theirs: it does not move the waypoint's legs.
  t.is(configFromEnv({ ...base, AMBIT_HBONE_IMPL: 'node' }).hbone, 'own');
});

test('another AMBIT_WAYPOINT_HBONE value is refused with its name and the choices', (t) => {
  const error = t.throws(() => configFromEnv({ ...base, AMBIT_WAYPOINT_HBONE: 'nghttp2' }), { instanceOf: WaypointConfigError });
  t.is(error.code, 'WAYPOINT_BAD_CONFIG');
  t.regex(error.message, /AMBIT_WAYPOINT_HBONE must be "own" .* or "node" .*"nghttp2"/);
});

test('h2c/gRPC to endpoints on the own layer unless AMBIT_WAYPOINT_H2_UPSTREAM says node; the client side by its own switch', (t) => {
  t.is(configFromEnv(base).h2Upstream, 'own');
  t.is(configFromEnv({ ...base, AMBIT_WAYPOINT_H2_UPSTREAM: 'node' }).h2Upstream, 'node');
  t.is(configFromEnv({ ...base, AMBIT_WAYPOINT_H2_UPSTREAM: ' own ' }).h2Upstream, 'own');
  t.is(configFromEnv(base).h2Downstream, DEFAULT_WAYPOINT_H2_DOWNSTREAM);
  t.is(configFromEnv({ ...base, AMBIT_WAYPOINT_H2_DOWNSTREAM: 'own' }).h2Downstream, 'own');
  t.is(configFromEnv({ ...base, AMBIT_WAYPOINT_H2_DOWNSTREAM: 'node' }).h2Downstream, 'node');
  // The legs' switch does not move them.
  t.is(configFromEnv({ ...base, AMBIT_WAYPOINT_HBONE: 'node' }).h2Upstream, 'own');
});

test('another AMBIT_WAYPOINT_H2_UPSTREAM or _DOWNSTREAM value is refused with its name', (t) => {
  for (const name of ['AMBIT_WAYPOINT_H2_UPSTREAM', 'AMBIT_WAYPOINT_H2_DOWNSTREAM']) {
    const error = t.throws(() => configFromEnv({ ...base, [name]: 'nghttp2' }), { instanceOf: WaypointConfigError });
    t.is(error.code, 'WAYPOINT_BAD_CONFIG');
    t.true(error.message.startsWith(`${name} must be "own"`), error.message);
  }
});
