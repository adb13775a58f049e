/**
 * The fresh install's rules (both families) written as one nf_tables netlink batch each (agent/inpod/nftables.ts, nft-batch.ts,
 * agent/native/inpod-nftables.c) against iptables-nft-restore with the same text, on real namespaces: what
 * `iptables-save` and `nft` print in the pod is the same either way, for every option combination; a namespace holding
 * a chain of ours refuses the whole batch and keeps nothing of it (both tables are one transaction); what an operator
 * put in the pod's tables before is kept; text outside the translator's grammar is not sent at all.
 * Nothing is added to the root namespace; every namespace is deleted in teardown.
 */
import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { applyFreshRulesOverNetlink } from '../../agent/inpod/nftables.ts';
import { installInpodRules, removeInpodRules } from '../../agent/inpod/iptables.ts';
import { renderFreshInstall, type InpodRuleOptions, type IpFamily } from '../../agent/inpod/rules.ts';
import { createPodTopology, type PodTopology } from './helpers/inpod-topology.ts';

const exec = promisify(execFile);
/** Debian's nft (a bench dependency puts another `nft` on node_modules/.bin). */
const NFT = '/usr/sbin/nft';

async function topology(t: ExecutionContext): Promise<PodTopology> {
  const made = await createPodTopology();
  t.teardown(() => made.destroy());
  return made;
}

async function inNetns(netnsName: string, argv: string[], input?: string): Promise<string> {
  if (input === undefined) return (await exec('ip', ['netns', 'exec', netnsName, ...argv])).stdout;
  return await new Promise((resolve, reject) => {
    const child = execFile('ip', ['netns', 'exec', netnsName, ...argv], (error, stdout, stderr) => {
      if (error) reject(new Error(`${argv.join(' ')}: ${stderr}`, { cause: error }));
      else resolve(stdout);
    });
    child.stdin!.end(input);
  });
}

/** iptables-save (ip6tables-save for family 6) without its dated comments. */
async function iptablesSave(netnsName: string, family: IpFamily = 4): Promise<string> {
  const save = family === 4 ? 'iptables-nft-save' : 'ip6tables-nft-save';
  return (await inNetns(netnsName, [save])).split('\n').filter((line) => !line.startsWith('#')).join('\n');
}

/**
 * nft's listing of every expression of every rule, without the handles (numbered per namespace) and the counters'
 * values (IPv6 neighbour discovery on the pod's link counts packets in either namespace).
 */
async function nftExpressions(netnsName: string): Promise<string> {
  const { stdout, stderr } = await exec('ip', ['netns', 'exec', netnsName, NFT, '--debug=netlink', 'list', 'ruleset']);
  return (stdout + stderr).split('\n')
    .map((line) => line.replace(/^(ip6? \S+ \S+)( \d+)+$/, '$1').replace(/(packets|pkts) \d+ bytes \d+/g, '$1 N bytes N'))
    .join('\n');
}

const COMBINATIONS: InpodRuleOptions[] = [
  { inbound: 'tproxy', dnsCapture: true },
  { inbound: 'tproxy', dnsCapture: false },
  { inbound: 'redirect', dnsCapture: true },
  { inbound: 'redirect', dnsCapture: false },
];

for (const options of COMBINATIONS) {
  const name = `${options.inbound}${options.dnsCapture ? ', dns capture' : ''}`;
  test(`netlink (${name}): iptables-save, ip6tables-save and nft print what ip(6)tables-nft-restore made; a second batch is refused whole`, async (t) => {
    const { pod, peer } = await topology(t);
    for (const family of [4, 6] as const) {
      const text = renderFreshInstall(options, family);
      await inNetns(peer.name, [family === 4 ? 'iptables-nft-restore' : 'ip6tables-nft-restore', '--noflush'], text);
      t.deepEqual(applyFreshRulesOverNetlink(pod.path, text, family), { applied: true });
    }
    for (const family of [4, 6] as const) {
      const saved = await iptablesSave(pod.name, family);
      t.true(saved.includes('-A ISTIO_OUTPUT'), `the IPv${family} rules are there`);
      t.is(saved, await iptablesSave(peer.name, family), `IPv${family} save: same rules`);
    }
    t.is(await nftExpressions(pod.name), await nftExpressions(peer.name), 'nft: same tables, chains and expressions');

    const saved = await iptablesSave(pod.name);
    const again = applyFreshRulesOverNetlink(pod.path, renderFreshInstall(options, 4));
    t.like(again, { applied: false, exists: true });
    t.is(await iptablesSave(pod.name), saved, 'the refused batch changed nothing');
  });
}

test('netlink: a namespace with one chain of ours refuses the batch, and neither table keeps any of it', async (t) => {
  const { pod } = await topology(t);
  await inNetns(pod.name, ['iptables-nft', '-t', 'nat', '-N', 'ISTIO_OUTPUT']);
  const before = await iptablesSave(pod.name);
  const result = applyFreshRulesOverNetlink(pod.path, renderFreshInstall({ inbound: 'tproxy', dnsCapture: true }, 4));
  t.like(result, { applied: false, exists: true });
  t.regex((result as { reason: string }).reason, /create chain nat ISTIO_OUTPUT: EEXIST/);
  t.is(await iptablesSave(pod.name), before, 'mangle (written first in the batch) got nothing');
  t.false((await iptablesSave(pod.name)).includes('ISTIO_PRERT'));
});

test('netlink: what an operator put in the pod\'s tables stays, built-in policies included, as with iptables-nft-restore', async (t) => {
  const { pod, peer } = await topology(t);
  for (const ns of [pod.name, peer.name]) {
    await inNetns(ns, ['iptables-nft', '-t', 'nat', '-A', 'OUTPUT', '-p', 'udp', '--dport', '9', '-j', 'ACCEPT']);
    await inNetns(ns, ['iptables-nft', '-t', 'mangle', '-P', 'PREROUTING', 'DROP']);
  }
  const text = renderFreshInstall({ inbound: 'tproxy', dnsCapture: false }, 4);
  await inNetns(peer.name, ['iptables-nft-restore', '--noflush'], text);
  t.deepEqual(applyFreshRulesOverNetlink(pod.path, text), { applied: true });
  const saved = await iptablesSave(pod.name);
  t.true(saved.includes(':PREROUTING DROP'), 'the operator\'s policy is kept');
  t.true(saved.includes('-A OUTPUT -p udp -m udp --dport 9 -j ACCEPT'), 'the operator\'s rule is kept');
  t.is(saved, await iptablesSave(peer.name));
});

test('netlink: text outside the grammar is not sent; the install then runs iptables-nft-restore as before', async (t) => {
  const { pod } = await topology(t);
  const before = await iptablesSave(pod.name);
  for (const text of [
    '*filter\n-N X\nCOMMIT\n',
    '*nat\n-N ISTIO_OUTPUT\n-A ISTIO_OUTPUT -j DROP\nCOMMIT\n',
    '*nat\n-N ISTIO_OUTPUT\n-A ISTIO_OUTPUT -d 10.0.0.0/8 -j ACCEPT\nCOMMIT\n',
    '*nat\n-N ISTIO_OUTPUT\n-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j ACCEPT\nCOMMIT\n',
  ]) {
    t.like(applyFreshRulesOverNetlink(pod.path, text), { applied: false, exists: false }, text);
  }
  t.is(await iptablesSave(pod.name), before, 'nothing was written');
  // The installer itself (nft backend): netlink for IPv4; removal reads what is there and takes it out.
  await installInpodRules(pod.path, 'nft', { inbound: 'tproxy', dnsCapture: true });
  t.true((await iptablesSave(pod.name)).includes('-A ISTIO_PRERT'));
  await installInpodRules(pod.path, 'nft', { inbound: 'redirect', dnsCapture: true });
  const reinstalled = await iptablesSave(pod.name);
  t.is(reinstalled.match(/-A OUTPUT -j ISTIO_OUTPUT/g)?.length, 2, 'a re-install replaces (one jump per table), never duplicates');
  t.true(reinstalled.includes('REDIRECT --to-ports 15006'), 'in the new mode');
  await removeInpodRules(pod.path, 'nft', { inbound: 'redirect', dnsCapture: true });
  t.false((await iptablesSave(pod.name)).includes('ISTIO'), 'removed');
});
