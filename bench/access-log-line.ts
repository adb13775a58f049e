/**
 * Micro-benchmark of the waypoint's access-log line: CPU per line through the waypoint's logger (pino on an
 * asynchronous sonic-boom destination gathering 8 KiB, as waypoint/main.ts makes it) into a file, the line built as
 * text (waypoint/access-log.ts's logRequest) against the object form pino serialises (`log.info(requestLogLine(...))`,
 * the line before session s6), alternated in one process; and with the level silent (the cost of the record alone).
 *
 *   node bench/access-log-line.ts [--lines N] [--rounds R] [--no-file]
 *
 * `--destinations`: instead, the text line through the two file destinations the waypoint has had, alternated:
 * sonic-boom gathering 8 KiB itself (`minLength`, before session s9) and waypoint/log-destination.ts gathering the
 * lines and handing sonic-boom one string per batch; CPU per line and young-generation collections per 1,000 lines.
 *
 * Must not know about: the proxy. Prints one line per round and form: CPU µs per line (user + system).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { constants as perfConstants, PerformanceObserver } from 'node:perf_hooks';
import { logRequest, REQUEST_LOG_MESSAGE, requestLogLine, type RequestRecord } from '../waypoint/access-log.ts';
import { BatchedLogDestination, bufferFileSink } from '../waypoint/log-destination.ts';

const { values } = parseArgs({ options: { lines: { type: 'string', default: '60000' }, rounds: { type: 'string', default: '3' }, 'no-file': { type: 'boolean', default: false }, destinations: { type: 'boolean', default: false } } });
const directory = mkdtempSync(join(tmpdir(), 'ambit-access-log-'));
const destination = pino.destination({ dest: join(directory, 'access.log'), sync: false, minLength: 8192 });
/** --no-file: lines go to a stream that drops them, so only building and framing the line is measured. */
const dropping = { write: (_line: string): boolean => true, flush: (callback: () => void) => callback(), flushSync: () => undefined };
const output = values['no-file'] ? dropping : destination;
const log = pino({ level: 'info', base: { waypoint: 'waypoint' } }, output);

const record: RequestRecord = {
  method: 'POST', path: '/bench', protocol: 'HTTP/1.1', authority: '10.240.5.11:80', status: 200, flags: '-', details: 'via_upstream', durationMs: 1.6,
  bytesReceived: 1024, bytesSent: 1024, upstreamHost: '10.74.2.7:8080', upstreamCluster: 'bench-mesh/via.bench-mesh.svc.cluster.local', attempts: 1, routeName: '', ruleName: '',
  requestId: '9b2c4a8e-51f3-4a6e-9d0b-2f4f3c1e8a77', traceId: '4bf92f3577b34da6a3ce929d0e0e4736', spanId: '00f067aa0ba902b7',
  src: { principal: 'spiffe://cluster.local/ns/bench-mesh/sa/client', workload: 'client', namespace: 'bench-mesh', address: '10.74.1.5' },
  dst: { principal: 'spiffe://cluster.local/ns/bench-mesh/sa/server-v1', workload: 'server-v1', namespace: 'bench-mesh', service: 'via.bench-mesh.svc.cluster.local' },
};

/** Lines at 20 per millisecond (a 1,000/s waypoint's 50 ms of lines per turn would be fewer; the per-line cost is the point). */
async function run(write: () => void, lines: number): Promise<number> {
  const before = process.cpuUsage();
  for (let index = 0; index < lines; index++) {
    // A fresh record per line, as per request (the waypoint builds one per request).
    write();
    if (index % 20 === 19) await new Promise((resolve) => setImmediate(resolve));
  }
  await new Promise<void>((resolve) => output.flush(() => resolve()));
  const used = process.cpuUsage(before);
  return (used.user + used.system) / lines;
}

const lines = Number(values.lines);

if (values.destinations) {
  let scavenges = 0;
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) if ((entry as unknown as { detail?: { kind?: number } }).detail?.kind === perfConstants.NODE_PERFORMANCE_GC_MINOR) scavenges++;
  }).observe({ entryTypes: ['gc'] });
  const sonic = pino.destination({ dest: join(directory, 'sonic.log'), sync: false, minLength: 8192 });
  const batched = new BatchedLogDestination(bufferFileSink(join(directory, 'batched.log')), 8192, 250);
  const loggers: Array<[string, pino.Logger, () => void]> = [
    ['sonic-boom minLength 8 KiB', pino({ level: 'info', base: { waypoint: 'waypoint' } }, sonic), () => sonic.flushSync()],
    ['log-destination.ts batches', pino({ level: 'info', base: { waypoint: 'waypoint' } }, batched), () => batched.flushSync()],
  ];
  const measure = async ([, logger, flush]: [string, pino.Logger, () => void], count: number): Promise<{ cpu: number; scavenges: number }> => {
    const before = process.cpuUsage();
    const scavengesBefore = scavenges;
    for (let index = 0; index < count; index++) {
      logRequest(logger, { ...record, durationMs: Math.random() * 5 });
      if (index % 20 === 19) await new Promise((resolve) => setImmediate(resolve));
    }
    flush();
    await new Promise((resolve) => setImmediate(resolve));
    const used = process.cpuUsage(before);
    return { cpu: (used.user + used.system) / count, scavenges: ((scavenges - scavengesBefore) * 1000) / count };
  };
  for (const form of loggers) await measure(form, 5000);
  for (let round = 1; round <= Number(values.rounds); round++) {
    for (const form of round % 2 === 1 ? loggers : [...loggers].reverse()) {
      const { cpu, scavenges: perThousand } = await measure(form, lines);
      process.stdout.write(`round ${round} ${form[0]}: ${cpu.toFixed(2)} µs CPU per line, ${perThousand.toFixed(2)} scavenges per 1,000 lines\n`);
    }
  }
  batched.close();
  rmSync(directory, { recursive: true, force: true });
  process.exit(0);
}

const forms: Array<[string, () => void]> = [
  ['text (logRequest)', () => logRequest(log, { ...record, durationMs: Math.random() * 5 })],
  ['object (pino serialises)', () => log.info(requestLogLine({ ...record, durationMs: Math.random() * 5 }), REQUEST_LOG_MESSAGE)],
];
await run(forms[0]![1], 5000);
await run(forms[1]![1], 5000);
for (let round = 1; round <= Number(values.rounds); round++) {
  for (const [name, write] of round % 2 === 1 ? forms : [...forms].reverse()) {
    process.stdout.write(`round ${round} ${name}: ${(await run(write, lines)).toFixed(2)} µs CPU per line\n`);
  }
}
log.level = 'silent';
process.stdout.write(`level silent (the record and the call only): ${(await run(forms[0]![1], lines)).toFixed(2)} µs CPU per line\n`);
destination.flushSync();
rmSync(directory, { recursive: true, force: true });
