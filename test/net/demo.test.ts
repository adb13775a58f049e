/** `make demo` keeps working: the demo exits 0 only when every claim in its summary held. */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import path from 'node:path';

test('make demo: HBONE between nodes with both identities, only TLS on the link, plaintext for the un-enrolled client (by Service name)', (t) => {
  const result = spawnSync(process.execPath, [path.resolve(import.meta.dirname, '..', '..', 'demo', 'run.ts')], { encoding: 'utf8', timeout: 110_000 });
  t.is(result.status, 0, `${result.stdout}\n${result.stderr}`);
  t.regex(result.stdout, /mesh client reached the server through HBONE \(mutual TLS 1\.3, port 15008\): yes/);
  t.regex(result.stdout, /only TLS crossed between the nodes for mesh traffic: yes/);
  t.regex(result.stdout, /un-enrolled client still reached the server, in plaintext: yes/);
  t.regex(result.stdout, /by the Service's name, through the node's kube-proxy stand-in: yes/);
  t.regex(result.stdout, /holds spiffe:\/\/cluster\.local\/ns\/shop\/sa\/client/);
  t.regex(result.stdout, /holds spiffe:\/\/cluster\.local\/ns\/shop\/sa\/server/);
});
