// Unit tests: agent/config.ts, the HBONE server's timers (AMBIT_HBONE_KEEPALIVE_INTERVAL_MS, _KEEPALIVE_TIMEOUT_MS,
// _IDLE_TIMEOUT_MS): defaults from shared/hbone/config.ts, values a test sets, and clear errors for bad ones.
import test from 'ava';
import { configFromEnv } from '../../agent/config.ts';
import { DEFAULT_SERVER_IDLE_TIMEOUT_MS, DEFAULT_SERVER_KEEPALIVE_INTERVAL_MS, DEFAULT_SERVER_KEEPALIVE_TIMEOUT_MS } from '../../shared/hbone/index.ts';

const base = { AMBIT_NODE_NAME: 'n1', AMBIT_CLUSTER_DIR: '/x', AMBIT_LOCAL_CA_DIR: '/x' };

test('the HBONE server timers default to ztunnel-like values and take the environment', (t) => {
  t.deepEqual(configFromEnv(base).hboneServer, {
    keepaliveIntervalMs: DEFAULT_SERVER_KEEPALIVE_INTERVAL_MS,
    keepaliveTimeoutMs: DEFAULT_SERVER_KEEPALIVE_TIMEOUT_MS,
    idleTimeoutMs: DEFAULT_SERVER_IDLE_TIMEOUT_MS,
  });
  t.deepEqual(configFromEnv({ ...base, AMBIT_HBONE_KEEPALIVE_INTERVAL_MS: '2000', AMBIT_HBONE_KEEPALIVE_TIMEOUT_MS: '1000', AMBIT_HBONE_IDLE_TIMEOUT_MS: '0' }).hboneServer, {
    keepaliveIntervalMs: 2000,
    keepaliveTimeoutMs: 1000,
    idleTimeoutMs: 0,
  });
  t.is(configFromEnv({ ...base, AMBIT_HBONE_KEEPALIVE_INTERVAL_MS: '0', AMBIT_HBONE_KEEPALIVE_TIMEOUT_MS: '0' }).hboneServer.keepaliveIntervalMs, 0, 'keepalive off');
});

test('bad HBONE timer values are refused with the variable named', (t) => {
  t.throws(() => configFromEnv({ ...base, AMBIT_HBONE_IDLE_TIMEOUT_MS: '10s' }), { message: /AMBIT_HBONE_IDLE_TIMEOUT_MS=10s must be a whole number of milliseconds/ });
  t.throws(() => configFromEnv({ ...base, AMBIT_HBONE_KEEPALIVE_INTERVAL_MS: '-1' }), { message: /AMBIT_HBONE_KEEPALIVE_INTERVAL_MS=-1/ });
  t.throws(() => configFromEnv({ ...base, AMBIT_HBONE_KEEPALIVE_TIMEOUT_MS: '0' }), { message: /AMBIT_HBONE_KEEPALIVE_TIMEOUT_MS=0 with keepalive on/ });
});

test('AMBIT_HBONE_IMPL picks the HTTP/2 implementation under HBONE: own by default, node:http2 on request, anything else refused', (t) => {
  t.is(configFromEnv(base).hboneImplementation, 'own');
  t.is(configFromEnv({ ...base, AMBIT_HBONE_IMPL: 'own' }).hboneImplementation, 'own');
  t.is(configFromEnv({ ...base, AMBIT_HBONE_IMPL: 'node' }).hboneImplementation, 'node');
  t.throws(() => configFromEnv({ ...base, AMBIT_HBONE_IMPL: 'nghttp2' }), { message: /AMBIT_HBONE_IMPL="nghttp2": expected "own"/ });
});
