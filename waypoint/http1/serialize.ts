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

/** The field lines of `headers`; throws HeaderValueError for a value that would split the head. */
export function fieldLines(headers: OutgoingHttpHeaders): string {
  let text = '';
  for (const name in headers) {
    const value = headers[name];
    if (value === undefined) continue;
    if (Array.isArray(value)) for (const item of value) text += fieldLine(name, item);
    else text += fieldLine(name, typeof value === 'string' ? value : String(value));
  }
  return text;
}

export function requestHeadText(method: string, target: string, headers: OutgoingHttpHeaders): string {
  return `${method} ${target} HTTP/1.1\r\n${fieldLines(headers)}\r\n`;
}

/** A status line and `headers`; `framing` (e.g. `transfer-encoding: chunked\r\n`) is appended as it is. */
export function responseHeadText(status: number, headers: OutgoingHttpHeaders, framing: string): string {
  return `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\n${fieldLines(headers)}${framing}\r\n`;
}
