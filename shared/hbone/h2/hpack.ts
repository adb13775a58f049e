/**
 * HPACK (RFC 7541): the header-block decoder, with the static and dynamic tables and Huffman strings, and a small
 * encoder.
 *
 * Owns: integer and string primitives, the static table, the decoder's dynamic table (FIFO eviction by the
 * RFC's size rule, size updates bounded by what we advertised), and the bombs' limits: a header list may decode
 * to at most `maxHeaderListBytes` (RFC 9113's name + value + 32 per field), a single string at most that too,
 * integers at most 2^31 - 1. The encoder sends literals without indexing (a static-table name where one exists,
 * `:status 200` fully indexed) and never Huffman, so it never uses a dynamic table the peer would have to keep.
 * Must not know about: frames, streams, what the headers mean. Bad input raises H2Error only: COMPRESSION_ERROR
 * for anything that desynchronises the tables, ENHANCE_YOUR_CALM for a list over the limit.
 */
import { connectionError, H2_COMPRESSION_ERROR, H2_ENHANCE_YOUR_CALM } from './errors.ts';
import { huffmanDecode } from './huffman.ts';

/** RFC 7541 Appendix A, index 1 first. */
export const STATIC_TABLE: ReadonlyArray<readonly [string, string]> = [
  [':authority', ''],
  [':method', 'GET'],
  [':method', 'POST'],
  [':path', '/'],
  [':path', '/index.html'],
  [':scheme', 'http'],
  [':scheme', 'https'],
  [':status', '200'],
  [':status', '204'],
  [':status', '206'],
  [':status', '304'],
  [':status', '400'],
  [':status', '404'],
  [':status', '500'],
  ['accept-charset', ''],
  ['accept-encoding', 'gzip, deflate'],
  ['accept-language', ''],
  ['accept-ranges', ''],
  ['accept', ''],
  ['access-control-allow-origin', ''],
  ['age', ''],
  ['allow', ''],
  ['authorization', ''],
  ['cache-control', ''],
  ['content-disposition', ''],
  ['content-encoding', ''],
  ['content-language', ''],
  ['content-length', ''],
  ['content-location', ''],
  ['content-range', ''],
  ['content-type', ''],
  ['cookie', ''],
  ['date', ''],
  ['etag', ''],
  ['expect', ''],
  ['expires', ''],
  ['from', ''],
  ['host', ''],
  ['if-match', ''],
  ['if-modified-since', ''],
  ['if-none-match', ''],
  ['if-range', ''],
  ['if-unmodified-since', ''],
  ['last-modified', ''],
  ['link', ''],
  ['location', ''],
  ['max-forwards', ''],
  ['proxy-authenticate', ''],
  ['proxy-authorization', ''],
  ['range', ''],
  ['referer', ''],
  ['refresh', ''],
  ['retry-after', ''],
  ['server', ''],
  ['set-cookie', ''],
  ['strict-transport-security', ''],
  ['transfer-encoding', ''],
  ['user-agent', ''],
  ['vary', ''],
  ['via', ''],
  ['www-authenticate', ''],];

/** RFC 7541 section 4.1: each entry costs its name and value lengths plus 32. */
const ENTRY_OVERHEAD = 32;
/** Integers past this are no length or index any peer needs; refusing them keeps arithmetic exact. */
const MAX_INTEGER = 2 ** 31 - 1;

/** A decoded header list: names and values alternating (latin1 strings: every byte kept as one char). */
export type HeaderList = string[];

export interface HpackDecoderLimits {
  /** SETTINGS_HEADER_TABLE_SIZE we advertised: the dynamic table may never be sized above it. */
  maxTableBytes: number;
  /** The most a header list may decode to, counted as RFC 9113 section 6.5.2 does (name + value + 32 per field). */
  maxHeaderListBytes: number;
}

export class HpackDecoder {
  readonly #maxTableBytes: number;
  readonly #maxHeaderListBytes: number;
  /** The table size the peer chose (at most #maxTableBytes). */
  #tableLimit: number;
  #tableBytes = 0;
  /** Dynamic entries, newest last (names and values alternating). */
  readonly #entries: string[] = [];
  /** Scratch for Huffman output, sized to the list limit: no decoded string can be longer. */
  readonly #scratch: Buffer;
  #position = 0;

  constructor(limits: HpackDecoderLimits) {
    this.#maxTableBytes = limits.maxTableBytes;
    this.#tableLimit = limits.maxTableBytes;
    this.#maxHeaderListBytes = limits.maxHeaderListBytes;
    this.#scratch = Buffer.allocUnsafe(limits.maxHeaderListBytes);
  }

  /** Bytes the dynamic table holds now (RFC size). */
  get tableBytes(): number {
    return this.#tableBytes;
  }

  get dynamicEntries(): number {
    return this.#entries.length / 2;
  }

  /**
   * Decodes one complete header block. Throws H2Error: any error leaves the tables out of step with the peer's,
   * so the caller must end the connection (COMPRESSION_ERROR), as RFC 7541 requires.
   */
  decode(block: Buffer, start = 0, end = block.length): HeaderList {
    const headers: HeaderList = [];
    let listBytes = 0;
    let fieldsSeen = false;
    this.#position = start;
    while (this.#position < end) {
      const first = block[this.#position]!;
      let name: string;
      let value: string;
      if (first & 0x80) {
        // Indexed header field.
        const index = this.#integer(block, end, 7);
        if (index === 0) throw connectionError(H2_COMPRESSION_ERROR, 'HPACK index 0');
        name = this.#name(index);
        value = this.#value(index);
      } else if ((first & 0xe0) === 0x20) {
        // Dynamic table size update: only before the first field of a block.
        if (fieldsSeen) throw connectionError(H2_COMPRESSION_ERROR, 'HPACK table size update after a header field');
        const size = this.#integer(block, end, 5);
        if (size > this.#maxTableBytes) {
          throw connectionError(H2_COMPRESSION_ERROR, `HPACK table size update to ${size} above the ${this.#maxTableBytes} we allowed`);
        }
        this.#tableLimit = size;
        this.#evict(0);
        continue;
      } else {
        // Literal: with incremental indexing (01), without (0000) or never indexed (0001).
        const incremental = (first & 0xc0) === 0x40;
        const index = this.#integer(block, end, incremental ? 6 : 4);
        name = index === 0 ? this.#string(block, end) : this.#name(index);
        value = this.#string(block, end);
        if (incremental) this.#insert(name, value);
      }
      fieldsSeen = true;
      listBytes += name.length + value.length + ENTRY_OVERHEAD;
      if (listBytes > this.#maxHeaderListBytes) {
        throw connectionError(H2_ENHANCE_YOUR_CALM, `HPACK header list decodes past the ${this.#maxHeaderListBytes}-byte limit (an HPACK bomb?)`);
      }
      headers.push(name, value);
    }
    return headers;
  }

  /** RFC 7541 section 5.1: an N-bit prefix integer at #position. */
  #integer(block: Buffer, end: number, prefixBits: number): number {
    const mask = (1 << prefixBits) - 1;
    let value = block[this.#position++]! & mask;
    if (value < mask) return value;
    let shift = 0;
    while (true) {
      if (this.#position >= end) throw connectionError(H2_COMPRESSION_ERROR, 'HPACK integer truncated');
      const byte = block[this.#position++]!;
      value += (byte & 0x7f) * 2 ** shift;
      shift += 7;
      if (value > MAX_INTEGER) throw connectionError(H2_COMPRESSION_ERROR, 'HPACK integer too large');
      if ((byte & 0x80) === 0) return value;
    }
  }

  /** RFC 7541 section 5.2: a string literal, Huffman-coded or raw. */
  #string(block: Buffer, end: number): string {
    if (this.#position >= end) throw connectionError(H2_COMPRESSION_ERROR, 'HPACK string truncated');
    const huffman = (block[this.#position]! & 0x80) !== 0;
    const length = this.#integer(block, end, 7);
    if (length > end - this.#position) throw connectionError(H2_COMPRESSION_ERROR, `HPACK string of ${length} bytes runs past the block`);
    const start = this.#position;
    this.#position += length;
    if (huffman) {
      const decoded = huffmanDecode(block, start, start + length, this.#scratch);
      return this.#scratch.toString('latin1', 0, decoded);
    }
    if (length > this.#maxHeaderListBytes) {
      throw connectionError(H2_ENHANCE_YOUR_CALM, `HPACK string of ${length} bytes past the ${this.#maxHeaderListBytes}-byte limit`);
    }
    return block.toString('latin1', start, start + length);
  }

  #name(index: number): string {
    if (index <= STATIC_TABLE.length) return STATIC_TABLE[index - 1]![0];
    return this.#entries[this.#dynamicSlot(index)]!;
  }

  #value(index: number): string {
    if (index <= STATIC_TABLE.length) return STATIC_TABLE[index - 1]![1];
    return this.#entries[this.#dynamicSlot(index) + 1]!;
  }

  /** Index (62 = newest) to the slot of its name in #entries. */
  #dynamicSlot(index: number): number {
    const fromNewest = index - STATIC_TABLE.length - 1;
    const count = this.#entries.length / 2;
    if (fromNewest >= count) throw connectionError(H2_COMPRESSION_ERROR, `HPACK index ${index} past the table (${STATIC_TABLE.length} static + ${count} dynamic)`);
    return 2 * (count - 1 - fromNewest);
  }

  #insert(name: string, value: string): void {
    const size = name.length + value.length + ENTRY_OVERHEAD;
    // RFC 7541 section 4.4: an entry larger than the table empties it and is not added.
    this.#evict(size);
    if (size > this.#tableLimit) return;
    this.#entries.push(name, value);
    this.#tableBytes += size;
  }

  /** Evicts oldest entries until `incoming` more bytes fit (or the table is empty). */
  #evict(incoming: number): void {
    let drop = 0;
    const entries = this.#entries;
    while (this.#tableBytes + incoming > this.#tableLimit && drop < entries.length) {
      this.#tableBytes -= entries[drop]!.length + entries[drop + 1]!.length + ENTRY_OVERHEAD;
      drop += 2;
    }
    if (drop > 0) entries.splice(0, drop);
  }
}

/**
 * Name -> first static index with that name; per name, value -> static index of that exact pair (only the few names
 * the static table gives values: a lookup needs no "name + value" key built and hashed per field).
 */
const STATIC_NAME_INDEX = new Map<string, number>();
const STATIC_PAIR_INDEX = new Map<string, Map<string, number>>();
for (let index = STATIC_TABLE.length; index >= 1; index--) {
  const [name, value] = STATIC_TABLE[index - 1]!;
  STATIC_NAME_INDEX.set(name, index);
  if (value === '') continue;
  let values = STATIC_PAIR_INDEX.get(name);
  if (values === undefined) STATIC_PAIR_INDEX.set(name, (values = new Map()));
  values.set(value, index);
}

/**
 * Encodes header lists as literals without indexing: stateless, so nothing depends on the peer's table size.
 * Names must already be lower-case; values are written as latin1 bytes.
 */
export class HpackEncoder {
  /** Encodes `headers` (names and values alternating) into a new Buffer; `status`, when given, as `:status` first. */
  encode(headers: readonly string[], status?: number): Buffer {
    const out = Buffer.allocUnsafe(this.sizeBound(headers, status));
    return out.subarray(0, this.encodeInto(out, 0, headers, status));
  }

  /** At most how many bytes `encodeInto` writes for these fields. */
  sizeBound(headers: readonly string[], status?: number): number {
    let size = status === undefined ? 0 : String(status).length + 6;
    for (let index = 0; index < headers.length; index++) size += headers[index]!.length + 6;
    return size;
  }

  /**
   * Encodes `headers` (and `status` first, when given) into `out` from `offset`, which must have `sizeBound` bytes of
   * room; returns the offset after the block. The same bytes as `encode`, written where the caller keeps its frames.
   */
  encodeInto(out: Buffer, offset: number, headers: readonly string[], status?: number): number {
    if (status !== undefined) offset = this.#field(out, offset, ':status', String(status));
    for (let index = 0; index < headers.length; index += 2) offset = this.#field(out, offset, headers[index]!, headers[index + 1]!);
    return offset;
  }

  #field(out: Buffer, offset: number, name: string, value: string): number {
    const pair = STATIC_PAIR_INDEX.get(name)?.get(value);
    if (pair !== undefined) return writeInteger(out, offset, pair, 7, 0x80);
    const nameIndex = STATIC_NAME_INDEX.get(name);
    if (nameIndex !== undefined) {
      offset = writeInteger(out, offset, nameIndex, 4, 0x00);
    } else {
      out[offset++] = 0x00;
      offset = writeString(out, offset, name);
    }
    return writeString(out, offset, value);
  }
}

/** Writes an integer with an N-bit prefix; `flags` fills the bits above the prefix in the first byte. */
export function writeInteger(out: Uint8Array, offset: number, value: number, prefixBits: number, flags: number): number {
  const mask = (1 << prefixBits) - 1;
  if (value < mask) {
    out[offset++] = flags | value;
    return offset;
  }
  out[offset++] = flags | mask;
  let rest = value - mask;
  while (rest >= 0x80) {
    out[offset++] = (rest % 0x80) | 0x80;
    rest = Math.floor(rest / 0x80);
  }
  out[offset++] = rest;
  return offset;
}

/** Strings up to this long are copied by a loop: a header's name or value is short, and `Buffer.write` is a native call each. */
const LOOP_WRITE_MAX = 64;

function writeString(out: Buffer, offset: number, text: string): number {
  const length = text.length;
  offset = writeInteger(out, offset, length, 7, 0x00);
  if (length > LOOP_WRITE_MAX) return offset + out.write(text, offset, 'latin1');
  // latin1: each character's low byte, as Buffer.write writes it (a typed array store keeps the low 8 bits).
  for (let index = 0; index < length; index++) out[offset + index] = text.charCodeAt(index);
  return offset + length;
}
