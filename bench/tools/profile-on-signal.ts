/**
 * Preloaded into a Node process (`--import`) by bench/waypoint-instructions.ts --profile: the first SIGUSR2 starts
 * V8's CPU profiler in the process (sampling every AMBIT_PROFILE_INTERVAL_US, default 250), the next one stops it and
 * writes the profile to AMBIT_PROFILE_DIR/<pid>-<n>.cpuprofile, so a profile covers one measured window and nothing of
 * start-up or warm-up (as `--cpu-prof` would). Does nothing unless AMBIT_PROFILE_DIR is set.
 *
 * Owns: that window. Must not know about: what the process is.
 */
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import path from 'node:path';

const directory = process.env.AMBIT_PROFILE_DIR;
if (directory !== undefined) {
  const session = new Session();
  session.connect();
  let running = false;
  let written = 0;
  process.on('SIGUSR2', () => {
    if (!running) {
      running = true;
      session.post('Profiler.enable', () => {
        session.post('Profiler.setSamplingInterval', { interval: Number(process.env.AMBIT_PROFILE_INTERVAL_US ?? 250) }, () => session.post('Profiler.start'));
      });
      return;
    }
    running = false;
    session.post('Profiler.stop', (error, result) => {
      const file = path.join(directory, `${process.pid}-${++written}`);
      if (error === null) writeFileSync(`${file}.cpuprofile`, JSON.stringify(result.profile));
      else writeFileSync(`${file}.error`, String(error));
    });
  });
}
