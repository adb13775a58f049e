/**
 * The in-pod policy routing over rtnetlink (agent/inpod/pod-routing.ts, agent/native/inpod-routing.c) and the
 * install's failure behaviour (agent/inpod/iptables.ts), on real namespaces with real rules: what `ip rule` and
 * `ip route` show in the pod is what the `ip` commands made before; nothing lands in another namespace; a fresh pod
 * whose rules fail to go in keeps nothing of ours, a re-install that fails keeps the earlier rules.
 * Nothing is added to the root namespace; every namespace is deleted in teardown.
 */
import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { CaptureError } from '../../agent/inpod/errors.ts';
import { installInpodRules, removeInpodRules, saveRules } from '../../agent/inpod/iptables.ts';
import { removePodRouting, setupPodRouting } from '../../agent/inpod/pod-routing.ts';
import { podRouting } from '../../agent/inpod/rules.ts';
import { createPodTopology, type PodTopology } from './helpers/inpod-topology.ts';

const exec = promisify(execFile);

async function topology(t: ExecutionContext): Promise<PodTopology> {
  const made = await createPodTopology(undefined, { dualStack: true });
  t.teardown(() => made.destroy());
  return made;
}

/** What `ip` prints in a namespace, for comparing. */
async function ipIn(netnsName: string, ...args: string[]): Promise<string> {
  return (await exec('ip', ['-n', netnsName, ...args])).stdout;
}

/** The rules of both families and the routes of table 100 (an absent table prints nothing). */
async function routingView(netnsName: string): Promise<string> {
  const table100 = (family: string): Promise<string> => ipIn(netnsName, family, '-d', 'route', 'show', 'table', '100').catch(() => '');
  const views = await Promise.all([
    ipIn(netnsName, '-d', 'rule', 'show'), ipIn(netnsName, '-6', '-d', 'rule', 'show'), table100('-4'), table100('-6'),
  ]);
  return views.join('---\n');
}

async function migrateReq(netnsName: string): Promise<string> {
  return (await exec('ip', ['netns', 'exec', netnsName, 'cat', '/proc/sys/net/ipv4/tcp_migrate_req'])).stdout.trim();
}

/** The commands the agent ran in the pod before the native routing (one shell via nsenter), for the comparison. */
const IP_COMMANDS = [
  'ip route replace local 0.0.0.0/0 dev lo table 100',
  "ip rule show pref 32764 | grep -q 'lookup 100' || ip rule add fwmark 0x111/0xfff pref 32764 lookup 100",
  'ip -6 route replace local ::/0 dev lo table 100',
  "ip -6 rule show pref 32764 | grep -q 'lookup 100' || ip -6 rule add fwmark 0x111/0xfff pref 32764 lookup 100",
  'echo 1 > /proc/sys/net/ipv4/tcp_migrate_req',
].join('\n');

test('the native routing is what the ip commands made, only in the pod\'s namespace; twice adds nothing; removal clears both families', async (t) => {
  const { pod, peer } = await topology(t);
  const before = await routingView(pod.name);
  const peerBefore = await routingView(peer.name);
  // The reference: the peer namespace gets the old ip commands.
  await exec('ip', ['netns', 'exec', peer.name, 'sh', '-ec', IP_COMMANDS]);
  const byIp = await routingView(peer.name);
  t.not(byIp, peerBefore, 'the ip commands changed something');
  await exec('ip', ['netns', 'exec', peer.name, 'sh', '-c', 'ip rule del pref 32764; ip -6 rule del pref 32764; ip route flush table 100; ip -6 route flush table 100; echo 0 > /proc/sys/net/ipv4/tcp_migrate_req']);
  t.is(await routingView(peer.name), peerBefore, 'the peer is back as it was');

  const routing = podRouting([4, 6]);
  t.true(setupPodRouting(pod.path, routing), 'a fresh pod: the rule is new');
  t.is(await routingView(pod.name), byIp);
  t.is(await migrateReq(pod.name), '1');
  t.is(await routingView(peer.name), peerBefore, 'the other namespace was not touched');
  t.is(await migrateReq(peer.name), '0', 'nor its sysctl');

  t.false(setupPodRouting(pod.path, routing), 'a second setup finds the rule there');
  t.is((await ipIn(pod.name, 'rule', 'show')).match(/fwmark 0x111\/0xfff lookup 100/g)?.length, 1, 'one IPv4 rule');
  t.is((await ipIn(pod.name, '-6', 'rule', 'show')).match(/fwmark 0x111\/0xfff lookup 100/g)?.length, 1, 'one IPv6 rule');

  removePodRouting(pod.path, routing);
  t.is(await routingView(pod.name), before, 'removal left the pod as it was');
  t.notThrows(() => removePodRouting(pod.path, routing), 'removing again is fine');
});

test('routing failures are CaptureErrors that name the step, and leave nothing behind', async (t) => {
  const { pod } = await topology(t);
  const before = await routingView(pod.name);
  const gone = t.throws(() => setupPodRouting(`${pod.path}-gone`, podRouting([4])), { instanceOf: CaptureError });
  t.is(gone.code, 'NETNS_NOT_FOUND');
  const sysctl = t.throws(() => setupPodRouting(pod.path, podRouting([4], '/nonexistent/proc/sys/net')), { instanceOf: CaptureError });
  t.is(sysctl.code, 'RULES_FAILED');
  t.regex(sysctl.message, /open sysctl ENOENT \/nonexistent\/proc\/sys\/net\/ipv4\/tcp_migrate_req/);
  t.is(await routingView(pod.name), before, 'nothing was set up');
});

/**
 * A directory whose ip6tables-nft-restore refuses every input (as on a node whose kernel lacks ip6 tables), put first
 * on the agent's PATH for one test: the IPv4 rules go in for real, the IPv6 ones fail.
 */
async function failingIp6tables(t: ExecutionContext): Promise<void> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ambit-no-ip6tables-'));
  const script = path.join(dir, 'ip6tables-nft-restore');
  await writeFile(script, '#!/bin/sh\ncat >/dev/null\necho "ip6tables-restore v1.8.9 (nf_tables): Could not fetch rule set generation id: Invalid argument" >&2\nexit 1\n');
  await chmod(script, 0o755);
  const savedPath = process.env.PATH;
  process.env.PATH = `${dir}:${savedPath ?? ''}`;
  t.teardown(async () => {
    process.env.PATH = savedPath;
    await rm(dir, { recursive: true, force: true });
  });
}

test.serial('a fresh pod whose IPv6 rules fail: the ADD fails with the restore\'s message and no IPv4 rule or routing is left', async (t) => {
  const { pod } = await topology(t);
  const before = await routingView(pod.name);
  // The fresh IPv6 rules go in as a netlink batch (agent/inpod/nftables.ts): an ip6 nat OUTPUT hook at another
  // priority makes the kernel refuse it (EOPNOTSUPP), so IPv6 falls back to ip6tables-nft-restore, which fails,
  // after IPv4's batch went in.
  await exec('ip', ['netns', 'exec', pod.name, '/usr/sbin/nft', 'add table ip6 nat; add chain ip6 nat OUTPUT { type nat hook output priority 0; }']);
  await failingIp6tables(t);
  const error = await t.throwsAsync(installInpodRules(pod.path, 'nft', { inbound: 'tproxy', ipv6: true }), { instanceOf: CaptureError });
  t.is(error.code, 'RULES_FAILED');
  t.regex(error.message, /ip6tables-nft-restore in .* failed: .*Could not fetch rule set generation id/);
  t.false((await saveRules(pod.path, 'nft', 4)).includes('ISTIO'), 'the IPv4 rules that went in were taken out');
  t.is(await routingView(pod.name), before, 'no policy routing left');
});

test.serial('a re-install that fails keeps the rules the earlier install left (the pod stays captured)', async (t) => {
  const { pod } = await topology(t);
  await installInpodRules(pod.path, 'nft', { inbound: 'tproxy' });
  const installed = await saveRules(pod.path, 'nft', 4);
  t.true(installed.includes('-j ISTIO_OUTPUT'));
  await failingIp6tables(t);
  await t.throwsAsync(installInpodRules(pod.path, 'nft', { inbound: 'tproxy', ipv6: true }), { instanceOf: CaptureError });
  t.true((await saveRules(pod.path, 'nft', 4)).includes('-j ISTIO_OUTPUT'), 'the IPv4 capture is still there');
  t.regex(await ipIn(pod.name, 'rule', 'show'), /fwmark 0x111\/0xfff lookup 100/, 'and its routing');
  await removeInpodRules(pod.path, 'nft', { inbound: 'tproxy' });
  t.false((await saveRules(pod.path, 'nft', 4)).includes('ISTIO'));
});

test('iptables-save in the pod shows the rules as iptables-restore run through nsenter installed them (fixture)', async (t) => {
  const { pod } = await topology(t);
  await installInpodRules(pod.path, 'nft', { inbound: 'tproxy', ipv6: true, dnsCapture: true });
  const strip = (save: string): string => save.split('\n').filter((line) => !line.startsWith('#')).join('\n');
  const expected = await readFile(path.join(import.meta.dirname, 'fixtures', 'inpod-iptables-save-tproxy-dns.txt'), 'utf8');
  t.is(strip(await saveRules(pod.path, 'nft', 4)), expected);
});
