/**
 * The own-layer stream adapters' listener list (waypoint/h2-stream-events.ts) keeps EventEmitter's semantics that the
 * proxy, the try and the body feed rely on: order, `once` removed before it runs, `off` of the most recent
 * registration, the listeners of an emit taken when it starts, and an unheard 'error' thrown. Registrations removed
 * from the middle of the list (the many `once` listeners of a call) must leave the others in place and in order.
 */
import test from 'ava';
import { StreamEvents } from '../../waypoint/h2-stream-events.ts';

test('listeners run in order with their arguments; once runs once; the others stay, in order, when once ones leave the middle', (t) => {
  const events = new StreamEvents();
  const heard: string[] = [];
  events.on('close', () => heard.push('close a'));
  events.once('data', (chunk: string) => heard.push(`once data ${chunk}`));
  events.on('data', (chunk: string, more: string) => heard.push(`data ${chunk} ${more}`));
  events.once('end', () => heard.push('once end'));
  events.on('close', () => heard.push('close b'));
  events.emit('data', 'x', 'y');
  events.emit('data', 'z', 'w');
  events.emit('end');
  events.emit('end');
  events.emit('close');
  t.deepEqual(heard, ['once data x', 'data x y', 'data z w', 'once end', 'close a', 'close b']);
  t.is(events.listenerCount('data'), 1);
  t.is(events.listenerCount('close'), 2);
  t.is(events.listenerCount('end'), 0);
});

test('off removes the most recent registration of that function only; a listener removed during an emit still runs, one added does not', (t) => {
  const events = new StreamEvents();
  const heard: string[] = [];
  const listener = (): number => heard.push('listener');
  const late = (): number => heard.push('late');
  events.on('drain', listener);
  events.once('drain', () => {
    heard.push('first');
    events.off('drain', listener);
    events.on('drain', late);
  });
  events.on('drain', listener);
  events.emit('drain');
  t.deepEqual(heard, ['listener', 'first', 'listener']);
  heard.length = 0;
  events.emit('drain');
  // The later registration of `listener` was removed; the earlier one and `late` remain.
  t.deepEqual(heard, ['listener', 'late']);
});

test('an error with no listener throws it; with one it is heard', (t) => {
  const events = new StreamEvents();
  const error = new Error('boom');
  t.is(t.throws(() => events.emit('error', error)), error);
  let heard: unknown;
  events.once('error', (value: unknown) => (heard = value));
  t.true(events.emit('error', error));
  t.is(heard, error);
  t.false(events.emit('nothing'));
});
