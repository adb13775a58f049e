/**
 * Cluster IPs for the local runtime's Services: the service ranges, and an allocator that hands out and checks
 * addresses as the API server's ClusterIP allocator does (an address belongs to one Service; a Service's
 * addresses lie in the range of their family).
 *
 * Owns: the ranges, address arithmetic, who holds which address, the reserved addresses (network, broadcast,
 * the cluster DNS address).
 * Must not know about: files, Service objects beyond (key, addresses), or how addresses are programmed.
 */
import net from 'node:net';

export type IpFamily = 'IPv4' | 'IPv6';

/**
 * The service ranges. Pod ranges are 10.20-219.x.x and fd00:14-db:x::/64 (topology.ts), so Kubernetes'
 * usual 10.96.0.0/12 would overlap some runs' pods; these are outside every run's pod and underlay addresses.
 */
export const SERVICE_CIDR_V4 = '10.240.0.0/16';
export const SERVICE_CIDR_V6 = 'fd00:f0::/112';
/** kube-dns's conventional address: the tenth of the range (10.96.0.10 in a default cluster). */
export const DNS_SERVICE_OFFSET = 10n;

export function familyOf(ip: string): IpFamily | undefined {
  if (net.isIPv4(ip)) return 'IPv4';
  if (net.isIPv6(ip)) return 'IPv6';
  return undefined;
}

/** An address as a number (IPv4: 32 bits, IPv6: 128 bits). The caller checked it parses. */
export function ipToBigInt(ip: string): bigint {
  if (net.isIPv4(ip)) return ip.split('.').reduce((value, octet) => (value << 8n) | BigInt(Number(octet)), 0n);
  const [head = '', tail] = ip.split('::');
  const headGroups = head === '' ? [] : head.split(':');
  const tailGroups = tail === undefined || tail === '' ? [] : tail.split(':');
  // An embedded IPv4 tail (::ffff:1.2.3.4) counts as two groups.
  const expand = (groups: string[]): number[] =>
    groups.flatMap((group) => {
      if (!group.includes('.')) return [parseInt(group, 16)];
      const v4 = Number(ipToBigInt(group));
      return [v4 >>> 16, v4 & 0xffff];
    });
  const headValues = expand(headGroups);
  const tailValues = expand(tailGroups);
  const zeros = tail === undefined ? [] : new Array<number>(8 - headValues.length - tailValues.length).fill(0);
  return [...headValues, ...zeros, ...tailValues].reduce((value, group) => (value << 16n) | BigInt(group), 0n);
}

/** The canonical text of an address (RFC 5952 for IPv6: lowercase, the longest run of zero groups as `::`). */
export function bigIntToIp(value: bigint, family: IpFamily): string {
  if (family === 'IPv4') return [24n, 16n, 8n, 0n].map((shift) => String((value >> shift) & 0xffn)).join('.');
  const groups = Array.from({ length: 8 }, (_, index) => Number((value >> BigInt(112 - index * 16)) & 0xffffn));
  let bestStart = -1;
  let bestLength = 1;
  for (let start = 0; start < 8; start++) {
    let length = 0;
    while (start + length < 8 && groups[start + length] === 0) length++;
    if (length > bestLength) {
      bestStart = start;
      bestLength = length;
    }
  }
  const text = groups.map((group) => group.toString(16));
  if (bestStart < 0) return text.join(':');
  return `${text.slice(0, bestStart).join(':')}::${text.slice(bestStart + bestLength).join(':')}`;
}

/** The canonical form of an address, or undefined when it is not one. */
export function canonicalIp(ip: string): string | undefined {
  const family = familyOf(ip);
  return family === undefined ? undefined : bigIntToIp(ipToBigInt(ip), family);
}

export class Cidr {
  readonly family: IpFamily;
  readonly base: bigint;
  readonly prefixLength: number;
  readonly size: bigint;
  readonly text: string;

  constructor(text: string) {
    const [address = '', prefix = ''] = text.split('/');
    const family = familyOf(address);
    const bits = family === 'IPv4' ? 32 : 128;
    const prefixLength = Number(prefix);
    if (family === undefined || !Number.isInteger(prefixLength) || prefixLength < 0 || prefixLength > bits) {
      throw new TypeError(`not a CIDR: ${text}`);
    }
    this.family = family;
    this.prefixLength = prefixLength;
    this.size = 1n << BigInt(bits - prefixLength);
    this.base = (ipToBigInt(address) / this.size) * this.size;
    this.text = `${bigIntToIp(this.base, family)}/${prefixLength}`;
  }

  contains(ip: string): boolean {
    if (familyOf(ip) !== this.family) return false;
    const value = ipToBigInt(ip);
    return value >= this.base && value < this.base + this.size;
  }

  at(offset: bigint): string {
    return bigIntToIp(this.base + offset, this.family);
  }
}

/** Why an address was refused: the caller turns it into an error that names the Service's file. */
export type ClusterIpRefusal =
  | { reason: 'not-an-ip'; ip: string }
  | { reason: 'no-range'; ip: string; family: IpFamily }
  | { reason: 'out-of-range'; ip: string; range: string }
  | { reason: 'reserved'; ip: string; range: string }
  | { reason: 'taken'; ip: string; holder: string }
  | { reason: 'exhausted'; range: string };

/**
 * Who holds which cluster IP. Holders are opaque keys (`<namespace>/<name>`); an address stays with its first
 * holder until released, so a later Service asking for it is refused, as the API server refuses it.
 */
export class ClusterIpAllocator {
  readonly ranges: ReadonlyMap<IpFamily, Cidr>;
  readonly #holders = new Map<string, string>();
  readonly #reserved: Set<string>;
  /** Where the next search starts in each range: allocation is lowest-free-first, from here, wrapping around. */
  readonly #next = new Map<IpFamily, bigint>();

  constructor(ranges: Cidr[]) {
    this.ranges = new Map(ranges.map((range) => [range.family, range]));
    this.#reserved = new Set();
    for (const range of ranges) {
      this.#reserved.add(range.at(0n)); // the network address
      if (range.family === 'IPv4') this.#reserved.add(range.at(range.size - 1n)); // broadcast
      this.#reserved.add(range.at(DNS_SERVICE_OFFSET)); // the cluster DNS (kube-dns) address
    }
  }

  /** The cluster DNS address of a family's range (reserved: no Service gets it). */
  dnsAddress(family: IpFamily): string | undefined {
    return this.ranges.get(family)?.at(DNS_SERVICE_OFFSET);
  }

  holder(ip: string): string | undefined {
    return this.#holders.get(canonicalIp(ip) ?? ip);
  }

  /** Why `holder` may not have `ip`, or undefined when it may (it is free, or already its own). */
  check(holder: string, ip: string): ClusterIpRefusal | undefined {
    const canonical = canonicalIp(ip);
    if (canonical === undefined) return { reason: 'not-an-ip', ip };
    const family = familyOf(canonical)!;
    const range = this.ranges.get(family);
    if (range === undefined) return { reason: 'no-range', ip, family };
    if (!range.contains(canonical)) return { reason: 'out-of-range', ip, range: range.text };
    if (this.#reserved.has(canonical)) return { reason: 'reserved', ip, range: range.text };
    const current = this.#holders.get(canonical);
    if (current !== undefined && current !== holder) return { reason: 'taken', ip, holder: current };
    return undefined;
  }

  /** Records `holder` as holding `ip` (checked first: a refusal is returned and nothing changes). */
  claim(holder: string, ip: string): ClusterIpRefusal | undefined {
    const refusal = this.check(holder, ip);
    if (refusal === undefined) this.#holders.set(canonicalIp(ip)!, holder);
    return refusal;
  }

  /** Gives `holder` the lowest free address of `family` (after the last one given), or a refusal. */
  allocate(holder: string, family: IpFamily): { ip: string } | ClusterIpRefusal {
    const range = this.ranges.get(family);
    if (range === undefined) return { reason: 'no-range', ip: '', family };
    const start = this.#next.get(family) ?? 1n;
    for (let step = 0n; step < range.size; step++) {
      const offset = (start + step) % range.size;
      const ip = range.at(offset);
      if (this.#reserved.has(ip) || this.#holders.has(ip)) continue;
      this.#holders.set(ip, holder);
      this.#next.set(family, offset + 1n);
      return { ip };
    }
    return { reason: 'exhausted', range: range.text };
  }

  /** Frees every address `holder` holds except `keep`. */
  releaseAllBut(holder: string, keep: readonly string[] = []): void {
    const kept = new Set(keep.map((ip) => canonicalIp(ip) ?? ip));
    for (const [ip, current] of this.#holders) if (current === holder && !kept.has(ip)) this.#holders.delete(ip);
  }

  /** Holders present, for releasing those whose Service is gone. */
  holders(): Set<string> {
    return new Set(this.#holders.values());
  }
}

/** A refusal as a sentence (the caller adds which Service and file). */
export function describeRefusal(refusal: ClusterIpRefusal): string {
  switch (refusal.reason) {
    case 'not-an-ip':
      return `clusterIP "${refusal.ip}" is not an IP address (or "None" for a headless Service)`;
    case 'no-range':
      return `clusterIP ${refusal.ip}: this cluster has no ${refusal.family} service range (single-stack cluster)`;
    case 'out-of-range':
      return `clusterIP ${refusal.ip} is not in the service range ${refusal.range}`;
    case 'reserved':
      return `clusterIP ${refusal.ip} is reserved in ${refusal.range} (network, broadcast or the cluster DNS address)`;
    case 'taken':
      return `clusterIP ${refusal.ip} is already allocated to Service ${refusal.holder}`;
    case 'exhausted':
      return `no free cluster IP left in ${refusal.range}`;
  }
}
