/**
 * The cost of a new HBONE stream on a warm pool, measured in the library's own terms: from `open()` to the first
 * byte echoed back through our server from the target. One process that is the HBONE client itself.
 *
 *   hbone-open.ts --cert client.json --proxy 127.0.0.1:<our server> --destination 127.0.0.1:<target>
 *                 --expect spiffe://.../sa/bench-server --count 2000 --warmup 200
 *
 * Streams run one after another and each is closed (both ways) before the next opens, so the pool keeps one
 * connection. Prints `{"result":{p50,p99,...}}` in microseconds.
 */
import { parseArgs } from 'node:util';
import { HboneClientPool } from '../../shared/hbone/index.ts';
import type { HboneTarget } from '../../shared/hbone/types.ts';
import { summarizeLatencies } from '../lib/stats.ts';
import { emitResult, exitWithParent, parseHostPort, readWorkloadCertificate } from './common.ts';

const { values } = parseArgs({
  options: {
    cert: { type: 'string' },
    proxy: { type: 'string' },
    destination: { type: 'string' },
    expect: { type: 'string', multiple: true, default: [] },
    count: { type: 'string', default: '2000' },
    warmup: { type: 'string', default: '200' },
  },
});
if (!values.cert || !values.proxy || !values.destination) throw new Error('--cert, --proxy and --destination are required');

exitWithParent();
const certificate = readWorkloadCertificate(values.cert);
const pool = new HboneClientPool({ certificateFor: () => certificate, trustDomain: certificate.identity.trustDomain });
const target: HboneTarget = {
  proxy: parseHostPort(values.proxy),
  destination: parseHostPort(values.destination),
  sourceIdentity: certificate.identity,
  expectedIdentities: values.expect,
};
const count = Number(values.count);
const warmup = Number(values.warmup);
const probe = Buffer.from('Ex');
const samples = new Float64Array(count);

try {
  for (let i = -warmup; i < count; i++) {
    const t0 = process.hrtime.bigint();
    const stream = await pool.open(target);
    const echoed = new Promise<void>((resolve, reject) => {
      stream.once('data', () => resolve());
      stream.once('error', reject);
      stream.once('close', () => reject(new Error('stream closed before the echo')));
    });
    stream.write(probe);
    await echoed;
    if (i >= 0) samples[i] = Number(process.hrtime.bigint() - t0) / 1e3;
    stream.removeAllListeners('close');
    stream.removeAllListeners('error');
    stream.on('error', () => undefined);
    const closed = new Promise<void>((resolve) => stream.once('close', () => resolve()));
    stream.resume();
    stream.end();
    await closed;
  }
  emitResult(summarizeLatencies(samples));
  await pool.close();
  process.exit(0);
} catch (error) {
  process.stderr.write(`hbone-open: ${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
}
