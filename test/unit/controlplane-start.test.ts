// Starting the control plane: a source that cannot read its directory fails the start loudly.
import test from 'ava';
import path from 'node:path';
import { startControlPlane } from '../../controlplane/control-plane.ts';
import { YamlDirSource } from '../../controlplane/sources/yaml-dir.ts';
import { TokenFileAuthenticator } from '../../controlplane/xds/auth.ts';
import { tempDir, testCa } from '../helpers/xds-harness.ts';

test('a missing manifest directory fails the start with its path in the message', async (t) => {
  const dir = path.join(await tempDir(t), 'missing');
  const error = await t.throwsAsync(
    startControlPlane({ ca: await testCa(), listenAddress: '127.0.0.1:0', authenticator: new TokenFileAuthenticator('/nonexistent'), createSource: (store) => new YamlDirSource({ dir, store }) }),
  );
  t.true(error!.message.includes(dir), error!.message);
});
