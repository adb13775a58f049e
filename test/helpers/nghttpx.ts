/**
 * nghttpx (nghttp2's C proxy) as an HTTP/2 CONNECT server over mutual TLS, with tinyproxy behind it dialing the
 * targets: the independent HBONE-like server our clients are tested against. nghttpx does not pass a client's
 * END_STREAM on as a FIN, so targets in these tests close first. Used by tests only.
 */
import type { ExecutionContext } from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { closedPort, type Mesh } from './hbone.ts';

export const NGHTTPX = ['/usr/sbin/nghttpx', '/usr/bin/nghttpx'].find((candidate) => existsSync(candidate));
export const TINYPROXY = ['/usr/bin/tinyproxy', '/usr/sbin/tinyproxy'].find((candidate) => existsSync(candidate));
export const nghttpxAvailable = NGHTTPX !== undefined && TINYPROXY !== undefined;

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

export interface ProxyChain {
  port: number;
  logs(): string;
}

/** Starts tinyproxy and nghttpx (windows 4 MiB per stream, 16 MiB per connection); stopped at teardown. */
export async function startProxyChain(t: ExecutionContext, mesh: Mesh): Promise<ProxyChain> {
  const dir = mkdtempSync(path.join(tmpdir(), 'ambit-nghttpx-'));
  const children: ChildProcess[] = [];
  let output = '';
  t.teardown(async () => {
    for (const child of children) child.kill('SIGKILL');
    await Promise.all(children.map((child) => (child.exitCode !== null || child.signalCode !== null ? undefined : new Promise((resolve) => child.once('exit', resolve)))));
    rmSync(dir, { recursive: true, force: true });
  });
  const [tinyproxyPort, nghttpxPort] = [await closedPort(), await closedPort()];
  writeFileSync(path.join(dir, 'tinyproxy.conf'), [`Port ${tinyproxyPort}`, 'Listen 127.0.0.1', 'Allow 127.0.0.1', 'MaxClients 100', 'LogLevel Warning', ''].join('\n'));
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
