/**
 * Our HBONE client against nghttpx (nghttp2's C proxy) in HTTP/2 proxy mode over mutual TLS: nghttpx terminates
 * TLS and HTTP/2 and hands each CONNECT to tinyproxy, an HTTP/1 proxy that dials the target. nghttpx does not pass
 * a client's END_STREAM on as a FIN, so the target closes first here.
 */
import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { HboneClientPool, type HboneError } from '../../shared/hbone/index.ts';
import { CLIENT_ID, closedPort, makeMesh, readAll, SERVER_ID, startTarget, TRUST_DOMAIN, waitFor } from '../helpers/hbone.ts';

const NGHTTPX = ['/usr/sbin/nghttpx', '/usr/bin/nghttpx'].find((candidate) => existsSync(candidate));
const TINYPROXY = ['/usr/bin/tinyproxy', '/usr/sbin/tinyproxy'].find((candidate) => existsSync(candidate));
const available = NGHTTPX !== undefined && TINYPROXY !== undefined;
const interop = available ? test : test.skip;
if (!available) console.warn('skipping nghttpx interop: nghttpx (apt-get install nghttp2-proxy) or tinyproxy is missing');

async function listening(port: number, timeoutMs = 10_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const ok = await new Promise<boolean>((resolve) => {
      const socket = net.connect(port, '127.0.0.1');
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (ok) return true;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return false;
}

interface ProxyChain {
  port: number;
  logs(): string;
}

async function startProxyChain(t: import('ava').ExecutionContext, mesh: Awaited<ReturnType<typeof makeMesh>>): Promise<ProxyChain> {
  const dir = mkdtempSync(path.join(tmpdir(), 'ambit-nghttpx-'));
  const children: ChildProcess[] = [];
  let output = '';
  t.teardown(async () => {
    for (const child of children) child.kill('SIGKILL');
    await Promise.all(children.map((child) => (child.exitCode !== null || child.signalCode !== null ? undefined : new Promise((resolve) => child.once('exit', resolve)))));
    rmSync(dir, { recursive: true, force: true });
  });
  const [tinyproxyPort, nghttpxPort] = [await closedPort(), await closedPort()];
  writeFileSync(path.join(dir, 'tinyproxy.conf'), [
    `Port ${tinyproxyPort}`,
    'Listen 127.0.0.1',
    'Allow 127.0.0.1',
    'MaxClients 100',
    'LogLevel Warning',
    // No ConnectPort line: CONNECT may go to any port (the echo target's is ephemeral).
    '',
  ].join('\n'));
  writeFileSync(path.join(dir, 'server.pem'), mesh.serverCert.certPem);
  writeFileSync(path.join(dir, 'server.key'), mesh.serverCert.keyPem);
  writeFileSync(path.join(dir, 'root.pem'), mesh.ca.rootCertPem);
  const start = (command: string, args: string[]): void => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
    children.push(child);
  };
  start(TINYPROXY!, ['-d', '-c', path.join(dir, 'tinyproxy.conf')]);
  start(NGHTTPX!, [
    '--conf=/dev/null',
    '-s',
    `--frontend=127.0.0.1,${nghttpxPort}`,
    `--backend=127.0.0.1,${tinyproxyPort}`,
    '--verify-client',
    `--verify-client-cacert=${path.join(dir, 'root.pem')}`,
    '--tls-min-proto-version=TLSv1.3',
    '--no-ocsp',
    '--single-thread',
    '--frontend-http2-window-size=4194304',
    '--frontend-http2-connection-window-size=16777216',
    path.join(dir, 'server.key'),
    path.join(dir, 'server.pem'),
  ]);
  const up = (await listening(tinyproxyPort)) && (await listening(nghttpxPort));
  if (!up) throw new Error(`nghttpx/tinyproxy did not start:\n${output}`);
  return { port: nghttpxPort, logs: () => output };
}

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
