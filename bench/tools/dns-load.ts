/**
 * DNS load over UDP for the dns suite: keeps `--concurrency` A queries outstanding against 127.0.0.1:`--port` for
 * `--seconds` (after `--warmup` seconds not counted), cycling through `--services` names, and reports answered
 * queries per second and each answered query's latency. Queries are encoded once; a reply is matched by its id, and
 * one that does not come within a second is counted lost and its slot sent again (UDP drops under overload).
 *   node bench/tools/dns-load.ts --port N --services 1000 --concurrency 32 --seconds 5
 *   -> {"result":{"answered":..,"answeredTotal":..,"qps":..,"lost":..,"latencyUs":{p50,p90,p99,max,mean}}}
 * Must not know about: which server answers.
 */
import dgram from 'node:dgram';
import { parseArgs } from 'node:util';
import dnsPacket from 'dns-packet';
import { summarizeLatencies } from '../lib/stats.ts';
import { emitResult } from './common.ts';
import { benchServiceName } from './dns-names.ts';

const { values } = parseArgs({
  options: {
    port: { type: 'string' },
    services: { type: 'string', default: '1000' },
    concurrency: { type: 'string', default: '32' },
    seconds: { type: 'string', default: '5' },
    warmup: { type: 'string', default: '1' },
  },
});
const port = Number(values.port);
const serviceCount = Number(values.services);
const concurrency = Number(values.concurrency);
const LOST_AFTER_MS = 1_000;

const queries = Array.from({ length: serviceCount }, (_, index) => dnsPacket.encode({
  type: 'query', id: 0, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: 'A', name: benchServiceName(index), class: 'IN' }],
}));
const sentAt = new Float64Array(65_536).fill(-1);
const latenciesUs: number[] = [];
let nextId = 0;
let nextName = 0;
let counting = false;
let stopped = false;
let answered = 0;
/** Every reply, warm-up included: what the server's CPU over the whole run paid for. */
let answeredTotal = 0;
let lost = 0;
let bad = 0;

const socket = dgram.createSocket('udp4');

function send(): void {
  if (stopped) return;
  const id = nextId;
  nextId = (nextId + 1) & 0xffff;
  const query = queries[nextName]!;
  nextName = (nextName + 1) % queries.length;
  query.writeUInt16BE(id, 0);
  sentAt[id] = performance.now();
  socket.send(query, port, '127.0.0.1');
}

socket.on('message', (reply: Buffer) => {
  const id = reply.readUInt16BE(0);
  const started = sentAt[id]!;
  if (started < 0) return;
  sentAt[id] = -1;
  answeredTotal++;
  // An answer with no record (rcode in the low four bits of byte 3, ANCOUNT at 6) would not be a fair comparison.
  if ((reply[3]! & 0x0f) !== 0 || reply.readUInt16BE(6) === 0) bad++;
  if (counting) {
    answered++;
    latenciesUs.push((performance.now() - started) * 1000);
  }
  send();
});

socket.bind(0, '127.0.0.1', () => {
  for (let slot = 0; slot < concurrency; slot++) send();
  const sweep = setInterval(() => {
    const now = performance.now();
    for (let id = 0; id < sentAt.length; id++) {
      const started = sentAt[id]!;
      if (started >= 0 && now - started > LOST_AFTER_MS) {
        sentAt[id] = -1;
        if (counting) lost++;
        send();
      }
    }
  }, 250);
  const warmupMs = Number(values.warmup) * 1000;
  const measureMs = Number(values.seconds) * 1000;
  setTimeout(() => {
    counting = true;
    const started = performance.now();
    setTimeout(() => {
      counting = false;
      stopped = true;
      const seconds = (performance.now() - started) / 1000;
      clearInterval(sweep);
      socket.close();
      emitResult({ answered, answeredTotal, seconds, qps: answered / seconds, lost, bad, latencyUs: summarizeLatencies(latenciesUs.length ? latenciesUs : [0]) });
    }, measureMs);
  }, warmupMs);
});
