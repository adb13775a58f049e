import test from 'ava';
import type { ExecutionContext } from 'ava';
import dgram from 'node:dgram';
import net from 'node:net';
import dnsPacket from 'dns-packet';
import fc from 'fast-check';
import { Registry } from 'prom-client';
import { Forwarder } from '../../agent/dns/forwarder.ts';
import { DnsMetrics } from '../../agent/dns/metrics.ts';
import { DnsServer, type DnsClient } from '../../agent/dns/server.ts';
import { serveTcp, serveUdp } from '../../agent/dns/transport.ts';
import { parseUpstream } from '../../agent/dns/upstream.ts';
import { plainSocketFactory } from '../../agent/inpod/socket-factory.ts';
import { StaticServiceRecords, answerData, decode, query, startDnsmasq, tcpQuery, udpQuery, type Dnsmasq } from '../helpers/dns.ts';

const SERVER_VIP = '10.96.0.20';
const SERVER_VIP6 = 'fd00:96::20';
const manyEndpoints = Array.from({ length: 100 }, (_, i) => `10.0.${Math.floor(i / 200)}.${(i % 200) + 10}`);

function records(): StaticServiceRecords {
  return new StaticServiceRecords({
    'server.shop.svc.cluster.local': [SERVER_VIP, SERVER_VIP6],
    'db.data.svc.cluster.local': ['10.96.0.30'],
    // Headless: the endpoints' pod IPs.
    'db-headless.data.svc.cluster.local': ['10.0.1.5', '10.0.2.6', 'fd00:1::5'],
    'big.shop.svc.cluster.local': manyEndpoints,
  });
}

interface Running {
  server: DnsServer;
  port: number;
  stop(): Promise<void>;
}

/** The DNS server on real loopback sockets (UDP and TCP, the same port), as a pod in namespace `shop` reaches it. */
async function startServer(t: ExecutionContext, upstream: string, options: { timeoutMs?: number; namespace?: string } = {}): Promise<Running> {
  const sockets = plainSocketFactory();
  const server = new DnsServer({
    domain: 'cluster.local',
    records: records(),
    forwarder: new Forwarder({ upstreams: [parseUpstream(upstream)], timeoutMs: options.timeoutMs ?? 2_000 }),
  });
  const client: DnsClient = { namespace: options.namespace ?? 'shop', sockets };
  const udp: dgram.Socket = await sockets.bindUdp({ host: '127.0.0.1', port: 0 });
  const port = udp.address().port;
  serveUdp(udp, server, client);
  const tcp = await sockets.listen({ host: '127.0.0.1', port });
  tcp.on('connection', (socket: net.Socket) => serveTcp(socket, server, client));
  const stop = async (): Promise<void> => {
    udp.close();
    await new Promise((resolve) => tcp.close(resolve));
  };
  t.teardown(stop);
  return { server, port, stop };
}

let upstream: Dnsmasq;
test.before(async () => {
  upstream = await startDnsmasq({
    hosts: [
      '192.0.2.10 www.example.test',
      '2001:db8::10 www.example.test',
      // More A records than fit in 512 bytes: dnsmasq truncates over UDP.
      ...Array.from({ length: 60 }, (_, i) => `192.0.2.${100 + i} many.example.test`),
    ],
    ttl: 123,
    // As kube-dns answers an ExternalName Service.
    cnames: ['ext.shop.svc.cluster.local,www.example.test'],
  });
});
test.after.always(async () => upstream?.stop());

const upstreamAddress = (): string => `${upstream.address}:${upstream.port}`;

test('a Service FQDN is answered from the mesh: A and AAAA, authoritative, TTL 30', async (t) => {
  const { port } = await startServer(t, upstreamAddress());
  const a = decode(await udpQuery('127.0.0.1', port, query('server.shop.svc.cluster.local', 'A')));
  t.is(a.rcode, 'NOERROR');
  t.true(a.flag_aa);
  t.deepEqual(answerData(a, 'A'), [SERVER_VIP]);
  t.is(ttlOf(a), 30);
  t.is(a.answers![0]!.name, 'server.shop.svc.cluster.local');
  const aaaa = decode(await udpQuery('127.0.0.1', port, query('server.shop.svc.cluster.local', 'AAAA')));
  t.deepEqual(answerData(aaaa, 'AAAA'), [SERVER_VIP6]);
  // A Service without an IPv6 address: the name exists, so NOERROR with no records, not NXDOMAIN.
  const none = decode(await udpQuery('127.0.0.1', port, query('db.data.svc.cluster.local', 'AAAA')));
  t.is(none.rcode, 'NOERROR');
  t.deepEqual(none.answers, []);
});

test('the short forms a pod search path yields are answered: <svc>, <svc>.<ns>, <svc>.<ns>.svc, and search-path artifacts via CNAME', async (t) => {
  const { port } = await startServer(t, upstreamAddress());
  for (const name of ['server', 'server.shop', 'server.shop.svc', 'SERVER.Shop.svc.cluster.local.']) {
    const reply = decode(await udpQuery('127.0.0.1', port, query(name, 'A')));
    t.deepEqual(answerData(reply, 'A'), [SERVER_VIP], name);
    t.true(reply.flag_aa, name);
  }
  // From another namespace, a Service in `data` by <svc>.<ns>.
  const db = decode(await udpQuery('127.0.0.1', port, query('db.data', 'A')));
  t.deepEqual(answerData(db, 'A'), ['10.96.0.30']);
  // ndots:5 makes the resolver try `server.shop` + search domain `shop.svc.cluster.local` first.
  const artifact = decode(await udpQuery('127.0.0.1', port, query('server.shop.shop.svc.cluster.local', 'A')));
  t.deepEqual(answerData(artifact, 'CNAME'), ['server.shop']);
  t.deepEqual(answerData(artifact, 'A'), [SERVER_VIP]);
});

test('a headless Service answers with its endpoints\' pod IPs, per family', async (t) => {
  const { port } = await startServer(t, upstreamAddress());
  const a = decode(await udpQuery('127.0.0.1', port, query('db-headless.data.svc.cluster.local', 'A')));
  t.deepEqual(answerData(a, 'A'), ['10.0.1.5', '10.0.2.6']);
  const aaaa = decode(await udpQuery('127.0.0.1', port, query('db-headless.data.svc.cluster.local', 'AAAA')));
  t.deepEqual(answerData(aaaa, 'AAAA'), ['fd00:1::5']);
});

test('a Service name the mesh does not hold goes to the upstream: an ExternalName Service\'s CNAME comes back as the cluster DNS gave it', async (t) => {
  const { port, server } = await startServer(t, upstreamAddress());
  // The control plane sends no Address resource for an ExternalName Service (istiod leaves it out): kube-dns answers it.
  for (const name of ['ext.shop.svc.cluster.local', 'EXT.shop.svc.cluster.local.']) {
    const message = query(name, 'A');
    const proxied = await udpQuery('127.0.0.1', port, message);
    t.deepEqual(proxied, await udpQuery(upstream.address, upstream.port, message), name);
    const reply = decode(proxied);
    t.deepEqual(reply.answers?.flatMap((answer) => (answer.type === 'CNAME' ? [String(answer.data).toLowerCase()] : [])), ['www.example.test'], name);
    t.deepEqual(answerData(reply, 'A'), ['192.0.2.10'], name);
  }
  t.is(server.stats.forwarded, 2);
  t.is(server.stats.answered, 0, 'none of them answered from the mesh');
});

test('other names go to the upstream and come back byte for byte: answer, TTL, NXDOMAIN, other record types', async (t) => {
  const { port, server } = await startServer(t, upstreamAddress());
  for (const [name, type] of [['www.example.test', 'A'], ['www.example.test', 'AAAA'], ['missing.example.test', 'A'], ['www.example.test', 'MX'], ['server', 'MX']] as const) {
    const message = query(name, type);
    const direct = await udpQuery(upstream.address, upstream.port, message);
    const proxied = await udpQuery('127.0.0.1', port, message);
    t.deepEqual(proxied, direct, `${type} ${name}`);
  }
  const www = decode(await udpQuery('127.0.0.1', port, query('www.example.test', 'A')));
  t.deepEqual(answerData(www, 'A'), ['192.0.2.10']);
  t.is(ttlOf(www), 123);
  t.is(decode(await udpQuery('127.0.0.1', port, query('missing.example.test', 'A'))).rcode, 'NXDOMAIN');
  // `server` from a namespace without that Service is not ours either.
  t.true(server.stats.forwarded >= 5);
});

test('TCP: several queries on one connection, service names and forwarded names', async (t) => {
  const { port } = await startServer(t, upstreamAddress());
  const replies = await tcpQuery('127.0.0.1', port, [query('server', 'A', { id: 7 }), query('www.example.test', 'A', { id: 8 })]);
  const byId = new Map(replies.map((reply) => [decode(reply).id, decode(reply)]));
  t.deepEqual(answerData(byId.get(7)!, 'A'), [SERVER_VIP]);
  t.deepEqual(answerData(byId.get(8)!, 'A'), ['192.0.2.10']);
});

test('an answer too large for UDP is truncated (TC, no records) and complete over TCP, ours and the upstream\'s', async (t) => {
  const { port } = await startServer(t, upstreamAddress());
  const ours = decode(await udpQuery('127.0.0.1', port, query('big', 'A')));
  t.true(ours.flag_tc);
  t.deepEqual(ours.answers, []);
  const [oursTcp] = await tcpQuery('127.0.0.1', port, [query('big', 'A')]);
  t.false(decode(oursTcp!).flag_tc);
  t.is(answerData(decode(oursTcp!), 'A').length, manyEndpoints.length);
  const theirs = decode(await udpQuery('127.0.0.1', port, query('many.example.test', 'A')));
  t.true(theirs.flag_tc, 'the upstream\'s TC reaches the client');
  const [theirsTcp] = await tcpQuery('127.0.0.1', port, [query('many.example.test', 'A')]);
  t.is(answerData(decode(theirsTcp!), 'A').length, 60);
});

test('an upstream that does not answer gives SERVFAIL, and the server keeps serving', async (t) => {
  // A UDP port nobody listens on: the kernel's refusal ends the wait; TCP is refused outright.
  const { port, server } = await startServer(t, `127.0.0.1:${await unusedPort()}`, { timeoutMs: 500 });
  const udp = decode(await udpQuery('127.0.0.1', port, query('www.example.test', 'A')));
  t.is(udp.rcode, 'SERVFAIL');
  const [tcp] = await tcpQuery('127.0.0.1', port, [query('www.example.test', 'A')]);
  t.is(decode(tcp!).rcode, 'SERVFAIL');
  t.is(server.stats.upstreamFailures, 2);
  t.deepEqual(answerData(decode(await udpQuery('127.0.0.1', port, query('server', 'A'))), 'A'), [SERVER_VIP]);
});

test('a rude upstream: a reply with another id (a spoofing attempt, a late answer) is ignored, the real one is passed on', async (t) => {
  // A relay in front of dnsmasq that first answers every query with a forged reply under the wrong id.
  const relay = dgram.createSocket('udp4');
  await new Promise<void>((resolve) => relay.bind(0, '127.0.0.1', resolve));
  t.teardown(() => relay.close());
  relay.on('message', (message: Buffer, from: dgram.RemoteInfo) => {
    const forged = dnsPacket.encode({ type: 'response', id: (message.readUInt16BE(0) + 1) % 65_536, flags: dnsPacket.RECURSION_AVAILABLE, questions: dnsPacket.decode(message).questions ?? [], answers: [{ type: 'A', name: 'www.example.test', ttl: 1, data: '203.0.113.66' }] });
    relay.send(forged, from.port, from.address);
    void udpQuery(upstream.address, upstream.port, message).then((reply) => relay.send(reply, from.port, from.address));
  });
  const { port } = await startServer(t, `127.0.0.1:${relay.address().port}`);
  const reply = decode(await udpQuery('127.0.0.1', port, query('www.example.test', 'A')));
  t.deepEqual(answerData(reply, 'A'), ['192.0.2.10']);
});

test('malformed input: FORMERR with the id when there is a header, dropped when not, NOTIMP for other opcodes', async (t) => {
  const { port, server } = await startServer(t, upstreamAddress());
  const good = query('server', 'A', { id: 0x1234 });
  // Cut inside the question: the header is readable, the body is not.
  const cut = decode(await udpQuery('127.0.0.1', port, good.subarray(0, 20)));
  t.is(cut.id, 0x1234);
  t.is(cut.rcode, 'FORMERR');
  // Two questions.
  const two = dnsPacket.encode({ type: 'query', id: 9, questions: [{ type: 'A', name: 'a' }, { type: 'A', name: 'b' }] });
  t.is(decode(await udpQuery('127.0.0.1', port, two)).rcode, 'FORMERR');
  // Opcode 2 (STATUS).
  const status = Buffer.from(good);
  status.writeUInt16BE((2 << 11) | 0x0100, 2);
  t.is(decode(await udpQuery('127.0.0.1', port, status)).rcode, 'NOTIMP');
  // Too short for a header, and a response: nothing comes back (proved by the next query's answer arriving first).
  const dropped = server.stats.dropped;
  await t.throwsAsync(udpQuery('127.0.0.1', port, Buffer.from([1, 2, 3]), 300));
  const response = Buffer.from(good);
  response[2] = response[2]! | 0x80;
  await t.throwsAsync(udpQuery('127.0.0.1', port, response, 300));
  t.is(server.stats.dropped, dropped + 2);
});

test('fuzz: arbitrary and mutated messages never make the server throw, and every reply echoes the id with QR set', async (t) => {
  const server = new DnsServer({
    domain: 'cluster.local',
    records: records(),
    forwarder: new Forwarder({ upstreams: [parseUpstream(upstreamAddress())], timeoutMs: 500 }),
  });
  const client: DnsClient = { namespace: 'shop', sockets: plainSocketFactory() };
  const seeds = [query('server', 'A'), query('www.example.test', 'AAAA', { edns: 4096 }), query('big.shop.svc.cluster.local', 'A')];
  const mutated = fc.tuple(fc.constantFrom(...seeds), fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 8 }), fc.nat())
    .map(([seed, edits, cut]) => {
      const copy = Buffer.from(seed);
      for (const [at, value] of edits) copy[at % copy.length] = value;
      return copy.subarray(0, Math.max(0, copy.length - (cut % 4 === 0 ? cut % copy.length : 0)));
    });
  const input = fc.oneof(fc.uint8Array({ maxLength: 600 }).map((bytes) => Buffer.from(bytes)), mutated);
  await fc.assert(fc.asyncProperty(input, fc.constantFrom('udp' as const, 'tcp' as const), async (message, transport) => {
    const reply = await server.answer(message, transport, client);
    if (reply === undefined) return true;
    if (reply.length < 12 || (reply[2]! & 0x80) === 0) return false;
    if (reply.readUInt16BE(0) !== message.readUInt16BE(0)) return false;
    return transport === 'tcp' || reply.length <= 1232;
  }), { numRuns: 400 });
  t.pass();
});

test('TCP: a zero length frame or garbage closes that connection only', async (t) => {
  const { port } = await startServer(t, upstreamAddress());
  const closed = await new Promise<boolean>((resolve) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.write(Buffer.from([0, 0, 1, 2, 3])));
    socket.on('close', () => resolve(true));
    socket.on('error', () => undefined);
  });
  t.true(closed);
  const [reply] = await tcpQuery('127.0.0.1', port, [query('server', 'A')]);
  t.deepEqual(answerData(decode(reply!), 'A'), [SERVER_VIP]);
});

function ttlOf(reply: ReturnType<typeof decode>): number | undefined {
  return (reply.answers?.[0] as { ttl?: number } | undefined)?.ttl;
}

async function unusedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

test('metrics: ztunnel\'s DNS series by query type, protocol and the pod\'s canonical names; odd query types share one series', async (t) => {
  const registry = new Registry();
  const server = new DnsServer({
    domain: 'cluster.local', records: records(), metrics: new DnsMetrics(registry),
    forwarder: new Forwarder({ upstreams: [parseUpstream(upstreamAddress())] }),
  });
  const client: DnsClient = { namespace: 'shop', sockets: plainSocketFactory(), source: { canonicalService: 'client', canonicalRevision: 'v1' }, metricsCache: new Map() };
  await server.answer(query('server', 'A'), 'udp', client);
  await server.answer(query('server', 'A'), 'udp', client); // from the response cache
  await server.answer(query('www.example.test', 'A'), 'udp', client);
  await server.answer(query('server', 'AAAA'), 'tcp', client);
  for (const type of [65_280, 65_281, 65_282]) {
    const message = query('x.example.test', 'A');
    message.writeUInt16BE(type, message.length - 4);
    await server.answer(message, 'udp', client);
  }
  const text = await registry.metrics();
  const labels = (type: string, protocol: string): string => `request_query_type="${type}",request_protocol="${protocol}",source_canonical_service="client",source_canonical_revision="v1"`;
  t.true(text.includes(`istio_dns_requests_total{${labels('a', 'udp')}} 3`), text);
  t.true(text.includes(`istio_dns_requests_total{${labels('aaaa', 'tcp')}} 1`));
  t.true(text.includes(`istio_dns_upstream_requests_total{${labels('a', 'udp')}} 1`));
  t.true(text.includes(`istio_dns_upstream_request_duration_seconds_count{${labels('a', 'udp')}} 1`));
  t.true(text.includes(`istio_dns_requests_total{${labels('other', 'udp')}} 3`));
});
