/**
 * ambit's own HTTP/2 layer as an HBONE client against nghttpx (nghttp2's C implementation: Huffman and dynamic
 * table in its headers, DATA frames up to our 64 KiB frame size, its own flow control) over mutual TLS.
 */
import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import { dialH2, openConnectStream } from '../../shared/hbone/h2/tunnel-client.ts';
import type { HboneError } from '../../shared/hbone/errors.ts';
import { makeMesh, SERVER_ID, startTarget, TRUST_DOMAIN, waitFor } from '../helpers/hbone.ts';
import { StreamCollector } from '../helpers/h2-tunnel.ts';
import { nghttpxAvailable, startProxyChain } from '../helpers/nghttpx.ts';

const interop = nghttpxAvailable ? test : test.skip;
if (!nghttpxAvailable) console.warn('skipping nghttpx interop: nghttpx (apt-get install nghttp2-proxy) or tinyproxy is missing');

interop('our own HTTP/2 client tunnels through nghttpx: data both ways, two streams on one connection, 32 MiB back with its hash', async (t) => {
  t.timeout(5 * 60 * 1000);
  const mesh = await makeMesh();
  const request = randomBytes(100_000);
  const bulk = randomBytes(32 * 1024 * 1024);
  // First byte chooses: 'R' reverse the 100 kB request and close; 'B' send the bulk payload and close.
  const target = await startTarget((socket) => {
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      const got = Buffer.concat(chunks);
      if (got[0] === 0x42) socket.end(bulk);
      else if (got.length >= request.length + 1) socket.end(Buffer.from(got.subarray(1)).reverse());
    });
  });
  t.teardown(() => target.close());
  const chain = await startProxyChain(t, mesh);
  const proxy = { host: '127.0.0.1', port: chain.port };
  const connection = await dialH2({
    proxy,
    certificate: mesh.clientCert,
    trustDomain: TRUST_DOMAIN,
    expectedIdentities: [SERVER_ID.uri],
    connect: (address) => net.connect({ host: address.host, port: address.port }),
  });
  t.teardown(() => connection.destroy());
  const headers = { traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' };

  const first = await openConnectStream(connection, { proxy, destination: target.address, headers });
  const reversed = new StreamCollector();
  first.setHandler(reversed);
  first.write(Buffer.from('R'));
  first.write(request);
  t.true(await waitFor(() => reversed.ended, 20_000), `no END_STREAM\n${chain.logs()}`);
  t.true(reversed.data.equals(Buffer.from(request).reverse()));
  first.end();
  t.is((await reversed.done).rstCode, undefined);

  const second = await openConnectStream(connection, { proxy, destination: target.address });
  const received = new StreamCollector();
  const hash = createHash('sha256');
  received.onChunk = (chunk) => hash.update(chunk);
  second.setHandler(received);
  second.write(Buffer.from('B'));
  t.true(await waitFor(() => received.ended, 120_000), `bulk did not finish: ${received.bytes} bytes\n${chain.logs()}`);
  t.is(received.bytes, bulk.length);
  t.is(hash.digest('hex'), createHash('sha256').update(bulk).digest('hex'));
  second.end();
  await received.done;
  t.is(connection.stats.streamsOpened, 2);
  t.false(connection.closed);
  t.true(await waitFor(() => target.accepted.length === 2));
});

interop('nghttpx rejects our own HTTP/2 client when its certificate comes from another CA', async (t) => {
  const mesh = await makeMesh();
  const stranger = await makeMesh();
  const chain = await startProxyChain(t, mesh);
  const error = await t.throwsAsync(
    dialH2({
      proxy: { host: '127.0.0.1', port: chain.port },
      certificate: { ...stranger.clientCert, rootsPem: [mesh.ca.rootCertPem] },
      trustDomain: TRUST_DOMAIN,
      expectedIdentities: [SERVER_ID.uri],
      connect: (address) => net.connect({ host: address.host, port: address.port }),
    }),
  );
  t.is((error as HboneError).code, 'HBONE_TLS');
});
