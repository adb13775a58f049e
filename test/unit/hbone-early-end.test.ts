/**
 * A side that ended before its tunnel was up, with nothing sent before the end: Node emits 'end' at EOF once the
 * buffer is empty whether anyone reads or not, so a splice that only listens for 'end' never passes such an end
 * on (the client of a storm that gave up stayed in CLOSE-WAIT with its tunnel and its target connection open).
 * Over real mutual TLS and TCP on loopback, with both HTTP/2 implementations.
 */
import test from 'ava';
import type { HboneImplementation } from '../../shared/hbone/config.ts';
import { readAll, rawSession, socketPair, startPair, startTarget, waitFor } from '../helpers/hbone.ts';

/** A target that answers with what it received once its client ended, then ends too. */
async function answerAfterEnd(): Promise<{ target: Awaited<ReturnType<typeof startTarget>>; ended: Promise<string> }> {
  let done!: (text: string) => void;
  const ended = new Promise<string>((resolve) => (done = resolve));
  const target = await startTarget((socket) => {
    let received = '';
    socket.on('data', (chunk: Buffer) => (received += chunk.toString()));
    socket.on('end', () => {
      done(received);
      socket.end(`bye after ${received.length} bytes`);
    });
  });
  return { target, ended };
}

for (const implementation of ['node', 'own'] as HboneImplementation[]) {
  test(`${implementation}: a downstream FIN that arrived before the tunnel, with no byte before it, reaches the target`, async (t) => {
    const { target, ended } = await answerAfterEnd();
    const pair = await startPair({ client: { implementation }, server: { implementation } });
    const sockets = await socketPair();
    t.teardown(async () => {
      sockets.close();
      await pair.close();
      await target.close();
    });
    sockets.app.end();
    t.true(await waitFor(() => sockets.downstream.readableEnded), "the downstream socket emitted 'end' with no reader");
    const tunnel = pair.pool.tunnel(pair.target(target.address), sockets.downstream);
    t.is(await ended, '', 'the target saw its client end');
    t.is((await readAll(sockets.app)).toString(), 'bye after 0 bytes');
    const result = await tunnel;
    t.is(result.error, undefined);
  });
}

for (const implementation of ['node', 'own'] as HboneImplementation[]) {
  test(`${implementation}: a CONNECT whose END_STREAM came with its HEADERS, before the target connected, ends the target connection`, async (t) => {
    const { target, ended } = await answerAfterEnd();
    const pair = await startPair({ server: { implementation } });
    const { session } = await rawSession(pair.serverAddress, pair.mesh.clientCert, [pair.mesh.ca.rootCertPem]);
    t.teardown(async () => {
      session.destroy();
      await pair.close();
      await target.close();
    });
    const stream = session.request({ ':method': 'CONNECT', ':authority': `${target.address.host}:${target.address.port}` }, { endStream: true });
    const status = await new Promise<number>((resolve) => stream.once('response', (headers) => resolve(Number(headers[':status']))));
    t.is(status, 200);
    t.is(await ended, '', 'the target saw its client end');
    t.is((await readAll(stream)).toString(), 'bye after 0 bytes');
  });
}
