/**
 * Tunnels a client resets (RST_STREAM CANCEL, what an application aborting its connection becomes) must give back
 * the server's descriptor for the target connection. Node's resetAndDestroy() leaves the descriptor open when the
 * socket had already begun its FIN, which the splice does when the reset stream reports its end first.
 * One test in its own file: it counts this process's descriptors.
 */
import test from 'ava';
import http2 from 'node:http2';
import { readdirSync } from 'node:fs';
import { rawSession, startPair, startTarget, waitFor } from '../helpers/hbone.ts';

const { NGHTTP2_CANCEL } = http2.constants;

function descriptors(): number {
  return readdirSync('/proc/self/fd').length;
}

test('30 tunnels reset by the client leave no descriptor behind on the server', async (t) => {
  const target = await startTarget((socket) => {
    socket.resume();
    socket.on('end', () => socket.end());
  });
  const pair = await startPair();
  const { session } = await rawSession(pair.serverAddress, pair.mesh.clientCert, [pair.mesh.ca.rootCertPem]);
  t.teardown(async () => {
    session.destroy();
    await pair.close();
    await target.close();
  });
  // One tunnel first, so lazily made things (TLS contexts, the session) are in the baseline.
  const first = session.request({ ':method': 'CONNECT', ':authority': `127.0.0.1:${target.address.port}` }, { endStream: false });
  first.on('error', () => {});
  await new Promise((resolve) => first.once('response', resolve));
  first.close(NGHTTP2_CANCEL);
  await waitFor(() => target.accepted.every((socket) => socket.destroyed), 2000);
  await new Promise((resolve) => setTimeout(resolve, 100));
  const before = descriptors();
  for (let i = 0; i < 30; i++) {
    const stream = session.request({ ':method': 'CONNECT', ':authority': `127.0.0.1:${target.address.port}` }, { endStream: false });
    stream.on('error', () => {});
    await new Promise((resolve) => stream.once('response', resolve));
    stream.close(NGHTTP2_CANCEL);
  }
  t.true(await waitFor(() => target.accepted.length === 31 && target.accepted.every((socket) => socket.destroyed), 3000), 'the target saw every connection end');
  t.true(await waitFor(() => descriptors() <= before, 3000), `${descriptors() - before} descriptors more than before 30 reset tunnels`);
});
