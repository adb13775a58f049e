import test from 'ava';
import { createHash, randomFillSync } from 'node:crypto';
import { once } from 'node:events';
import type { HboneRequest } from '../../shared/hbone/index.ts';
import { CLIENT_ID, readAll, socketPair, startEcho, startPair, startTarget } from '../helpers/hbone.ts';

test('echo through a tunnel, client half-closes first and the target keeps sending', async (t) => {
  // The target reads until the client's FIN arrived (through END_STREAM), then answers and closes.
  const target = await startTarget((socket) => {
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('end', () => {
      const request = Buffer.concat(chunks).toString();
      setTimeout(() => socket.end(`got ${request.length} bytes after your FIN: ${request.toUpperCase()}`), 50);
    });
  });
  const pair = await startPair();
  const sockets = await socketPair();
  t.teardown(async () => {
    sockets.close();
    await pair.close();
    await target.close();
  });
  const tunnel = pair.pool.tunnel(pair.target(target.address), sockets.downstream);
  sockets.app.end('hello through hbone');
  t.is((await readAll(sockets.app)).toString(), 'got 19 bytes after your FIN: HELLO THROUGH HBONE');
  const result = await tunnel;
  t.is(result.bytesSent, 19);
  t.is(result.bytesReceived, 48);
  t.is(result.error, undefined);
});

test('echo through a tunnel, target half-closes first and the client keeps sending', async (t) => {
  // The target sends a greeting and FIN at once, then keeps reading until the client ends.
  let received = '';
  let done!: (text: string) => void;
  const targetDone = new Promise<string>((resolve) => (done = resolve));
  const target = await startTarget((socket) => {
    socket.end('greeting');
    socket.on('data', (chunk: Buffer) => (received += chunk.toString()));
    socket.on('end', () => done(received));
  });
  const pair = await startPair();
  t.teardown(async () => {
    await pair.close();
    await target.close();
  });
  const stream = await pair.pool.open(pair.target(target.address));
  const greeting = await readAll(stream);
  t.is(greeting.toString(), 'greeting', 'END_STREAM arrived after the greeting');
  // Our side is still open: write after the peer's FIN.
  stream.write('still ');
  await new Promise((resolve) => setTimeout(resolve, 50));
  stream.end('talking');
  t.is(await targetDone, 'still talking');
});

test('1 GiB each way through one tunnel arrives intact (sha256 at both ends)', async (t) => {
  t.timeout(240_000);
  const TOTAL = 1024 * 1024 * 1024;
  const CHUNK = 1024 * 1024;
  const targetHash = createHash('sha256');
  let gotAll!: (hash: string) => void;
  const targetGot = new Promise<string>((resolve) => (gotAll = resolve));
  const target = await startTarget((socket) => {
    socket.on('data', (chunk: Buffer) => targetHash.update(chunk));
    socket.on('end', () => gotAll(targetHash.digest('hex')));
    socket.pipe(socket);
  });
  const pair = await startPair();
  const sockets = await socketPair();
  t.teardown(async () => {
    sockets.close();
    await pair.close();
    await target.close();
  });
  const tunnel = pair.pool.tunnel(pair.target(target.address), sockets.downstream);
  const sentHash = createHash('sha256');
  const receivedHash = createHash('sha256');
  let received = 0;
  sockets.app.on('data', (chunk: Buffer) => {
    receivedHash.update(chunk);
    received += chunk.length;
  });
  const appEnded = once(sockets.app, 'end');
  const buffers = [Buffer.alloc(CHUNK), Buffer.alloc(CHUNK)];
  for (let sent = 0, i = 0; sent < TOTAL; sent += CHUNK, i++) {
    const chunk = randomFillSync(buffers[i % 2]!);
    sentHash.update(chunk);
    if (!sockets.app.write(chunk)) await once(sockets.app, 'drain');
  }
  sockets.app.end();
  const sent = sentHash.digest('hex');
  t.is(await targetGot, sent, 'the target received exactly what the client sent');
  await appEnded;
  t.is(received, TOTAL);
  t.is(receivedHash.digest('hex'), sent, 'the client got back exactly what it sent');
  const result = await tunnel;
  t.is(result.bytesSent, TOTAL);
  t.is(result.bytesReceived, TOTAL);
});

test('forwarded, baggage and traceparent headers and the verified peer identity reach decide()', async (t) => {
  const echo = await startEcho();
  const requests: HboneRequest[] = [];
  const pair = await startPair({
    server: {
      decide: (request) => {
        requests.push(request);
        return { allow: true };
      },
    },
  });
  t.teardown(async () => {
    await pair.close();
    await echo.close();
  });
  const headers = {
    forwarded: 'for=10.0.1.7',
    baggage: 'k8s.namespace.name=shop',
    traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
  };
  const stream = await pair.pool.open(pair.target(echo.address, { headers }));
  stream.end('x');
  t.is((await readAll(stream)).toString(), 'x');
  t.is(requests.length, 1);
  const request = requests[0]!;
  t.is(request.peerIdentity.uri, CLIENT_ID.uri);
  t.deepEqual(request.target, echo.address);
  t.is(request.headers[':authority'], `127.0.0.1:${echo.address.port}`);
  t.is(request.headers[':method'], 'CONNECT');
  t.is(request.headers.forwarded, headers.forwarded);
  t.is(request.headers.baggage, headers.baggage);
  t.is(request.headers.traceparent, headers.traceparent);
  t.is(request.remoteAddress, '127.0.0.1');
});

test('a client reset closes the target connection with a reset', async (t) => {
  let closedWith!: (how: string) => void;
  const targetClosed = new Promise<string>((resolve) => (closedWith = resolve));
  const target = await startTarget((socket) => {
    socket.on('error', (error: NodeJS.ErrnoException) => closedWith(error.code ?? 'error'));
    socket.on('close', () => closedWith('close'));
  });
  const pair = await startPair();
  const sockets = await socketPair();
  t.teardown(async () => {
    sockets.close();
    await pair.close();
    await target.close();
  });
  const tunnel = pair.pool.tunnel(pair.target(target.address), sockets.downstream);
  await new Promise<void>((resolve) => {
    const wait = (): void => void (target.accepted.length > 0 ? resolve() : setTimeout(wait, 10));
    wait();
  });
  sockets.app.resetAndDestroy();
  t.is(await targetClosed, 'ECONNRESET');
  const result = await tunnel;
  t.truthy(result.error, 'the tunnel reports how it ended');
});

test('a target reset reaches the client application as a reset', async (t) => {
  const target = await startTarget((socket) => {
    socket.once('data', () => socket.resetAndDestroy());
  });
  const pair = await startPair();
  const sockets = await socketPair();
  t.teardown(async () => {
    sockets.close();
    await pair.close();
    await target.close();
  });
  const tunnel = pair.pool.tunnel(pair.target(target.address), sockets.downstream);
  const appError = new Promise<string>((resolve) => {
    sockets.app.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? 'error'));
    sockets.app.on('end', () => resolve('clean end'));
  });
  sockets.app.write('trigger');
  t.is(await appError, 'ECONNRESET');
  const result = await tunnel;
  t.true(result.error !== undefined);
});

test('a tunnel whose stream cannot be opened resets the downstream socket and rejects', async (t) => {
  const pair = await startPair({ server: { decide: () => ({ allow: false, reason: 'test' }) } });
  const sockets = await socketPair();
  t.teardown(async () => {
    sockets.close();
    await pair.close();
  });
  const appError = new Promise<string>((resolve) => {
    sockets.app.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? 'error'));
    sockets.app.on('end', () => resolve('clean end'));
  });
  await t.throwsAsync(pair.pool.tunnel(pair.target({ host: '127.0.0.1', port: 9 }), sockets.downstream), { code: 'HBONE_DENIED' });
  t.is(await appError, 'ECONNRESET');
  t.true(sockets.downstream.destroyed);
});
