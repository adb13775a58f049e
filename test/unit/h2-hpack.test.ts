/**
 * HPACK and Huffman of ambit's own HTTP/2 layer: RFC 7541's worked examples, blocks from an independent encoder
 * (python3-hpack: Huffman and the dynamic table), round trips, the decoder's limits (HPACK bombs, table size
 * updates), and arbitrary bytes never raising anything but H2Error.
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import fc from 'fast-check';
import { H2_COMPRESSION_ERROR, H2_ENHANCE_YOUR_CALM, H2Error, isH2Error } from '../../shared/hbone/h2/errors.ts';
import { HpackDecoder, HpackEncoder, writeInteger } from '../../shared/hbone/h2/hpack.ts';
import { huffmanDecode, huffmanEncode, huffmanEncodedLength } from '../../shared/hbone/h2/huffman.ts';

const LIMITS = { maxTableBytes: 4096, maxHeaderListBytes: 64 * 1024 };

function hex(text: string): Buffer {
  return Buffer.from(text.replace(/\s+/g, ''), 'hex');
}

function pairs(list: string[]): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (let index = 0; index < list.length; index += 2) out.push([list[index]!, list[index + 1]!]);
  return out;
}

function decodeError(decoder: HpackDecoder, block: Buffer): H2Error {
  try {
    decoder.decode(block);
  } catch (error) {
    if (error instanceof H2Error) return error;
    throw error;
  }
  throw new Error('decoded without error');
}

test('RFC 7541 C.3: three requests without Huffman share the dynamic table', (t) => {
  const decoder = new HpackDecoder(LIMITS);
  t.deepEqual(pairs(decoder.decode(hex('828684410f7777772e6578616d706c652e636f6d'))), [
    [':method', 'GET'], [':scheme', 'http'], [':path', '/'], [':authority', 'www.example.com'],
  ]);
  t.is(decoder.tableBytes, 57);
  t.deepEqual(pairs(decoder.decode(hex('828684be58086e6f2d6361636865'))), [
    [':method', 'GET'], [':scheme', 'http'], [':path', '/'], [':authority', 'www.example.com'], ['cache-control', 'no-cache'],
  ]);
  t.is(decoder.tableBytes, 110);
  t.deepEqual(pairs(decoder.decode(hex('828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565'))), [
    [':method', 'GET'], [':scheme', 'https'], [':path', '/index.html'], [':authority', 'www.example.com'], ['custom-key', 'custom-value'],
  ]);
  t.is(decoder.tableBytes, 164);
});

test('RFC 7541 C.4: the same requests with Huffman strings', (t) => {
  const decoder = new HpackDecoder(LIMITS);
  t.deepEqual(pairs(decoder.decode(hex('828684418cf1e3c2e5f23a6ba0ab90f4ff'))), [
    [':method', 'GET'], [':scheme', 'http'], [':path', '/'], [':authority', 'www.example.com'],
  ]);
  t.deepEqual(pairs(decoder.decode(hex('828684be5886a8eb10649cbf'))).at(-1), ['cache-control', 'no-cache']);
  t.deepEqual(pairs(decoder.decode(hex('828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf'))).slice(-2), [
    [':authority', 'www.example.com'], ['custom-key', 'custom-value'],
  ]);
  t.is(decoder.tableBytes, 164);
});

test('RFC 7541 C.6: responses with Huffman evict from a 256-byte table', (t) => {
  const decoder = new HpackDecoder({ maxTableBytes: 256, maxHeaderListBytes: 64 * 1024 });
  const first = decoder.decode(hex(`
    4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad 1718
    63c7 8f0b 97c8 e9ae 82ae 43d3`));
  t.deepEqual(pairs(first), [
    [':status', '302'], ['cache-control', 'private'], ['date', 'Mon, 21 Oct 2013 20:13:21 GMT'], ['location', 'https://www.example.com'],
  ]);
  t.is(decoder.tableBytes, 222);
  decoder.decode(hex('4883 640e ffc1 c0bf'));
  t.is(decoder.tableBytes, 222);
  const third = decoder.decode(hex(`
    88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7 821d d7f2 e6c7
    b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07`));
  t.deepEqual(pairs(third).at(-1), ['set-cookie', 'foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1']);
  t.is(decoder.tableBytes, 215);
  t.is(decoder.dynamicEntries, 3);
});

const PYTHON = '/usr/bin/python3';
const pythonHpack = existsSync(PYTHON) && (() => {
  try {
    execFileSync(PYTHON, ['-c', 'import hpack'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

(pythonHpack ? test : test.skip)('blocks from python3-hpack (Huffman, dynamic table, eviction) decode to what it encoded', (t) => {
  // An independent encoder: python3-hpack indexes every field it can and Huffman-codes where shorter.
  const script = `
import json, random, sys
from hpack import Encoder
random.seed(7)
enc = Encoder()
enc.header_table_size = 4096
out = []
for i in range(60):
    headers = [(':method', 'CONNECT'), (':authority', '10.%d.%d.%d:%d' % (i % 7, i % 13, i, 8000 + i % 5))]
    headers.append(('traceparent', '00-%032x-%016x-01' % (random.getrandbits(128), random.getrandbits(64))))
    headers.append(('baggage', 'k8s.namespace.name=shop,k8s.pod.name=client-%d' % (i % 9)))
    headers.append(('x-bytes', ''.join(chr(random.randint(32, 126)) for _ in range(random.randint(0, 400)))))
    out.append({'block': enc.encode(headers, huffman=bool(i % 2)).hex(), 'headers': headers})
json.dump(out, sys.stdout)
`;
  const cases = JSON.parse(execFileSync(PYTHON, ['-c', script], { encoding: 'utf8' })) as Array<{ block: string; headers: Array<[string, string]> }>;
  const decoder = new HpackDecoder(LIMITS);
  for (const { block, headers } of cases) t.deepEqual(pairs(decoder.decode(hex(block))), headers);
  t.true(decoder.dynamicEntries > 0);
});

test('our encoder round-trips through our decoder (property)', (t) => {
  const name = fc.stringMatching(/^[a-z0-9-]{1,24}$/);
  const value = fc.uint8Array({ maxLength: 200 }).map((bytes) => Buffer.from(bytes).toString('latin1'));
  fc.assert(
    fc.property(fc.array(fc.tuple(fc.oneof(name, fc.constantFrom(':status', ':authority', ':method', 'content-type')), value), { maxLength: 20 }), (fields) => {
      const list = fields.flat();
      const decoded = new HpackDecoder(LIMITS).decode(new HpackEncoder().encode(list));
      return JSON.stringify(decoded) === JSON.stringify(list);
    }),
  );
  t.pass();
});

test('encodeInto writes what encode makes, within sizeBound, at any offset, with a status first (property)', (t) => {
  const name = fc.stringMatching(/^[a-z0-9-]{1,80}$/);
  // Values up to 200 latin1 bytes: both the short loop and Buffer.write's path for longer strings.
  const value = fc.uint8Array({ maxLength: 200 }).map((bytes) => Buffer.from(bytes).toString('latin1'));
  const encoder = new HpackEncoder();
  fc.assert(
    fc.property(fc.array(fc.tuple(name, value), { maxLength: 20 }), fc.option(fc.integer({ min: 100, max: 999 }), { nil: undefined }), fc.nat(32), (fields, status, offset) => {
      const list = fields.flat();
      const bound = encoder.sizeBound(list, status);
      const out = Buffer.alloc(offset + bound + 8, 0xee);
      const end = encoder.encodeInto(out, offset, list, status);
      const decoded = new HpackDecoder(LIMITS).decode(out.subarray(offset, end));
      const expected = status === undefined ? list : [':status', String(status), ...list];
      return end - offset <= bound && out.subarray(offset, end).equals(encoder.encode(list, status)) && JSON.stringify(decoded) === JSON.stringify(expected) && out[offset + bound]! === 0xee;
    }),
  );
  t.pass();
});

test('Huffman encoding round-trips for arbitrary bytes (property)', (t) => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
      const encoded = Buffer.alloc(huffmanEncodedLength(bytes));
      t.is(huffmanEncode(bytes, encoded, 0), encoded.length);
      const target = Buffer.alloc(bytes.length);
      const length = huffmanDecode(encoded, 0, encoded.length, target);
      return length === bytes.length && target.equals(Buffer.from(bytes));
    }),
  );
});

test('arbitrary bytes raise only H2Error from the decoder (property)', (t) => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 600 }), (bytes) => {
      const decoder = new HpackDecoder({ maxTableBytes: 4096, maxHeaderListBytes: 8192 });
      try {
        decoder.decode(Buffer.from(bytes));
      } catch (error) {
        return isH2Error(error) && (error.wireCode === H2_COMPRESSION_ERROR || error.wireCode === H2_ENHANCE_YOUR_CALM);
      }
      return true;
    }),
    { numRuns: 5000 },
  );
  // Blocks that start well-formed and then go wrong deeper in: valid prefixes from our encoder plus noise.
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 64 }), (noise) => {
      const block = Buffer.concat([new HpackEncoder().encode([':method', 'CONNECT', ':authority', '10.0.0.1:80']), Buffer.from(noise)]);
      try {
        new HpackDecoder(LIMITS).decode(block);
      } catch (error) {
        return isH2Error(error);
      }
      return true;
    }),
    { numRuns: 2000 },
  );
  t.pass();
});

test('an HPACK bomb (one big dynamic entry referenced again and again) stops at the header list limit', (t) => {
  const decoder = new HpackDecoder({ maxTableBytes: 4096, maxHeaderListBytes: 16 * 1024 });
  const value = 'x'.repeat(4000);
  const insert = Buffer.alloc(4100);
  let offset = 0;
  insert[offset++] = 0x40; // literal with incremental indexing, new name
  offset = writeInteger(insert, offset, 1, 7, 0);
  insert[offset++] = 0x62; // "b"
  offset = writeInteger(insert, offset, value.length, 7, 0);
  offset += insert.write(value, offset, 'latin1');
  // Each 1-byte reference to index 62 (the entry just added) expands to 4 KB.
  const block = Buffer.concat([insert.subarray(0, offset), Buffer.alloc(1000, 0xbe)]);
  t.is(block.length, offset + 1000);
  const error = decodeError(decoder, block);
  t.is(error.wireCode, H2_ENHANCE_YOUR_CALM);
  t.regex(error.message, /HPACK bomb/);
});

test('a table size update above what we advertised, or after a field, is a COMPRESSION_ERROR', (t) => {
  const up = Buffer.alloc(8);
  const length = writeInteger(up, 0, 8192, 5, 0x20);
  t.is(decodeError(new HpackDecoder(LIMITS), up.subarray(0, length)).wireCode, H2_COMPRESSION_ERROR);
  // Shrinking is allowed and evicts.
  const decoder = new HpackDecoder(LIMITS);
  decoder.decode(hex('400a637573746f6d2d6b65790d637573746f6d2d686561646572'));
  t.is(decoder.dynamicEntries, 1);
  decoder.decode(hex('20'));
  t.is(decoder.dynamicEntries, 0);
  t.is(decodeError(new HpackDecoder(LIMITS), hex('8220')).wireCode, H2_COMPRESSION_ERROR);
});

test('bad indexes, truncated strings, oversized integers and bad Huffman padding are COMPRESSION_ERRORs', (t) => {
  const cases: Array<[string, RegExp]> = [
    ['80', /index 0/],
    ['be', /past the table/],
    ['ff8080808008', /too large/],
    ['0f', /truncated/],
    ['000a6162', /runs past/],
    // Huffman: 'a' is 00011 (5 bits); padding 000 (not ones).
    ['00816100', /./],
    ['0081611f', /padding/],
    // Huffman string of four 0xff bytes: 30 ones is EOS.
    ['0084ffffffff', /EOS|padding/],
  ];
  for (const [block, message] of cases) {
    const error = decodeError(new HpackDecoder(LIMITS), hex(block));
    t.is(error.wireCode === H2_COMPRESSION_ERROR || error.wireCode === H2_ENHANCE_YOUR_CALM, true, block);
    t.regex(error.message, message, block);
  }
});
