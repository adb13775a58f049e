// Unit tests: the CNI installer (cni/install.ts, cni/conflist.ts) on temp dirs.
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { access, constants, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { ConflistError } from '../../cni/conflist.ts';
import { ensureConflistEntry, install, uninstall, watchConflist } from '../../cni/install.ts';
import type { AmbitPluginEntry } from '../../cni/conflist.ts';

const entry: AmbitPluginEntry = { type: 'ambit-cni', agentSocket: '/var/run/ambit/cni.sock', clusterDir: '/var/lib/ambit/cluster' };

const primary = {
  cniVersion: '1.0.0',
  name: 'k8s-pod-network',
  someVendorField: { keep: ['me'] },
  plugins: [
    { type: 'calico', log_level: 'info', ipam: { type: 'calico-ipam' } },
    { type: 'portmap', snat: true, capabilities: { portMappings: true } },
  ],
};

async function dirs(t: import('ava').ExecutionContext): Promise<{ binDir: string; confDir: string; conflist: string }> {
  const root = await mkdtemp(path.join(os.tmpdir(), 'ambit-install-test-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  const binDir = path.join(root, 'bin');
  const confDir = path.join(root, 'net.d');
  await import('node:fs/promises').then((fs) => Promise.all([fs.mkdir(binDir), fs.mkdir(confDir)]));
  const conflist = path.join(confDir, '10-calico.conflist');
  await writeFile(conflist, JSON.stringify(primary, null, 2));
  // Not primary: sorts after, and a plain .conf is not a list we chain into.
  await writeFile(path.join(confDir, '20-other.conflist'), JSON.stringify({ ...primary, name: 'other' }));
  await writeFile(path.join(confDir, '05-single.conf'), JSON.stringify({ cniVersion: '1.0.0', name: 'x', type: 'bridge' }));
  return { binDir, confDir, conflist };
}

async function readJson(file: string): Promise<typeof primary> {
  return JSON.parse(await readFile(file, 'utf8')) as typeof primary;
}

test('install puts an executable plugin in the bin dir and appends our entry to the lowest-sorted conflist only', async (t) => {
  const { binDir, confDir, conflist } = await dirs(t);
  const result = await install({ binDir, confDir, entry });
  t.is(result.conflist, conflist);
  await access(path.join(binDir, 'ambit-cni'), constants.X_OK);
  t.is((await readFile(path.join(binDir, 'ambit-cni'))).subarray(0, 4).toString('latin1'), '\x7fELF', 'ambit-cni is the native forwarder');
  const wrapper = await readFile(path.join(binDir, 'ambit-cni-node'), 'utf8');
  t.regex(wrapper, /^AMBIT_CNI_HOME='\/.+\/cni'$/m, 'installed wrapper points at the source cni/ directory');
  t.regex(wrapper, /^AMBIT_NODE='\/.+node'$/m);
  const version = execFileSync(path.join(binDir, 'ambit-cni'), { env: { CNI_COMMAND: 'VERSION' }, encoding: 'utf8' });
  t.like(JSON.parse(version), { cniVersion: '1.1.0' }, 'the installed copy runs from anywhere');
  const written = await readJson(conflist);
  t.deepEqual(written.plugins, [...primary.plugins, entry]);
  t.deepEqual(written.someVendorField, primary.someVendorField);
  t.is(written.name, primary.name);
  t.false((await readFile(path.join(confDir, '20-other.conflist'), 'utf8')).includes('ambit-cni'));
});

test('install is idempotent: a second run leaves the file byte-for-byte the same', async (t) => {
  const { binDir, confDir, conflist } = await dirs(t);
  await install({ binDir, confDir, entry });
  const first = await readFile(conflist, 'utf8');
  const again = await ensureConflistEntry(confDir, entry);
  t.false(again.changed);
  t.is(await readFile(conflist, 'utf8'), first);
  t.is((await readJson(conflist)).plugins.filter((p) => p.type === 'ambit-cni').length, 1);
});

test('changed settings update our entry in place', async (t) => {
  const { binDir, confDir, conflist } = await dirs(t);
  await install({ binDir, confDir, entry });
  await ensureConflistEntry(confDir, { ...entry, agentSocket: '/run/other.sock' });
  const plugins = (await readJson(conflist)).plugins as unknown as AmbitPluginEntry[];
  t.is(plugins.length, 3);
  t.is(plugins[2]?.agentSocket, '/run/other.sock');
});

test('uninstall removes only our entry and the binary', async (t) => {
  const { binDir, confDir, conflist } = await dirs(t);
  await install({ binDir, confDir, entry });
  await uninstall(binDir, confDir);
  t.deepEqual(await readJson(conflist), primary);
  await t.throwsAsync(access(path.join(binDir, 'ambit-cni')));
  await t.throwsAsync(access(path.join(binDir, 'ambit-cni-node')));
  t.deepEqual(await uninstall(binDir, confDir), [], 'a second uninstall changes nothing');
});

test('no conflist, or one without plugins, is a clear typed error', async (t) => {
  const { binDir, confDir, conflist } = await dirs(t);
  await writeFile(conflist, JSON.stringify({ cniVersion: '1.0.0', name: 'x' }));
  const invalid = await t.throwsAsync(install({ binDir, confDir, entry }), { instanceOf: ConflistError });
  t.is(invalid?.code, 'CONFLIST_INVALID');
  const empty = await mkdtemp(path.join(os.tmpdir(), 'ambit-install-empty-'));
  t.teardown(() => rm(empty, { recursive: true, force: true }));
  const missing = await t.throwsAsync(install({ binDir, confDir: empty, entry }), { instanceOf: ConflistError });
  t.is(missing?.code, 'CONFLIST_NOT_FOUND');
  t.regex(missing?.message ?? '', /no \*\.conflist/);
});

test('a primary conflist at 1.1.0 gets our entry; one at a version the plugin cannot serve (1.2.0) is refused before any pod is affected', async (t) => {
  const { binDir, confDir, conflist } = await dirs(t);
  await writeFile(conflist, JSON.stringify({ ...primary, cniVersion: '1.1.0' }));
  await install({ binDir, confDir, entry });
  t.deepEqual((await readJson(conflist)).plugins, [...primary.plugins, entry]);
  const newer = { ...primary, cniVersion: '1.2.0' };
  await writeFile(conflist, JSON.stringify(newer));
  const refused = await t.throwsAsync(install({ binDir, confDir, entry }), { instanceOf: ConflistError });
  t.regex(refused?.message ?? '', /cniVersion 1\.2\.0.*ambit-cni serves 0\.3\.0, 0\.3\.1, 0\.4\.0, 1\.0\.0, 1\.1\.0.*not chained/);
  t.deepEqual(await readJson(conflist), newer, 'the conflist is left as it was: no pod on the node is refused by ambit-cni');

  // Spec 1.1.0's version list: a runtime may pick its highest; one the plugin cannot serve is warned about.
  await writeFile(conflist, JSON.stringify({ ...primary, cniVersion: '1.0.0', cniVersions: ['1.0.0', '1.1.0', '1.2.0'] }));
  const listed = await install({ binDir, confDir, entry });
  t.deepEqual(listed.warnings.length, 1);
  t.regex(listed.warnings[0] ?? '', /lists cniVersions 1\.2\.0, which ambit-cni cannot serve .*would fail every pod's ADD/);
  await writeFile(conflist, JSON.stringify({ ...primary, cniVersions: ['1.0.0', '1.1.0'] }));
  t.deepEqual((await install({ binDir, confDir, entry })).warnings, []);
});

test('watch re-adds our entry when the primary CNI rewrites its conflist', async (t) => {
  const { binDir, confDir, conflist } = await dirs(t);
  await install({ binDir, confDir, entry });
  const reAdded: string[] = [];
  const watcher = watchConflist(confDir, entry, { recheckIntervalMs: 200, onReAdd: (file) => reAdded.push(file) });
  t.teardown(() => watcher.close());
  // The primary CNI rewrites its file without us (as calico/cilium do on restart).
  await writeFile(conflist, JSON.stringify(primary, null, 2));
  const deadline = Date.now() + 5_000;
  // Until the file has our entry again and the watcher said so (its callback runs after the rename we may see first).
  while (Date.now() < deadline && (reAdded.length === 0 || !(await readFile(conflist, 'utf8')).includes('ambit-cni'))) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const plugins = (await readJson(conflist)).plugins;
  t.deepEqual(plugins, [...primary.plugins, entry]);
  t.deepEqual(reAdded, [conflist]);
});
