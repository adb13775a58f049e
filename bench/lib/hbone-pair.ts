/**
 * ambit's pair, set up like the stunnel anchor:
 *
 *   TCP in -> our client (relay-hbone-client.ts) -- HBONE: mTLS 1.3, h2 CONNECT --> our server
 *          (relay-hbone-server.ts) -> TCP out
 *
 * Owns: starting both relays as separate processes with the run's certificates. Whether the HBONE library is
 * present at all (it may not be while it is being written) is answered by `hboneLibraryAvailable()`.
 * Must not know about: the load.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import type { BenchCertificates } from './certs.ts';
import type { ProcessGroup } from './processes.ts';
import type { RelayPair } from './stunnel.ts';
import { nodeTool, TOOLS_DIR } from './tools.ts';

export const HBONE_LIBRARY = path.join(TOOLS_DIR, '..', '..', 'shared', 'hbone', 'index.ts');

export function hboneLibraryAvailable(): boolean {
  return existsSync(HBONE_LIBRARY);
}

/** Arguments our client needs to reach the target through our server (shared by the relay and hbone-open). */
export function hboneClientArgs(certs: BenchCertificates, serverPort: number, targetPort: number): string[] {
  return [
    '--cert', certs.client.json,
    '--proxy', `127.0.0.1:${serverPort}`,
    '--destination', `127.0.0.1:${targetPort}`,
    '--expect', certs.server.identity,
  ];
}

/**
 * Which HTTP/2 the pair speaks: `node` is the library as the agent uses it (node:http2); `own` is ambit's own
 * layer in shared/hbone/h2/ (relay-h2-*.ts), measured beside it until the agent switches.
 */
export type HboneImplementation = 'node' | 'own';

const RELAYS: Record<HboneImplementation, { client: string; server: string; role: string; label: string }> = {
  node: { client: 'relay-hbone-client.ts', server: 'relay-hbone-server.ts', role: 'hbone', label: 'HBONE' },
  own: { client: 'relay-h2-client.ts', server: 'relay-h2-server.ts', role: 'h2', label: 'HBONE (own HTTP/2)' },
};

export async function startHbonePair(
  group: ProcessGroup,
  certs: BenchCertificates,
  targetPort: number,
  profileDir?: string,
  implementation: HboneImplementation = 'node',
): Promise<RelayPair & { serverPort: number }> {
  const relays = RELAYS[implementation];
  const serverTool = nodeTool(relays.server, ['--cert', certs.server.json], profileDir ? { dir: profileDir, role: `${relays.role}-server` } : undefined);
  const server = await group.start(`${relays.label} server relay`, serverTool.command, serverTool.args);
  const clientTool = nodeTool(relays.client, hboneClientArgs(certs, server.port, targetPort), profileDir ? { dir: profileDir, role: `${relays.role}-client` } : undefined);
  const client = await group.start(`${relays.label} client relay`, clientTool.command, clientTool.args);
  return { entryPort: client.port, client, server, serverPort: server.port };
}
