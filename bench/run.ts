/**
 * `make bench`: runs the benchmark suites, prints one markdown table per suite, and writes
 * bench/results/latest.md and latest.json with the machine it ran on (quick.* for --quick, profiled.* for
 * --profile, so a smoke or profiled run never replaces a full run's figures).
 *
 *   node bench/run.ts [--quick] [--only <suite>] [--profile]
 *
 *   --quick    smoke sizes (well under a minute); figures not for comparison
 *   --only     run one suite (see bench/suites/index.ts)
 *   --profile  run our relays with --cpu-prof; profiles and a top-frames summary land in bench/results/profiles/
 *
 * Every figure is a ratio against anchors measured in the same run (direct TCP, stunnel4); BENCHMARKS.md says
 * how each is measured. Every process the run starts is stopped at the end, on error and on Ctrl-C.
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os, { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { writeBenchCertificates } from './lib/certs.ts';
import { describeMachine } from './lib/machine.ts';
import { ProcessGroup, reapStaleRuns, RUN_DIR_PREFIX } from './lib/processes.ts';
import { renderMachine, renderSuite, writeResults } from './lib/report.ts';
import type { SuiteResult } from './lib/suite.ts';
import { summarizeProfiles } from './lib/profile.ts';
import { SUITES } from './suites/index.ts';

const RESULTS_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), 'results');

const { values } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    only: { type: 'string' },
    profile: { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
});
if (values.help) {
  process.stdout.write('usage: node bench/run.ts [--quick] [--only <suite>] [--profile]\n');
  process.stdout.write(`suites: ${SUITES.map((suite) => `${suite.name} (${suite.summary})`).join(', ')}\n`);
  process.exit(0);
}
const selected = values.only ? SUITES.filter((suite) => suite.name === values.only) : SUITES;
if (selected.length === 0) {
  process.stderr.write(`no suite named ${JSON.stringify(values.only)}; suites: ${SUITES.map((suite) => suite.name).join(', ')}\n`);
  process.exit(2);
}

reapStaleRuns();
const runDir = mkdtempSync(path.join(tmpdir(), `${RUN_DIR_PREFIX}${process.pid}-`));
const profileDir = values.profile ? path.join(RESULTS_DIR, 'profiles') : undefined;
if (profileDir) {
  rmSync(profileDir, { recursive: true, force: true });
  mkdirSync(profileDir, { recursive: true });
}
const groups = new Set<ProcessGroup>();
// Last line of defence: whatever happens, no process of ours outlives the run.
process.on('exit', () => {
  for (const group of groups) group.killAllNow();
  rmSync(runDir, { recursive: true, force: true });
});
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    process.stderr.write(`\n${signal}: stopping every benchmark process\n`);
    process.exit(130);
  });
}

const machine = describeMachine(values.quick);
const log = (message: string): void => void process.stderr.write(`  ${message}\n`);
process.stdout.write(`${renderMachine(machine)}\n`);
const certs = await writeBenchCertificates(runDir);

const results: SuiteResult[] = [];
const failures: string[] = [];
for (const suite of selected) {
  process.stderr.write(`suite ${suite.name}: ${suite.summary}\n`);
  const processes = new ProcessGroup(runDir);
  groups.add(processes);
  const started = Date.now();
  try {
    const context = { quick: values.quick, runDir, processes, certs, log, ...(profileDir ? { profileDir } : {}) };
    const result = await suite.run(context);
    results.push(result);
    process.stdout.write(`\n${renderSuite(result)}\n\n`);
  } catch (error) {
    const message = `suite ${suite.name} failed: ${(error as Error).stack ?? String(error)}`;
    failures.push(message);
    process.stderr.write(`${message}\n`);
  } finally {
    await processes.stopAll();
    groups.delete(processes);
    process.stderr.write(`suite ${suite.name}: ${((Date.now() - started) / 1000).toFixed(0)} s\n`);
  }
}

if (profileDir) {
  const summary = summarizeProfiles(profileDir);
  process.stdout.write(`${summary}\n`);
}
machine.loadAverageAfter = os.loadavg();
// A smoke or profiled run never replaces the figures of the last full run; a one-suite run writes <suite>-latest.
const resultsName = values.quick ? 'quick' : values.profile ? 'profiled' : values.only ? `${values.only}-latest` : 'latest';
const written = writeResults(RESULTS_DIR, resultsName, machine, results, failures);
process.stderr.write(`wrote ${path.relative(process.cwd(), written.markdown)} and ${path.relative(process.cwd(), written.json)}\n`);
process.exitCode = failures.length > 0 ? 1 : 0;
