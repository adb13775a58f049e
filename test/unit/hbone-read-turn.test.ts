import test from 'ava';
import { deferToTurnEnd, inReadTurn, runReadTurn } from '../../shared/hbone/read-turn.ts';

test('inside a read callback, deferred calls run when it returns, in order, before any tick; outside, on the next tick', async (t) => {
  const seen: string[] = [];
  const note = (what: string): void => void seen.push(what);
  runReadTurn((first: string, second: number) => {
    deferToTurnEnd(note, `flush ${first}`);
    process.nextTick(() => seen.push('tick queued inside'));
    deferToTurnEnd(note, `uncork ${second}`);
    seen.push('callback body');
  }, 'a', 1);
  seen.push('after the callback');
  deferToTurnEnd(note, 'outside');
  seen.push('after deferring outside');
  await new Promise((resolve) => setImmediate(resolve));
  t.deepEqual(seen, ['callback body', 'flush a', 'uncork 1', 'after the callback', 'after deferring outside', 'tick queued inside', 'outside']);
});

test('nested read callbacks run the deferred calls once, at the outermost end; calls deferred while running join the same run', (t) => {
  const seen: string[] = [];
  runReadTurn(() => {
    runReadTurn(() => deferToTurnEnd((what: string) => {
      seen.push(what);
      deferToTurnEnd((more: string) => seen.push(more), 'deferred by a deferred call');
    }, 'inner'), undefined, undefined);
    seen.push('inner returned');
  }, undefined, undefined);
  t.deepEqual(seen, ['inner returned', 'inner', 'deferred by a deferred call']);
});

test('a callback that throws still runs what it deferred; a deferred call that throws leaves the rest to the next tick', async (t) => {
  const seen: string[] = [];
  t.throws(() => runReadTurn(() => {
    deferToTurnEnd((what: string) => seen.push(what), 'flushed anyway');
    throw new Error('read failed');
  }, undefined, undefined), { message: 'read failed' });
  t.deepEqual(seen, ['flushed anyway']);

  t.throws(() => runReadTurn(() => {
    deferToTurnEnd(() => { throw new Error('flush failed'); }, undefined);
    deferToTurnEnd((what: string) => seen.push(what), 'after the failed one');
  }, undefined, undefined), { message: 'flush failed' });
  t.deepEqual(seen, ['flushed anyway']);
  await new Promise((resolve) => process.nextTick(resolve));
  t.deepEqual(seen, ['flushed anyway', 'after the failed one']);
  // The list is empty again: a later read turn runs only its own calls.
  runReadTurn(() => deferToTurnEnd((what: string) => seen.push(what), 'next turn'), undefined, undefined);
  t.deepEqual(seen, ['flushed anyway', 'after the failed one', 'next turn']);
});

test('inReadTurn says whether a read callback is running (the nested HTTP/2 connections flush at its end then)', (t) => {
  t.false(inReadTurn());
  const seen: boolean[] = [];
  runReadTurn(() => {
    seen.push(inReadTurn());
    deferToTurnEnd(() => seen.push(inReadTurn()), undefined);
  }, undefined, undefined);
  t.deepEqual(seen, [true, true]);
  t.false(inReadTurn());
});
