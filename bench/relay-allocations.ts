/**
 * Bytes allocated on the V8 heap and garbage collections per 1 KiB request per relay end, closed loop: the own-layer
 * HBONE relay pair (the agents' HTTP/2 layer and splice, shared/hbone/h2/) with every request a wake-up of its own
 * (N sequential round trips per connection, the next request sent when the answer is back), as in
 * `bench/relay-instructions.ts --closed-loop`, but without valgrind: allocation counts hardly move with the machine's
 * load, so this is the quick measure of the GC part of an end's work per request (scavenges follow the bytes).
 *
 *   node bench/relay-allocations.ts [--closed-loop 200] [--lockstep C] [--warm-rounds 8] [--rounds 4] [--heap-profile DIR]
 *
 * `--lockstep C`: C requests at once on C connections per round trip (relay-instructions.ts's `--lockstep`: the mesh's pairs).
 *
 * Each relay gets bench/tools/allocation-marks.ts preloaded; after the warm-up rounds both relays are marked
 * (SIGUSR2: a minor GC, then counting starts), the measured rounds run, and a second mark reads what they allocated.
 * Printed per end: bytes allocated per request, minor and major GCs per 1,000 requests. `--heap-profile DIR` also
 * writes each relay's sampling heap profile of the measured rounds (DIR/client.heapprofile, server.heapprofile).
 *
 * Owns: this measurement. Must not know about: how the relays work.
 */
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { writeBenchCertificates } from './lib/certs.ts';
import { startHbonePair } from './lib/hbone-pair.ts';
import { ProcessGroup } from './lib/processes.ts';
import { nodeTool, TOOLS_DIR } from './lib/tools.ts';

const { values } = parseArgs({
  options: {
    'closed-loop': { type: 'string', default: '200' },
    lockstep: { type: 'string', default: '1' },
    'warm-rounds': { type: 'string', default: '8' },
    rounds: { type: 'string', default: '4' },
    'heap-profile': { type: 'string' },
  },
});
const roundTrips = Number(values['closed-loop']);

interface Mark { gcs: Record<string, number>; allocatedBytes?: number }

const runDir = mkdtempSync(path.join(tmpdir(), 'ambit-relay-allocations-'));
const marksDir = path.join(runDir, 'marks');
mkdirSync(marksDir);

async function readMark(pid: number, index: number): Promise<Mark> {
  const file = path.join(marksDir, `${pid}-mark-${index}.json`);
  for (let attempt = 0; attempt < 100; attempt++) {
    if (existsSync(file)) {
      try {
        return JSON.parse(readFileSync(file, 'utf8')) as Mark;
      } catch {
        // Read between its creation and its write: try again.
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`no mark ${index} from relay ${pid}`);
}

async function markBoth(pids: readonly number[], index: number): Promise<Mark[]> {
  for (const pid of pids) process.kill(pid, 'SIGUSR2');
  return Promise.all(pids.map((pid) => readMark(pid, index)));
}

const certs = await writeBenchCertificates(runDir);
const group = new ProcessGroup(runDir);
try {
  const targetTool = nodeTool('target.ts', []);
  // A loaded machine (other sessions' valgrind runs) can take longer than the default 15 s to start a Node tool.
  const target = await group.start('target', targetTool.command, targetTool.args, { readyTimeoutMs: 120_000 });
  const savedOptions = process.env.NODE_OPTIONS;
  process.env.NODE_OPTIONS = `${savedOptions ?? ''} --import ${path.join(TOOLS_DIR, 'allocation-marks.ts')}`.trim();
  process.env.AMBIT_ALLOC_MARKS_DIR = marksDir;
  if (values['heap-profile'] !== undefined) process.env.AMBIT_ALLOC_HEAP_PROFILE = '1';
  const pair = await startHbonePair(group, certs, target.port, undefined, 'own');
  if (savedOptions === undefined) delete process.env.NODE_OPTIONS;
  else process.env.NODE_OPTIONS = savedOptions;
  delete process.env.AMBIT_ALLOC_MARKS_DIR;
  const load = async (): Promise<void> => {
    const tool = nodeTool('load.ts', ['rtt', '--count', String(roundTrips), '--connections', values.lockstep, '--warmup', '0', '--size', '1024', '--port', String(pair.entryPort)]);
    await group.run('load', tool.command, tool.args);
  };
  for (let round = 0; round < Number(values['warm-rounds']); round++) await load();
  const pids = [pair.client.pid, pair.server.pid];
  const before = await markBoth(pids, 0);
  for (let round = 0; round < Number(values.rounds); round++) await load();
  const after = await markBoth(pids, 1);
  const requests = roundTrips * Number(values.lockstep) * Number(values.rounds);
  const rows = ['client', 'server'].map((end, index) => {
    const gcs = (kind: string): string => ((((after[index]!.gcs[kind] ?? 0) - (before[index]!.gcs[kind] ?? 0)) * 1000) / requests).toFixed(1);
    return `| ${end} | ${requests} | ${((after[index]!.allocatedBytes ?? 0) / requests).toFixed(0)} | ${gcs('minor')} | ${gcs('major')} |`;
  });
  if (values['heap-profile'] !== undefined) {
    mkdirSync(values['heap-profile'], { recursive: true });
    await new Promise((resolve) => setTimeout(resolve, 1000));
    cpSync(path.join(marksDir, `${pair.client.pid}.heapprofile`), path.join(values['heap-profile'], 'client.heapprofile'));
    cpSync(path.join(marksDir, `${pair.server.pid}.heapprofile`), path.join(values['heap-profile'], 'server.heapprofile'));
  }
  process.stdout.write([
    '',
    `V8 heap allocation per 1 KiB request and answer, closed loop, ${roundTrips} sequential round trips per connection${values.lockstep === '1' ? '' : `, ${values.lockstep} connections in lockstep`}; load average ${loadavg()[0]!.toFixed(1)} at the end`,
    '',
    '| end | requests measured | bytes allocated per request | minor GCs per 1,000 requests | major GCs per 1,000 |',
    '|---|---:|---:|---:|---:|',
    ...rows,
    '',
  ].join('\n'));
} finally {
  await group.stopAll();
  rmSync(runDir, { recursive: true, force: true });
}
