// Unit tests: agent/telemetry/log-destination.ts — the agent's log lines gathered per event-loop turn and written
// with one write at its end, in order, and nothing pending lost when the process exits right after logging.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { TurnBatchedOutput } from '../../agent/telemetry/log-destination.ts';

test('lines logged in one turn reach the output as one write at the end of that turn, in order; the next turn is a new write', async (t) => {
  const writes: string[] = [];
  const log = pino({ level: 'info', base: null, timestamp: false }, new TurnBatchedOutput({ write: (text: string) => writes.push(text) }));
  for (let index = 0; index < 50; index++) log.info({ index }, 'connection closed');
  t.is(writes.length, 0, 'nothing written within the turn');
  await new Promise((resolve) => setImmediate(resolve));
  t.is(writes.length, 1, 'one write for the turn');
  const lines = writes[0]!.split('\n').filter(Boolean).map((line) => JSON.parse(line) as { index: number });
  t.deepEqual(lines.map((line) => line.index), [...Array(50).keys()]);
  log.info({ index: 50 }, 'connection closed');
  await new Promise((resolve) => setImmediate(resolve));
  t.is(writes.length, 2);
  t.is((JSON.parse(writes[1]!) as { index: number }).index, 50);
});

test('a process that logs and exits at once (a fatal error) still writes every line', (t) => {
  const module = fileURLToPath(new URL('../../agent/telemetry/log-destination.ts', import.meta.url));
  const script = `import { pino } from 'pino'; import { batchedStdout } from ${JSON.stringify(module)};
    const log = pino({ level: 'info' }, batchedStdout());
    for (let index = 0; index < 1000; index++) log.info({ index }, 'line');
    log.error('giving up'); process.exit(3);`;
  const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', cwd: fileURLToPath(new URL('../..', import.meta.url)) });
  t.is(child.status, 3, child.stderr);
  const lines = child.stdout.split('\n').filter(Boolean).map((line) => JSON.parse(line) as { index?: number; msg: string });
  t.is(lines.length, 1001);
  t.deepEqual(lines.slice(0, 1000).map((line) => line.index), [...Array(1000).keys()]);
  t.is(lines[1000]!.msg, 'giving up');
});
