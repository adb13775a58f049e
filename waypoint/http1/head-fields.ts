/**
 * The header section of an HTTP/1.1 head (RFC 9112 section 5), shared by the request and response parsers: each
 * field line checked as Node's llhttp checks it (token name, no whitespace before the colon, no obs-fold, no control
 * character but HTAB in the value, CRLF only), names lowercased once, and the fields gathered into Node's
 * `IncomingHttpHeaders` shape with Node's rules for repeats (the first of Host, Content-Type, Authorization, ...
 * wins; `set-cookie` is a list; `cookie` joined with `; `; the rest joined with `, `), so L7 policy and routes see
 * the same values on both HTTP/1.1 paths. The framing fields (Content-Length, Transfer-Encoding, Connection, Upgrade,
 * Expect) are read on the way.
 *
 * Owns: field-line syntax and the framing facts. Must not know about: request or status lines, bodies, sockets.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { Http1Error } from './errors.ts';

/** Node's default --max-http-header-size: the whole head, start line included. */
export const MAX_HEAD_BYTES = 16 * 1024;
/** Field lines in one head (Envoy's default max_headers_count). */
export const MAX_HEADERS = 100;

/** Node's shape for received fields, so routes, policy and filters take them as they take Node's. */
export type HeaderMap = IncomingHttpHeaders;

/** The framing facts of a head, read while its fields are gathered. */
export interface FieldFacts {
  headers: HeaderMap;
  /** -1: no Content-Length. */
  contentLength: number;
  /** Transfer-Encoding's last coding is chunked. */
  chunked: boolean;
  /** A Transfer-Encoding was given (chunked or not). */
  transferEncoding: boolean;
  connectionClose: boolean;
  connectionKeepAlive: boolean;
  /** An Upgrade field was given. */
  upgrade: boolean;
  /** The Expect field's value ('' when absent). */
  expect: string;
}

/** RFC 9110 tchar, as a table by character code. */
const TCHAR = new Uint8Array(128);
for (let code = 0x30; code <= 0x39; code++) TCHAR[code] = 1;
for (let code = 0x41; code <= 0x5a; code++) TCHAR[code] = 1;
for (let code = 0x61; code <= 0x7a; code++) TCHAR[code] = 1;
for (const char of "!#$%&'*+-.^_`|~") TCHAR[char.charCodeAt(0)] = 1;

export function isToken(text: string, start: number, end: number): boolean {
  if (start >= end) return false;
  for (let index = start; index < end; index++) {
    const code = text.charCodeAt(index);
    if (code >= 128 || TCHAR[code] === 0) return false;
  }
  return true;
}

/** Fields whose repeats Node drops (the first one stays): _http_incoming.js matchKnownFields. */
const FIRST_WINS: ReadonlySet<string> = new Set([
  'content-type', 'content-length', 'user-agent', 'referer', 'host', 'authorization', 'proxy-authorization', 'if-modified-since',
  'if-unmodified-since', 'from', 'location', 'max-forwards', 'retry-after', 'etag', 'last-modified', 'server', 'age', 'expires',
]);

function addField(fields: HeaderMap, name: string, value: string): void {
  const headers = fields as Record<string, string | string[]>;
  const existing = headers[name];
  if (existing === undefined) {
    headers[name] = name === 'set-cookie' ? [value] : value;
  } else if (name === 'set-cookie') {
    (existing as string[]).push(value);
  } else if (!FIRST_WINS.has(name)) {
    headers[name] = `${existing as string}${name === 'cookie' ? '; ' : ', '}${value}`;
  }
}

/** Whether the comma-separated `list` holds `token` (case-insensitive). */
function listHas(list: string, token: string): boolean {
  let start = 0;
  while (start <= list.length) {
    let end = list.indexOf(',', start);
    if (end < 0) end = list.length;
    if (list.slice(start, end).trim().toLowerCase() === token) return true;
    start = end + 1;
  }
  return false;
}

/**
 * Parses the field lines of `head` (a head decoded as latin1, without its final CRLF CRLF) from `start`, the index
 * after the start line's CRLF (or head.length when there are none). An Http1Error for the first rule broken.
 */
export function parseFields(head: string, start: number): FieldFacts | Http1Error {
  const facts: FieldFacts = { headers: {}, contentLength: -1, chunked: false, transferEncoding: false, connectionClose: false, connectionKeepAlive: false, upgrade: false, expect: '' };
  let count = 0;
  let lineStart = start;
  while (lineStart < head.length) {
    let lineEnd = head.indexOf('\r\n', lineStart);
    if (lineEnd < 0) lineEnd = head.length;
    if (++count > MAX_HEADERS) return new Http1Error('HTTP1_HEAD_TOO_LARGE', `more than ${MAX_HEADERS} header fields`);
    const colon = head.indexOf(':', lineStart);
    if (colon < 0 || colon > lineEnd) {
      const first = head.charCodeAt(lineStart);
      return new Http1Error('HTTP1_BAD_HEADER_NAME', first === 0x20 || first === 0x09 ? 'obs-fold (a field line continued on the next line) is not accepted' : 'a header line without a colon');
    }
    if (!isToken(head, lineStart, colon)) {
      const before = head.charCodeAt(colon - 1);
      return new Http1Error('HTTP1_BAD_HEADER_NAME', colon === lineStart ? 'an empty header name' : before === 0x20 || before === 0x09 ? 'whitespace before the colon of a header' : 'a header name with a character that is not a token character');
    }
    let valueStart = colon + 1;
    let valueEnd = lineEnd;
    for (let index = valueStart; index < valueEnd; index++) {
      const code = head.charCodeAt(index);
      if ((code < 0x20 && code !== 0x09) || code === 0x7f) {
        if (code === 0x0d || code === 0x0a) return new Http1Error('HTTP1_BAD_LINE_ENDING', 'a bare CR or LF in a header value');
        return new Http1Error('HTTP1_BAD_HEADER_VALUE', `control character 0x${code.toString(16)} in a header value`);
      }
    }
    while (valueStart < valueEnd && (head.charCodeAt(valueStart) === 0x20 || head.charCodeAt(valueStart) === 0x09)) valueStart++;
    while (valueEnd > valueStart && (head.charCodeAt(valueEnd - 1) === 0x20 || head.charCodeAt(valueEnd - 1) === 0x09)) valueEnd--;
    const name = head.slice(lineStart, colon).toLowerCase();
    const value = head.slice(valueStart, valueEnd);
    const broken = noteFraming(facts, name, value);
    if (broken !== undefined) return broken;
    addField(facts.headers, name, value);
    lineStart = lineEnd + 2;
  }
  if (facts.transferEncoding && facts.contentLength >= 0) return new Http1Error('HTTP1_BAD_CONTENT_LENGTH', 'both Content-Length and Transfer-Encoding');
  return facts;
}

function noteFraming(facts: FieldFacts, name: string, value: string): Http1Error | undefined {
  switch (name) {
    case 'content-length': {
      if (facts.contentLength >= 0) return new Http1Error('HTTP1_BAD_CONTENT_LENGTH', 'Content-Length given twice');
      if (value.length === 0 || value.length > 15) return new Http1Error('HTTP1_BAD_CONTENT_LENGTH', `Content-Length ${JSON.stringify(value)} is not a length`);
      for (let index = 0; index < value.length; index++) {
        const code = value.charCodeAt(index);
        if (code < 0x30 || code > 0x39) return new Http1Error('HTTP1_BAD_CONTENT_LENGTH', `Content-Length ${JSON.stringify(value)} is not a length`);
      }
      facts.contentLength = Number(value);
      return undefined;
    }
    case 'transfer-encoding': {
      if (facts.transferEncoding) return new Http1Error('HTTP1_BAD_TRANSFER_ENCODING', 'Transfer-Encoding given twice');
      facts.transferEncoding = true;
      const comma = value.lastIndexOf(',');
      const last = value.slice(comma + 1).trim().toLowerCase();
      // chunked must be the last coding, and only there (RFC 9112 6.1).
      facts.chunked = last === 'chunked' && (comma < 0 || !listHas(value.slice(0, comma), 'chunked'));
      if (!facts.chunked) return new Http1Error('HTTP1_BAD_TRANSFER_ENCODING', `Transfer-Encoding ${JSON.stringify(value)} does not end with chunked`);
      return undefined;
    }
    case 'connection':
      if (listHas(value, 'close')) facts.connectionClose = true;
      if (listHas(value, 'keep-alive')) facts.connectionKeepAlive = true;
      return undefined;
    case 'upgrade':
      facts.upgrade = true;
      return undefined;
    case 'expect':
      facts.expect = value;
      return undefined;
    default:
      return undefined;
  }
}
