/**
 * The in-pod rules' nf_tables batch (agent/inpod/nft-batch.ts) as bytes: every fresh-install text rules.ts renders
 * translates; the batch is well-formed netlink (begin, messages numbered from 1, end; lengths add up); the exclusive
 * creates, the one transaction and the grammar's edges. What the kernel and iptables-save make of it is
 * test/net/inpod-nftables.test.ts.
 */
import test from 'ava';
import { buildNftBatch, NftTranslationError } from '../../agent/inpod/nft-batch.ts';
import { renderFreshInstall, type InpodRuleOptions } from '../../agent/inpod/rules.ts';

interface Message { type: number; flags: number; seq: number; family: number; body: Buffer }

function messagesOf(bytes: Buffer): Message[] {
  const messages: Message[] = [];
  let offset = 0;
  while (offset < bytes.length) {
    const length = bytes.readUInt32LE(offset);
    if (length < 20 || offset + length > bytes.length) throw new Error(`bad length ${length} at ${offset}`);
    messages.push({
      type: bytes.readUInt16LE(offset + 4), flags: bytes.readUInt16LE(offset + 6), seq: bytes.readUInt32LE(offset + 8),
      family: bytes.readUInt8(offset + 16), body: bytes.subarray(offset + 20, offset + length),
    });
    offset += (length + 3) & ~3;
  }
  return messages;
}

const OPTIONS: InpodRuleOptions[] = [
  { inbound: 'tproxy' }, { inbound: 'tproxy', dnsCapture: true }, { inbound: 'redirect' }, { inbound: 'redirect', dnsCapture: true },
];

for (const options of OPTIONS) {
  test(`every line of the fresh install translates (${options.inbound}${options.dnsCapture ? ', dns' : ''}); one transaction, messages in order`, (t) => {
    const text = renderFreshInstall(options, 4);
    const batch = buildNftBatch(text);
    const messages = messagesOf(batch.bytes);
    t.is(messages[0]!.type, 0x10, 'batch begin first');
    t.is(messages.at(-1)!.type, 0x11, 'batch end last');
    t.is(messages.filter((m) => m.type === 0x10 || m.type === 0x11).length, 2, 'both tables in one batch');
    t.deepEqual(messages.map((m) => m.seq), messages.map((_, i) => i + 1));
    const rules = messages.filter((m) => m.type === ((10 << 8) | 6));
    t.is(rules.length, text.split('\n').filter((line) => line.startsWith('-A ')).length, 'one rule message per -A line');
    const ownChains = messages.filter((m) => m.type === ((10 << 8) | 3) && (m.flags & 0x200) !== 0);
    t.is(ownChains.length, text.split('\n').filter((line) => line.startsWith('-N ')).length, 'every -N is an exclusive create');
    t.true(messages.slice(1, -1).every((m) => m.family === 2), 'IPv4 tables');
    t.regex(batch.describe(rules[0]!.seq), /^append to mangle PREROUTING: -j ISTIO_PRERT$/);
  });
}

test('IPv6: the fresh install translates into ip6 tables (family 10), ::1/128 as 16 bytes at offset 24', (t) => {
  for (const options of OPTIONS) {
    const batch = buildNftBatch(renderFreshInstall(options, 6), 6);
    const messages = messagesOf(batch.bytes);
    t.true(messages.slice(1, -1).every((m) => m.family === 10));
    const loopback = Buffer.from('00000000000000000000000000000001', 'hex');
    t.true(messages.some((m) => m.body.includes(loopback)), 'the ::1 the rules leave alone');
  }
  t.throws(() => buildNftBatch(renderFreshInstall({ inbound: 'tproxy' }, 6), 4), { instanceOf: NftTranslationError }, 'IPv6 text is not IPv4');
  t.throws(() => buildNftBatch(renderFreshInstall({ inbound: 'tproxy' }, 4), 6), { instanceOf: NftTranslationError }, 'nor the other way');
});

test('the same text gives the same bytes (nothing pod-specific: the agent keeps one batch per text)', (t) => {
  const text = renderFreshInstall({ inbound: 'tproxy', dnsCapture: true }, 4);
  t.deepEqual(buildNftBatch(text).bytes, buildNftBatch(text).bytes);
});

test('outside the grammar: an error, never a partial batch', (t) => {
  for (const text of [
    '*filter\nCOMMIT\n',
    '*nat\n-A OUTPUT -j DROP\nCOMMIT\n',
    '*nat\n-A OUTPUT -j NOT_DECLARED\nCOMMIT\n',
    '*nat\n-N A\n-A A -d 10.0.0.0/8 -j ACCEPT\nCOMMIT\n',
    '*nat\n-N A\n-A A -d fd00::1/128 -j ACCEPT\nCOMMIT\n',
    '*nat\n-N A\n-A A -p sctp -j ACCEPT\nCOMMIT\n',
    '*nat\n-N A\n-A A -i eth+ -j ACCEPT\nCOMMIT\n',
    '*nat\n-N A\n-A A -p udp -m tcp --dport 53 -j ACCEPT\nCOMMIT\n',
    '*nat\n-N A\n-A A -m mark --mark 0x1 -j ACCEPT\nCOMMIT\n',
    '*nat\n-N A\n-A A -m conntrack --ctstate UNTRACKED -j ACCEPT\nCOMMIT\n',
    '*nat\n-N A\n-A A -j REDIRECT --to-ports 15001 --random\nCOMMIT\n',
    '*mangle\n-N A\n-A A -j TPROXY --on-port 15006 --on-ip 10.0.0.1 --tproxy-mark 0x1/0x1\nCOMMIT\n',
    '*nat\n-N A\n-A A -j ACCEPT\n',
    '*nat\n-A PREROUTING\nCOMMIT\n',
  ]) {
    t.throws(() => buildNftBatch(text), { instanceOf: NftTranslationError }, text);
  }
});

test('a -X after -N deletes the chain in the same batch, and a jump to it is then refused', (t) => {
  const messages = messagesOf(buildNftBatch('*nat\n-N A\n-X A\nCOMMIT\n').bytes);
  t.deepEqual(messages.map((m) => m.type), [0x10, (10 << 8) | 0, (10 << 8) | 3, (10 << 8) | 5, 0x11]);
  t.throws(() => buildNftBatch('*nat\n-N A\n-X A\n-A OUTPUT -j A\nCOMMIT\n'), { instanceOf: NftTranslationError });
});
