/**
 * Which route entry a request matches and which weighted backend it goes to.
 *
 * Owns: the match (port, path Exact/PathPrefix by path segment as the Gateway API defines it or an RE2 expression
 * over the whole path, exact or RE2 header values;
 * the entries arrive in precedence order, so the first fit wins) and the weighted pick.
 * Must not know about: sockets, xDS, endpoints.
 */
import type http from 'node:http';
import type { RouteEntry } from './route-table.ts';

/** The path without its query string. */
export function pathOf(url: string): string {
  const query = url.indexOf('?');
  return query < 0 ? url : url.slice(0, query);
}

function pathMatches(entry: RouteEntry, path: string): boolean {
  if (entry.pathType === 'EXACT') return path === entry.path;
  if (entry.pathRegex) return entry.pathRegex.matches(path);
  // PathPrefix matches whole segments: /foo matches /foo and /foo/bar, not /foobar.
  const prefix = entry.path.endsWith('/') && entry.path.length > 1 ? entry.path.slice(0, -1) : entry.path;
  if (prefix === '/') return true;
  return path === prefix || (path.startsWith(prefix) && path.charCodeAt(prefix.length) === 47 /* / */);
}

function headerValue(headers: http.IncomingHttpHeaders, name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value.join(',') : value;
}

export function matchRoute(entries: readonly RouteEntry[], port: number, path: string, headers: http.IncomingHttpHeaders): RouteEntry | undefined {
  for (const entry of entries) {
    if (entry.port !== 0 && entry.port !== port) continue;
    if (!pathMatches(entry, path)) continue;
    let ok = true;
    for (const header of entry.headers) {
      const value = headerValue(headers, header.name);
      if (header.regex ? value === undefined || !header.regex.matches(value) : value !== header.exact) {
        ok = false;
        break;
      }
    }
    if (ok) return entry;
  }
  return undefined;
}

/** A backend by weight; undefined when the entry has none (every backendRef invalid, or all weights 0). */
export function pickBackend(entry: RouteEntry, random: () => number = Math.random): RouteEntry['backends'][number] | undefined {
  if (entry.totalWeight <= 0) return undefined;
  let point = random() * entry.totalWeight;
  for (const backend of entry.backends) {
    point -= backend.weight;
    if (point < 0) return backend;
  }
  return entry.backends[entry.backends.length - 1];
}
