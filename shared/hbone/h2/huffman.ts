/**
 * HPACK Huffman decoding (RFC 7541 section 5.2) and encoding, over the table in huffman-table.ts.
 *
 * Owns: a decoding state machine built once at load (a binary trie flattened into an Int32Array), the padding
 * rules (at most 7 bits, all ones, never a whole EOS), and an encoder (the layer's own HPACK encoder sends plain
 * literals; tests and peers' fixtures use this one).
 * Must not know about: header tables, frames, connections. Bad input raises H2Error COMPRESSION_ERROR only.
 */
import { connectionError, H2_COMPRESSION_ERROR } from './errors.ts';
import { HUFFMAN_CODE_LENGTHS, HUFFMAN_CODES } from './huffman-table.ts';

const EOS = 256;

/**
 * The trie: node n has children at TRIE[2n] (bit 0) and TRIE[2n + 1] (bit 1). A child >= 0 is another node; a
 * child < 0 is a leaf for symbol -(child + 1). 0 as a child means "no such code" (the root is never a child).
 */
const TRIE = buildTrie();

function buildTrie(): Int32Array {
  // 257 symbols need 256 internal nodes in a full binary tree.
  const trie = new Int32Array(2 * 256);
  let nodes = 1;
  for (let symbol = 0; symbol <= EOS; symbol++) {
    const code = HUFFMAN_CODES[symbol]!;
    const length = HUFFMAN_CODE_LENGTHS[symbol]!;
    let node = 0;
    for (let bit = length - 1; bit > 0; bit--) {
      const slot = 2 * node + ((code >>> bit) & 1);
      if (trie[slot] === 0) trie[slot] = nodes++;
      node = trie[slot]!;
    }
    trie[2 * node + (code & 1)] = -(symbol + 1);
  }
  return trie;
}

/**
 * Decodes `source[start, end)` into `target` from offset 0; returns the decoded length. Throws H2Error
 * COMPRESSION_ERROR on EOS inside the string, bad padding, or output longer than `target` (the caller sizes
 * `target` to its limit, so a decoded string can never grow past it).
 */
export function huffmanDecode(source: Uint8Array, start: number, end: number, target: Buffer): number {
  let node = 0;
  let written = 0;
  // Bits read since the last complete symbol, and whether all of them were ones (valid padding so far).
  let pendingBits = 0;
  let pendingAllOnes = true;
  const limit = target.length;
  for (let index = start; index < end; index++) {
    const byte = source[index]!;
    for (let bit = 7; bit >= 0; bit--) {
      const one = (byte >>> bit) & 1;
      const child = TRIE[2 * node + one]!;
      pendingBits++;
      if (one === 0) pendingAllOnes = false;
      if (child < 0) {
        const symbol = -child - 1;
        if (symbol === EOS) throw connectionError(H2_COMPRESSION_ERROR, 'HPACK Huffman string contains EOS');
        if (written === limit) throw connectionError(H2_COMPRESSION_ERROR, `HPACK string longer than the ${limit}-byte limit`);
        target[written++] = symbol;
        node = 0;
        pendingBits = 0;
        pendingAllOnes = true;
      } else if (child === 0) {
        // Unreachable with a complete code (every bit pattern of 30 bits leads somewhere), kept as a guard.
        throw connectionError(H2_COMPRESSION_ERROR, 'invalid HPACK Huffman code');
      } else {
        node = child;
      }
    }
  }
  if (pendingBits > 7) throw connectionError(H2_COMPRESSION_ERROR, `HPACK Huffman padding of ${pendingBits} bits (at most 7 allowed)`);
  if (!pendingAllOnes) throw connectionError(H2_COMPRESSION_ERROR, 'HPACK Huffman padding is not the EOS prefix (all ones)');
  return written;
}

/** The Huffman-encoded length in bytes of `source`. */
export function huffmanEncodedLength(source: Uint8Array): number {
  let bits = 0;
  for (let index = 0; index < source.length; index++) bits += HUFFMAN_CODE_LENGTHS[source[index]!]!;
  return (bits + 7) >>> 3;
}

/** Huffman-encodes `source` into `target` at `offset` (room for huffmanEncodedLength bytes); returns the new offset. */
export function huffmanEncode(source: Uint8Array, target: Uint8Array, offset: number): number {
  // Up to 30-bit codes: keep at most 7 pending bits plus one code below 2^37, so use a float-safe accumulator.
  let accumulator = 0;
  let accumulatedBits = 0;
  for (let index = 0; index < source.length; index++) {
    const symbol = source[index]!;
    const length = HUFFMAN_CODE_LENGTHS[symbol]!;
    accumulator = accumulator * 2 ** length + HUFFMAN_CODES[symbol]!;
    accumulatedBits += length;
    while (accumulatedBits >= 8) {
      accumulatedBits -= 8;
      const divisor = 2 ** accumulatedBits;
      target[offset++] = Math.floor(accumulator / divisor) & 0xff;
      accumulator %= divisor;
    }
  }
  if (accumulatedBits > 0) {
    // Pad with the most significant bits of EOS (all ones).
    target[offset++] = ((accumulator << (8 - accumulatedBits)) | (0xff >>> accumulatedBits)) & 0xff;
  }
  return offset;
}
