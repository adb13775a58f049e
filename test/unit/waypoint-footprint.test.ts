/**
 * What a waypoint loads at start (its RSS): jose and re2js only on first use (waypoint/optional-modules.ts), and
 * then they work.
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { joseModule, re2Module } from '../../waypoint/optional-modules.ts';

/** The packages under node_modules that importing waypoint/main.ts resolves, in a fresh process. */
function packagesLoadedByWaypoint(): string[] {
  const main = new URL('../../waypoint/main.ts', import.meta.url).pathname;
  const script = [
    "import { registerHooks } from 'node:module';",
    'const seen = new Set();',
    'registerHooks({ resolve(specifier, context, next) { const result = next(specifier, context); const match = /node_modules\\/((?:@[^/]+\\/)?[^/]+)\\//.exec(result.url); if (match) seen.add(match[1]); return result; } });',
    `await import(${JSON.stringify(main)});`,
    'console.log(JSON.stringify([...seen].sort()));',
  ].join('\n');
  return JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' }).trim()) as string[];
}

test('starting a waypoint loads neither jose nor re2js nor @peculiar/x509', (t) => {
  const loaded = packagesLoadedByWaypoint();
  t.true(loaded.includes('pino'), `the hook sees packages: ${loaded.join(' ')}`);
  t.deepEqual(loaded.filter((name) => ['jose', 're2js', '@peculiar/x509'].includes(name)), []);
});

test('loaded on first use, they work', (t) => {
  t.true(re2Module().compile('/v[0-9]+/.*').matches('/v2/items'));
  t.is(joseModule().decodeJwt('eyJhbGciOiJub25lIn0.eyJpc3MiOiJhIn0.').iss, 'a');
});
