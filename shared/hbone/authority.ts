/**
 * The HBONE `:authority`: the original destination as `ip:port`, IPv6 in brackets (`[fd00::5]:8080`).
 *
 * Owns: strict parsing and formatting. Host names, zone ids, ports outside 1-65535, leading zeros, signs and
 * whitespace are all rejected: the server connects to whatever this says, so it must be exactly an address.
 * Must not know about: sessions, policy, or where the address came from.
 */
import net from 'node:net';
import { hboneErrors } from './errors.ts';
import type { HostPort } from './types.ts';

const PORT = /^[1-9][0-9]{0,4}$/;

function parsePort(input: string, text: string): number {
  if (!PORT.test(text)) throw hboneErrors.badAuthority(input, `port ${JSON.stringify(text)} is not a decimal number 1-65535`);
  const port = Number(text);
  if (port > 65535) throw hboneErrors.badAuthority(input, `port ${port} is above 65535`);
  return port;
}

/** Parses `ip:port` / `[ipv6]:port`; throws HboneError HBONE_BAD_AUTHORITY with the reason. */
export function parseAuthority(input: unknown): HostPort {
  if (typeof input !== 'string' || input === '') throw hboneErrors.badAuthority(input, 'it is missing');
  if (input.length > 64) throw hboneErrors.badAuthority(input.slice(0, 64) + '...', 'it is too long');
  if (input.startsWith('[')) {
    const close = input.indexOf(']');
    if (close < 0) throw hboneErrors.badAuthority(input, 'the IPv6 address has no closing bracket');
    const host = input.slice(1, close);
    if (input[close + 1] !== ':') throw hboneErrors.badAuthority(input, 'the port is missing');
    if (!net.isIPv6(host) || host.includes('%')) throw hboneErrors.badAuthority(input, `${JSON.stringify(host)} is not an IPv6 address`);
    return { host, port: parsePort(input, input.slice(close + 2)) };
  }
  const colon = input.lastIndexOf(':');
  if (colon < 0) throw hboneErrors.badAuthority(input, 'the port is missing');
  const host = input.slice(0, colon);
  if (host.includes(':')) throw hboneErrors.badAuthority(input, 'an IPv6 address must be in brackets');
  if (!net.isIPv4(host)) throw hboneErrors.badAuthority(input, `${JSON.stringify(host)} is not an IPv4 address (host names are not allowed)`);
  return { host, port: parsePort(input, input.slice(colon + 1)) };
}

/** Formats an address as an `:authority`; throws on anything `parseAuthority` would reject. */
export function formatAuthority(address: HostPort): string {
  // Once per stream: one address check (IPv4 first, the common case) instead of formatting and re-parsing.
  const family = net.isIP(address.host);
  const text = family === 6 ? `[${address.host}]:${address.port}` : `${address.host}:${address.port}`;
  if (family === 0) throw hboneErrors.badAuthority(text, `${JSON.stringify(address.host)} is not an IP address (host names are not allowed)`);
  if (family === 6 && address.host.includes('%')) throw hboneErrors.badAuthority(text, `${JSON.stringify(address.host)} is not an IPv6 address`);
  if (!Number.isInteger(address.port) || address.port < 1 || address.port > 65535) throw hboneErrors.badAuthority(text, `port ${address.port} is not 1-65535`);
  return text;
}
