/**
 * The HTTPRoute filters a waypoint applies to one request: header modifiers (request and response, the rule's then
 * the backend's), RequestRedirect (the Location and status it answers with) and URLRewrite (the path and Host it
 * forwards), as the Gateway API defines them.
 *
 * Owns: those transformations on plain header objects and strings. Must not know about: sockets, routing
 * precedence, upstreams. Runs once per request, never per chunk.
 */
import type http from 'node:http';
import { prefixMatchLength } from './http-router.ts';
import type { HeaderModifier, PathModifier, RouteEntry } from './route-table.ts';

/** Hop-by-hop headers (RFC 9110 7.6.1): never forwarded. */
export const HOP_BY_HOP: ReadonlySet<string> = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'trailer', 'proxy-authorization', 'proxy-authenticate']);

/** The headers without the hop-by-hop ones (and without HTTP/2 pseudo-headers), as a new object to modify. */
export function endToEndHeaders(headers: http.IncomingHttpHeaders): http.OutgoingHttpHeaders {
  const result: http.OutgoingHttpHeaders = {};
  for (const name in headers) if (!HOP_BY_HOP.has(name) && name.charCodeAt(0) !== 58 /* : */) result[name] = headers[name];
  return result;
}

/** Applies `modifier` to `headers` in place: set replaces, add appends (comma-joined), remove drops (Gateway API order). */
export function modifyHeaders(headers: http.OutgoingHttpHeaders, modifier: HeaderModifier | undefined): void {
  if (!modifier) return;
  for (const header of modifier.set) headers[header.name] = header.value;
  for (const header of modifier.add) {
    const existing = headers[header.name];
    headers[header.name] = existing === undefined ? header.value : `${Array.isArray(existing) ? existing.join(',') : String(existing)},${header.value}`;
  }
  for (const name of modifier.remove) delete headers[name];
}

/** `path` with the modifier applied; `entry` gives the PathPrefix a REPLACE_PREFIX_MATCH replaces. */
export function modifyPath(modifier: PathModifier, entry: RouteEntry, path: string): string {
  if (modifier.type === 'REPLACE_FULL_PATH') return modifier.value;
  // VirtualService rewrite.uri on a plain string prefix (Envoy's prefix_rewrite): the entry matched, so the path
  // starts with the prefix (in any case under ignoreUriCase); its length is what is replaced.
  if (modifier.type === 'REPLACE_LITERAL_PREFIX') return modifier.value + path.slice(modifier.prefix!.length);
  const matched = entry.pathType === 'PATH_PREFIX' ? prefixMatchLength(entry.path, path) : -1;
  if (matched < 0) return path;
  // The Gateway API's table: prefix /foo with /xyz makes /foo/bar /xyz/bar and /foo /xyz; with / (or '') /foo/bar is /bar.
  const replacement = modifier.value.endsWith('/') ? modifier.value.slice(0, -1) : modifier.value;
  const rest = path.slice(matched);
  const result = replacement + (rest === '' || rest.startsWith('/') ? rest : `/${rest}`);
  return result === '' ? '/' : result;
}

/** Splits a Host header into name and port (IPv6 literals in brackets kept whole). */
function splitHost(host: string): { name: string; port: number | undefined } {
  const colon = host.lastIndexOf(':');
  if (colon > 0 && colon > host.lastIndexOf(']')) return { name: host.slice(0, colon), port: Number(host.slice(colon + 1)) || undefined };
  return { name: host, port: undefined };
}

/**
 * The Location of a RequestRedirect: scheme, hostname and path as configured or the request's own; the port as
 * configured, else the scheme's well-known port when the scheme is configured, else the Service port the request
 * came to; the port left out where it is the scheme's default (80 for http, 443 for https). The query is kept.
 */
export function redirectLocation(entry: RouteEntry, request: { host: string | undefined; path: string; query: string; servicePort: number }): string {
  const redirect = entry.redirect!;
  const scheme = redirect.scheme || 'http';
  const hostname = redirect.hostname || splitHost(request.host ?? '').name;
  let port = redirect.port;
  if (port === 0) port = redirect.scheme ? (redirect.scheme === 'https' ? 443 : 80) : request.servicePort;
  const defaultPort = scheme === 'https' ? 443 : 80;
  const path = redirect.path ? modifyPath(redirect.path, entry, request.path) : request.path;
  return `${scheme}://${hostname}${port === defaultPort ? '' : `:${port}`}${path}${request.query ? `?${request.query}` : ''}`;
}

/** The path (and query) forwarded after URLRewrite; the Host header is set by the caller from `urlRewrite.hostname`. */
export function rewrittenUrl(entry: RouteEntry, path: string, query: string): string {
  const modifier = entry.urlRewrite?.path;
  if (!modifier) return query ? `${path}?${query}` : path;
  const rewritten = modifyPath(modifier, entry, path);
  return query ? `${rewritten}?${query}` : rewritten;
}
