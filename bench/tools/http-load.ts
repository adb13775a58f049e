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
import { CallTally, runOpenLoop, warmUp } from './open-loop.ts';

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
  const tally = new CallTally();
  await warmUp(once, Number(values.warmup));
  if (values.count !== undefined) {
    const total = Number(values.count);
    const latencies: number[] = [];
    let next = 0;
    const started = performance.now();
    const worker = async () => {
      while (next < total) {
        next++;
        const begin = performance.now();
        await once().then(tally.record, tally.fail);
        latencies.push((performance.now() - begin) * 1000);
      }
    };
    await Promise.all(Array.from({ length: Number(values.connections) }, worker));
    const seconds = (performance.now() - started) / 1000;
    emitResult({ ...summarizeLatencies(latencies), requestsPerSecond: total / seconds, ...tally.summary() });
    return;
  }
  emitResult({ ...(await runOpenLoop(once, tally, Number(values.rate), Number(values.duration))), ...tally.summary() });
}

exitWithParent();
main().then(
  () => process.exit(0),
  (error: Error) => {
    process.stderr.write(`http-load: ${error.message}\n`);
    process.exit(1);
  },
);
