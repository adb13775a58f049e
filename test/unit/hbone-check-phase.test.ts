/**
 * shared/hbone/check-phase.ts: the nested connections' flushes and the client streams' closes share one Immediate
 * per loop turn. What a user notices: a proxied answer's outer write goes out before the request's close listeners
 * (its metrics and access-log line) run, not after them.
 */
import test from 'ava';
import { deferPastCheckPhaseWrites, deferToCheckPhase } from '../../shared/hbone/check-phase.ts';
import { deferToTurnEnd } from '../../shared/hbone/read-turn.ts';

test('a phase runs its flushes, then the writes they deferred to the turn end, then the calls deferred past those writes; what they defer waits for the next phase', async (t) => {
  const seen: string[] = [];
  const note = (what: string): void => void seen.push(what);
  // Deferred first, run last: a close waits for the phase's flushes and their writes.
  deferPastCheckPhaseWrites(note, 'close a');
  deferToCheckPhase((what: string) => {
    seen.push(what);
    deferToTurnEnd(note, 'outer write of a');
  }, 'flush a');
  deferToCheckPhase((what: string) => {
    seen.push(what);
    deferToCheckPhase(note, 'flush deferred by a flush');
    deferPastCheckPhaseWrites(note, 'close deferred by a flush');
  }, 'flush b');
  deferPastCheckPhaseWrites((what: string) => {
    seen.push(what);
    deferToTurnEnd(note, 'write deferred by a close');
  }, 'close b');
  await new Promise((resolve) => setImmediate(resolve));
  t.deepEqual(seen, ['flush a', 'flush b', 'outer write of a', 'close a', 'close b', 'write deferred by a close']);
  await new Promise((resolve) => setImmediate(resolve));
  t.deepEqual(seen.slice(6), ['flush deferred by a flush', 'close deferred by a flush']);
});
