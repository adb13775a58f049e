/**
 * waypoint/log-destination.ts: the access log's lines reach the file writer whole, in order, none lost or doubled:
 * in batches once enough is gathered, on the interval for a quiet log, and all of what is left on flushSync (before
 * the process exits). Through pino itself, as the waypoint writes them.
 */
import test from 'ava';
import { pino } from 'pino';
import { BatchedLogDestination, type LogSink } from '../../waypoint/log-destination.ts';

class RecordingSink implements LogSink {
  readonly writes: string[] = [];
  syncFlushes = 0;
  write(bytes: Buffer): void {
    // The destination hands its batch over (it makes a new one): kept as text here.
    this.writes.push(bytes.toString('utf8'));
  }
  flushSync(): void {
    this.syncFlushes++;
  }
}

test('lines go in batches once enough is gathered, in order; flushSync writes the rest', (t) => {
  const sink = new RecordingSink();
  const destination = new BatchedLogDestination(sink, 1000, 60_000);
  t.teardown(() => destination.close());
  const log = pino({ base: undefined, timestamp: false }, destination);
  for (let index = 0; index < 45; index++) log.info({ index, pad: 'x'.repeat(40) }, 'request');
  t.true(sink.writes.length >= 2 && sink.writes.length <= 4, `${sink.writes.length} batches for 45 lines of ~70 bytes`);
  for (const batch of sink.writes) t.true(batch.length >= 1000 && batch.endsWith('\n'), 'a batch holds whole lines, at least the threshold');
  destination.flushSync();
  t.is(sink.syncFlushes, 1);
  const lines = sink.writes.join('').split('\n').filter((line) => line !== '');
  t.deepEqual(lines.map((line) => (JSON.parse(line) as { index: number }).index), Array.from({ length: 45 }, (_, index) => index));
  destination.flushSync();
  t.is(sink.writes.join('').split('\n').length - 1, 45, 'nothing written twice');
});

test('a quiet log is written on the interval', async (t) => {
  const sink = new RecordingSink();
  const destination = new BatchedLogDestination(sink, 8192, 50);
  t.teardown(() => destination.close());
  destination.write('{"msg":"one"}\n');
  t.is(sink.writes.length, 0);
  await new Promise((resolve) => setTimeout(resolve, 150));
  t.deepEqual(sink.writes, ['{"msg":"one"}\n']);
});
