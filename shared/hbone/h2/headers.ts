/**
 * What makes a request or response header list well-formed in HTTP/2 (RFC 9113 section 8), with CONNECT's rules.
 *
 * Owns: pseudo-header rules (known ones only, each once, before regular fields), lower-case names, no
 * connection-specific fields, `:method` on every request, and for CONNECT (section 8.5) `:authority` and neither
 * `:scheme` nor `:path`; `:status` as three digits on every response. The lists are HPACK's flat
 * [name, value, name, value, ...] arrays.
 * Must not know about: HBONE's answers (405, 400...): a well-formed GET is well-formed here; the HBONE layer
 * decides what to answer it.
 */
import type { HeaderList } from './hpack.ts';

/** The request pseudo-headers, each with its bit in the mask of those seen (no Set per request). */
const REQUEST_PSEUDO = new Map([[':method', 1], [':scheme', 2], [':authority', 4], [':path', 8], [':protocol', 16]]);
const PROTOCOL_SEEN = 16;
const CONNECTION_SPECIFIC = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade']);

/** Why `name` cannot be a field name in HTTP/2, or undefined if it can (lower-case token characters only). */
function badName(name: string): string | undefined {
  if (name.length === 0) return 'an empty header name';
  for (let index = name.charCodeAt(0) === 0x3a ? 1 : 0; index < name.length; index++) {
    const code = name.charCodeAt(index);
    if (code >= 0x41 && code <= 0x5a) return `upper-case header name ${JSON.stringify(name)}`;
    if (code <= 0x20 || code >= 0x7f || code === 0x3a) return `invalid character in header name ${JSON.stringify(name)}`;
  }
  return undefined;
}

/** Why `value` cannot be a field value (NUL, CR, LF), or undefined if it can. */
function badValue(name: string, value: string): string | undefined {
  for (let index = 0; index < value.length; index++) {
    const code = value.charCodeAt(index);
    if (code === 0 || code === 0x0a || code === 0x0d) return `NUL, CR or LF in the value of ${JSON.stringify(name)}`;
  }
  return undefined;
}

/** Checks the regular (non-pseudo) fields from `from` on; returns the problem or undefined. */
function checkRegular(headers: HeaderList, from: number): string | undefined {
  for (let index = from; index < headers.length; index += 2) {
    const name = headers[index]!;
    if (name.charCodeAt(0) === 0x3a) return `pseudo-header ${name} after a regular header`;
    const problem = badName(name) ?? badValue(name, headers[index + 1]!);
    if (problem) return problem;
    if (CONNECTION_SPECIFIC.has(name)) return `connection-specific header ${name}`;
    if (name === 'te' && headers[index + 1] !== 'trailers') return 'te other than "trailers"';
  }
  return undefined;
}

/** Why a request's header list is malformed (a stream error PROTOCOL_ERROR), or undefined when it is not. */
export function requestHeadersProblem(headers: HeaderList): string | undefined {
  let index = 0;
  let method: string | undefined;
  let scheme = false;
  let path = false;
  let authority = false;
  let seen = 0;
  for (; index < headers.length && headers[index]!.charCodeAt(0) === 0x3a; index += 2) {
    const name = headers[index]!;
    const value = headers[index + 1]!;
    const bit = REQUEST_PSEUDO.get(name);
    if (bit === undefined) return `unknown pseudo-header ${name}`;
    if ((seen & bit) !== 0) return `${name} twice`;
    seen |= bit;
    const problem = badValue(name, value);
    if (problem) return problem;
    if (name === ':method') method = value;
    else if (name === ':scheme') scheme = true;
    else if (name === ':authority') authority = value.length > 0;
    else if (name === ':path') {
      if (value.length === 0) return 'empty :path';
      path = true;
    }
  }
  if (method === undefined) return 'no :method';
  if (method === 'CONNECT' && (seen & PROTOCOL_SEEN) === 0) {
    if (!authority) return 'CONNECT without :authority';
    if (scheme || path) return 'CONNECT with :scheme or :path';
  } else if (!scheme || !path) {
    return `${method} without :scheme and :path`;
  }
  return checkRegular(headers, index);
}

/**
 * A response's :status, or the reason its header list is malformed. The only pseudo-header allowed is :status.
 */
export function responseStatus(headers: HeaderList): number | string {
  let index = 0;
  let status: number | undefined;
  for (; index < headers.length && headers[index]!.charCodeAt(0) === 0x3a; index += 2) {
    const name = headers[index]!;
    if (name !== ':status') return `pseudo-header ${name} in a response`;
    if (status !== undefined) return ':status twice';
    const value = headers[index + 1]!;
    if (!/^[1-9][0-9][0-9]$/.test(value)) return `malformed :status ${JSON.stringify(value)}`;
    status = Number(value);
  }
  if (status === undefined) return 'no :status';
  const problem = checkRegular(headers, index);
  return problem ?? status;
}
