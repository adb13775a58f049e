/**
 * shared/memory/heap-release.ts: after a burst of allocation the agent's resident memory goes back down once it is
 * quiet, and a steady or busy agent is left alone. Each case runs in a child Node process of its own, so the RSS
 * read is that process's alone (ava runs other test files in this one); serial, so the bursts do not add up.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const MODULE = fileURLToPath(new URL('../../shared/memory/heap-release.ts', import.meta.url));
const MIB = 1024 * 1024;

interface Outcome {
  released: boolean;
  releases: number;
  anonBefore: number;
  anonAfter: number;
  heapBefore: number;
  heapAfter: number;
}

/** Allocates `burstMib` of small objects, drops them, then runs one check with the given options. */
async function scenario(burstMib: number, options: Record<string, number>): Promise<Outcome> {
  const script = `
    import { readFileSync } from 'node:fs';
    import { startHeapRelease } from ${JSON.stringify(MODULE)};
    const anon = () => Number(/^RssAnon:\\s+(\\d+)/m.exec(readFileSync('/proc/self/status', 'utf8'))[1]) * 1024;
    const release = startHeapRelease({ intervalMs: 3600000, ...${JSON.stringify(options)} });
    let held = [];
    const objects = ${burstMib} * 1024 * 1024 / 64;
    for (let i = 0; i < objects; i++) held.push({ index: i, label: 'connection ' + i });
    held = undefined;
    await new Promise((resolve) => setTimeout(resolve, 100));
    const anonBefore = anon();
    const heapBefore = process.memoryUsage().heapTotal;
    const released = await release.check();
    release.stop();
    process.stdout.write(JSON.stringify({ released, releases: release.stats.releases, anonBefore, anonAfter: anon(), heapBefore, heapAfter: process.memoryUsage().heapTotal }));
  `;
  const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], { timeout: 180_000 });
  return JSON.parse(stdout) as Outcome;
}

test.serial('after a burst, a quiet check gives the memory back to the kernel', async (t) => {
  // quietUtilization above 1: the check counts as quiet whatever the test machine's load does to the event loop.
  const outcome = await scenario(120, { quietUtilization: 1.1 });
  t.true(outcome.released);
  t.is(outcome.releases, 1);
  t.true(outcome.anonBefore > 90 * MIB, `the burst was resident: ${outcome.anonBefore / MIB} MiB`);
  // What users see: the process's anonymous memory, not only V8's own count, back near an idle Node's.
  t.true(outcome.anonAfter < 60 * MIB, `anonymous RSS after the release: ${(outcome.anonAfter / MIB).toFixed(0)} MiB (before ${(outcome.anonBefore / MIB).toFixed(0)})`);
  t.true(outcome.heapAfter < outcome.heapBefore / 2);
});

test.serial('no release while the heap has not grown enough since the last one', async (t) => {
  const outcome = await scenario(8, { quietUtilization: 1.1, growthBytes: 512 * MIB });
  t.false(outcome.released);
  t.is(outcome.releases, 0);
});

test.serial('no release while the event loop is busy', async (t) => {
  // A utilization threshold of 0: the loop is never quiet enough, however large the burst.
  const outcome = await scenario(120, { quietUtilization: 0 });
  t.false(outcome.released);
  t.is(outcome.releases, 0);
  t.true(outcome.anonAfter > 90 * MIB, 'the memory is still there (nothing ran)');
});
