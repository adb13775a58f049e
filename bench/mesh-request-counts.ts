/**
 * What one 1 KiB request costs each relay in the mesh suite's own shape (issue 14's CPU-per-request row), counted
 * where counting is possible: the suite's two-node topology (bench/lib/mesh-cluster.ts), the request step's open
 * loop (`load.ts rate-rtt`: 1 KiB echoes scheduled at 1,000/s over 10 persistent connections, so each request is a
 * wake-up of its own on a quiet machine, unlike relay-instructions' closed loop), through the mesh (client agent ->
 * HBONE -> server agent) and through the pod stunnel pair, and per relay process:
 *   - CPU per 1,000 requests, user and system apart (from /proc; load-dependent, reported beside the counts);
 *   - `--strace`: syscalls per request by name, and the loop's polls split by what they were (`epoll_pwait` with
 *     timeout 0 that found nothing: libuv's idle-time metrics poll once without blocking before each blocking poll;
 *     blocking polls; polls that returned events = the loop's wake-ups), from a full `strace -f` of a second window
 *     (strace slows the process, so that window's CPU is not used);
 *   - `--deferrals`: ticks, immediates, timers, promises and native requests created per request by each agent
 *     (bench/tools/deferral-counts.ts preloaded; async hooks slow the agent, so their own window);
 *   - `--perf DIR`: `perf record -g` of each relay over a third window, the agents with `--perf-basic-prof` so JIT
 *     frames have names; per process the samples' shares by kind (our JavaScript, Node's JavaScript, V8 builtins and
 *     inline caches, V8 and Node C++, GC, libuv, OpenSSL, libc, kernel) and the top frames, in DIR/summary.md.
 *
 *   - `--timeline DIR`: syscall timestamps (perf's raw_syscalls tracepoints) of both relays, the load and the target
 *     over a window of their own: per relay, the time from a poll's return to its first write (the bytes leaving),
 *     from the first read to that write, and awake per wake-up, syscalls per wake-up; and the hops between processes
 *     (a write and the wake-up it caused: the kernel's delivery and the scheduler), bench/lib/syscall-timeline.ts.
 *
 *   node bench/mesh-request-counts.ts [--seconds 10] [--warmup 10] [--rate 1000] [--paths mesh,stunnel] [--strace] [--deferrals] [--perf DIR] [--timeline DIR]
 *
 * A/B: run it from each tree in turn; counts move little with the load, CPU does. Owns: this measurement.
 * Must not know about: the agent's code.
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { writeBenchCertificates } from './lib/certs.ts';
import { CpuMeter } from './lib/cpu.ts';
import { APP_PORT, buildMeshTopology, inPod, startPodStunnelPair, startTarget } from './lib/mesh-cluster.ts';
import type { Pod } from '../runtime/index.ts';
import { ProcessGroup } from './lib/processes.ts';
import { descendantsMatching, syscallTimeline } from './lib/syscall-timeline.ts';
import { latestPerfMap } from './tools/perf-map.ts';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '10' },
    warmup: { type: 'string', default: '10' },
    rate: { type: 'string', default: '1000' },
    connections: { type: 'string', default: '10' },
    paths: { type: 'string', default: 'mesh,stunnel' },
    strace: { type: 'boolean', default: false },
    deferrals: { type: 'boolean', default: false },
    perf: { type: 'string' },
    timeline: { type: 'string' },
  },
});
const seconds = Number(values.seconds);
const rate = Number(values.rate);
const perfDir = values.perf;

const runDir = mkdtempSync(join(tmpdir(), 'ambit-mesh-request-counts-'));
const processes = new ProcessGroup(runDir);
const log = (message: string): void => console.error(`[${new Date().toISOString().slice(11, 19)}] ${message}`);
const loadNow = (): string => readFileSync('/proc/loadavg', 'utf8').split(' ')[0]!;

// Flags NODE_OPTIONS refuses (--perf-basic-prof) and the deferral counter go on the agents' node command line.
const deferralsDir = values.deferrals ? mkdtempSync(join(tmpdir(), 'ambit-deferrals-')) : undefined;
const wrapper = join(runDir, 'node-agent');
const flags = [perfDir !== undefined ? '--perf-basic-prof' : '', deferralsDir !== undefined ? `--import ${join(import.meta.dirname, 'tools', 'deferral-counts.ts')}` : ''].join(' ').trim();
const env = deferralsDir !== undefined ? `AMBIT_DEFERRALS_DIR=${deferralsDir} ` : '';
writeFileSync(wrapper, `#!/bin/sh\nnode="$1"; shift; ${env}exec "$node" ${flags} "$@"\n`, { mode: 0o755 });

interface Relays {
  client: number;
  server: number;
}
interface PathUnderTest {
  key: string;
  pod: Pod;
  host: string;
  port: number;
  relays: Relays;
}

const topology = await buildMeshTopology({ logLevel: 'warn', log, agentCommandPrefix: [wrapper] });
const perfWindows: Array<{ file: string; pid: number; requests: number; summary: string; figures: Record<string, unknown> }> = [];
const report: Record<string, unknown> = { rate, connections: Number(values.connections), seconds, loadAtStart: loadNow() };
try {
  await startTarget(processes, topology.meshServer);
  await startTarget(processes, topology.plainServer);
  const paths: PathUnderTest[] = [];
  for (const key of values.paths.split(',')) {
    if (key === 'mesh') {
      paths.push({ key, pod: topology.meshClient, host: topology.meshServer.ip, port: APP_PORT, relays: { client: topology.agentPids.node1, server: topology.agentPids.node2 } });
    } else if (key === 'stunnel') {
      const pair = await startPodStunnelPair(processes, runDir, await writeBenchCertificates(runDir), topology.plainClient, topology.plainServer);
      paths.push({ key, pod: topology.plainClient, host: pair.entry.host, port: pair.entry.port, relays: { client: pair.clientPid, server: pair.serverPid } });
    }
  }
  const requests = async (path: PathUnderTest, duration: number): Promise<number> => {
    const command = inPod(path.pod, 'load.ts', ['rate-rtt', '--rate', String(rate), '--duration', String(duration), '--connections', values.connections,
      '--size', '1024', '--host', path.host, '--port', String(path.port)]);
    const result = await processes.run<{ completed: number; errors?: number }>(`requests via ${path.key}`, command.command, command.args);
    return result.completed;
  };
  for (const path of paths) {
    log(`${path.key}: warm-up, ${values.warmup} s at ${rate}/s`);
    await requests(path, Number(values.warmup));
  }
  for (const path of paths) {
    const figures: Record<string, unknown> = {};
    report[path.key] = figures;
    const cpu = new CpuMeter(path.relays as unknown as Record<string, number>).start();
    const system = new CpuMeter(path.relays as unknown as Record<string, number>, 'system').start();
    const completed = await requests(path, seconds);
    const used = cpu.stop();
    const usedSystem = system.stop();
    for (const side of ['client', 'server'] as const) {
      const all = (used[side]! * 1e6) / completed;
      const kernel = (usedSystem[side]! * 1e6) / completed;
      figures[side] = { cpuMsPer1000: +all.toFixed(1), userMsPer1000: +(all - kernel).toFixed(1), systemMsPer1000: +kernel.toFixed(1) };
    }
    log(`${path.key}: ${completed} requests, CPU ${JSON.stringify(figures)} (load ${loadNow()})`);

    if (values.strace) {
      const traced = await traceSyscalls(path, () => requests(path, seconds));
      for (const side of ['client', 'server'] as const) Object.assign(figures[side] as object, { syscalls: traced[side] });
      log(`${path.key}: syscalls ${JSON.stringify(traced)}`);
    }
    if (values.timeline !== undefined) {
      const timeline = await recordTimeline(path, values.timeline, () => requests(path, seconds));
      figures.timeline = timeline;
      log(`${path.key}: timeline ${JSON.stringify(timeline)}`);
    }
    if (deferralsDir !== undefined && path.key === 'mesh') {
      // deferral-counts names its files by mark number only: mark each agent in turn so they do not collide.
      const markOne = (pid: number): Record<string, number> => {
        const before = new Set(readdirSync(deferralsDir));
        process.kill(pid, 'SIGUSR2');
        execFileSync('sleep', ['0.5']);
        const file = readdirSync(deferralsDir).find((name) => !before.has(name));
        const counts = file === undefined ? {} : (JSON.parse(readFileSync(join(deferralsDir, file), 'utf8')) as Record<string, number>);
        if (file !== undefined) execFileSync('mv', [join(deferralsDir, file), join(deferralsDir, `${pid}-${file}`)]);
        return counts;
      };
      const before = { client: markOne(path.relays.client), server: markOne(path.relays.server) };
      const counted = await requests(path, seconds);
      const after = { client: markOne(path.relays.client), server: markOne(path.relays.server) };
      for (const side of ['client', 'server'] as const) {
        const perRequest: Record<string, number> = {};
        for (const [type, count] of Object.entries(after[side])) {
          const delta = count - (before[side][type] ?? 0);
          if (delta / counted >= 0.01) perRequest[type] = +(delta / counted).toFixed(3);
        }
        Object.assign(figures[side] as object, { deferralsPerRequest: perRequest });
      }
      log(`${path.key}: deferrals per request ${JSON.stringify({ client: (figures.client as Record<string, unknown>).deferralsPerRequest, server: (figures.server as Record<string, unknown>).deferralsPerRequest })}`);
    }
    if (perfDir !== undefined) {
      mkdirSync(perfDir, { recursive: true });
      const files = { client: join(perfDir, `${path.key}-client.data`), server: join(perfDir, `${path.key}-server.data`) };
      const recorders = (['client', 'server'] as const).map((side) =>
        spawn('perf', ['record', '-q', '-F', '1999', '-g', '-o', files[side], '-p', String(path.relays[side])], { stdio: 'ignore' }));
      await new Promise((resolve) => setTimeout(resolve, 500));
      const counted = await requests(path, seconds);
      await Promise.all(recorders.map((recorder) => new Promise((resolve) => { recorder.once('exit', resolve); recorder.kill('SIGINT'); })));
      // Summarized once the agents are gone: their perf maps are rewritten then (latestPerfMap), with no writer left.
      for (const side of ['client', 'server'] as const) perfWindows.push({ file: files[side], pid: path.relays[side], requests: counted, summary: join(perfDir, `${path.key}-${side}.md`), figures: figures[side] as Record<string, unknown> });
      log(`${path.key}: perf data in ${perfDir}`);
    }
  }
  report.loadAtEnd = loadNow();
} finally {
  await processes.stopAll();
  await topology.destroy();
}
for (const window of perfWindows) {
  latestPerfMap(window.pid);
  const summary = perfSummary(window.file, window.requests);
  writeFileSync(window.summary, summary.text);
  window.figures.perfShares = summary.shares;
}
console.log(JSON.stringify(report, null, 1));

/**
 * Syscall timestamps of both relays, the load and the target over one window (bench/lib/syscall-timeline.ts): the
 * perf session starts once the load tool is up (its pid is found among this process's descendants) and stops a second
 * before the window ends, so every recorded wake-up is one of the request step's.
 */
async function recordTimeline(path: PathUnderTest, dir: string, run: () => Promise<number>): Promise<unknown> {
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `${path.key}-syscalls.data`);
  const window = run();
  await new Promise((resolve) => setTimeout(resolve, 700));
  const readProc = (name: string): string => readFileSync(name, 'utf8');
  const listProc = (): string[] => readdirSync('/proc');
  const labels = new Map<number, string>([[path.relays.client, `${path.key} client`], [path.relays.server, `${path.key} server`]]);
  for (const pid of descendantsMatching(process.pid, 'load.ts', readProc, listProc)) labels.set(pid, 'load');
  for (const pid of descendantsMatching(process.pid, 'target.ts', readProc, listProc)) labels.set(pid, 'target');
  const recorder = spawn('perf', ['record', '-q', '-e', 'raw_syscalls:sys_enter,raw_syscalls:sys_exit', '-o', file, '-p', [...labels.keys()].join(',')], { stdio: 'ignore' });
  await new Promise((resolve) => setTimeout(resolve, Math.max(1000, (seconds - 2.5) * 1000)));
  await new Promise((resolve) => { recorder.once('exit', resolve); recorder.kill('SIGINT'); });
  await window;
  const script = execFileSync('perf', ['script', '-i', file, '-F', 'pid,tid,time,event,trace', '--ns'], { encoding: 'utf8', maxBuffer: 1024 * 1024 * 1024 });
  const timeline = syscallTimeline(script, labels, ['load', `${path.key} client`, `${path.key} server`, 'target']);
  writeFileSync(join(dir, `${path.key}-timeline.json`), JSON.stringify({ ...timeline, pids: Object.fromEntries(labels) }, null, 1));
  return timeline;
}

/** Syscalls per request of each relay, from a full `strace -f` over one run, and the loop's polls by outcome. */
async function traceSyscalls(path: PathUnderTest, run: () => Promise<number>): Promise<Record<'client' | 'server', Record<string, number>>> {
  const outputs = { client: join(runDir, `strace-${path.key}-client.txt`), server: join(runDir, `strace-${path.key}-server.txt`) };
  const tracers = (['client', 'server'] as const).map((side) => spawn('strace', ['-f', '-qq', '-o', outputs[side], '-p', String(path.relays[side])], { stdio: 'ignore' }));
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const completed = await run();
  await Promise.all(tracers.map((tracer) => new Promise((resolve) => { tracer.once('exit', resolve); tracer.kill('SIGINT'); })));
  const result = { client: {}, server: {} } as Record<'client' | 'server', Record<string, number>>;
  for (const side of ['client', 'server'] as const) {
    const counts = new Map<string, number>();
    const add = (name: string): void => void counts.set(name, (counts.get(name) ?? 0) + 1);
    for (const line of readFileSync(outputs[side], 'utf8').split('\n')) {
      // "[pid] name(args) = result" or "name(args) = result"; resumed halves ("<... name resumed>") count once.
      const match = /^(?:\d+\s+)?(?:<\.\.\. )?([a-z_0-9]+)(\(| resumed>)/.exec(line);
      if (match === null || line.includes('<unfinished ...>')) continue;
      const name = match[1]!;
      add(name);
      if (name === 'epoll_pwait' || name === 'epoll_wait' || name === 'epoll_pwait2') {
        // epoll_pwait(epfd, [events...], maxevents, timeout, sigmask, sigsetsize) = n
        const polled = /, \d+, (-?\d+), (?:NULL|\[[^\]]*\]|0x[0-9a-f]+), \d+\) += (\d+)/.exec(line);
        if (polled !== null) {
          if (Number(polled[2]) > 0) add('  polls that returned events');
          else if (polled[1] === '0') add('  polls with timeout 0 that found nothing');
        }
      }
      if (name === 'poll' || name === 'ppoll') {
        if (/= [1-9]/.test(line)) add('  polls that returned events');
      }
    }
    let total = 0;
    for (const [name, count] of counts) {
      if (!name.startsWith(' ')) total += count;
      if (count / completed >= 0.02) result[side][name] = +(count / completed).toFixed(2);
    }
    result[side].all = +(total / completed).toFixed(2);
  }
  return result;
}

/** What kind of code a perf sample's leaf frame is. */
function frameKind(dso: string, symbol: string): string {
  if (dso.includes('kernel')) return 'kernel';
  if (/^(JS|LazyCompile|Function|Script):/.test(symbol)) {
    if (symbol.includes(' node:')) return "JavaScript: Node's";
    if (/\/(shared|agent|runtime)\//.test(symbol)) return "JavaScript: ambit's";
    return 'JavaScript: other';
  }
  if (/^(Builtin:|Builtins_|BytecodeHandler:|Handler:|Stub:|RegExp:)/.test(symbol)) {
    if (/IC(_|Trampoline|Baseline|$)|Megamorphic|^Handler:/.test(symbol)) return 'V8 builtins: inline caches';
    if (/Handler(_|$)|InterpreterEntry|^BytecodeHandler:/.test(symbol)) return 'V8 builtins: interpreter';
    return 'V8 builtins: other';
  }
  if (/perf-\d+\.map|^\[JIT\]/.test(dso)) return 'V8 generated code (unnamed)';
  if (/libc[.-]|libpthread|ld-linux/.test(dso)) return 'libc';
  if (/libssl|libcrypto/.test(dso)) return 'OpenSSL';
  if (/^(aes|gcm|ossl_|SSL_|ssl|tls|EVP_|CRYPTO_|BIO_|OPENSSL_|ERR_|RAND_|sha|x25519|ecp_|bn_|EC_)/i.test(symbol)) return 'OpenSSL';
  if (/^uv_|^uv__/.test(symbol)) return 'libuv';
  if (/Heap|Scaveng|MarkCompact|Mark(ing|er)|Sweep|Evacuat|Minor|GC|Concurrent/.test(symbol)) return 'V8: GC';
  if (/^v8::|^v8_/.test(symbol) || symbol.includes('v8::internal')) return 'V8: runtime and API';
  if (symbol.startsWith('node::')) return 'Node C++';
  if (/stunnel/.test(dso)) return 'stunnel';
  return `other (${dso.split('/').pop()})`;
}

function perfSummary(file: string, requests: number): { text: string; shares: Record<string, number> } {
  const out = execFileSync('perf', ['report', '-i', file, '--stdio', '--no-children', '-g', 'none', '--sort', 'dso,sym', '--percent-limit', '0', '-q'], { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 });
  const byKind = new Map<string, number>();
  const top: Array<[number, string, string]> = [];
  let samples = 0;
  for (const line of out.split('\n')) {
    // "    12.34%  node   [.] Builtins_KeyedStoreIC"
    // perf names JIT code's object "[JIT] tid N" (the perf map), with spaces.
    const match = /^\s*([\d.]+)%\s+(\[JIT\] tid \d+|\S+)\s+\[(.)\]\s+(.*)$/.exec(line);
    if (match === null) continue;
    const share = Number(match[1]);
    const symbol = match[4]!.trim();
    const kind = frameKind(match[2]!, symbol);
    byKind.set(kind, (byKind.get(kind) ?? 0) + share);
    top.push([share, match[2]!, symbol]);
    samples += share;
  }
  top.sort((a, b) => b[0] - a[0]);
  // Under this machine's hypervisor a sample taken while interrupts were off lands on their re-enabling in the kernel
  // (pvm_irq_enable), so perf's kernel share is not the kernel's time (/proc's system time is): user-space kinds are
  // given as shares of the user-space samples.
  const userSamples = samples - (byKind.get('kernel') ?? 0);
  const shares = Object.fromEntries([...byKind].filter(([kind]) => kind !== 'kernel').sort((a, b) => b[1] - a[1]).map(([kind, share]) => [kind, +((100 * share) / userSamples).toFixed(1)]));
  const threads = execFileSync('perf', ['report', '-i', file, '--stdio', '--no-children', '-g', 'none', '--sort', 'comm', '-q'], { encoding: 'utf8' })
    .split('\n').map((line) => /^\s*([\d.]+)%\s+(.*)$/.exec(line)).filter((match) => match !== null).map((match) => `| ${match[2]!.trim()} | ${match[1]} |`);
  const header = readFileSync(file).length;
  const text = [
    `# ${file}`,
    '',
    `${requests} requests in the window; perf data ${header} bytes; kinds as shares of the user-space samples (all threads); the kernel had ${(byKind.get('kernel') ?? 0).toFixed(1)} % of all samples (see perfSummary on why that is not its time)`,
    '',
    '| kind | % of user-space samples |',
    '|---|---:|',
    ...Object.entries(shares).map(([kind, share]) => `| ${kind} | ${share} |`),
    `| (samples parsed, % of all) | ${samples.toFixed(1)} |`,
    '',
    '| thread | % of samples |',
    '|---|---:|',
    ...threads,
    '',
    '| % | dso | frame |',
    '|---:|---|---|',
    ...top.slice(0, 80).map(([share, dso, symbol]) => `| ${share.toFixed(2)} | ${dso} | ${symbol.replaceAll('|', '\\|')} |`),
    '',
  ].join('\n');
  return { text, shares };
}
