import test from 'ava';
import type { HboneError, HboneRejection } from '../../shared/hbone/index.ts';
import { CLIENT_ID, closedPort, rawSession, readAll, requestStatus, startEcho, startPair } from '../helpers/hbone.ts';

test('a request that is not CONNECT is answered 400 (as ztunnel), reported as a rejection', async (t) => {
  const echo = await startEcho();
  const rejections: HboneRejection[] = [];
  const pair = await startPair({ server: { onRejected: (rejection) => rejections.push(rejection) } });
  const { session, outcome } = await rawSession(pair.serverAddress, pair.mesh.clientCert, [pair.mesh.ca.rootCertPem]);
  t.teardown(async () => {
    session.destroy();
    await pair.close();
    await echo.close();
  });
  t.is(outcome, 'accepted');
  t.is(await requestStatus(session, { ':method': 'GET', ':path': '/', ':authority': `127.0.0.1:${echo.address.port}` }), 400);
  t.is(await requestStatus(session, { ':method': 'POST', ':path': '/', ':authority': `127.0.0.1:${echo.address.port}` }), 400);
  t.is(echo.accepted.length, 0);
  t.deepEqual(rejections.map((rejection) => [rejection.reason, rejection.status, rejection.error.code, rejection.peerIdentity?.uri]), [
    ['method', 400, 'HBONE_BAD_METHOD', CLIENT_ID.uri],
    ['method', 400, 'HBONE_BAD_METHOD', CLIENT_ID.uri],
  ]);
});

test('a malformed :authority is answered 400', async (t) => {
  const echo = await startEcho();
  const pair = await startPair();
  const { session } = await rawSession(pair.serverAddress, pair.mesh.clientCert, [pair.mesh.ca.rootCertPem]);
  t.teardown(async () => {
    session.destroy();
    await pair.close();
    await echo.close();
  });
  for (const authority of ['localhost:80', '127.0.0.1', `127.0.0.1:${echo.address.port}0000`, '[::1:80', '127.0.0.1:-1']) {
    t.is(await requestStatus(session, { ':method': 'CONNECT', ':authority': authority }), 400, authority);
  }
  // The same session still serves a well-formed CONNECT.
  t.is(await requestStatus(session, { ':method': 'CONNECT', ':authority': `127.0.0.1:${echo.address.port}` }), 200);
});

test('a target that refuses the connection is a 503, surfaced as HBONE_REFUSED naming the target', async (t) => {
  const pair = await startPair();
  t.teardown(() => pair.close());
  const port = await closedPort();
  const error = await t.throwsAsync(pair.pool.open(pair.target({ host: '127.0.0.1', port })));
  t.is((error as HboneError).code, 'HBONE_REFUSED');
  t.is((error as HboneError).responseFlags, 'UF');
  t.regex(error!.message, new RegExp(`target 127\\.0\\.0\\.1:${port} \\(503\\)`));
  t.is(pair.server.stats().tunnelsOpened, 0);
  // The pooled connection survives a refused stream.
  t.is(pair.pool.stats().connections, 1);
});

test('a CONNECT denied by decide() is a 401, surfaced as HBONE_DENIED, and the target is never dialed', async (t) => {
  const echo = await startEcho();
  const pair = await startPair({
    server: {
      decide: async (request) =>
        request.headers.baggage === 'let-me-in' ? { allow: true } : { allow: false, reason: 'no AuthorizationPolicy allows it' },
    },
  });
  t.teardown(async () => {
    await pair.close();
    await echo.close();
  });
  const error = await t.throwsAsync(pair.pool.open(pair.target(echo.address)));
  t.is((error as HboneError).code, 'HBONE_DENIED');
  t.is((error as HboneError).responseFlags, 'UAEX');
  t.regex(error!.message, /denied \(401\)/);
  t.is(echo.accepted.length, 0);
  const allowed = await pair.pool.open(pair.target(echo.address, { headers: { baggage: 'let-me-in' } }));
  allowed.end('in');
  t.is((await readAll(allowed)).toString(), 'in');
});

test('a refusal carries the status decide() chose (400, 503), 401 by default, each reported with the request', async (t) => {
  const echo = await startEcho();
  const rejections: HboneRejection[] = [];
  const pair = await startPair({
    server: {
      decide: (request) => {
        const status = Number(request.headers['x-status']);
        return status ? { allow: false, reason: 'test', status: status as 400 | 503 } : { allow: false, reason: 'test' };
      },
      onRejected: (rejection) => rejections.push(rejection),
    },
  });
  const { session } = await rawSession(pair.serverAddress, pair.mesh.clientCert, [pair.mesh.ca.rootCertPem]);
  t.teardown(async () => {
    session.destroy();
    await pair.close();
    await echo.close();
  });
  const authority = `127.0.0.1:${echo.address.port}`;
  t.is(await requestStatus(session, { ':method': 'CONNECT', ':authority': authority, 'x-status': '400' }), 400);
  t.is(await requestStatus(session, { ':method': 'CONNECT', ':authority': authority, 'x-status': '503' }), 503);
  t.is(await requestStatus(session, { ':method': 'CONNECT', ':authority': authority }), 401);
  t.is(echo.accepted.length, 0, 'no refusal dials the target');
  t.deepEqual(rejections.map((rejection) => [rejection.reason, rejection.status, rejection.error.code, rejection.request?.target.port]), [
    ['denied', 400, 'HBONE_MISDIRECTED', echo.address.port],
    ['denied', 503, 'HBONE_REFUSED', echo.address.port],
    ['denied', 401, 'HBONE_DENIED', echo.address.port],
  ]);
});

test('200 is sent only once the target accepted, so a slow target is not a 200 then a reset', async (t) => {
  const echo = await startEcho();
  const events: string[] = [];
  const pair = await startPair({
    server: {
      connect: (request) => {
        const net = process.getBuiltinModule('node:net');
        const socket = new net.Socket({ allowHalfOpen: true });
        setTimeout(() => socket.connect(request.target.port, request.target.host, () => events.push('target connected')), 150);
        return socket;
      },
    },
  });
  t.teardown(async () => {
    await pair.close();
    await echo.close();
  });
  const stream = await pair.pool.open(pair.target(echo.address));
  events.push('client got 200');
  t.deepEqual(events, ['target connected', 'client got 200'], 'the client got 200 after the target connected');
  stream.end('late');
  t.is((await readAll(stream)).toString(), 'late');
});

test('storms of denials and application resets do not kill the pooled connection', async (t) => {
  const echo = await startEcho();
  const pair = await startPair({ server: { decide: (request) => (request.headers.baggage === 'deny' ? { allow: false, reason: 'test' } : { allow: true }) } });
  t.teardown(async () => {
    await pair.close();
    await echo.close();
  });
  // 1,500 denials in a row (each a 401), then 1,500 streams the client resets, both far above 33/s.
  for (let i = 0; i < 1500; i++) {
    await t.throwsAsync(pair.pool.open(pair.target(echo.address, { headers: { baggage: 'deny' } })), { code: 'HBONE_DENIED' });
  }
  for (let i = 0; i < 1500; i++) {
    const stream = await pair.pool.open(pair.target(echo.address));
    stream.on('error', () => {});
    const closed = new Promise((resolve) => stream.on('close', resolve));
    stream.destroy();
    await closed;
  }
  const stream = await pair.pool.open(pair.target(echo.address));
  stream.end('alive');
  t.is((await readAll(stream)).toString(), 'alive');
  t.is(pair.pool.stats().dials, 1, 'one connection carried it all');
  t.is(pair.server.stats().connectionErrors, 0);
});

test('a target that never connects is given up after connectTimeoutMs with a 503, each stream at its own deadline, while others connect', async (t) => {
  const echo = await startEcho();
  const net = process.getBuiltinModule('node:net');
  const stuck: import('node:net').Socket[] = [];
  const timeoutMs = 300;
  const pair = await startPair({
    server: {
      connectTimeoutMs: timeoutMs,
      // Port 1 stands for a black-holed target: a socket that never connects.
      connect: (request) => {
        if (request.target.port !== 1) return net.connect({ host: request.target.host, port: request.target.port, allowHalfOpen: true });
        const socket = new net.Socket();
        stuck.push(socket);
        return socket;
      },
    },
  });
  t.teardown(async () => {
    await pair.close();
    await echo.close();
  });
  const black = pair.target({ host: '127.0.0.1', port: 1 });
  const refusedAfter = async (): Promise<number> => {
    const started = performance.now();
    const error = await t.throwsAsync(pair.pool.open(black));
    t.is((error as HboneError).code, 'HBONE_REFUSED');
    return performance.now() - started;
  };
  const first = [refusedAfter(), refusedAfter()];
  await new Promise((resolve) => setTimeout(resolve, 150));
  const later = refusedAfter();
  // A target that connects is answered at once, whatever is still waiting.
  const stream = await pair.pool.open(pair.target(echo.address));
  stream.end('meanwhile');
  t.is((await readAll(stream)).toString(), 'meanwhile');
  for (const elapsed of await Promise.all(first)) t.true(elapsed >= timeoutMs - 20, `given up after ${elapsed} ms`);
  t.true((await later) >= timeoutMs - 20, 'the later stream had its own full timeout');
  t.is(stuck.length, 3);
  t.true(stuck.every((socket) => socket.destroyed), 'the given-up target sockets are closed');
  t.is(pair.server.stats().tunnelsOpened, 1);
});
