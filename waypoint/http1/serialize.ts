/**
 * HTTP/1.1 heads written as one latin1 string each: a request line or status line and the fields of a header
 * object (Node's OutgoingHttpHeaders shape: a list value is one line per element). A value with CR, LF or NUL is
 * refused (as Node's setHeader refuses it), so no configured header modifier can split a head.
 *
 * Owns: head text. Must not know about: what the fields mean, bodies, sockets.
 */
import { STATUS_CODES, type OutgoingHttpHeaders } from 'node:http';

export class HeaderValueError extends Error {
  readonly code = 'HTTP1_BAD_OUTGOING_HEADER';
  constructor(name: string) {
    super(`header ${JSON.stringify(name)} has a CR, LF or NUL in its value`);
    this.name = 'HeaderValueError';
  }
}

function fieldLine(name: string, value: string): string {
  if (value.indexOf('\r') >= 0 || value.indexOf('\n') >= 0 || value.indexOf('\0') >= 0) throw new HeaderValueError(name);
  return `${name}: ${value}\r\n`;
}

/**
 * The field lines of `headers` but those named in `skip`; throws HeaderValueError for a value that would split the
 * head (also for a received map: a JWT claim a RequestAuthentication copies into a header is the issuer's text).
 */
export function fieldLines(headers: OutgoingHttpHeaders, skip?: ReadonlySet<string>): string {
  let text = '';
  for (const name in headers) {
    const value = headers[name];
    if (value === undefined || skip?.has(name) === true) continue;
    if (Array.isArray(value)) for (const item of value) text += fieldLine(name, item);
    else text += fieldLine(name, typeof value === 'string' ? value : String(value));
  }
  return text;
}

/** A request line and `headers` but those named in `skip`; `extra` (field lines, each ending CRLF) after them. */
export function requestHeadText(method: string, target: string, headers: OutgoingHttpHeaders, skip?: ReadonlySet<string>, extra = ''): string {
  return `${method} ${target} HTTP/1.1\r\n${fieldLines(headers, skip)}${extra}\r\n`;
}

/**
 * A status line and `headers` but those named in `skip`; `framing` (e.g. `transfer-encoding: chunked\r\n`) is
 * appended as it is.
 */
export function responseHeadText(status: number, headers: OutgoingHttpHeaders, framing: string, skip?: ReadonlySet<string>): string {
  return `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\n${fieldLines(headers, skip)}${framing}\r\n`;
}

/** A status line (with its CRLF). */
export function responseStatusLine(status: number): string {
  return `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\n`;
}

/** One field line (`name: value` CRLF); throws HeaderValueError for a value that would split the head. */
export function fieldLineText(name: string, value: string): string {
  return fieldLine(name, value);
}
