// Releases that run after a CNI DEL was answered (agent/pod-releases.ts): ordered per pod, waited for by a later
// capture of the same pod and by shutdown, and a failure never reaches the runtime.
import test from 'ava';
import { PodReleases } from '../../agent/pod-releases.ts';

/** A promise and the function that settles it. */
function gate(): { promise: Promise<void>; open: () => void; fail: (error: Error) => void } {
  let open!: () => void;
  let fail!: (error: Error) => void;
  const promise = new Promise<void>((resolve, reject) => {
    open = resolve;
    fail = reject;
  });
  return { promise, open, fail };
}

test('the release starts before start() returns (what it queues first is queued before the DEL is answered)', (t) => {
  const releases = new PodReleases(() => undefined);
  const events: string[] = [];
  releases.start('a', async () => {
    events.push('release started');
    await Promise.resolve();
  });
  events.push('answered');
  t.deepEqual(events, ['release started', 'answered']);
});

test('a later capture of the same pod waits until its release is done; other pods do not wait', async (t) => {
  const releases = new PodReleases(() => undefined);
  const release = gate();
  releases.start('a', () => release.promise);
  let settled = false;
  const waiting = releases.settled('a').then(() => {
    settled = true;
  });
  await releases.settled('b'); // another pod: nothing in flight
  t.false(settled, 'the capture went ahead while the release was running');
  t.is(releases.size, 1);
  release.open();
  await waiting;
  t.true(settled);
  t.is(releases.size, 0);
});

test('two releases of one pod run one after the other, in order; settled() waits for the last', async (t) => {
  const releases = new PodReleases(() => undefined);
  const events: string[] = [];
  const first = gate();
  releases.start('a', async () => {
    events.push('first started');
    await first.promise;
    events.push('first done');
  });
  releases.start('a', async () => {
    events.push('second started');
    await Promise.resolve();
    events.push('second done');
  });
  await Promise.resolve();
  t.deepEqual(events, ['first started'], 'the second release started while the first was running');
  const settled = releases.settled('a');
  first.open();
  await settled;
  t.deepEqual(events, ['first started', 'first done', 'second started', 'second done']);
});

test('a failed release is reported to the handler, never thrown; the next one of the pod still runs', async (t) => {
  const failures: string[] = [];
  const releases = new PodReleases((uid, error) => failures.push(`${uid}: ${error.message}`));
  releases.start('a', () => Promise.reject(new Error('rules could not be removed')));
  let ran = false;
  releases.start('a', async () => {
    ran = true;
  });
  await releases.settled('a');
  t.deepEqual(failures, ['a: rules could not be removed']);
  t.true(ran);
});

test('drain() resolves only when every release, also one started while draining, is done', async (t) => {
  const releases = new PodReleases(() => undefined);
  const a = gate();
  const b = gate();
  releases.start('a', () => a.promise);
  let drained = false;
  const draining = releases.drain().then(() => {
    drained = true;
  });
  releases.start('b', () => b.promise);
  a.open();
  await releases.settled('a');
  await Promise.resolve();
  t.false(drained, 'drain resolved with a release still running');
  b.open();
  await draining;
  t.true(drained);
});
