/**
 * Request and response heads of HTTP/1.1 (RFC 9112 sections 3 and 4) parsed from the bytes as they arrive: the end
 * of the head found by the engine (`Buffer.indexOf`), the head decoded once as latin1, the start line checked as
 * Node's llhttp checks it (a method Node knows, one space, a request-target of visible ASCII, one space,
 * HTTP/0.9, 1.0, 1.1 or 2.0; a status line `HTTP/1.x NNN reason`), then the fields (head-fields.ts). Leading empty
 * lines before a request line are skipped, as llhttp does.
 *
 * Owns: start-line syntax and head size. Must not know about: what is done with the request, bodies, sockets.
 * Never throws on a peer's bytes: an Http1Error is returned.
 */
import { METHODS } from 'node:http';
import { Http1Error } from './errors.ts';
import { FIELD_HOST, MAX_HEAD_BYTES, parseFields, type FieldFacts } from './head-fields.ts';

const KNOWN_METHODS: ReadonlySet<string> = new Set(METHODS);
const HEAD_END = Buffer.from('\r\n\r\n', 'latin1');

export interface RequestHead extends FieldFacts {
  method: string;
  /** The request-target as sent. */
  url: string;
  /** '1.1', '1.0', '0.9' or '2.0' (llhttp accepts these; the lean path serves 1.1 and hands the rest to Node). */
  httpVersion: string;
  /** The bytes the head took, leading empty lines included. */
  size: number;
}

export interface ResponseHead extends FieldFacts {
  status: number;
  /** 1 for HTTP/1.1, 0 for HTTP/1.0. */
  minorVersion: number;
  size: number;
}

/** Where the head starting at `start` ends (the index after its CRLF CRLF), 0 when not there yet, or an error. */
function headEnd(bytes: Buffer, start: number, end: number): number | Http1Error {
  const found = bytes.indexOf(HEAD_END, start);
  if (found < 0 || found + 4 > end) {
    if (end - start > MAX_HEAD_BYTES) return new Http1Error('HTTP1_HEAD_TOO_LARGE', `a head over ${MAX_HEAD_BYTES} bytes`);
    // A bare LF or CR would hide the head's end: refused now rather than waited on.
    for (let index = start; index < end; index++) {
      const code = bytes[index];
      if ((code === 0x0a && (index === start || bytes[index - 1] !== 0x0d)) || (code === 0x0d && index + 1 < end && bytes[index + 1] !== 0x0a)) return new Http1Error('HTTP1_BAD_LINE_ENDING', 'a bare CR or LF in the head');
    }
    return 0;
  }
  if (found + 4 - start > MAX_HEAD_BYTES) return new Http1Error('HTTP1_HEAD_TOO_LARGE', `a head over ${MAX_HEAD_BYTES} bytes`);
  return found + 4;
}

/** The version of a request line whose rest head[at, lineEnd) is `HTTP/x.y`, read in place (no slice): one of the four llhttp takes. */
function versionAt(head: string, at: number, lineEnd: number): string | undefined {
  if (lineEnd - at !== 8 || !head.startsWith('HTTP/', at) || head.charCodeAt(at + 6) !== 0x2e) return undefined;
  const major = head.charCodeAt(at + 5);
  const minor = head.charCodeAt(at + 7);
  if (major === 0x31) return minor === 0x31 ? '1.1' : minor === 0x30 ? '1.0' : undefined;
  if (major === 0x30) return minor === 0x39 ? '0.9' : undefined;
  if (major === 0x32) return minor === 0x30 ? '2.0' : undefined;
  return undefined;
}

/** The request head at bytes[start, end): the head, undefined while incomplete, or why it is refused. */
export function parseRequestHead(bytes: Buffer, start: number, end: number): RequestHead | Http1Error | undefined {
  let from = start;
  while (from + 1 < end && bytes[from] === 0x0d && bytes[from + 1] === 0x0a) from += 2;
  const after = headEnd(bytes, from, end);
  if (after === 0) return undefined;
  if (typeof after !== 'number') return after;
  const head = bytes.toString('latin1', from, after - 4);
  let lineEnd = head.indexOf('\r\n');
  if (lineEnd < 0) lineEnd = head.length;
  const methodEnd = head.indexOf(' ');
  if (methodEnd <= 0 || methodEnd > lineEnd) return new Http1Error('HTTP1_BAD_REQUEST_LINE', 'a request line without a method');
  const method = head.slice(0, methodEnd);
  if (!KNOWN_METHODS.has(method)) return new Http1Error('HTTP1_BAD_REQUEST_LINE', `method ${JSON.stringify(method.slice(0, 32))} is not one Node's parser knows`);
  const targetEnd = head.indexOf(' ', methodEnd + 1);
  if (targetEnd < 0 || targetEnd > lineEnd || targetEnd === methodEnd + 1) return new Http1Error('HTTP1_BAD_REQUEST_LINE', 'a request line without one space between method, target and version');
  for (let index = methodEnd + 1; index < targetEnd; index++) {
    const code = head.charCodeAt(index);
    if (code <= 0x20 || code >= 0x7f) return new Http1Error(code === 0x0d || code === 0x0a ? 'HTTP1_BAD_LINE_ENDING' : 'HTTP1_BAD_REQUEST_LINE', `character 0x${code.toString(16)} in the request-target`);
  }
  const httpVersion = versionAt(head, targetEnd + 1, lineEnd);
  if (httpVersion === undefined) return new Http1Error('HTTP1_BAD_REQUEST_LINE', `version ${JSON.stringify(head.slice(targetEnd + 1, Math.min(lineEnd, targetEnd + 20)))} is not HTTP/1.1, 1.0, 0.9 or 2.0`);
  const facts = parseFields(head, Math.min(lineEnd + 2, head.length));
  if (facts instanceof Http1Error) return facts;
  if (httpVersion === '1.1' && !facts.has(FIELD_HOST)) return new Http1Error('HTTP1_MISSING_HOST', 'an HTTP/1.1 request without Host');
  const result = facts as RequestHead;
  result.method = method;
  result.url = head.slice(methodEnd + 1, targetEnd);
  result.httpVersion = httpVersion;
  result.size = after - start;
  return result;
}

/** The response head at bytes[start, end): the head, undefined while incomplete, or why it is refused. */
export function parseResponseHead(bytes: Buffer, start: number, end: number): ResponseHead | Http1Error | undefined {
  const after = headEnd(bytes, start, end);
  if (after === 0) return undefined;
  if (typeof after !== 'number') return after;
  const head = bytes.toString('latin1', start, after - 4);
  let lineEnd = head.indexOf('\r\n');
  if (lineEnd < 0) lineEnd = head.length;
  // HTTP/1.x SP 3DIGIT [SP reason]
  const minor = head.charCodeAt(7) - 0x30;
  const okVersion = head.startsWith('HTTP/1.') && (minor === 0 || minor === 1) && head.charCodeAt(8) === 0x20;
  // Three digits, the first not 0, read in place.
  const hundreds = head.charCodeAt(9) - 0x30;
  const tens = head.charCodeAt(10) - 0x30;
  const units = head.charCodeAt(11) - 0x30;
  const status = hundreds * 100 + tens * 10 + units;
  const okStatus = lineEnd >= 12 && hundreds >= 1 && hundreds <= 9 && tens >= 0 && tens <= 9 && units >= 0 && units <= 9 && (lineEnd === 12 || head.charCodeAt(12) === 0x20);
  if (!okVersion || !okStatus) return new Http1Error('HTTP1_BAD_STATUS_LINE', `status line ${JSON.stringify(head.slice(0, Math.min(lineEnd, 40)))}`);
  for (let index = 13; index < lineEnd; index++) {
    const code = head.charCodeAt(index);
    if ((code < 0x20 && code !== 0x09) || code === 0x7f) return new Http1Error(code === 0x0d || code === 0x0a ? 'HTTP1_BAD_LINE_ENDING' : 'HTTP1_BAD_STATUS_LINE', `character 0x${code.toString(16)} in the reason phrase`);
  }
  const facts = parseFields(head, Math.min(lineEnd + 2, head.length));
  if (facts instanceof Http1Error) return facts;
  const result = facts as ResponseHead;
  result.status = status;
  result.minorVersion = minor;
  result.size = after - start;
  return result;
}
