/**
 * The header section of an HTTP/1.1 head (RFC 9112 section 5), shared by the request and response parsers: each
 * field line checked as Node's llhttp checks it (token name, no whitespace before the colon, no obs-fold, no control
 * character but HTAB in the value, CRLF only), known names (KNOWN_NAMES) matched in place against interned constants,
 * and the fields kept as positions in the head's text (FieldFacts). Node's `IncomingHttpHeaders` shape, with Node's
 * rules for repeats (the first of Host, Content-Type, Authorization, ... wins; `set-cookie` is a list; `cookie`
 * joined with `; `; the rest joined with `, `), is built only when something reads it, so L7 policy and routes see
 * the same values on both HTTP/1.1 paths; a head nothing read is forwarded from its own lines. The framing fields
 * (Content-Length, Transfer-Encoding, Connection, Upgrade, Expect) are read on the way.
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

/**
 * Field names the parser knows, matched in place in the head's text (no slice, no lowercasing): a name's id is its
 * index here. The first FIRST_WINS_COUNT are the fields whose repeats Node drops (the first one stays:
 * _http_incoming.js matchKnownFields); the rest are read by the framing, forwarding or tracing code.
 */
const KNOWN_NAMES = [
  '', 'host', 'content-length', 'content-type', 'user-agent', 'referer', 'authorization', 'proxy-authorization', 'if-modified-since', 'if-unmodified-since',
  'from', 'location', 'max-forwards', 'retry-after', 'etag', 'last-modified', 'server', 'age', 'expires',
  // Not first-wins:
  'transfer-encoding', 'connection', 'upgrade', 'expect', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'proxy-authenticate', 'x-request-id', 'traceparent',
  'tracestate', 'grpc-status', 'set-cookie', 'cookie',
] as const;
/** Ids 1..FIRST_WINS_COUNT are first-wins (each a bit of FieldFacts' seen mask). */
const FIRST_WINS_COUNT = 18;

/** A known field name's id (its index in KNOWN_NAMES). */
export type KnownField = number;
export const FIELD_HOST: KnownField = 1;
export const FIELD_CONTENT_LENGTH: KnownField = 2;
export const FIELD_TRANSFER_ENCODING: KnownField = KNOWN_NAMES.indexOf('transfer-encoding');
export const FIELD_CONNECTION: KnownField = KNOWN_NAMES.indexOf('connection');
export const FIELD_UPGRADE: KnownField = KNOWN_NAMES.indexOf('upgrade');
export const FIELD_EXPECT: KnownField = KNOWN_NAMES.indexOf('expect');
export const FIELD_KEEP_ALIVE: KnownField = KNOWN_NAMES.indexOf('keep-alive');
export const FIELD_X_REQUEST_ID: KnownField = KNOWN_NAMES.indexOf('x-request-id');
export const FIELD_TRACEPARENT: KnownField = KNOWN_NAMES.indexOf('traceparent');
export const FIELD_TRACESTATE: KnownField = KNOWN_NAMES.indexOf('tracestate');
export const FIELD_GRPC_STATUS: KnownField = KNOWN_NAMES.indexOf('grpc-status');
const FIELD_SET_COOKIE: KnownField = KNOWN_NAMES.indexOf('set-cookie');
const FIELD_COOKIE: KnownField = KNOWN_NAMES.indexOf('cookie');

/** What a forwarded head leaves out of the fields it was given, as bits per known name (FIELD_KINDS). */
export const SKIP_HOP_BY_HOP = 1;
export const SKIP_TRACE = 2;
/** Per known id, the SKIP_* groups it is in: hop-by-hop (RFC 9110 7.6.1, filters.ts's HOP_BY_HOP) and the trace fields the waypoint sets. */
const FIELD_KINDS = new Uint8Array(KNOWN_NAMES.length);
for (const name of ['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'trailer', 'proxy-authorization', 'proxy-authenticate'] as const) FIELD_KINDS[KNOWN_NAMES.indexOf(name)] = SKIP_HOP_BY_HOP;
for (const name of ['x-request-id', 'traceparent', 'tracestate'] as const) FIELD_KINDS[KNOWN_NAMES.indexOf(name)] = SKIP_TRACE;

/** Known ids by name length, for the in-place match. */
const KNOWN_BY_LENGTH: number[][] = [];
for (let id = 1; id < KNOWN_NAMES.length; id++) (KNOWN_BY_LENGTH[KNOWN_NAMES[id]!.length] ??= []).push(id);
for (let length = 0; length < KNOWN_BY_LENGTH.length; length++) KNOWN_BY_LENGTH[length] ??= [];

/**
 * The id of the (token) name text[start, end) among KNOWN_NAMES, case-insensitively; 0 when unknown. The known names
 * are lowercase letters and '-', so `code | 0x20` folds the case: no other token character maps onto them.
 */
function knownFieldId(text: string, start: number, end: number): KnownField {
  const length = end - start;
  if (length >= KNOWN_BY_LENGTH.length) return 0;
  const candidates = KNOWN_BY_LENGTH[length]!;
  for (let index = 0; index < candidates.length; index++) {
    const id = candidates[index]!;
    const name = KNOWN_NAMES[id]!;
    let at = 0;
    while (at < length && (text.charCodeAt(start + at) | 0x20) === name.charCodeAt(at)) at++;
    if (at === length) return id;
  }
  return 0;
}

/** Per field line in FieldFacts.lines: where its name starts, its colon, its value's start and end, its line's end, its known id. */
const LINE_STRIDE = 6;
/**
 * parseFields' positions while it parses (one head at a time, synchronously; each below 2^16: heads are at most
 * MAX_HEAD_BYTES), kept at the end as a string of one UTF-16 code unit per number (FieldFacts.lines): 16 bytes and two
 * per number on V8's heap, where an array of the head's size took 32, 16 and eight per number (about 0.6 KB per
 * request for its two heads, session s12's figures; pushed into a fresh array before that, 0.65 KB per head).
 */
const parsing = new Uint16Array((MAX_HEADERS + 1) * LINE_STRIDE);
const parsingBytes = Buffer.from(parsing.buffer, parsing.byteOffset, parsing.byteLength);

/**
 * The fields of a head, kept as positions in its text, and the framing facts read while they were checked. The map
 * in Node's shape (`headers`) is built the first time something reads it (policy, a route's header match, a header
 * modifier); a head nothing read is forwarded from its own lines (`fieldText`), and the fields the proxy needs
 * (Host, x-request-id, traceparent, ...) are read in place (`value`).
 */
export class FieldFacts {
  /** The head's text (latin1, without its final CRLF CRLF), start line included. */
  readonly text: string;
  /** LINE_STRIDE numbers per field line, in order, each as one UTF-16 code unit (read with charCodeAt; set once by parseFields). */
  lines = '';
  /** -1: no Content-Length. */
  contentLength = -1;
  /** Transfer-Encoding's last coding is chunked. */
  chunked = false;
  /** A Transfer-Encoding was given (chunked or not). */
  transferEncoding = false;
  connectionClose = false;
  connectionKeepAlive = false;
  /** An Upgrade field was given. */
  upgrade = false;
  /** The Expect field's value ('' when absent). */
  expect = '';
  /** Bit id set: a first-wins field (1..FIRST_WINS_COUNT) was seen. */
  firstWinsSeen = 0;
  /** A first-wins field came twice: only its first is passed on, so the head is forwarded from the map, never its lines. */
  firstWinsRepeated = false;
  private headerMap: HeaderMap | undefined;

  constructor(text: string) {
    this.text = text;
  }

  /** The fields in Node's shape (built on first read; whoever reads it may change it, and the head then goes from it). */
  get headers(): HeaderMap {
    return (this.headerMap ??= this.map());
  }

  /** Whether the map was built: something read (and may have changed) the fields, so they go on from the map. */
  get mapRead(): boolean {
    return this.headerMap !== undefined;
  }

  /** Whether a first-wins field came (no scan). */
  has(id: KnownField): boolean {
    return id <= FIRST_WINS_COUNT ? (this.firstWinsSeen & (1 << id)) !== 0 : this.value(id) !== undefined;
  }

  /**
   * The value of known field `id` as the map holds it (undefined when absent; a repeat joined as the map joins it),
   * read from the lines while the map was not built.
   */
  value(id: KnownField): string | undefined {
    if (this.headerMap !== undefined) {
      const value = (this.headerMap as Record<string, string | string[] | undefined>)[KNOWN_NAMES[id]!];
      return Array.isArray(value) ? value.join(', ') : value;
    }
    const lines = this.lines;
    let found = -1;
    for (let at = 0; at < lines.length; at += LINE_STRIDE) {
      if (lines.charCodeAt(at + 5) !== id) continue;
      if (id <= FIRST_WINS_COUNT) {
        found = at;
        break;
      }
      // A repeat: joined as the map joins it.
      if (found >= 0) return this.joined(id);
      found = at;
    }
    return found < 0 ? undefined : this.text.slice(lines.charCodeAt(found + 2), lines.charCodeAt(found + 3));
  }

  private joined(id: KnownField): string | undefined {
    const value = (this.headers as Record<string, string | string[] | undefined>)[KNOWN_NAMES[id]!];
    return Array.isArray(value) ? value.join(', ') : value;
  }

  /**
   * The field lines as received (each ending CRLF), without those in the SKIP_* groups `skip`: runs of lines sliced
   * from the head's text. Only for a head whose map was not read (mapRead false) and with no first-wins repeat.
   */
  fieldText(skip: number): string {
    const lines = this.lines;
    const text = this.text;
    if (lines.length === 0) return '';
    let result = '';
    let runStart = lines.charCodeAt(0);
    for (let at = 0; at < lines.length; at += LINE_STRIDE) {
      if ((FIELD_KINDS[lines.charCodeAt(at + 5)]! & skip) === 0) continue;
      const lineStart = lines.charCodeAt(at);
      if (lineStart > runStart) result += text.slice(runStart, lineStart);
      runStart = lines.charCodeAt(at + 4) + 2;
    }
    if (runStart < text.length) result += `${text.slice(runStart)}\r\n`;
    return result;
  }

  /** The byte length of fieldText(skip), counted without building it. */
  fieldBytes(skip: number): number {
    const lines = this.lines;
    let bytes = 0;
    for (let index = 0; index < lines.length; index += LINE_STRIDE) {
      if ((FIELD_KINDS[lines.charCodeAt(index + 5)]! & skip) === 0) bytes += lines.charCodeAt(index + 4) + 2 - lines.charCodeAt(index);
    }
    return bytes;
  }

  /**
   * fieldText(skip) written as latin1 bytes into `out` at `offset` (room for fieldBytes(skip) there); returns the
   * offset after it. The kept lines' characters are copied from the head's text one by one: no slice, string or
   * flatten per head (the forwarded heads' text was about 1 KB of V8 heap per request). Same lines, same checks as fieldText: only for a head whose map was not read, with no first-wins repeat.
   */
  writeFields(skip: number, out: Buffer, offset: number): number {
    const lines = this.lines;
    const text = this.text;
    if (lines.length === 0) return offset;
    let at = offset;
    let runStart = lines.charCodeAt(0);
    for (let index = 0; index < lines.length; index += LINE_STRIDE) {
      if ((FIELD_KINDS[lines.charCodeAt(index + 5)]! & skip) === 0) continue;
      const lineStart = lines.charCodeAt(index);
      for (let char = runStart; char < lineStart; char++) out[at++] = text.charCodeAt(char);
      runStart = lines.charCodeAt(index + 4) + 2;
    }
    if (runStart < text.length) {
      for (let char = runStart; char < text.length; char++) out[at++] = text.charCodeAt(char);
      out[at++] = 0x0d;
      out[at++] = 0x0a;
    }
    return at;
  }

  /** Where the start line ends in the text (its CR, or the text's end when the head has no field lines). */
  get startLineEnd(): number {
    const lines = this.lines;
    return lines.length === 0 ? this.text.length : lines.charCodeAt(0) - 2;
  }

  /**
   * The whole head as received, its start line and the field lines but those in the SKIP_* groups `skip`, each line
   * ending CRLF, written as latin1 at out[offset]: the start line followed by writeFields(skip)'s bytes, by one native
   * write of the text and a native move (copyWithin) per run of left-out lines, instead of a loop per character.
   * Needs room for the whole text and a CRLF there (out.length - offset >= text.length + 2): the bytes between the
   * returned offset and that end are overwritten as scratch, for the caller to write over. Returns -1, having written
   * nothing, when that room is not there. Same lines, same conditions as writeFields.
   */
  writeHead(skip: number, out: Buffer, offset: number): number {
    const text = this.text;
    const length = text.length;
    if (out.length - offset < length + 2) return -1;
    out.write(text, offset, length, 'latin1');
    let end = offset + length;
    out[end++] = 0x0d;
    out[end++] = 0x0a;
    // The left-out lines closed up from the last one back, so the positions before them still hold; adjacent ones in one move.
    const lines = this.lines;
    let cutTo = -1;
    let cutFrom = -1;
    for (let index = lines.length - LINE_STRIDE; index >= 0; index -= LINE_STRIDE) {
      if ((FIELD_KINDS[lines.charCodeAt(index + 5)]! & skip) === 0) continue;
      const lineStart = offset + lines.charCodeAt(index);
      const lineAfter = offset + lines.charCodeAt(index + 4) + 2;
      if (lineAfter === cutFrom) {
        cutFrom = lineStart;
        continue;
      }
      if (cutTo >= 0) {
        out.copyWithin(cutFrom, cutTo, end);
        end -= cutTo - cutFrom;
      }
      cutFrom = lineStart;
      cutTo = lineAfter;
    }
    if (cutTo >= 0) {
      out.copyWithin(cutFrom, cutTo, end);
      end -= cutTo - cutFrom;
    }
    return end;
  }

  private map(): HeaderMap {
    const headers: HeaderMap = {};
    const lines = this.lines;
    const text = this.text;
    for (let at = 0; at < lines.length; at += LINE_STRIDE) {
      const id = lines.charCodeAt(at + 5);
      addField(headers, id, id === 0 ? text.slice(lines.charCodeAt(at), lines.charCodeAt(at + 1)).toLowerCase() : KNOWN_NAMES[id]!, text.slice(lines.charCodeAt(at + 2), lines.charCodeAt(at + 3)));
    }
    return headers;
  }
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

/** Adds one field to a map with Node's rules for repeats (`id`: its known id, 0 when unknown). */
function addField(fields: HeaderMap, id: KnownField, name: string, value: string): void {
  const headers = fields as Record<string, string | string[]>;
  const existing = headers[name];
  if (existing === undefined) {
    headers[name] = id === FIELD_SET_COOKIE ? [value] : value;
  } else if (id === FIELD_SET_COOKIE) {
    (existing as string[]).push(value);
  } else if (id === 0 || id > FIRST_WINS_COUNT) {
    headers[name] = `${existing as string}${id === FIELD_COOKIE ? '; ' : ', '}${value}`;
  }
}

/** Whitespace String.prototype.trim removes that a checked field value (latin1, no control character but HTAB) can hold. */
function isTrimmed(code: number): boolean {
  return code === 0x20 || code === 0x09 || code === 0xa0;
}

/**
 * Whether the comma-separated list text[start, end) holds `token` (lowercase ASCII), each element trimmed and compared
 * case-insensitively as listHas does, read in place: no slice, trim or lowercase string per element (Connection is
 * in nearly every request and response head).
 */
function listHasIn(text: string, start: number, end: number, token: string): boolean {
  const length = token.length;
  let at = start;
  while (at <= end) {
    let elementEnd = text.indexOf(',', at);
    if (elementEnd < 0 || elementEnd > end) elementEnd = end;
    let from = at;
    let to = elementEnd;
    while (from < to && isTrimmed(text.charCodeAt(from))) from++;
    while (to > from && isTrimmed(text.charCodeAt(to - 1))) to--;
    if (to - from === length) {
      let index = 0;
      for (; index < length; index++) {
        const code = text.charCodeAt(from + index);
        if ((code >= 0x41 && code <= 0x5a ? code | 0x20 : code) !== token.charCodeAt(index)) break;
      }
      if (index === length) return true;
    }
    at = elementEnd + 1;
  }
  return false;
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
  const facts = new FieldFacts(head);
  const lines = parsing;
  let used = 0;
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
    const id = knownFieldId(head, lineStart, colon);
    if (id !== 0) {
      if (id <= FIRST_WINS_COUNT) {
        const bit = 1 << id;
        if ((facts.firstWinsSeen & bit) !== 0) facts.firstWinsRepeated = true;
        facts.firstWinsSeen |= bit;
      }
      const broken = noteFraming(facts, id, head, valueStart, valueEnd);
      if (broken !== undefined) return broken;
    }
    lines[used] = lineStart;
    lines[used + 1] = colon;
    lines[used + 2] = valueStart;
    lines[used + 3] = valueEnd;
    lines[used + 4] = lineEnd;
    lines[used + 5] = id;
    used += LINE_STRIDE;
    lineStart = lineEnd + 2;
  }
  if (facts.transferEncoding && facts.contentLength >= 0) return new Http1Error('HTTP1_BAD_CONTENT_LENGTH', 'both Content-Length and Transfer-Encoding');
  if (used > 0) facts.lines = parsingBytes.toString('utf16le', 0, used * 2);
  return facts;
}

/** Reads a framing field's value head[start, end) into `facts`; an Http1Error when it breaks a rule. */
function noteFraming(facts: FieldFacts, id: KnownField, head: string, start: number, end: number): Http1Error | undefined {
  switch (id) {
    case FIELD_CONTENT_LENGTH: {
      if (facts.contentLength >= 0) return new Http1Error('HTTP1_BAD_CONTENT_LENGTH', 'Content-Length given twice');
      if (end === start || end - start > 15) return new Http1Error('HTTP1_BAD_CONTENT_LENGTH', `Content-Length ${JSON.stringify(head.slice(start, end))} is not a length`);
      let length = 0;
      for (let index = start; index < end; index++) {
        const code = head.charCodeAt(index);
        if (code < 0x30 || code > 0x39) return new Http1Error('HTTP1_BAD_CONTENT_LENGTH', `Content-Length ${JSON.stringify(head.slice(start, end))} is not a length`);
        length = length * 10 + (code - 0x30);
      }
      facts.contentLength = length;
      return undefined;
    }
    case FIELD_TRANSFER_ENCODING: {
      if (facts.transferEncoding) return new Http1Error('HTTP1_BAD_TRANSFER_ENCODING', 'Transfer-Encoding given twice');
      facts.transferEncoding = true;
      const value = head.slice(start, end);
      const comma = value.lastIndexOf(',');
      const last = value.slice(comma + 1).trim().toLowerCase();
      // chunked must be the last coding, and only there (RFC 9112 6.1).
      facts.chunked = last === 'chunked' && (comma < 0 || !listHas(value.slice(0, comma), 'chunked'));
      if (!facts.chunked) return new Http1Error('HTTP1_BAD_TRANSFER_ENCODING', `Transfer-Encoding ${JSON.stringify(value)} does not end with chunked`);
      return undefined;
    }
    case FIELD_CONNECTION:
      if (listHasIn(head, start, end, 'close')) facts.connectionClose = true;
      if (listHasIn(head, start, end, 'keep-alive')) facts.connectionKeepAlive = true;
      return undefined;
    case FIELD_UPGRADE:
      facts.upgrade = true;
      return undefined;
    case FIELD_EXPECT:
      facts.expect = head.slice(start, end);
      return undefined;
    default:
      return undefined;
  }
}
