// Decoding the native forwarder's /v1/cni-call body (agent/cni-call.ts): what a peer sends is checked, never trusted.
import test from 'ava';
import { CniCallDecodeError, decodeCniCall } from '../../agent/cni-call.ts';

const body = (text: string): Buffer => Buffer.from(text, 'utf8');

test('the CNI_* environment and the config are split at the empty entry', (t) => {
  const decoded = decodeCniCall(body('CNI_COMMAND=ADD\0CNI_ARGS=A=1;B=2\0\0{"cniVersion":"1.0.0"}'));
  t.deepEqual(decoded.env, { CNI_COMMAND: 'ADD', CNI_ARGS: 'A=1;B=2' });
  t.is(decoded.stdin, '{"cniVersion":"1.0.0"}');
  t.deepEqual(decodeCniCall(body('CNI_COMMAND=VERSION\0\0')), { env: { CNI_COMMAND: 'VERSION' }, stdin: '' });
});

test('a body that is not from the forwarder is a typed error, not a crash', (t) => {
  for (const bad of ['', 'CNI_COMMAND=ADD', 'CNI_COMMAND=ADD\0', 'PATH=/bin\0\0{}', 'CNI_COMMAND\0\0{}', '=x\0\0', `${'CNI_X=1\0'.repeat(65)}\0`]) {
    const error = t.throws(() => decodeCniCall(body(bad)), { instanceOf: CniCallDecodeError }, JSON.stringify(bad.slice(0, 40)));
    t.is(error?.code, 'CNI_CALL_MALFORMED');
  }
});
