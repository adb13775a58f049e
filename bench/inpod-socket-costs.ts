/**
 * What a delivery's socket into a pod costs the agent, made one at a time on the connection's path or taken from the
 * pod's socket stock (agent/inpod/socket-stock.ts; issue 14, the storm step): the in-pod factory's `connect` as the
 * server agent calls it for every HBONE tunnel (marked, IP_TRANSPARENT, bound to the client's address with port 0),
 * connected to a listener in the pod's namespace and destroyed once connected, `--in-flight` at a time.
 *
 *   node bench/inpod-socket-costs.ts [--rounds 8] [--count 3000] [--in-flight 32] [--strace]
 *
 * Each round runs one child process per mode (AMBIT_INPOD_SOCKET_STOCK=0, then 1; order reversed every other round),
 * which warms up, then measures its own user and system CPU over `--count` connects. The listener and its accepts
 * live in this process, so the child's CPU is the connecting side alone. Printed: per mode, the median over rounds of
 * user / system / total µs per connect. `--strace`: each child also runs under `strace -c -f` twice (with `--count`
 * connects and with none), and the difference divided by the count gives the syscalls per connect by name: a count
 * the machine's load does not move.
 *
 * Owns: this measurement. Must not know about: the factory's insides.
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { nativeSockets } from '../agent/inpod/sockets.ts';
import { inPodSocketFactory } from '../agent/inpod/socket-factory.ts';

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '8' },
    count: { type: 'string', default: '3000' },
    'in-flight': { type: 'string', default: '32' },
    strace: { type: 'boolean', default: false },
    child: { type: 'boolean', default: false },
    netns: { type: 'string' },
    port: { type: 'string' },
  },
});
const count = Number(values.count);
const inFlight = Number(values['in-flight']);

interface ChildResult { userUs: number; systemUs: number }

/** The child: `n` connects through the in-pod factory, `inFlight` at a time; resolves when all connected and closed. */
async function connects(netns: string, port: number, n: number): Promise<void> {
  const factory = inPodSocketFactory(netns);
  let started = 0;
  let done = 0;
  await new Promise<void>((resolve, reject) => {
    const next = (): void => {
      if (started >= n) {
        if (done === n) resolve();
        return;
      }
      started++;
      const socket = factory.connect({ host: '127.0.0.1', port, localAddress: '127.0.0.2', transparent: true });
      socket.once('connect', () => socket.destroy());
      socket.once('error', reject);
      socket.once('close', () => {
        done++;
        next();
      });
    };
    if (n === 0) resolve();
    for (let index = 0; index < Math.min(inFlight, n); index++) next();
  });
  factory.close?.();
}

if (values.child) {
  const netns = values.netns!;
  const port = Number(values.port);
  // The same warm-up with or without a count, so a strace of `--count 0` is the start-up and warm-up alone.
  await connects(netns, port, 500);
  const before = process.cpuUsage();
  await connects(netns, port, count);
  const used = process.cpuUsage(before);
  const result: ChildResult = { userUs: used.user / count, systemUs: used.system / count };
  console.log(JSON.stringify(result));
  process.exit(0);
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

function runChild(netnsPath: string, port: number, stock: boolean, n: number, straceFile?: string): Promise<ChildResult> {
  const args = [...process.execArgv, import.meta.filename, '--child', '--netns', netnsPath, '--port', String(port), '--count', String(n), '--in-flight', String(inFlight)];
  const command = straceFile === undefined ? process.execPath : 'strace';
  const commandArgs = straceFile === undefined ? args : ['-c', '-f', '-q', '-o', straceFile, process.execPath, ...args];
  return new Promise((resolve, reject) => {
    const child = spawn(command, commandArgs, { env: { ...process.env, AMBIT_INPOD_SOCKET_STOCK: stock ? '1' : '0' }, stdio: ['ignore', 'pipe', 'inherit'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.once('error', reject);
    child.once('exit', (code) => {
      if (code !== 0) reject(new Error(`child exited ${code}`));
      else resolve(JSON.parse(output.trim().split('\n').pop()!) as ChildResult);
    });
  });
}

function straceCalls(file: string): Map<string, number> {
  const calls = new Map<string, number>();
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const fields = line.trim().split(/\s+/);
    if (fields.length < 5 || !/^\d/.test(fields[0]!)) continue;
    calls.set(fields[fields.length - 1]!, Number(fields[3]));
  }
  return calls;
}

const name = `ambit-sockcost-${randomBytes(3).toString('hex')}`;
const netnsPath = `/run/netns/${name}`;
execFileSync('ip', ['netns', 'add', name]);
const server = net.createServer({ allowHalfOpen: false }, (socket) => {
  socket.on('error', () => undefined);
  socket.destroy();
});
try {
  execFileSync('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
  const port = 7600;
  const fd = nativeSockets.listenTcp({ netns: netnsPath, host: '127.0.0.1', port, backlog: 4096 });
  await new Promise<void>((resolve) => server.listen({ fd } as net.ListenOptions, 4096, resolve));
  const results: Record<'single' | 'stock', ChildResult[]> = { single: [], stock: [] };
  const rounds = Number(values.rounds);
  for (let round = 0; round < rounds; round++) {
    const order: ('single' | 'stock')[] = round % 2 === 0 ? ['single', 'stock'] : ['stock', 'single'];
    for (const mode of order) results[mode].push(await runChild(netnsPath, port, mode === 'stock', count));
    console.error(`round ${round + 1}: single ${JSON.stringify(results.single.at(-1))} stock ${JSON.stringify(results.stock.at(-1))} load ${loadavg()[0]!.toFixed(1)}`);
  }
  const report: Record<string, unknown> = { count, inFlight, rounds, load: loadavg().map((value) => +value.toFixed(1)) };
  for (const mode of ['single', 'stock'] as const) {
    const user = median(results[mode].map((result) => result.userUs));
    const system = median(results[mode].map((result) => result.systemUs));
    const total = median(results[mode].map((result) => result.userUs + result.systemUs));
    report[mode] = { userUsPerConnect: +user.toFixed(2), systemUsPerConnect: +system.toFixed(2), totalUsPerConnect: +total.toFixed(2) };
  }
  if (values.strace) {
    const dir = mkdtempSync(path.join(tmpdir(), 'ambit-sockcost-strace-'));
    for (const mode of ['single', 'stock'] as const) {
      await runChild(netnsPath, port, mode === 'stock', count, path.join(dir, `${mode}-n`));
      await runChild(netnsPath, port, mode === 'stock', 0, path.join(dir, `${mode}-0`));
      const withConnects = straceCalls(path.join(dir, `${mode}-n`));
      const without = straceCalls(path.join(dir, `${mode}-0`));
      const perConnect: Record<string, number> = {};
      let total = 0;
      for (const [call, n] of withConnects) {
        if (call === 'total') continue;
        const extra = (n - (without.get(call) ?? 0)) / count;
        total += extra;
        if (Math.abs(extra) >= 0.05) perConnect[call] = +extra.toFixed(2);
      }
      (report[mode] as Record<string, unknown>).syscallsPerConnect = +total.toFixed(2);
      (report[mode] as Record<string, unknown>).syscalls = perConnect;
    }
  }
  console.log(JSON.stringify(report, null, 1));
} finally {
  await new Promise((resolve) => server.close(resolve));
  execFileSync('ip', ['netns', 'del', name]);
}
