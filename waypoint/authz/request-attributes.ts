/**
 * What the L7 evaluator needs to know about one request, read from the request and the HBONE stream it came on:
 * method, normalised path, host with and without port, headers, the peer's identity and address, the remote address
 * after X-Forwarded-For (Istio's numTrustedProxies), the destination VIP and port, and the verified JWT.
 *
 * Path normalisation is Envoy's default under Istio (`BASE`: RFC 3986 dot segments removed, percent-encoded
 * unreserved characters decoded), applied before the decision and to what is forwarded, so `/./admin` or
 * `/%61dmin` are judged (and reach the backend) as `/admin`.
 *
 * Owns: that mapping. Must not know about: policies, how decisions are made, JWT verification.
 */
import type { SpiffeId } from '../../shared/identity/index.ts';
import { parseIp, type ParsedIp } from '../../shared/policy/ip.ts';
import type { HttpRequestAttributes, RequestAuth } from '../../shared/policy/l7-evaluate.ts';

const UNRESERVED = /%(2[dDeE]|3[0-9]|[46][1-9a-fA-F]|[57][0-9aA]|5[fF]|7[eE])/g;

/** RFC 3986 section 6.2.2: percent-encoded unreserved characters decoded, dot segments removed. */
export function normalizePath(path: string): string {
  let out = path;
  if (out.includes('%')) out = out.replace(UNRESERVED, (escape) => String.fromCharCode(parseInt(escape.slice(1), 16)));
  if (!out.includes('/.')) return out;
  const segments: string[] = [];
  const parts = out.split('/');
  for (let index = 1; index < parts.length; index++) {
    const part = parts[index]!;
    const last = index === parts.length - 1;
    if (part === '.') {
      if (last) segments.push('');
    } else if (part === '..') {
      segments.pop();
      if (last) segments.push('');
    } else segments.push(part);
  }
  return `/${segments.join('/')}`;
}

/** The path part of a request target, and the rest (`?query`), split once. */
export function splitTarget(url: string): { path: string; rest: string } {
  let end = url.length;
  const query = url.indexOf('?');
  if (query !== -1) end = query;
  const fragment = url.indexOf('#');
  if (fragment !== -1 && fragment < end) end = fragment;
  return { path: url.slice(0, end) || '/', rest: url.slice(end) };
}

function plainAddress(address: string): string {
  return address.startsWith('::ffff:') ? address.slice(7) : address;
}

/** The client address by X-Forwarded-For: the `trustedProxies`-th entry from the right; the peer when 0 or too few. */
export function remoteAddress(peerAddress: string, forwardedFor: string | string[] | undefined, trustedProxies: number): string {
  if (trustedProxies <= 0 || forwardedFor === undefined) return peerAddress;
  const entries = (Array.isArray(forwardedFor) ? forwardedFor.join(',') : forwardedFor).split(',');
  const index = entries.length - trustedProxies;
  if (index < 0) return peerAddress;
  return entries[index]!.trim() || peerAddress;
}

export interface StreamFacts {
  peer: SpiffeId;
  /** Peer address of the HBONE connection (the client pod). */
  peerAddress: string;
  /** The `:authority` the client's agent asked for: the Service VIP and port. */
  destinationHost: string;
  destinationPort: number;
}

/** What every request on one HBONE stream shares, parsed once per stream. */
export interface PreparedStream {
  peerAddress: string;
  sourcePrincipal: string;
  sourceNamespace: string;
  sourceServiceAccount: string;
  sourceIp: ParsedIp | undefined;
  destinationIp: ParsedIp | undefined;
  destinationPort: number;
}

export function prepareStream(stream: StreamFacts): PreparedStream {
  const peerAddress = plainAddress(stream.peerAddress);
  return {
    peerAddress,
    sourcePrincipal: stream.peer.uri.startsWith('spiffe://') ? stream.peer.uri.slice(9) : stream.peer.uri,
    sourceNamespace: stream.peer.namespace,
    sourceServiceAccount: `${stream.peer.namespace}/${stream.peer.serviceAccount}`,
    sourceIp: parseIp(peerAddress),
    destinationIp: parseIp(plainAddress(stream.destinationHost)),
    destinationPort: stream.destinationPort,
  };
}

export function requestAttributes(
  method: string,
  path: string,
  headers: Readonly<Record<string, string | string[] | undefined>>,
  stream: PreparedStream,
  auth: RequestAuth | undefined,
  trustedProxies: number,
): HttpRequestAttributes {
  const rawHost = headers.host ?? headers[':authority'];
  const host = (Array.isArray(rawHost) ? rawHost[0] : rawHost)?.toLowerCase() ?? '';
  const colon = host.lastIndexOf(':');
  const hostWithoutPort = colon !== -1 && host.indexOf(']', colon) === -1 && /^\d+$/.test(host.slice(colon + 1)) ? host.slice(0, colon) : host;
  const remote = trustedProxies > 0 ? remoteAddress(stream.peerAddress, headers['x-forwarded-for'], trustedProxies) : stream.peerAddress;
  return {
    method,
    path,
    host,
    hostWithoutPort,
    port: stream.destinationPort,
    headers,
    sourcePrincipal: stream.sourcePrincipal,
    sourceNamespace: stream.sourceNamespace,
    sourceServiceAccount: stream.sourceServiceAccount,
    sourceIp: stream.sourceIp,
    remoteIp: remote === stream.peerAddress ? stream.sourceIp : parseIp(remote),
    destinationIp: stream.destinationIp,
    sni: '',
    auth,
  };
}
