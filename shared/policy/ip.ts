/**
 * IP addresses and CIDR blocks as numbers, for policy matching without string work on the hot path.
 *
 * Owns: parsing an address or `addr/len` into a family and 32-bit words, masking, containment, and the
 * 4/16-byte form Istio's `Address` message carries.
 * Must not know about: policies or connections.
 *
 * An IPv4 address is one word; an IPv6 address is four words, most significant first. IPv4-mapped IPv6 addresses
 * (`::ffff:10.0.0.1`, what a dual-stack Node socket reports for an IPv4 peer) are read as IPv4 so a policy written
 * with `10.0.0.0/8` matches them.
 */
import { isIPv4, isIPv6 } from 'node:net';

export interface ParsedIp {
  family: 4 | 6;
  /** One word for IPv4, four for IPv6; each an unsigned 32-bit number. */
  words: Uint32Array;
}

export interface ParsedCidr extends ParsedIp {
  /** Prefix length in bits (32 for a single IPv4 address, 128 for a single IPv6 address). */
  length: number;
  /** The network address in text form (host bits cleared), e.g. `10.0.0.0`. */
  network: string;
}

function parseIpv4Word(text: string): number | undefined {
  let value = 0;
  let part = 0;
  let digits = 0;
  let dots = 0;
  for (let index = 0; index < text.length; index++) {
    const code = text.charCodeAt(index);
    if (code === 46) {
      if (digits === 0) return undefined;
      value = value * 256 + part;
      part = 0;
      digits = 0;
      dots++;
    } else if (code >= 48 && code <= 57) {
      if (digits > 0 && part === 0) return undefined; // leading zero: ambiguous (octal in some parsers)
      part = part * 10 + (code - 48);
      digits++;
      if (part > 255) return undefined;
    } else {
      return undefined;
    }
  }
  if (dots !== 3 || digits === 0) return undefined;
  return value * 256 + part;
}

function parseIpv6Words(text: string): Uint32Array | undefined {
  if (!isIPv6(text)) return undefined;
  let head = text;
  let tailV4: number | undefined;
  const lastColon = text.lastIndexOf(':');
  if (text.indexOf('.', lastColon) !== -1) {
    tailV4 = parseIpv4Word(text.slice(lastColon + 1));
    if (tailV4 === undefined) return undefined;
    head = `${text.slice(0, lastColon + 1)}0:0`;
  }
  const halves = head.split('::');
  const left = halves[0] ? halves[0].split(':') : [];
  const right = halves.length > 1 && halves[1] ? halves[1].split(':') : [];
  const groups = new Array<number>(8).fill(0);
  left.forEach((group, index) => (groups[index] = parseInt(group, 16)));
  right.forEach((group, index) => (groups[8 - right.length + index] = parseInt(group, 16)));
  const words = new Uint32Array(4);
  for (let index = 0; index < 4; index++) words[index] = ((groups[index * 2]! << 16) | groups[index * 2 + 1]!) >>> 0;
  if (tailV4 !== undefined) words[3] = tailV4 >>> 0;
  return words;
}

/** A dotted-quad IPv4 address as an unsigned 32-bit number, or -1 (no allocation: the per-connection fast path). */
export function parseIpv4(text: string): number {
  const value = parseIpv4Word(text);
  return value === undefined ? -1 : value >>> 0;
}

/** Parses an IPv4 or IPv6 address; IPv4-mapped IPv6 becomes IPv4. Undefined when it is not an address. */
export function parseIp(text: string): ParsedIp | undefined {
  const v4 = parseIpv4Word(text);
  if (v4 !== undefined) return { family: 4, words: Uint32Array.of(v4) };
  const words = parseIpv6Words(text);
  if (!words) return undefined;
  if (words[0] === 0 && words[1] === 0 && words[2] === 0xffff) return { family: 4, words: Uint32Array.of(words[3]!) };
  return { family: 6, words };
}

/** The IPv4 netmask of a prefix length, as an unsigned 32-bit number (0 for /0). */
export function prefixMask(length: number): number {
  return length === 0 ? 0 : (0xffffffff << (32 - length)) >>> 0;
}

/** The mask for bits [0, length) of a 32-bit word whose first bit is `wordIndex * 32`. */
function wordMask(length: number, wordIndex: number): number {
  const bits = Math.max(0, Math.min(32, length - wordIndex * 32));
  return bits === 0 ? 0 : bits === 32 ? 0xffffffff : (0xffffffff << (32 - bits)) >>> 0;
}

export function formatIp(family: 4 | 6, words: Uint32Array): string {
  if (family === 4) {
    const word = words[0]!;
    return `${word >>> 24}.${(word >>> 16) & 255}.${(word >>> 8) & 255}.${word & 255}`;
  }
  const groups: string[] = [];
  for (const word of words) groups.push((word >>> 16).toString(16), (word & 0xffff).toString(16));
  // Compress the longest run of zero groups, as RFC 5952 asks.
  let bestStart = -1;
  let bestLength = 0;
  for (let start = 0; start < 8; ) {
    if (groups[start] !== '0') {
      start++;
      continue;
    }
    let end = start;
    while (end < 8 && groups[end] === '0') end++;
    if (end - start > bestLength && end - start > 1) {
      bestStart = start;
      bestLength = end - start;
    }
    start = end;
  }
  if (bestStart === -1) return groups.join(':');
  return `${groups.slice(0, bestStart).join(':')}::${groups.slice(bestStart + bestLength).join(':')}`;
}

/**
 * Parses `addr` or `addr/len` as Istio's ipBlocks accept them. Returns a reason instead when it is not valid.
 * Host bits set under the mask (`10.0.0.1/8`) are accepted, as Go's netip.ParsePrefix does, and cleared.
 */
export function parseCidr(text: string): ParsedCidr | { error: string } {
  const slash = text.indexOf('/');
  const addressText = slash === -1 ? text : text.slice(0, slash);
  const ip = parseIp(addressText);
  if (!ip || (!isIPv4(addressText) && !isIPv6(addressText))) {
    return { error: `${JSON.stringify(text)} is not an IP address or CIDR block (expected e.g. "10.1.0.0/16" or "2001:db8::/32")` };
  }
  const maxLength = isIPv4(addressText) ? 32 : 128;
  let length = maxLength;
  if (slash !== -1) {
    const lengthText = text.slice(slash + 1);
    if (!/^(0|[1-9][0-9]{0,2})$/.test(lengthText) || Number(lengthText) > maxLength) {
      return { error: `${JSON.stringify(text)} has an invalid prefix length (must be 0 to ${maxLength})` };
    }
    length = Number(lengthText);
  }
  // An IPv4-mapped IPv6 block (::ffff:10.0.0.0/104) is an IPv4 block of length - 96.
  if (maxLength === 128 && ip.family === 4) length = Math.max(0, length - 96);
  const words = Uint32Array.from(ip.words, (word, index) => (word & wordMask(length, index)) >>> 0);
  return { family: ip.family, words, length, network: formatIp(ip.family, words) };
}

/** Whether `ip` is inside `cidr`. */
export function cidrContains(cidr: ParsedCidr, ip: ParsedIp): boolean {
  if (cidr.family !== ip.family) return false;
  const words = cidr.words;
  for (let index = 0; index < words.length; index++) {
    const mask = wordMask(cidr.length, index);
    if (mask === 0) return true;
    if (((ip.words[index]! & mask) >>> 0) !== words[index]) return false;
  }
  return true;
}

/** The address bytes of Istio's `Address` message (4 or 16, network order). */
export function cidrToBytes(cidr: ParsedCidr): Uint8Array {
  const bytes = new Uint8Array(cidr.family === 4 ? 4 : 16);
  const view = new DataView(bytes.buffer);
  cidr.words.forEach((word, index) => view.setUint32(index * 4, word));
  return bytes;
}

/** Reads Istio's `Address` message back into a block. Undefined when the byte length or prefix length is wrong. */
export function cidrFromBytes(address: Uint8Array, length: number): ParsedCidr | undefined {
  if (address.length !== 4 && address.length !== 16) return undefined;
  const view = new DataView(address.buffer, address.byteOffset, address.byteLength);
  const words = new Uint32Array(address.length / 4);
  for (let index = 0; index < words.length; index++) words[index] = view.getUint32(index * 4);
  const family = address.length === 4 ? 4 : 6;
  if (length > words.length * 32) return undefined;
  const parsed = parseCidr(`${formatIp(family, words)}/${length}`);
  return 'error' in parsed ? undefined : parsed;
}
