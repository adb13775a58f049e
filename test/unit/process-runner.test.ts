// ambit-spawner (agent/native/spawner.c) and its Node side (shared/process-runner.ts), with real processes: output,
// exit codes, signals, timeouts, a missing binary, bounded output, many requests at once, a rude peer on its pipe,
// and its lifetime tied to its parent's.
import test from 'ava';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile, chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { run } from '../../runtime/exec.ts';
import { ProcessRunner, SPAWNER_PATH, encodeRequest } from '../../shared/process-runner.ts';

const ENV = { PATH: process.env.PATH };

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Polls until the process is gone (each check is a chance for it to have gone; the deadline only ends a failure). */
async function gone(pid: number, deadlineMs = 10_000): Promise<boolean> {
  const end = Date.now() + deadlineMs;
  while (Date.now() < end) {
    if (!alive(pid)) return true;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return !alive(pid);
}

test('stdout, stderr, stdin and the exit code come back as the command gave them', async (t) => {
  const runner = new ProcessRunner();
  t.teardown(() => runner.close());
  const result = await runner.run({ argv: ['sh', '-c', 'echo out; echo err >&2; cat; exit 3'], env: ENV, input: 'from stdin\n' });
  t.is(result.code, 3);
  t.is(result.signal, null);
  t.is(result.stdout.toString(), 'out\nfrom stdin\n');
  t.is(result.stderr.toString(), 'err\n');
  t.false(result.timedOut);
});

test('a Node child that writes 120 KB and exits at once (process.exit) is heard whole, as under Node\'s spawn', async (t) => {
  // Node drops what a non-blocking stdout has not written when process.exit runs: with a 64 KiB pipe as stdout the
  // answer was cut at 65,536 bytes (a test helper's JSON result); the spawner's stdout is a socket pair, as libuv's.
  const runner = new ProcessRunner();
  t.teardown(() => runner.close());
  const result = await runner.run({ argv: [process.execPath, '-e', "process.stdout.write('x'.repeat(120000)); process.exit(0)"], env: ENV });
  t.is(result.code, 0);
  t.is(result.stdout.length, 120_000);
});

test('env, cwd and the PATH lookup are the request\'s, not the spawner\'s', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'spawner-test-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await writeFile(path.join(dir, 'only-here'), '#!/bin/sh\necho "$GREETING from $(pwd)"\n');
  await chmod(path.join(dir, 'only-here'), 0o755);
  const runner = new ProcessRunner();
  t.teardown(() => runner.close());
  const result = await runner.run({ argv: ['only-here'], env: { PATH: `${dir}:/usr/bin:/bin`, GREETING: 'hello' }, cwd: '/tmp' });
  t.is(result.stdout.toString(), 'hello from /tmp\n');
  const error = await t.throwsAsync(runner.run({ argv: ['only-here'], env: ENV }));
  t.is(error.message, 'cannot run only-here: spawn only-here ENOENT');
});

test('a command killed by a signal reports the signal', async (t) => {
  const runner = new ProcessRunner();
  t.teardown(() => runner.close());
  const result = await runner.run({ argv: ['sh', '-c', 'kill -TERM $$'], env: ENV });
  t.is(result.signal, 'SIGTERM');
  t.is(result.code, -1);
});

test('a timeout kills the command and everything in its process group, and says so', async (t) => {
  const runner = new ProcessRunner();
  t.teardown(() => runner.close());
  const dir = await mkdtemp(path.join(tmpdir(), 'spawner-test-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const pidFile = path.join(dir, 'grandchild');
  // The grandchild holds the pipes open too: the answer must not wait for it.
  const result = await runner.run({ argv: ['sh', '-c', `sleep 60 & echo $! > ${pidFile}; wait`], env: ENV, timeoutMs: 300 });
  t.true(result.timedOut);
  t.is(result.signal, 'SIGKILL');
  const { readFile } = await import('node:fs/promises');
  const grandchild = Number((await readFile(pidFile, 'utf8')).trim());
  t.true(await gone(grandchild), 'the backgrounded sleep was killed with its group');
});

test('a missing binary is an error naming it, through exec.ts run() as through Node\'s spawn', async (t) => {
  const error = await t.throwsAsync(run('no-such-binary-ambit', ['x']));
  t.is(error.message, 'cannot run no-such-binary-ambit: spawn no-such-binary-ambit ENOENT');
  t.is((error as Error & { code: string }).code, 'COMMAND_FAILED');
  t.is(((error as Error).cause as NodeJS.ErrnoException).code, 'ENOENT');
  const absolute = await t.throwsAsync(run('/nonexistent/dir/tool', []));
  t.is(absolute.message, 'cannot run /nonexistent/dir/tool: spawn /nonexistent/dir/tool ENOENT');
});

test('output is exact below the bound and cut at the bound above it (the command still runs to its end)', async (t) => {
  const runner = new ProcessRunner();
  t.teardown(() => runner.close());
  const exact = await runner.run({ argv: ['sh', '-c', 'seq 1 300000'], env: ENV });
  const expected = Array.from({ length: 300_000 }, (_, i) => `${i + 1}\n`).join('');
  t.is(exact.stdout.length, expected.length);
  t.true(exact.stdout.toString() === expected);
  t.false(exact.stdoutTruncated);
  const big = await runner.run({ argv: ['sh', '-c', 'head -c 5000000 /dev/zero; echo done >&2'], env: ENV, maxOutputBytes: 1_000_000 });
  t.is(big.stdout.length, 1_000_000);
  t.true(big.stdoutTruncated);
  t.is(big.stderr.toString(), 'done\n');
  t.is(big.code, 0);
  // exec.ts run() refuses a cut output rather than hand on part of it.
  const error = await t.throwsAsync(run('head', ['-c', '5000000', '/dev/zero']));
  t.regex(error.message, /printed more than 4194304 bytes on stdout/);
});

test('hundreds of requests at once (more than the spawner runs at a time) each get their own answer', async (t) => {
  const runner = new ProcessRunner();
  t.teardown(() => runner.close());
  const results = await Promise.all(
    Array.from({ length: 300 }, (_, i) => runner.run({ argv: ['sh', '-c', `cat; echo ${i}; exit $((${i} % 7))`], env: ENV, input: `in${i}-` })),
  );
  results.forEach((result, i) => {
    t.is(result.stdout.toString(), `in${i}-${i}\n`);
    t.is(result.code, i % 7);
  });
});

test('a malformed request gets an error answer and the spawner carries on', async (t) => {
  const spawner = spawn(SPAWNER_PATH, [String(process.pid)], { stdio: ['pipe', 'pipe', 'inherit'] });
  t.teardown(() => spawner.kill('SIGKILL'));
  const answers: Buffer[] = [];
  let received = Buffer.alloc(0);
  spawner.stdout.on('data', (chunk: Buffer) => {
    received = Buffer.concat([received, chunk]);
    while (received.length >= 4 && received.length >= 4 + received.readUInt32LE(0)) {
      answers.push(received.subarray(4, 4 + received.readUInt32LE(0)));
      received = received.subarray(4 + received.readUInt32LE(0));
    }
  });
  const next = async (): Promise<Buffer> => {
    while (answers.length === 0) await once(spawner.stdout, 'data');
    return answers.shift()!;
  };
  const kindOf = (answer: Buffer) => ({ id: answer.readUInt32LE(0), kind: answer.readUInt32LE(4) });
  // A frame whose argv count claims more than it holds.
  const lying = Buffer.alloc(4 + 32);
  lying.writeUInt32LE(32, 0);
  lying.writeUInt32LE(7, 4); // id
  lying.writeUInt32LE(0xffff_ffff, 24); // argc (after empty netns and cwd fields): far beyond the frame
  spawner.stdin.write(lying);
  t.deepEqual(kindOf(await next()), { id: 7, kind: 3 });
  // An empty argv.
  const empty = encodeRequest(8, { argv: [], env: {} });
  spawner.stdin.write(empty);
  t.deepEqual(kindOf(await next()), { id: 8, kind: 3 });
  // A length beyond the bound: refused, its bytes skipped, the stream stays in step.
  const huge = Buffer.alloc(4);
  huge.writeUInt32LE(20 * 1024 * 1024, 0);
  spawner.stdin.write(huge);
  spawner.stdin.write(Buffer.alloc(20 * 1024 * 1024, 0x41));
  t.deepEqual(kindOf(await next()), { id: 0, kind: 3 });
  spawner.stdin.write(encodeRequest(9, { argv: ['true'], env: ENV }));
  t.deepEqual(kindOf(await next()), { id: 9, kind: 0 });
});

test('the spawner dies with its parent, and takes its running commands with it', async (t) => {
  // A parent Node process that starts a spawner and a long command through it, then is SIGKILLed.
  const script = `
    import { ProcessRunner } from ${JSON.stringify(path.resolve('shared/process-runner.ts'))};
    const runner = new ProcessRunner();
    runner.run({ argv: ['sh', '-c', 'echo $$ >&2; exec sleep 60'], env: process.env }).catch(() => {});
    setTimeout(() => console.log(runner.spawnerPid), 100);
    setInterval(() => {}, 1000);
  `;
  const parent = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => parent.kill('SIGKILL'));
  const [line] = (await once(parent.stdout, 'data')) as [Buffer];
  const spawnerPid = Number(line.toString().trim());
  t.true(alive(spawnerPid));
  // The command's pid: the spawner's only child.
  const { readFileSync } = await import('node:fs');
  let commandPid = 0;
  for (let i = 0; i < 100 && commandPid === 0; i++) {
    const children = readFileSync(`/proc/${spawnerPid}/task/${spawnerPid}/children`, 'utf8').trim();
    commandPid = children === '' ? 0 : Number(children.split(' ')[0]);
    if (commandPid === 0) await new Promise((resolve) => setTimeout(resolve, 50));
  }
  t.not(commandPid, 0);
  parent.kill('SIGKILL');
  t.true(await gone(spawnerPid), 'spawner exited');
  t.true(await gone(commandPid), 'its command was killed');
});

test('requests in flight when the spawner dies fail with a clear error, and the next request starts a new one', async (t) => {
  const runner = new ProcessRunner();
  t.teardown(() => runner.close());
  await runner.run({ argv: ['true'], env: ENV });
  const first = runner.spawnerPid!;
  const inFlight = runner.run({ argv: ['sleep', '60'], env: ENV });
  process.kill(first, 'SIGKILL');
  const error = await t.throwsAsync(inFlight);
  t.is(error.message, 'cannot run sleep: ambit-spawner exited (SIGKILL)');
  const again = await runner.run({ argv: ['echo', 'back'], env: ENV });
  t.is(again.stdout.toString(), 'back\n');
  t.not(runner.spawnerPid, first);
});
