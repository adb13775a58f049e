/**
 * The heads the lean path forwards as it received them, written as bytes straight into the buffer of their write:
 * a request's line, its received field lines less the hop-by-hop and trace ones, the waypoint's request id and trace
 * context, then its body, in one buffer per request (sent again as it is by a retry); a relayed response's status
 * line, its field lines less the hop-by-hop ones and the framing the waypoint adds, in front of the body's first
 * bytes. No head text is built per request (before session s13 a template, field-line strings and their flatten
 * into the write's buffer: about 1.1 KB of V8 heap per request). Values that did not come in the head they are
 * written from (the request id, tracestate, the trace ids) are checked as serialize.ts checks a value (no CR, LF or
 * NUL: HeaderValueError), so no value can split a forwarded head; received lines were checked by the parser.
 *
 * Owns: the byte layout of those heads. Must not know about: routes, policy, which fields a head holds beyond
 * head-fields.ts's groups, sockets.
 */
import { STATUS_CODES } from 'node:http';
import type { TraceContext } from '../tracing.ts';
import type { FieldFacts } from './head-fields.ts';
import { SKIP_HOP_BY_HOP, SKIP_TRACE } from './head-fields.ts';
import { HeaderValueError } from './serialize.ts';

/** What the waypoint adds to a relayed response head: bits. */
export const FRAMING_CHUNKED = 1;
export const FRAMING_CLOSE = 2;

const CHUNKED_LINE = 'transfer-encoding: chunked\r\n';
const CLOSE_LINE = 'connection: close\r\n';
const REQUEST_LINE_END = ' HTTP/1.1\r\n';
const REQUEST_ID_PREFIX = 'x-request-id: ';
const TRACEPARENT_PREFIX = 'traceparent: 00-';
const TRACESTATE_PREFIX = 'tracestate: ';
/** Strings up to this length are copied by a loop in JavaScript; longer ones by one native latin1 write. */
const SHORT_TEXT = 32;

/** Status lines (`HTTP/1.1 NNN Reason` CRLF) by status, made once each. */
const statusLines: string[] = [];

function statusLine(status: number): string {
  return (statusLines[status] ??= `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\n`);
}

/** `text` as latin1 at out[offset]; returns the offset after it. */
function put(out: Buffer, offset: number, text: string): number {
  const length = text.length;
  if (length > SHORT_TEXT) return offset + out.write(text, offset, length, 'latin1');
  for (let index = 0; index < length; index++) out[offset + index] = text.charCodeAt(index);
  return offset + length;
}

function putLineEnd(out: Buffer, offset: number): number {
  out[offset] = 0x0d;
  out[offset + 1] = 0x0a;
  return offset + 2;
}

/**
 * A field value `value` as latin1 at out[offset], checked as it is copied: HeaderValueError for CR, LF or NUL (it would
 * split the head), as serialize.ts's fieldLine refuses them. Returns the offset after it.
 */
function putValue(out: Buffer, offset: number, name: string, value: string): number {
  const length = value.length;
  for (let index = 0; index < length; index++) {
    const code = value.charCodeAt(index);
    if (code === 0x0d || code === 0x0a || code === 0) throw new HeaderValueError(name);
    out[offset + index] = code;
  }
  return offset + length;
}

/** Whether `head`'s start line is `method target HTTP/1.1` (read in place). */
function receivedRequestLine(method: string, target: string, head: FieldFacts): boolean {
  const text = head.text;
  const targetAt = method.length + 1;
  const versionAt = targetAt + target.length;
  return head.startLineEnd === versionAt + 9 && text.startsWith(method) && text.charCodeAt(method.length) === 0x20 && text.startsWith(target, targetAt) && text.startsWith(' HTTP/1.1', versionAt);
}

/** The bytes of the request id and trace context lines (x-request-id, traceparent, tracestate when kept). */
function traceLinesBytes(requestId: string, trace: TraceContext): number {
  const traceparent = TRACEPARENT_PREFIX.length + trace.traceId.length + 1 + trace.spanId.length + 1 + trace.flags.length + 2;
  const tracestate = trace.tracestate === undefined ? 0 : TRACESTATE_PREFIX.length + trace.tracestate.length + 2;
  return REQUEST_ID_PREFIX.length + requestId.length + 2 + traceparent + tracestate;
}

/**
 * The request as the endpoint gets it when no filter changes its fields: `method target HTTP/1.1`, the received field
 * lines of `head` but the hop-by-hop and trace ones, x-request-id, traceparent (this hop's span) and tracestate (kept
 * with a valid traceparent), the empty line, then `body` (`bodyBytes` in all), in one buffer. Only for a head whose
 * map was not read and with no first-wins repeat (FieldFacts.writeFields). Throws HeaderValueError as above.
 */
export function forwardedRequest(method: string, target: string, head: FieldFacts, requestId: string, trace: TraceContext, body: readonly Buffer[], bodyBytes: number): Buffer {
  const skip = SKIP_HOP_BY_HOP | SKIP_TRACE;
  const headBytes = method.length + 1 + target.length + REQUEST_LINE_END.length + head.fieldBytes(skip) + traceLinesBytes(requestId, trace) + 2;
  const out = Buffer.allocUnsafe(headBytes + bodyBytes);
  // The received request line is the one to send (same method and target, HTTP/1.1): the head goes by one native write.
  let offset = receivedRequestLine(method, target, head) ? head.writeHead(skip, out, 0) : -1;
  if (offset < 0) {
    offset = put(out, 0, method);
    out[offset++] = 0x20;
    offset = put(out, offset, target);
    offset = put(out, offset, REQUEST_LINE_END);
    offset = head.writeFields(skip, out, offset);
  }
  offset = put(out, offset, REQUEST_ID_PREFIX);
  offset = putLineEnd(out, putValue(out, offset, 'x-request-id', requestId));
  offset = put(out, offset, TRACEPARENT_PREFIX);
  offset = putValue(out, offset, 'traceparent', trace.traceId);
  out[offset++] = 0x2d;
  offset = putValue(out, offset, 'traceparent', trace.spanId);
  out[offset++] = 0x2d;
  offset = putLineEnd(out, putValue(out, offset, 'traceparent', trace.flags));
  if (trace.tracestate !== undefined) offset = putLineEnd(out, putValue(out, put(out, offset, TRACESTATE_PREFIX), 'tracestate', trace.tracestate));
  offset = putLineEnd(out, offset);
  for (let index = 0; index < body.length; index++) offset += body[index]!.copy(out, offset);
  return out;
}

/** The bytes of relayedResponseHead's head. */
export function relayedResponseHeadBytes(status: number, head: FieldFacts, framing: number): number {
  return statusLine(status).length + head.fieldBytes(SKIP_HOP_BY_HOP) + ((framing & FRAMING_CHUNKED) !== 0 ? CHUNKED_LINE.length : 0) + ((framing & FRAMING_CLOSE) !== 0 ? CLOSE_LINE.length : 0) + 2;
}

/**
 * A relayed response's head written at out[offset] (room for relayedResponseHeadBytes there): `HTTP/1.1 status
 * Reason`, the endpoint's field lines but the hop-by-hop ones, the framing lines `framing` asks for, the empty line.
 * Returns the offset after it. As forwardedRequest, only for a head whose map was not read and with no repeat.
 */
export function writeRelayedResponseHead(out: Buffer, offset: number, status: number, head: FieldFacts, framing: number): number {
  const line = statusLine(status);
  // The received status line is the one to send (`HTTP/1.1 NNN` and the usual reason): the head goes by one native write.
  let at = head.startLineEnd === line.length - 2 && head.text.startsWith(line) ? head.writeHead(SKIP_HOP_BY_HOP, out, offset) : -1;
  if (at < 0) at = head.writeFields(SKIP_HOP_BY_HOP, out, put(out, offset, line));
  if ((framing & FRAMING_CHUNKED) !== 0) at = put(out, at, CHUNKED_LINE);
  if ((framing & FRAMING_CLOSE) !== 0) at = put(out, at, CLOSE_LINE);
  return putLineEnd(out, at);
}

/** The framing lines as text (the string way of a response head with filters: serialize.ts's `framing`). */
export function framingText(framing: number): string {
  return ((framing & FRAMING_CHUNKED) !== 0 ? CHUNKED_LINE : '') + ((framing & FRAMING_CLOSE) !== 0 ? CLOSE_LINE : '');
}
