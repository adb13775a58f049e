/**
 * Preloaded into a Node process (`--import`) by bench/waypoint-instructions.ts --profile: the first SIGUSR2 starts
 * V8's CPU profiler in the process (sampling every AMBIT_PROFILE_INTERVAL_US, default 250), the next one stops it and
 * writes the profile to AMBIT_PROFILE_DIR/<pid>-<n>.cpuprofile, so a profile covers one measured window and nothing of
 * start-up or warm-up (as `--cpu-prof` would). Does nothing unless AMBIT_PROFILE_DIR is set.
 *
 * Owns: that window. Must not know about: what the process is.
 */
import { windowOnSignal } from './inspector-window.ts';

const directory = process.env.AMBIT_PROFILE_DIR;
if (directory !== undefined) {
  windowOnSignal(directory, 'cpuprofile', (session) => session.post('Profiler.enable', () => {
    session.post('Profiler.setSamplingInterval', { interval: Number(process.env.AMBIT_PROFILE_INTERVAL_US ?? 250) }, () => session.post('Profiler.start'));
  }), (session, done) => session.post('Profiler.stop', (error, result) => done(error, result?.profile)));
}
