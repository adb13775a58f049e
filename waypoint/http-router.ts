/**
 * Which route entry a request matches and which weighted backend it goes to.
 *
 * Owns: the match (port; path Exact, PathPrefix by path segment as the Gateway API defines it, or a whole-path RE2
 * regular expression; method; headers and query parameters, exact or RE2; headers that must not match, a
 * VirtualService's withoutHeaders; the entries arrive in precedence order, so the first fit wins) and the weighted
 * pick.
 * Must not know about: sockets, xDS, endpoints.
 */
import type http from 'node:http';
import type { RouteBackend, RouteEntry, ValueMatch } from './route-table.ts';

/** The path without its query string. */
export function pathOf(url: string): string {
  const query = url.indexOf('?');
  return query < 0 ? url : url.slice(0, query);
}

/** The query string without its `?` ('' when none). */
export function queryOf(url: string): string {
  const query = url.indexOf('?');
  return query < 0 ? '' : url.slice(query + 1);
}

/** The part of `path` a PathPrefix `prefix` covers, by whole segments; -1 when it does not match. */
export function prefixMatchLength(prefix: string, path: string): number {
  // PathPrefix matches whole segments: /foo matches /foo and /foo/bar, not /foobar; a trailing / is ignored.
  const trimmed = prefix.endsWith('/') && prefix.length > 1 ? prefix.slice(0, -1) : prefix;
  if (trimmed === '/') return 0;
  if (path === trimmed || (path.startsWith(trimmed) && path.charCodeAt(trimmed.length) === 47 /* / */)) return trimmed.length;
  return -1;
}

function pathMatches(entry: RouteEntry, path: string): boolean {
  if (entry.pathType === 'EXACT') return path === entry.path;
  if (entry.pathType === 'REGULAR_EXPRESSION') return entry.pathRegex!.testExact(path);
  return prefixMatchLength(entry.path, path) >= 0;
}

function valueMatches(match: ValueMatch, value: string | undefined): boolean {
  if (value === undefined) return false;
  return match.regex ? match.regex.testExact(value) : value === match.exact;
}

function headerValue(headers: http.IncomingHttpHeaders, name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value.join(',') : value;
}

/**
 * The first entry that fits the request, or undefined (404). `query` is the raw query string (parsed only when an
 * entry matches on query parameters); `method` defaults to GET for callers without one. `headers` may be a function
 * that makes them (HTTP/1.1's lean path builds its map only when an entry matches on headers).
 */
export function matchRoute(entries: readonly RouteEntry[], port: number, path: string, headers: http.IncomingHttpHeaders | (() => http.IncomingHttpHeaders), method = 'GET', query = ''): RouteEntry | undefined {
  let params: URLSearchParams | undefined;
  let map = typeof headers === 'function' ? undefined : headers;
  entries: for (const entry of entries) {
    if (entry.port !== 0 && entry.port !== port) continue;
    if (!pathMatches(entry, path)) continue;
    if (entry.method !== '' && entry.method !== method) continue;
    if (entry.headers.length > 0 || entry.withoutHeaders) map ??= (headers as () => http.IncomingHttpHeaders)();
    for (const header of entry.headers) if (!valueMatches(header, headerValue(map!, header.name))) continue entries;
    if (entry.withoutHeaders) for (const header of entry.withoutHeaders) if (valueMatches(header, headerValue(map!, header.name))) continue entries;
    if (entry.queryParams.length > 0) {
      params ??= new URLSearchParams(query);
      for (const param of entry.queryParams) if (!valueMatches(param, params.get(param.name) ?? undefined)) continue entries;
    }
    return entry;
  }
  return undefined;
}

/** A backend by weight; undefined when the entry has none (every backendRef invalid, or all weights 0). */
export function pickBackend(entry: RouteEntry, random: () => number = Math.random): RouteBackend | undefined {
  if (entry.totalWeight <= 0) return undefined;
  let point = random() * entry.totalWeight;
  for (const backend of entry.backends) {
    point -= backend.weight;
    if (point < 0) return backend;
  }
  return entry.backends[entry.backends.length - 1];
}
