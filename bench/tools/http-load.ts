/**
 * HTTP/1.1 load for the waypoint suite, open loop: POST requests with a B-byte body scheduled at R/s for S seconds
 * over C keep-alive connections (a request waits for a free connection when all are busy), each timed from its
 * scheduled start (no coordinated omission), or a fixed number of requests as fast as C connections allow.
 *
 *   node bench/tools/http-load.ts --host H --port P --rate R --duration S --connections C --size B [--warmup N]
 *   node bench/tools/http-load.ts --host H --port P --count N --connections C --size B        (closed loop)
 *   [--method GET] [--path /p] [--header 'name: value']...   (default POST /bench; --header repeats)
 *
 * Prints `{"result":{...latency summary µs, requestsPerSecond, failed, backends: {name: count}}}`: the backends are
 * the responses' `x-backend` headers (bench/tools/http-target.ts), for weighted splits.
 * Must not know about: what sits between it and the target.
 */
import http from 'node:http';
import { parseArgs } from 'node:util';
import { summarizeLatencies } from '../lib/stats.ts';
import { emitResult, exitWithParent } from './common.ts';

const { values } = parseArgs({
  options: {
    host: { type: 'string' },
    port: { type: 'string' },
    rate: { type: 'string' },
    duration: { type: 'string', default: '5' },
    count: { type: 'string' },
    connections: { type: 'string', default: '16' },
    size: { type: 'string', default: '1024' },
    warmup: { type: 'string', default: '200' },
    method: { type: 'string', default: 'POST' },
    path: { type: 'string', default: '/bench' },
    header: { type: 'string', multiple: true, default: [] },
  },
});
const agent = new http.Agent({ keepAlive: true, maxSockets: Number(values.connections), maxFreeSockets: Number(values.connections) });
const body = Buffer.alloc(values.method === 'GET' ? 0 : Number(values.size), 'y');
const extraHeaders: Record<string, string> = {};
for (const header of values.header) {
  const colon = header.indexOf(':');
  if (colon < 1) throw new Error(`--header ${header}: expected 'name: value'`);
  extraHeaders[header.slice(0, colon).trim().toLowerCase()] = header.slice(colon + 1).trim();
}
const options: http.RequestOptions = { host: values.host, port: Number(values.port), method: values.method, path: values.path, agent, headers: { ...extraHeaders, ...(values.method === 'GET' ? {} : { 'content-length': String(body.length), 'content-type': 'application/octet-stream' }) } };

function once(): Promise<string> {
  return new Promise((resolve, reject) => {
    const request = http.request(options, (response) => {
      response.on('data', () => {});
      response.on('end', () => (response.statusCode === 200 ? resolve(String(response.headers['x-backend'] ?? '')) : reject(new Error(`status ${response.statusCode}`))));
      response.on('error', reject);
    });
    request.setTimeout(10_000, () => request.destroy(new Error('no answer within 10 s')));
    request.on('error', reject);
    request.end(body);
  });
}

async function main(): Promise<void> {
  const backends: Record<string, number> = {};
  let failed = 0;
  const errors = new Map<string, number>();
  const record = (backend: string) => void (backends[backend] = (backends[backend] ?? 0) + 1);
  const fail = (error: Error) => {
    failed++;
    errors.set(error.message, (errors.get(error.message) ?? 0) + 1);
  };
  for (let index = 0; index < Number(values.warmup); index++) await once().catch(() => undefined);
  if (values.count !== undefined) {
    const total = Number(values.count);
    const latencies: number[] = [];
    let next = 0;
    const started = performance.now();
    const worker = async () => {
      while (next < total) {
        next++;
        const begin = performance.now();
        await once().then(record, fail);
        latencies.push((performance.now() - begin) * 1000);
      }
    };
    await Promise.all(Array.from({ length: Number(values.connections) }, worker));
    const seconds = (performance.now() - started) / 1000;
    emitResult({ ...summarizeLatencies(latencies), requestsPerSecond: total / seconds, failed, backends, errors: Object.fromEntries(errors) });
    return;
  }
  const rate = Number(values.rate);
  const total = Math.round(rate * Number(values.duration));
  const latencies = new Float64Array(total);
  let done = 0;
  const started = performance.now();
  await new Promise<void>((resolve) => {
    let sent = 0;
    const tick = () => {
      const due = Math.min(total, Math.floor(((performance.now() - started) / 1000) * rate) + 1);
      for (; sent < due; sent++) {
        const scheduled = started + (sent / rate) * 1000;
        const slot = sent;
        once().then(record, fail).finally(() => {
          latencies[slot] = (performance.now() - scheduled) * 1000;
          if (++done === total) resolve();
        });
      }
      if (sent < total) setTimeout(tick, 1);
    };
    tick();
  });
  const seconds = (performance.now() - started) / 1000;
  emitResult({ ...summarizeLatencies(latencies), requestsPerSecond: (total - failed) / seconds, failed, backends, errors: Object.fromEntries(errors) });
}

exitWithParent();
main().then(
  () => process.exit(0),
  (error: Error) => {
    process.stderr.write(`http-load: ${error.message}\n`);
    process.exit(1);
  },
);
