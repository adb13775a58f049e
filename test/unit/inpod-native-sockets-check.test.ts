// Unit test: the agent's load-time check of the native socket addon (agent/inpod/sockets.ts). An addon built from
// older C than the TypeScript (a merge without a rebuild) lacks a function sockets.ts declares: the check must refuse
// it at load with the error that says to rebuild it, naming what is missing, so the agent fails at start instead of
// resetting connections later; the addon this tree builds must pass.
import test from 'ava';
import { createRequire } from 'node:module';
import { CaptureError } from '../../agent/inpod/errors.ts';
import { checkNativeSockets, NATIVE_SOCKET_FUNCTIONS, NATIVE_SOCKETS_PATH, nativeSockets } from '../../agent/inpod/sockets.ts';

const require = createRequire(new URL('../../agent/inpod/sockets.ts', import.meta.url));

/** A copy of the built addon's functions, as a plain object a test can take one from. */
function addonCopy(): Record<string, unknown> {
  const built = require(NATIVE_SOCKETS_PATH) as Record<string, unknown>;
  return Object.fromEntries(NATIVE_SOCKET_FUNCTIONS.map((name) => [name, built[name]]));
}

test('a stale addon missing any one function sockets.ts declares fails the check with "rebuild it", naming it', (t) => {
  for (const name of NATIVE_SOCKET_FUNCTIONS) {
    const stale = addonCopy();
    delete stale[name];
    const error = t.throws(() => checkNativeSockets(stale), { instanceOf: CaptureError });
    t.is(error.code, 'NATIVE_ADDON_STALE');
    t.regex(error.message, /rebuild it \(npm run install\)/);
    t.regex(error.message, new RegExp(`lacks ${name}:`), `the message names ${name}`);
  }
});

test('a function replaced by something else, or no addon at all, fails the check too', (t) => {
  const wrong = addonCopy();
  wrong.socketTcp = 1;
  t.throws(() => checkNativeSockets(wrong), { instanceOf: CaptureError, message: /lacks socketTcp: .*rebuild it/ });
  t.throws(() => checkNativeSockets(undefined), { instanceOf: CaptureError, message: /rebuild it/ });
});

test('the addon this tree builds passes the check, and is the one the agent loaded', (t) => {
  const built = require(NATIVE_SOCKETS_PATH) as ReturnType<typeof checkNativeSockets>;
  t.is(checkNativeSockets(built), built);
  t.is(nativeSockets, built);
  for (const name of NATIVE_SOCKET_FUNCTIONS) t.is(typeof nativeSockets[name], 'function', name);
});
