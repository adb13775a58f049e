/**
 * The DNS proxy on the real in-pod path: a pod's rules (both iptables backends, both families) send its port-53
 * traffic to the agent's 15053 sockets inside the pod's namespace; glibc's own resolver (`getent` under
 * `ip netns exec`, which bind-mounts /etc/netns/<ns>/resolv.conf) gets Service names answered from the mesh state,
 * and other names from a real dnsmasq in another namespace, reached from the pod's namespace with the agent's mark.
 * The pod's resolv.conf names a resolver that does not exist: every answer it gets came through the agent.
 */
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import dgram from 'node:dgram';
import { existsSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { Forwarder } from '../../agent/dns/forwarder.ts';
import { MeshServiceRecords } from '../../agent/dns/mesh-records.ts';
import { DnsServer } from '../../agent/dns/server.ts';
import { podDnsHandler } from '../../agent/dns/transport.ts';
import { parseUpstream } from '../../agent/dns/upstream.ts';
import { CaptureManager } from '../../agent/inpod/capture-manager.ts';
import type { CapturedTrafficHandler, PodInfo } from '../../agent/inpod/pod-listeners.ts';
import type { IptablesBackend } from '../../agent/inpod/rules.ts';
import { nativeSockets } from '../../agent/inpod/sockets.ts';
import { MeshState } from '../../shared/mesh/mesh-state.ts';
import { answerData, decode, query, startDnsmasq } from '../helpers/dns.ts';
import { connectFrom, createPodTopology, type PodTopology } from './helpers/inpod-topology.ts';

const exec = promisify(execFile);

const SERVER_VIP = '10.96.0.20';
const SERVER_VIP6 = 'fd00:96::20';
/** What the pod's resolv.conf names: an on-link address where nothing answers. */
const FAKE_RESOLVER = '10.77.0.53';

const backends: IptablesBackend[] = existsSync('/usr/sbin/iptables-legacy-restore') ? ['nft', 'legacy'] : ['nft'];

/** Drops every connection: this test only exercises DNS. */
const NO_TRAFFIC: CapturedTrafficHandler = { accepted: (_kind, socket) => socket.destroy() };

function meshState(): MeshState {
  const state = new MeshState();
  const base = { ports: [{ servicePort: 80, targetPort: 8080 }], subjectAltNames: [], ipFamilies: 'DUAL' as const };
  state.upsertService({ ...base, name: 'server', namespace: 'shop', hostname: 'server.shop.svc.cluster.local', vips: [{ network: '', address: SERVER_VIP }, { network: '', address: SERVER_VIP6 }] });
  state.upsertService({ ...base, name: 'db', namespace: 'shop', hostname: 'db.shop.svc.cluster.local', vips: [] });
  state.upsert({
    uid: 'db-0', name: 'db-0', namespace: 'shop', serviceAccount: 'db', trustDomain: 'cluster.local', node: 'node-1', addresses: ['10.0.5.7', 'fd00:5::7'],
    tunnelProtocol: 'HBONE', captureReason: 'test', canonicalName: 'db', canonicalRevision: 'latest', workloadName: 'db',
    services: { 'shop/db.shop.svc.cluster.local': [{ servicePort: 80, targetPort: 8080 }] },
  });
  return state;
}

interface Fixture {
  topology: PodTopology;
  pod: PodInfo;
  server: DnsServer;
}

async function setUp(t: ExecutionContext, backend: IptablesBackend): Promise<Fixture> {
  const topology = await createPodTopology(undefined, { dualStack: true });
  const resolvDir = `/etc/netns/${topology.pod.name}`;
  // Teardowns run in reverse order: the manager (rules, listeners) first, the namespaces last.
  t.teardown(async () => {
    await rm(resolvDir, { recursive: true, force: true });
    await topology.destroy();
  });
  const upstream = await startDnsmasq({ hosts: ['192.0.2.10 www.example.test'], netns: topology.peer.name, address: topology.peer.ip, port: 53 });
  t.teardown(() => upstream.stop());
  const server = new DnsServer({
    domain: 'cluster.local',
    records: new MeshServiceRecords(meshState()),
    forwarder: new Forwarder({ upstreams: [parseUpstream(`${topology.peer.ip}:53`)] }),
  });
  const manager = new CaptureManager({ handler: NO_TRAFFIC, backend, inbound: 'tproxy', netnsCheckIntervalMs: 0, dns: podDnsHandler(server) });
  t.teardown(() => manager.close());
  const pod: PodInfo = { uid: `uid-${topology.pod.name}`, name: 'client', namespace: 'shop', netns: topology.pod.path, ips: [topology.pod.ip, topology.pod.ip6!] };
  await manager.add(pod);
  await mkdir(resolvDir, { recursive: true });
  await writeFile(`${resolvDir}/resolv.conf`, `nameserver ${FAKE_RESOLVER}\nsearch shop.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5 timeout:2 attempts:2\n`);
  return { topology, pod, server };
}

async function getent(netns: string, database: string, name: string): Promise<string[]> {
  const { stdout } = await exec('ip', ['netns', 'exec', netns, 'getent', database, name]).catch((error: { code?: number; stdout?: string }) => {
    // getent exits 2 when the name does not resolve.
    if (error.code === 2) return { stdout: '' };
    throw error;
  });
  return stdout.trim().split('\n').filter((line) => line !== '');
}

for (const backend of backends) {
  test(`${backend}: a captured pod resolves Service names (every form, headless, AAAA) through the agent, and other names through the upstream`, async (t) => {
    const { topology, server } = await setUp(t, backend);
    const ns = topology.pod.name;
    for (const name of ['server', 'server.shop', 'server.shop.svc', 'server.shop.svc.cluster.local']) {
      t.deepEqual(await getent(ns, 'ahostsv4', name).then(addresses), [SERVER_VIP], name);
    }
    t.deepEqual(await getent(ns, 'ahostsv6', 'server').then(addresses), [SERVER_VIP6]);
    t.deepEqual(await getent(ns, 'ahostsv4', 'db').then(addresses), ['10.0.5.7'], 'headless: the pod IP');
    t.deepEqual(await getent(ns, 'ahostsv6', 'db').then(addresses), ['fd00:5::7']);
    t.deepEqual(await getent(ns, 'hosts', 'nosuch'), [], 'an unknown name resolves to nothing');
    // Forwarded from inside the pod, marked: dnsmasq in the peer namespace answers.
    t.deepEqual(await getent(ns, 'ahostsv4', 'www.example.test').then(addresses), ['192.0.2.10']);
    t.true(server.stats.answered >= 6);
    t.true(server.stats.forwarded >= 2, 'the unknown name (the upstream\'s to answer) and www.example.test');
  });

  test(`${backend}: DNS over TCP and over IPv6 from the pod reaches the agent too`, async (t) => {
    const { topology } = await setUp(t, backend);
    // TCP to the (nonexistent) resolver: redirected to 15053.
    const tcp = decode(await tcpFromPod(topology.pod.path, FAKE_RESOLVER, query('server.shop.svc.cluster.local', 'A')));
    t.deepEqual(answerData(tcp, 'A'), [SERVER_VIP]);
    const forwarded = decode(await tcpFromPod(topology.pod.path, FAKE_RESOLVER, query('www.example.test', 'A')));
    t.deepEqual(answerData(forwarded, 'A'), ['192.0.2.10'], 'forwarded over TCP');
    // UDP to an IPv6 resolver address: ip6tables redirect to [::1]:15053.
    const v6 = decode(await udpFromPod(topology.pod.path, 'fd77::53', query('server', 'AAAA')));
    t.deepEqual(answerData(v6, 'AAAA'), [SERVER_VIP6]);
  });
}

test('without a DNS handler the pod\'s DNS is not redirected', async (t) => {
  const topology = await createPodTopology(undefined, {});
  const manager = new CaptureManager({ handler: NO_TRAFFIC, backend: 'nft', inbound: 'tproxy', netnsCheckIntervalMs: 0 });
  t.teardown(async () => {
    await manager.close();
    await topology.destroy();
  });
  await manager.add({ uid: 'u', name: 'client', namespace: 'shop', netns: topology.pod.path, ips: [topology.pod.ip] });
  const { stdout } = await exec('ip', ['netns', 'exec', topology.pod.name, 'iptables-save', '-t', 'nat']);
  t.notRegex(stdout, /15053/);
  t.regex(stdout, /REDIRECT --to-ports 15001/, 'the pod is captured otherwise');
});

function addresses(lines: string[]): string[] {
  return [...new Set(lines.map((line) => line.split(/\s+/)[0]!))].sort();
}

/** An application's UDP query from inside the pod's namespace (unmarked, so the pod's rules apply). */
async function udpFromPod(netns: string, resolver: string, message: Buffer, timeoutMs = 3_000): Promise<Buffer> {
  const v6 = resolver.includes(':');
  const fd = nativeSockets.bindUdp({ netns, host: v6 ? '::' : '0.0.0.0', port: 0 });
  const socket = dgram.createSocket(v6 ? 'udp6' : 'udp4');
  await new Promise<void>((resolve) => socket.bind({ fd }, resolve));
  return new Promise<Buffer>((resolve, reject) => {
    const timer = setTimeout(() => done(new Error(`no reply from ${resolver} within ${timeoutMs} ms`)), timeoutMs);
    function done(error?: Error, reply?: Buffer): void {
      clearTimeout(timer);
      socket.close();
      if (error) reject(error);
      else resolve(reply!);
    }
    socket.on('message', (reply: Buffer) => done(undefined, reply));
    socket.on('error', (error) => done(error));
    socket.send(message, 53, resolver);
  });
}

/** An application's TCP query from inside the pod's namespace. */
function tcpFromPod(netns: string, resolver: string, message: Buffer): Promise<Buffer> {
  const socket = connectFrom(netns, resolver, 53);
  return new Promise<Buffer>((resolve, reject) => {
    let pending = Buffer.alloc(0);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no TCP reply from ${resolver}`));
    }, 5_000);
    socket.on('connect', () => {
      const length = Buffer.alloc(2);
      length.writeUInt16BE(message.length);
      socket.write(Buffer.concat([length, message]));
    });
    socket.on('data', (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      if (pending.length >= 2 && pending.length >= 2 + pending.readUInt16BE(0)) {
        clearTimeout(timer);
        socket.destroy();
        resolve(pending.subarray(2, 2 + pending.readUInt16BE(0)));
      }
    });
    socket.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}
