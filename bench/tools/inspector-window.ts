/**
 * A measuring window opened and closed by SIGUSR2, for the preloads that profile one window of a process
 * (profile-on-signal.ts: V8's CPU profiler; heap-sample-on-signal.ts: its sampling heap profiler): the first signal
 * runs `start` on an inspector session of the process, the next runs `stop` and writes what it returned to
 * `<directory>/<pid>-<n>.<extension>` (or `.error`), and so on.
 *
 * Owns: the signal, the session and the file. Must not know about: which profiler.
 */
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import path from 'node:path';

export type WindowResult = (error: Error | null, profile: unknown) => void;

export function windowOnSignal(directory: string, extension: string, start: (session: Session) => void, stop: (session: Session, done: WindowResult) => void): void {
  const session = new Session();
  session.connect();
  let running = false;
  let written = 0;
  process.on('SIGUSR2', () => {
    running = !running;
    if (running) {
      start(session);
      return;
    }
    stop(session, (error, profile) => {
      const file = path.join(directory, `${process.pid}-${++written}`);
      if (error === null) writeFileSync(`${file}.${extension}`, JSON.stringify(profile));
      else writeFileSync(`${file}.error`, String(error));
    });
  });
}
