/**
 * The benchmark commands the README and BENCHMARKS.md give work as written on the machines they target, whose
 * system Node (20) cannot run `.ts` files: they go through `make bench BENCH_ARGS=...`, which runs bench/run.ts
 * with Node 24 and passes the flags on. Checked with `make -n` (prints the commands, runs none: no install).
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';

const REPO = path.resolve(import.meta.dirname, '..', '..');

function benchCommandFor(args: string): string {
  const plan = execFileSync('make', ['-n', '-C', REPO, 'bench', `BENCH_ARGS=${args}`], { encoding: 'utf8' });
  const line = plan.split('\n').find((candidate) => candidate.includes('bench/run.ts'));
  if (line === undefined) throw new Error(`make bench runs no bench/run.ts:\n${plan}`);
  return line.trim();
}

test('the README smoke run is a make command that passes its flags to bench/run.ts under Node 24', (t) => {
  const readme = readFileSync(path.join(REPO, 'README.md'), 'utf8');
  const benchmarks = readFileSync(path.join(REPO, 'BENCHMARKS.md'), 'utf8');
  t.regex(readme, /`make bench BENCH_ARGS=--quick` for a smoke run/);
  t.notRegex(readme, /`node bench\/run\.ts --quick`/, 'Debian\'s node 20 fails on it');
  t.notRegex(benchmarks, /^node bench\/run\.ts/m, 'the command block gives make commands');
  for (const args of ['--quick', '--only mesh']) {
    const command = benchCommandFor(args);
    t.true(command.endsWith(`bench/run.ts ${args}`), command);
    const node = command.split(' ')[0]!;
    const major = Number(execFileSync(node, ['-p', 'process.versions.node.split(".")[0]'], { encoding: 'utf8' }).trim());
    t.true(major >= 24, `${node} is Node ${major}: bench/run.ts needs 24 (type stripping)`);
  }
});
