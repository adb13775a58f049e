/**
 * Instructions per 1 KiB request per relay end, counted by callgrind: the own-layer HBONE relay pair (the agents'
 * HTTP/2 layer and splice, shared/hbone/h2/) against a stunnel pair, one request per wake-up (a low rate on one
 * connection), as on a quiet machine at 1,000 requests/s over ten connections. Instruction counts do not depend on
 * what else the machine runs, so this is the A/B for issue 14's CPU per request when the machine is busy; the mesh
 * suite's CPU rows (quiet runs only) stay the figure of record. User space only: the kernel's part is the mesh
 * suite's "in the kernel" row.
 *
 *   node bench/relay-instructions.ts [--pairs stunnel,own,node] [--rate 20] [--closed-loop N] [--lockstep C] [--warm-rounds 10] [--rounds 6] [--keep-dumps DIR]
 *                                    [--node-flags="--v8-flag ..."]
 *
 * `--node-flags`: flags for the Node relays' command line (not the load or target), e.g. V8's tier-up thresholds so
 * that the few thousand requests of a run bring the same hot functions to the same tier in both trees of an A/B
 * (without them, which functions reached TurboFan differed from run to run: BENCHMARKS.md, session s13-relaycpu).
 *
 * `--lockstep C` (with `--closed-loop`): each round trip is C requests at once on C connections of their own (written back to
 * back, so a relay reads them in one wake-up: the mesh suite's requests come in pairs, BENCHMARKS.md session
 * s14-relaycpu), the next C when all C answers are back; counts are per request (N x C per round).
 *
 * `--closed-loop N`: each round is N sequential round trips on a new connection (the next request leaves when the
 * answer is back) instead of `--rate` per second for 10 s. At a fixed rate a relay slowed ~50x by callgrind on a
 * busy machine falls behind and takes several requests per wake-up (measured 2026-12-07 at load ~15: 0.55-0.75
 * TLS writes per request per end at 10/s), so the counts per request depend on the load after all; closed loop,
 * every request is a wake-up of its own at any load. (No idle time between requests, so V8's memory reducer, which
 * starts GCs in a relay that looks idle, runs less than at a low rate: read the main thread without GC.)
 *
 * Each relay runs under `valgrind --tool=callgrind --separate-threads=yes --instr-atstart=no` (start-up and warm-up
 * run without instrumentation, several times faster: a long warm-up is affordable); after the warm-up rounds (the
 * JIT tiers up by invocation counts, so a relay needs a few thousand requests before its code is what it runs at
 * speed) instrumentation is switched on and the counters zeroed, the measured rounds run, and the counters are dumped. Printed per end: every
 * thread, and the main thread (the event loop) apart from the others (V8's GC and compiler threads). `--keep-dumps`
 * copies the callgrind files into DIR for `callgrind_annotate` (the measured dump of each relay carries the trigger
 * `measured-<pair>`).
 *
 * Owns: this measurement. Must not know about: how the relays work.
 */
import { execFileSync } from 'node:child_process';
import { loadavg, tmpdir } from 'node:os';
import { cpSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { writeBenchCertificates } from './lib/certs.ts';
import { startHbonePair, type HboneImplementation } from './lib/hbone-pair.ts';
import { ProcessGroup, type ManagedProcess, type StartOptions } from './lib/processes.ts';
import { startStunnelPair } from './lib/stunnel.ts';
import { nodeTool } from './lib/tools.ts';
import { callgrindTotals, type CallgrindTotals } from './tools/callgrind-totals.ts';

const { values } = parseArgs({
  options: {
    pairs: { type: 'string', default: 'stunnel,own' },
    rate: { type: 'string', default: '20' },
    'closed-loop': { type: 'string' },
    lockstep: { type: 'string', default: '1' },
    'warm-rounds': { type: 'string', default: '10' },
    rounds: { type: 'string', default: '6' },
    'keep-dumps': { type: 'string' },
    'node-flags': { type: 'string', default: '' },
  },
});
/** V8/Node flags for the Node relays only (e.g. tier-up thresholds, so both trees' relays run the same tiers). */
const relayNodeFlags = values['node-flags'].split(' ').filter((flag) => flag !== '');
const pairs = values.pairs.split(',');
const rate = Number(values.rate);
const ROUND_SECONDS = 10;
const VALGRIND_READY_MS = 1_200_000;

const runDir = mkdtempSync(path.join(tmpdir(), 'ambit-relay-instructions-'));
const dumpDir = path.join(runDir, 'callgrind');
mkdirSync(dumpDir);

/** Starts the relays (names with "relay" or "stunnel") under callgrind, everything else as it is. */
class CallgrindGroup extends ProcessGroup {
  override start(name: string, command: string, args: readonly string[], options: StartOptions = {}): Promise<ManagedProcess> {
    if (!/relay|stunnel/.test(name)) return super.start(name, command, args, options);
    const tag = name.replace(/[^a-z0-9]+/gi, '-');
    const flags = command === process.execPath ? relayNodeFlags : [];
    return super.start(name, 'valgrind', [
      '--tool=callgrind', '--separate-threads=yes', '--trace-children=yes', '--smc-check=all-non-file', '--instr-atstart=no',
      `--callgrind-out-file=${dumpDir}/${tag}.%p`, command, ...flags, ...args,
    ], { ...options, readyTimeoutMs: VALGRIND_READY_MS });
  }
}

/** The measured dump of one relay process: callgrind names its files after the pid. */
function measuredInstructions(pid: number, trigger: string): CallgrindTotals {
  return callgrindTotals(dumpDir, (name) => name.includes(`.${pid}.`) || name.endsWith(`.${pid}`), trigger);
}

const certs = await writeBenchCertificates(runDir);
const group = new CallgrindGroup(runDir);
const log = (message: string): void => void process.stdout.write(`[${new Date().toISOString().slice(11, 19)}] ${message}\n`);
const rows: string[] = [];
try {
  const targetTool = nodeTool('target.ts', []);
  // A loaded machine (other sessions' valgrind runs) can take longer than the default 15 s to start a Node tool.
  const target = await group.start('target', targetTool.command, targetTool.args, { readyTimeoutMs: 120_000 });
  const closedLoop = values['closed-loop'] === undefined ? undefined : Number(values['closed-loop']);
  const load = async (port: number): Promise<{ completed: number }> => {
    if (closedLoop !== undefined) {
      const tool = nodeTool('load.ts', ['rtt', '--count', String(closedLoop), '--connections', values.lockstep, '--warmup', '0', '--size', '1024', '--port', String(port)]);
      await group.run('load', tool.command, tool.args);
      return { completed: closedLoop * Number(values.lockstep) };
    }
    const tool = nodeTool('load.ts', ['rate-rtt', '--rate', String(rate), '--duration', String(ROUND_SECONDS), '--connections', '1', '--size', '1024', '--port', String(port)]);
    return group.run<{ completed: number }>('load', tool.command, tool.args);
  };
  let stunnelEnd: number | undefined;
  for (const key of pairs) {
    const pair = key === 'stunnel'
      ? await startStunnelPair(group, runDir, certs, target.port)
      : await startHbonePair(group, certs, target.port, undefined, key as HboneImplementation);
    log(`${key}: relays up under callgrind; warming up`);
    for (let round = 0; round < Number(values['warm-rounds']); round++) {
      // A relay under callgrind answers its first requests seconds late, and the load tool may count none: go on.
      await load(pair.entryPort).catch((error: unknown) => log(`${key}: warm-up round ${round} failed: ${String(error).slice(0, 120)}`));
    }
    const ends = { client: pair.client.pid, server: pair.server.pid };
    const trigger = `measured-${key}`;
    for (const pid of Object.values(ends)) execFileSync('callgrind_control', ['-i', 'on', String(pid)], { stdio: 'ignore' });
    for (const pid of Object.values(ends)) execFileSync('callgrind_control', ['-z', String(pid)], { stdio: 'ignore' });
    let completed = 0;
    for (let round = 0; round < Number(values.rounds); round++) completed += (await load(pair.entryPort)).completed;
    for (const pid of Object.values(ends)) execFileSync('callgrind_control', ['-d', trigger, String(pid)], { stdio: 'ignore' });
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    const perRequest = (counted: number): string => (counted / completed / 1000).toFixed(1);
    const client = measuredInstructions(ends.client, trigger);
    const server = measuredInstructions(ends.server, trigger);
    const end = (client.all + server.all) / 2 / completed;
    if (key === 'stunnel') stunnelEnd = end;
    const ratio = stunnelEnd === undefined || key === 'stunnel' ? '' : `${(end / stunnelEnd).toFixed(2)}x`;
    rows.push(`| ${key} | ${completed} | ${perRequest(client.all)} (${perRequest(client.main)}) | ${perRequest(server.all)} (${perRequest(server.main)}) | ${(end / 1000).toFixed(1)} | ${ratio} |`);
    log(rows.at(-1)!);
  }
} finally {
  await group.stopAll();
  if (values['keep-dumps']) cpSync(dumpDir, values['keep-dumps'], { recursive: true });
  rmSync(runDir, { recursive: true, force: true });
}
const load1 = loadavg()[0]!.toFixed(1);
process.stdout.write([
  '',
  `Instructions per 1 KiB request and answer (thousands), ${closedLoopLabel()}, callgrind; load average ${load1} at the end (does not move the counts)`,
  '',
  '| pair | requests measured | client end: all threads (main thread) | server end: all (main) | one end, mean | ÷ stunnel |',
  '|---|---:|---:|---:|---:|---:|',
  ...rows,
  '',
].join('\n'));

function closedLoopLabel(): string {
  const closedLoop = values['closed-loop'];
  if (closedLoop === undefined) return `${rate}/s on one connection`;
  const lockstep = Number(values.lockstep);
  return lockstep > 1 ? `closed loop, ${closedLoop} sequential rounds of ${lockstep} requests at once on ${lockstep} connections` : `closed loop, ${closedLoop} sequential round trips per connection`;
}
