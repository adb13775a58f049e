/**
 * `make demo` keeps working: `ambitctl local up -f demo/cluster`, then the demo's checks; it exits 0 only when every
 * claim in its summary held, and `ambitctl local down` leaves no run directory behind.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import path from 'node:path';

test('make demo: HBONE between nodes with both identities, only TLS on the link, plaintext for the un-enrolled client (by Service name)', (t) => {
  const result = spawnSync(process.execPath, [path.resolve(import.meta.dirname, '..', '..', 'demo', 'run.ts')], { encoding: 'utf8', timeout: 300_000 });
  t.is(result.status, 0, `${result.stdout}\n${result.stderr}`);
  t.regex(result.stdout, /mesh client reached the server through HBONE \(mutual TLS 1\.3, port 15008\): yes/);
  t.regex(result.stdout, /only TLS crossed between the nodes for mesh traffic: yes/);
  t.regex(result.stdout, /un-enrolled client still reached the server, in plaintext: yes/);
  t.regex(result.stdout, /by the Service's name, through the node's kube-proxy stand-in: yes/);
  t.regex(result.stdout, /holds spiffe:\/\/cluster\.local\/ns\/shop\/sa\/client/);
  t.regex(result.stdout, /holds spiffe:\/\/cluster\.local\/ns\/shop\/sa\/server/);
  t.regex(result.stdout, /local mesh up: 2 nodes, 3 pods ready/);
  const runDir = /run directory (\/run\/ambit-demo-\S+)/.exec(result.stdout)?.[1];
  t.truthy(runDir);
  t.false(readdirSync('/run').includes(runDir!.slice('/run/'.length)), 'ambitctl local down removed the run directory');
});
