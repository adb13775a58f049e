/**
 * Our HBONE client against nghttpx (nghttp2's C proxy) in HTTP/2 proxy mode over mutual TLS: nghttpx terminates
 * TLS and HTTP/2 and hands each CONNECT to tinyproxy, an HTTP/1 proxy that dials the target. nghttpx does not pass
 * a client's END_STREAM on as a FIN, so the target closes first here.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { HboneClientPool, type HboneError } from '../../shared/hbone/index.ts';
import { CLIENT_ID, makeMesh, readAll, SERVER_ID, startTarget, TRUST_DOMAIN, waitFor } from '../helpers/hbone.ts';
import { nghttpxAvailable, startProxyChain } from '../helpers/nghttpx.ts';

const interop = nghttpxAvailable ? test : test.skip;
if (!nghttpxAvailable) console.warn('skipping nghttpx interop: nghttpx (apt-get install nghttp2-proxy) or tinyproxy is missing');

interop('our client tunnels through nghttpx over mutual TLS and the data round-trips', async (t) => {
  const mesh = await makeMesh();
  const request = randomBytes(100_000);
  // The target reads the whole request, answers with its reverse, and closes first.
  const target = await startTarget((socket) => {
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      const got = Buffer.concat(chunks);
      if (got.length >= request.length) socket.end(Buffer.from(got).reverse());
    });
  });
  t.teardown(() => target.close());
  const chain = await startProxyChain(t, mesh);
  const pool = new HboneClientPool({ certificateFor: () => mesh.clientCert, trustDomain: TRUST_DOMAIN });
  t.teardown(() => pool.destroy());
  const hboneTarget = {
    proxy: { host: '127.0.0.1', port: chain.port },
    destination: target.address,
    sourceIdentity: CLIENT_ID,
    expectedIdentities: [SERVER_ID.uri],
    headers: { traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' },
  };
  const stream = await pool.open(hboneTarget);
  stream.write(request);
  const reply = await readAll(stream);
  t.true(reply.equals(Buffer.from(request).reverse()), `got ${reply.length} bytes back\n${chain.logs()}`);
  stream.end();
  // A second stream rides the same pooled connection.
  const again = await pool.open(hboneTarget);
  again.write(request);
  t.is((await readAll(again)).length, request.length);
  again.end();
  t.is(pool.stats().dials, 1);
  t.true(await waitFor(() => target.accepted.length === 2));
});

interop('nghttpx rejects our client when its certificate comes from another CA', async (t) => {
  const mesh = await makeMesh();
  const stranger = await makeMesh();
  const chain = await startProxyChain(t, mesh);
  const pool = new HboneClientPool({
    certificateFor: () => ({ ...stranger.clientCert, rootsPem: [mesh.ca.rootCertPem] }),
    trustDomain: TRUST_DOMAIN,
  });
  t.teardown(() => pool.destroy());
  const error = await t.throwsAsync(
    pool.open({ proxy: { host: '127.0.0.1', port: chain.port }, destination: { host: '127.0.0.1', port: 9 }, sourceIdentity: CLIENT_ID, expectedIdentities: [SERVER_ID.uri] }),
  );
  t.is((error as HboneError).code, 'HBONE_TLS');
});
