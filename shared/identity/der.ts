/**
 * Just enough DER (X.690) to read a PKCS#10 request and write a certificate without an ASN.1 library.
 *
 * Owns: reading one tag-length-value at an offset, encoding a TLV from its parts, and the few primitive
 * encodings certificates need (INTEGER from bytes, OID bytes, X.509 Time, BIT STRING).
 * Must not know about: what a certificate or CSR means (that is `csr.ts` and `ca.ts`).
 * Why hand-written: signing through @peculiar/x509 ran at about 100 certificates/s here; building the DER
 * ourselves and signing with node:crypto is an order of magnitude faster.
 */

export const TAG = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  SEQUENCE: 0x30,
  SET: 0x31,
} as const;

/** One decoded TLV: `tag`, and where its value starts and ends in the buffer it was read from. */
export interface Tlv {
  tag: number;
  /** Offset of the tag byte. */
  start: number;
  /** Offset of the first value byte. */
  valueStart: number;
  /** Offset just past the value. */
  end: number;
}

export class DerError extends Error {
  override readonly name = 'DerError';
}

/** Reads the TLV at `offset`, which must end at or before `limit`. Only definite, minimal-enough lengths. */
export function readTlv(buffer: Uint8Array, offset: number, limit: number = buffer.length): Tlv {
  if (offset + 2 > limit) throw new DerError(`truncated DER at offset ${offset}`);
  const tag = buffer[offset]!;
  if ((tag & 0x1f) === 0x1f) throw new DerError(`multi-byte tags are not supported (offset ${offset})`);
  let length = buffer[offset + 1]!;
  let valueStart = offset + 2;
  if (length & 0x80) {
    const count = length & 0x7f;
    if (count === 0 || count > 4) throw new DerError(`unsupported length encoding at offset ${offset}`);
    if (valueStart + count > limit) throw new DerError(`truncated DER length at offset ${offset}`);
    length = 0;
    for (let i = 0; i < count; i++) length = length * 256 + buffer[valueStart + i]!;
    valueStart += count;
  }
  const end = valueStart + length;
  if (end > limit) throw new DerError(`DER value at offset ${offset} runs past its container (${end} > ${limit})`);
  return { tag, start: offset, valueStart, end };
}

/** Reads the TLV at `offset` and checks its tag. */
export function expectTlv(buffer: Uint8Array, offset: number, tag: number, what: string, limit?: number): Tlv {
  const tlv = readTlv(buffer, offset, limit);
  if (tlv.tag !== tag) throw new DerError(`expected ${what} (tag 0x${tag.toString(16)}) at offset ${offset}, found tag 0x${tlv.tag.toString(16)}`);
  return tlv;
}

/** The TLVs directly inside a constructed value. */
export function children(buffer: Uint8Array, parent: Tlv): Tlv[] {
  const result: Tlv[] = [];
  let offset = parent.valueStart;
  while (offset < parent.end) {
    const child = readTlv(buffer, offset, parent.end);
    result.push(child);
    offset = child.end;
  }
  return result;
}

function lengthBytes(length: number): Buffer {
  if (length < 0x80) return Buffer.from([length]);
  const bytes: number[] = [];
  for (let rest = length; rest > 0; rest = Math.floor(rest / 256)) bytes.unshift(rest & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

/** Encodes one TLV whose value is the concatenation of `parts`. */
export function tlv(tag: number, ...parts: Uint8Array[]): Buffer {
  let length = 0;
  for (const part of parts) length += part.length;
  return Buffer.concat([Buffer.from([tag]), lengthBytes(length), ...parts]);
}

/** A DER INTEGER from big-endian unsigned bytes (adds the sign byte when needed). */
export function unsignedInteger(bytes: Uint8Array): Buffer {
  let start = 0;
  while (start < bytes.length - 1 && bytes[start] === 0) start++;
  const trimmed = bytes.subarray(start);
  return trimmed[0]! & 0x80 ? tlv(TAG.INTEGER, Buffer.from([0]), trimmed) : tlv(TAG.INTEGER, trimmed);
}

/** An OBJECT IDENTIFIER TLV from dotted form. */
export function oid(dotted: string): Buffer {
  const arcs = dotted.split('.').map(Number);
  const bytes: number[] = [40 * arcs[0]! + arcs[1]!];
  for (const arc of arcs.slice(2)) {
    const groups: number[] = [];
    let rest = arc;
    do {
      groups.unshift(rest & 0x7f);
      rest = Math.floor(rest / 128);
    } while (rest > 0);
    for (let i = 0; i < groups.length - 1; i++) groups[i]! |= 0x80;
    bytes.push(...groups);
  }
  return tlv(TAG.OID, Buffer.from(bytes));
}

/** X.509 Time (RFC 5280 4.1.2.5): UTCTime through 2049, GeneralizedTime after; whole seconds, Zulu. */
export function x509Time(date: Date): Buffer {
  const iso = date.toISOString(); // 2026-11-26T00:13:24.123Z
  const digits = iso.slice(0, 19).replace(/[-T:]/g, '') + 'Z'; // 20261126001324Z
  const year = date.getUTCFullYear();
  if (year >= 1950 && year < 2050) return tlv(TAG.UTC_TIME, Buffer.from(digits.slice(2), 'ascii'));
  return tlv(TAG.GENERALIZED_TIME, Buffer.from(digits, 'ascii'));
}

/** A BIT STRING with no unused bits. */
export function bitString(bytes: Uint8Array): Buffer {
  return tlv(TAG.BIT_STRING, Buffer.from([0]), bytes);
}

/** PEM armour with 64-character lines. */
export function toPem(label: string, der: Uint8Array): string {
  const base64 = Buffer.from(der).toString('base64');
  const lines: string[] = [];
  for (let i = 0; i < base64.length; i += 64) lines.push(base64.slice(i, i + 64));
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

/** The DER inside the first PEM block labelled with one of `labels`. */
export function fromPem(pem: string, labels: readonly string[]): Buffer {
  const begin = pem.indexOf('-----BEGIN ');
  const labelEnd = begin < 0 ? -1 : pem.indexOf('-----', begin + 11);
  if (labelEnd < 0) throw new DerError('no PEM block found');
  const label = pem.slice(begin + 11, labelEnd);
  const endMarker = `-----END ${label}-----`;
  const end = pem.indexOf(endMarker, labelEnd + 5);
  if (end < 0) throw new DerError(`the PEM block ${label} has no END line`);
  if (!labels.includes(label)) throw new DerError(`expected a PEM block labelled ${labels.join(' or ')}, found ${label}`);
  // Buffer skips whitespace; anything else that is not base64 makes DER that fails to parse right after.
  const der = Buffer.from(pem.slice(labelEnd + 5, end), 'base64');
  if (der.length === 0) throw new DerError('the PEM block is empty');
  return der;
}
