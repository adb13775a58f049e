/**
 * Simulated node agents for the "controlplane" suite: one process holding several agents, each an `XdsClient`
 * (shared/xds/client.ts, what the real agent uses) with its own node token and its own TLS connection, plus a
 * CA channel per agent for `CreateCertificate`.
 *
 *   xds-agents.ts --config <agents.json> --index <k> --control <unix socket>
 *
 * The config file (written by the suite) names the control plane's address, its root certificate file and
 * identity, and this process's agents: `{ node, token, identities }`, `identities` being SPIFFE URIs of pods on
 * that node (what the agent may ask the CA for). CSRs are made before the process says it is ready, so the
 * signing phase times the CA, not key generation.
 *
 * Commands arrive as JSON lines on the control socket (bench/lib/controlplane-hub.ts) and are answered there,
 * every timestamp in this process's wall clock (`performance.timeOrigin + performance.now()`, offset measured by
 * the runner with pings):
 *   ping {id}                         -> pong {id, now}
 *   connect                           -> synced {start, synced[], resources[]}: every agent starts at once;
 *                                        per agent, when `synced` resolved and how many Address resources it held
 *   watch {id, resource, tunnelProtocol} -> watching {id}; then seen {id, times[]} once every agent has received
 *                                        that Workload with that tunnel protocol (time of arrival per agent)
 *   sign {count, concurrency}         -> signed {start, end, ok, failed, firstError}: `count` CreateCertificate
 *                                        calls, `concurrency` outstanding, round-robin over this process's agents
 *   close                             -> closes every client and exits
 * Exits when its stdin closes (the runner died) or on SIGTERM.
 */
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { AUTHORIZATION_METADATA_KEY, IMPERSONATED_IDENTITY_KEY, IstioCertificateServiceClient, type IstioCertificateRequest, type IstioCertificateResponse } from '../../shared/ca/ca-proto.ts';
import { createCsr, generateKeyPair, parseSpiffeId } from '../../shared/identity/index.ts';
import { checkServerIdentity, XdsClient, type XdsHandler } from '../../shared/xds/client.ts';
import { ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL } from '../../shared/xds/protos.ts';
import type { XdsAddress } from '../../shared/xds/types.ts';
import { announceReady, exitWithParent } from './common.ts';

export interface AgentsConfig {
  address: string;
  rootCertFile: string;
  serverIdentity: string;
  /** The name the control plane's certificate is checked under when it is addressed by IP (as the agent does). */
  serverName: string;
  /** Distinct CSRs to prepare in this process (reused round-robin by `sign`). */
  distinctCsrs: number;
  agents: { node: string; token: string; identities: string[] }[];
}

interface Watch {
  id: number;
  resource: string;
  tunnelProtocol: string;
  times: (number | undefined)[];
  remaining: number;
}

const { values } = parseArgs({ options: { config: { type: 'string' }, index: { type: 'string' }, control: { type: 'string' } } });
if (!values.config || values.index === undefined || !values.control) throw new Error('--config, --index and --control are required');
const index = Number(values.index);
const config = JSON.parse(readFileSync(values.config, 'utf8')) as AgentsConfig;
const rootCertPem = readFileSync(config.rootCertFile, 'utf8');
const now = (): number => performance.timeOrigin + performance.now();

const clients: XdsClient[] = [];
const caClients: grpc.Client[] = [];
let watch: Watch | undefined;
exitWithParent(() => {
  for (const client of clients) client.close();
  for (const client of caClients) client.close();
});

const socket = net.connect(values.control);
const send = (message: Record<string, unknown>): void => void socket.write(`${JSON.stringify(message)}\n`);
socket.on('error', (error) => {
  process.stderr.write(`xds-agents ${index}: control socket: ${error.message}\n`);
  process.exit(1);
});
socket.on('close', () => process.exit(0));
await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
send({ type: 'hello', index });

// ─── CSRs, made before anything is timed: one key and CSR per identity, spread over the agents. ───
interface PreparedCsr {
  agent: number;
  request: IstioCertificateRequest;
}
const csrs: PreparedCsr[] = [];
for (let i = 0; csrs.length < config.distinctCsrs; i++) {
  const agent = i % config.agents.length;
  const identities = config.agents[agent]!.identities;
  if (identities.length === 0) {
    if (config.agents.every((entry) => entry.identities.length === 0)) break;
    continue;
  }
  const identity = parseSpiffeId(identities[Math.floor(i / config.agents.length) % identities.length]!);
  const csr = await createCsr(await generateKeyPair(), identity);
  csrs.push({ agent, request: { csr, validity_duration: '0', metadata: { fields: { [IMPERSONATED_IDENTITY_KEY]: { stringValue: identity.uri } } } } });
}

function onArrival(agent: number, added: { name: string; resource: XdsAddress }[]): void {
  const current = watch;
  if (!current || current.times[agent] !== undefined) return;
  for (const update of added) {
    if (update.name !== current.resource || update.resource.workload?.tunnelProtocol !== current.tunnelProtocol) continue;
    current.times[agent] = now();
    if (--current.remaining === 0) {
      send({ type: 'seen', id: current.id, times: current.times });
      watch = undefined;
    }
    return;
  }
}

function connectAll(): void {
  const start = now();
  const synced: (number | undefined)[] = new Array<number | undefined>(config.agents.length);
  const resources: number[] = new Array<number>(config.agents.length).fill(0);
  let pending = config.agents.length;
  config.agents.forEach((agent, position) => {
    const addresses: XdsHandler<XdsAddress> = (added) => onArrival(position, added);
    const client = new XdsClient({
      address: config.address,
      rootCertPem,
      token: agent.token,
      serverIdentity: config.serverIdentity,
      node: { id: `ambit~${agent.node}`, cluster: 'Kubernetes', userAgentName: 'ambit-bench-agent', clientFeatures: [] },
      handlers: { [ADDRESS_TYPE_URL]: addresses, [AUTHORIZATION_TYPE_URL]: () => undefined },
      onStatus: (status) => {
        if (status.state === 'disconnected') process.stderr.write(`xds-agents ${index}: ${agent.node} disconnected: ${status.error}\n`);
      },
      onNack: (_typeUrl, message) => process.stderr.write(`xds-agents ${index}: ${agent.node} NACKed: ${message}\n`),
    });
    clients.push(client);
    void client.synced.then(() => {
      synced[position] = now();
      resources[position] = client.versions(ADDRESS_TYPE_URL).size;
      if (--pending === 0) send({ type: 'synced', start, synced, resources });
    });
  });
  for (const client of clients) client.start();
}

type CreateCertificate = (request: IstioCertificateRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<IstioCertificateResponse>) => void;

function caChannels(): { call: CreateCertificate; metadata: grpc.Metadata }[] {
  return config.agents.map((agent) => {
    const credentials = grpc.credentials.createSsl(Buffer.from(rootCertPem), null, null, { checkServerIdentity: checkServerIdentity(config.serverIdentity) });
    const client = new IstioCertificateServiceClient(config.address, credentials, { 'grpc.ssl_target_name_override': config.serverName });
    caClients.push(client);
    const metadata = new grpc.Metadata();
    metadata.set(AUTHORIZATION_METADATA_KEY, `Bearer ${agent.token}`);
    const call = (client as unknown as { CreateCertificate: CreateCertificate }).CreateCertificate.bind(client);
    return { call, metadata };
  });
}

let channels: ReturnType<typeof caChannels> | undefined;

function createCertificate(prepared: PreparedCsr): Promise<IstioCertificateResponse> {
  const channel = channels![prepared.agent]!;
  return new Promise((resolve, reject) =>
    channel.call(prepared.request, channel.metadata, { deadline: Date.now() + 30_000 }, (error, response) => (error ? reject(error) : resolve(response!))),
  );
}

async function sign(count: number, concurrency: number): Promise<void> {
  if (csrs.length === 0) {
    send({ type: 'signed', start: now(), end: now(), ok: 0, failed: count, firstError: 'no pod identities on these nodes to ask for' });
    return;
  }
  if (!channels) {
    channels = caChannels();
    // Warm-up, untimed: every agent's CA channel connected (TLS handshake) and one answer checked.
    const firstOfEach = config.agents.map((_, agent) => csrs.find((entry) => entry.agent === agent)).filter((entry) => entry !== undefined);
    const answers = await Promise.all(firstOfEach.map((entry) => createCertificate(entry)));
    if (answers.some((answer) => (answer.cert_chain ?? []).length < 2)) throw new Error('the CA answered without a chain');
  }
  let ok = 0;
  let failed = 0;
  let firstError: string | undefined;
  let next = 0;
  const start = now();
  await Promise.all(
    Array.from({ length: Math.min(concurrency, count) }, async () => {
      while (next < count) {
        const prepared = csrs[next++ % csrs.length]!;
        try {
          const answer = await createCertificate(prepared);
          if ((answer.cert_chain ?? []).length === 0) throw new Error('empty chain');
          ok++;
        } catch (error) {
          failed++;
          firstError ??= (error as Error).message;
        }
      }
    }),
  );
  send({ type: 'signed', start, end: now(), ok, failed, ...(firstError ? { firstError } : {}) });
}

const lines = createInterface({ input: socket });
lines.on('line', (line) => {
  const message = JSON.parse(line) as { type: string } & Record<string, unknown>;
  switch (message.type) {
    case 'ping':
      send({ type: 'pong', id: message.id, now: now() });
      break;
    case 'connect':
      connectAll();
      break;
    case 'watch':
      watch = { id: message.id as number, resource: message.resource as string, tunnelProtocol: message.tunnelProtocol as string, times: new Array<number | undefined>(config.agents.length), remaining: config.agents.length };
      send({ type: 'watching', id: message.id });
      break;
    case 'sign':
      sign(message.count as number, message.concurrency as number).catch((error: Error) => send({ type: 'signed', start: 0, end: 0, ok: 0, failed: message.count, firstError: error.message }));
      break;
    case 'close':
      for (const client of clients) client.close();
      for (const client of caClients) client.close();
      socket.end();
      setTimeout(() => process.exit(0), 100).unref();
      break;
    default:
      break;
  }
});
announceReady({ agents: config.agents.length, csrs: csrs.length });
