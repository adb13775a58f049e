// ambit-spawner entering a network namespace with setns before exec (shared/process-runner.ts `netnsPath`): the
// command sees the namespace's links, not the root namespace's; a namespace that is not there is an error naming it.
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { addNetns, deleteNetns, ipIn, netnsPath } from '../../runtime/netns.ts';
import { ProcessRunner } from '../../shared/process-runner.ts';

const ENV = { PATH: process.env.PATH };

test('a command run with netnsPath lives in that namespace', async (t) => {
  const name = `spwn-${randomBytes(3).toString('hex')}`;
  await addNetns(name);
  t.teardown(() => deleteNetns(name));
  await ipIn(name, ['link', 'add', 'spwn-probe0', 'type', 'veth', 'peer', 'name', 'spwn-probe1']);
  const runner = new ProcessRunner();
  t.teardown(() => runner.close());
  const inside = await runner.run({ argv: ['ip', '-o', 'link', 'show'], env: ENV, netnsPath: netnsPath(name) });
  t.is(inside.code, 0);
  t.regex(inside.stdout.toString(), /spwn-probe0/);
  const names = inside.stdout.toString().split('\n').filter((line) => line !== '').map((line) => line.split(':')[1]!.trim().split('@')[0]);
  t.deepEqual(names.sort(), ['lo', 'spwn-probe0', 'spwn-probe1']);
  const outside = await runner.run({ argv: ['ip', '-o', 'link', 'show'], env: ENV });
  t.notRegex(outside.stdout.toString(), /spwn-probe0/);
});

test('a namespace that is not there is an error naming the step and the command', async (t) => {
  const runner = new ProcessRunner();
  t.teardown(() => runner.close());
  const error = await t.throwsAsync(runner.run({ argv: ['true'], env: ENV, netnsPath: '/run/netns/ambit-no-such-ns' }));
  t.is(error.message, 'cannot run true: open netns (starting true) ENOENT');
});

test('a path that is not a network namespace fails at setns with an error naming it, and the spawner carries on', async (t) => {
  const runner = new ProcessRunner();
  t.teardown(() => runner.close());
  // A command in flight at the same time must not be lost with it.
  const alongside = runner.run({ argv: ['sh', '-c', 'sleep 0.3; echo still here'], env: ENV });
  const error = await t.throwsAsync(runner.run({ argv: ['true'], env: ENV, netnsPath: '/etc/hostname' }));
  t.is(error.message, 'cannot run true: setns (starting true) EINVAL');
  const pid = runner.spawnerPid;
  t.is((await alongside).stdout.toString(), 'still here\n');
  t.is((await runner.run({ argv: ['true'], env: ENV })).code, 0);
  t.is(runner.spawnerPid, pid, 'the same spawner answered: it did not die');
});
