/**
 * The supervisor's control socket (runtime/workloads/control-socket.ts): only root reaches it (mode 0600, since it
 * deletes pods), a deletion's answer comes back to the client, an unknown pod is NO_SUCH_POD with the handler's
 * message, a failing handler is an error (not a hang), and a run directory with no supervisor says so.
 */
import test from 'ava';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { controlSocketFile, requestDeletePod, serveControl } from '../../runtime/workloads/control-socket.ts';
import { WorkloadError } from '../../runtime/workloads/errors.ts';

test('delete pod over the control socket: answer, unknown pod, handler failure, socket mode 0600', async (t) => {
  const runDir = await mkdtemp(path.join(os.tmpdir(), 'ambit-control-'));
  const asked: string[] = [];
  const control = await serveControl(runDir, {
    deletePod: async (namespace, name) => {
      asked.push(`${namespace}/${name}`);
      if (name === 'nosuch') throw new WorkloadError('NO_SUCH_POD', `no pod ${namespace}/${name}`);
      if (name === 'broken') throw new Error('CNI DEL failed');
      return { deleted: `${namespace}/${name}`, replacement: `${namespace}/${name}-new` };
    },
  });
  t.teardown(async () => {
    await control.close();
    await rm(runDir, { recursive: true, force: true });
  });
  t.is((await stat(controlSocketFile(runDir))).mode & 0o777, 0o600, 'only root may ask the supervisor to delete pods');
  t.deepEqual(await requestDeletePod(runDir, 'shop', 'web-abc'), { deleted: 'shop/web-abc', replacement: 'shop/web-abc-new' });
  await t.throwsAsync(requestDeletePod(runDir, 'shop', 'nosuch'), { code: 'NO_SUCH_POD', message: 'no pod shop/nosuch' } as never);
  await t.throwsAsync(requestDeletePod(runDir, 'shop', 'broken'), { message: 'CNI DEL failed' });
  t.like(await requestDeletePod(runDir, 'a/b', 'c d'), { deleted: 'a/b/c d' }, 'names are escaped in the path: namespace a/b, pod "c d"');
  t.deepEqual(asked, ['shop/web-abc', 'shop/nosuch', 'shop/broken', 'a/b/c d']);
  const empty = await mkdtemp(path.join(os.tmpdir(), 'ambit-control-none-'));
  t.teardown(() => rm(empty, { recursive: true, force: true }));
  await t.throwsAsync(requestDeletePod(empty, 'shop', 'web'), { code: 'NOT_RUNNING', message: /cannot reach the supervisor/ } as never);
});
