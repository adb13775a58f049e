/**
 * Test helpers for the agent's DNS proxy: a Service table, a real dnsmasq as the upstream resolver, and DNS
 * clients over real UDP and TCP sockets.
 *
 * Owns: starting and stopping dnsmasq (its own port, a hosts file, authoritative for its test zone so unknown
 * names are NXDOMAIN, never forwarded anywhere), encoding queries and reading replies.
 * Used by tests and benches only; never imported by production code.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import dnsPacket from 'dns-packet';
import type { DecodedPacket, Packet } from 'dns-packet';
import type { ServiceRecords } from '../../agent/dns/service-records.ts';

/** Services by hostname, as the mesh state would hold them. */
export class StaticServiceRecords implements ServiceRecords {
  readonly byHostname = new Map<string, readonly string[]>();
  /** Bump after changing `byHostname`, as the mesh state bumps its version. */
  generation = 0;

  constructor(entries: Record<string, readonly string[]> = {}) {
    for (const [hostname, addresses] of Object.entries(entries)) this.byHostname.set(hostname, addresses);
  }

  addressesOf(hostname: string): readonly string[] | undefined {
    return this.byHostname.get(hostname);
  }
}

export interface Dnsmasq {
  port: number;
  address: string;
  stop(): Promise<void>;
}

export interface DnsmasqOptions {
  /** `ip name` lines of its hosts file. */
  hosts: string[];
  /** The zone it answers with authority (unknown names NXDOMAIN): `example.test` by default. */
  zone?: string;
  /** TTL of its hosts-file answers. */
  ttl?: number;
  address?: string;
  /** Run inside this network namespace (ip netns exec). */
  netns?: string;
  port?: number;
  /** Its answer cache; off by default so every query reaches the hosts file path. */
  cacheSize?: number;
  /** `alias,target` CNAME records (dnsmasq `--cname`; the target must be one of its own names), as kube-dns answers an ExternalName Service. */
  cnames?: string[];
}

/** Starts dnsmasq listening on address:port (UDP and TCP), resolving only what its hosts file says. */
export async function startDnsmasq(options: DnsmasqOptions): Promise<Dnsmasq> {
  const dir = await mkdtemp(path.join(tmpdir(), 'ambit-dnsmasq-'));
  const hostsFile = path.join(dir, 'hosts');
  await writeFile(hostsFile, options.hosts.join('\n') + '\n');
  const address = options.address ?? '127.0.0.1';
  // A free UDP port can still be a TCP port in use (dnsmasq binds both: another test's client connection had it,
  // "failed to create listening socket ... Address already in use"): a port we picked is picked again.
  for (let attempt = 1; ; attempt++) {
    const port = options.port ?? await freeUdpPort(address);
    const args = [
      '--keep-in-foreground', '--no-resolv', '--no-hosts', '--no-poll', '--user=root', '--pid-file=',
      `--addn-hosts=${hostsFile}`, `--local=/${options.zone ?? 'example.test'}/`, `--local-ttl=${options.ttl ?? 123}`,
      `--listen-address=${address}`, '--bind-interfaces', `--port=${port}`, `--cache-size=${options.cacheSize ?? 0}`,
      '--conf-file=/dev/null',
      ...(options.cnames ?? []).map((cname) => `--cname=${cname}`),
    ];
    const command = options.netns === undefined ? ['dnsmasq', ...args] : ['ip', 'netns', 'exec', options.netns, 'dnsmasq', ...args];
    const child = spawn(command[0]!, command.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    try {
      await waitUntilAnswering(child, address, port, () => stderr);
    } catch (error) {
      if (options.port === undefined && attempt < 5 && /Address already in use/.test(stderr)) continue;
      await rm(dir, { recursive: true, force: true });
      throw error;
    }
    return {
      port,
      address,
      async stop() {
        await stopChild(child);
        await rm(dir, { recursive: true, force: true });
      },
    };
  }
}

async function waitUntilAnswering(child: ChildProcess, address: string, port: number, stderr: () => string): Promise<void> {
  for (let attempt = 0; attempt < 100; attempt++) {
    if (child.exitCode !== null) throw new Error(`dnsmasq exited (${child.exitCode}): ${stderr()}`);
    try {
      await udpQuery(address, port, query('probe.invalid', 'A'), 200);
      return;
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  await stopChild(child);
  throw new Error(`dnsmasq did not answer on ${address}:${port}: ${stderr()}`);
}

function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
}

async function freeUdpPort(address: string): Promise<number> {
  const socket = dgram.createSocket(net.isIPv6(address) ? 'udp6' : 'udp4');
  await new Promise<void>((resolve) => socket.bind(0, address, resolve));
  const { port } = socket.address();
  await new Promise<void>((resolve) => socket.close(() => resolve()));
  return port;
}

let nextId = 1;

/** A recursive query for `name` (one question, class IN), optionally with EDNS. */
export function query(name: string, type: string, options: { id?: number; edns?: number } = {}): Buffer {
  const packet: Packet = {
    type: 'query',
    id: options.id ?? (nextId = (nextId % 65_535) + 1),
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ type: type as 'A', name, class: 'IN' }],
  };
  if (options.edns !== undefined) {
    packet.additionals = [{ type: 'OPT', name: '.', udpPayloadSize: options.edns, extendedRcode: 0, ednsVersion: 0, flags: 0, flag_do: false, options: [] }];
  }
  return dnsPacket.encode(packet);
}

/** Sends one datagram and resolves with the first reply, or rejects after timeoutMs. */
export function udpQuery(address: string, port: number, message: Buffer, timeoutMs = 3_000): Promise<Buffer> {
  const socket = dgram.createSocket(net.isIPv6(address) ? 'udp6' : 'udp4');
  return new Promise<Buffer>((resolve, reject) => {
    const timer = setTimeout(() => done(new Error(`no UDP reply from ${address}:${port} within ${timeoutMs} ms`)), timeoutMs);
    function done(error?: Error, reply?: Buffer): void {
      clearTimeout(timer);
      socket.close();
      if (error) reject(error);
      else resolve(reply!);
    }
    socket.on('message', (reply: Buffer) => done(undefined, reply));
    socket.on('error', (error) => done(error));
    socket.send(message, port, address);
  });
}

/** Sends each message framed on one TCP connection and resolves with the replies (in arrival order). */
export function tcpQuery(address: string, port: number, messages: Buffer[], timeoutMs = 3_000): Promise<Buffer[]> {
  return new Promise<Buffer[]>((resolve, reject) => {
    const socket = net.connect(port, address);
    const replies: Buffer[] = [];
    let pending = Buffer.alloc(0);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`${replies.length} of ${messages.length} TCP replies from ${address}:${port} within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.on('connect', () => {
      for (const message of messages) {
        const length = Buffer.alloc(2);
        length.writeUInt16BE(message.length);
        socket.write(Buffer.concat([length, message]));
      }
    });
    socket.on('data', (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      while (pending.length >= 2 && pending.length >= 2 + pending.readUInt16BE(0)) {
        replies.push(pending.subarray(2, 2 + pending.readUInt16BE(0)));
        pending = pending.subarray(2 + pending.readUInt16BE(0));
      }
      if (replies.length === messages.length) {
        clearTimeout(timer);
        socket.end();
        resolve(replies);
      }
    });
    socket.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}

export function decode(reply: Buffer): DecodedPacket & { rcode?: string } {
  return dnsPacket.decode(reply) as DecodedPacket & { rcode?: string };
}

/** The data of the answers of one type, sorted. */
export function answerData(reply: DecodedPacket, type: string): string[] {
  return (reply.answers ?? []).filter((answer) => answer.type === type).map((answer) => String((answer as { data: unknown }).data)).sort();
}
