/**
 * A pino logger whose JSON lines tests can read. Test helper only: never imported by production code.
 */
import { Writable } from 'node:stream';
import { pino, type Logger } from 'pino';

export interface CapturedLog {
  log: Logger;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- log lines are free-form JSON read by assertions
  lines: Array<Record<string, any>>;
}

export function captureLog(level = 'info'): CapturedLog {
  const captured: CapturedLog['lines'] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString('utf8').split('\n')) if (line) captured.push(JSON.parse(line));
      callback();
    },
  });
  return { log: pino({ level }, stream), lines: captured };
}
