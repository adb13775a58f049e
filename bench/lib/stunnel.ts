/**
 * The anchor: a stunnel4 mutual-TLS pair set up like our HBONE pair.
 *
 *   TCP in -> stunnel client (127.0.0.1:A) -- TLS 1.3, mutual, our CA's P-256 certs --> stunnel server -> TCP out
 *
 * Owns: writing both configs into the run directory and starting both ends as separate processes.
 * Like for like with our relays: same certificates and CA, TLS 1.3 only, client certificate required and
 * chain-verified, TCP_NODELAY on both sides, log level warning (no per-connection log lines), no TCP wrappers.
 * stunnel cannot check a SPIFFE URI SAN, so it verifies the chain only (ours also checks the identity).
 * Session resumption is stunnel's default (on), as people run it.
 * Must not know about: the load.
 */
import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { BenchCertificates } from './certs.ts';
import { freePort } from './ports.ts';
import type { ManagedProcess, ProcessGroup } from './processes.ts';

export const STUNNEL_BINARY = 'stunnel4';

/**
 * stunnel cannot notice that the runner died; `setpriv --pdeathsig KILL` (util-linux, always on Debian) makes the
 * kernel kill it when its parent goes, even on SIGKILL. Without setpriv the runner's pid file still reaps it.
 */
function stunnelCommand(config: string): { command: string; args: string[] } {
  return existsSync('/usr/bin/setpriv')
    ? { command: '/usr/bin/setpriv', args: ['--pdeathsig', 'KILL', STUNNEL_BINARY, config] }
    : { command: STUNNEL_BINARY, args: [config] };
}

export interface RelayPair {
  /** Where load enters the pair. */
  entryPort: number;
  client: ManagedProcess;
  server: ManagedProcess;
}

function config(lines: Record<string, string | string[]>, service: Record<string, string | string[]>): string {
  const render = (entries: Record<string, string | string[]>): string =>
    Object.entries(entries)
      .flatMap(([key, value]) => (Array.isArray(value) ? value : [value]).map((item) => `${key} = ${item}`))
      .join('\n');
  return `${render(lines)}\n\n[bench]\n${render(service)}\n`;
}

const GLOBAL = { foreground: 'yes', pid: '', debug: '4', syslog: 'no' };
const COMMON_SERVICE = {
  sslVersionMin: 'TLSv1.3',
  sslVersionMax: 'TLSv1.3',
  verifyChain: 'yes',
  // Debian builds stunnel with TCP wrappers, consulted per connection in helper processes; no mesh would.
  libwrap: 'no',
  socket: ['l:TCP_NODELAY=1', 'r:TCP_NODELAY=1'],
};

export async function startStunnelPair(group: ProcessGroup, runDir: string, certs: BenchCertificates, targetPort: number): Promise<RelayPair> {
  const serverPort = await freePort();
  const serverConfig = path.join(runDir, 'stunnel-server.conf');
  writeFileSync(serverConfig, config(GLOBAL, {
    accept: `127.0.0.1:${serverPort}`,
    connect: `127.0.0.1:${targetPort}`,
    cert: certs.server.certPem,
    key: certs.server.keyPem,
    CAfile: certs.caPem,
    requireCert: 'yes',
    ...COMMON_SERVICE,
  }));
  const serverCommand = stunnelCommand(serverConfig);
  const server = await group.start('stunnel server', serverCommand.command, serverCommand.args, { readyPort: serverPort });

  const clientPort = await freePort();
  const clientConfig = path.join(runDir, 'stunnel-client.conf');
  writeFileSync(clientConfig, config(GLOBAL, {
    client: 'yes',
    accept: `127.0.0.1:${clientPort}`,
    connect: `127.0.0.1:${serverPort}`,
    cert: certs.client.certPem,
    key: certs.client.keyPem,
    CAfile: certs.caPem,
    ...COMMON_SERVICE,
  }));
  const clientCommand = stunnelCommand(clientConfig);
  const client = await group.start('stunnel client', clientCommand.command, clientCommand.args, { readyPort: clientPort });
  return { entryPort: clientPort, client, server };
}
