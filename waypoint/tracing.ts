/**
 * Request identity and W3C trace context across the waypoint, as Envoy does for Istio: `x-request-id` kept or made
 * (a UUID), `traceparent` continued with a new span id for the upstream hop (a new trace when absent or invalid),
 * `tracestate` passed on unchanged with a valid traceparent and dropped with an invalid one (W3C Trace Context 1).
 *
 * Owns: parsing and making those header values. Must not know about: HTTP servers, routes, exporters (no spans are
 * exported; the ids go into the access log).
 */
import { randomFillSync } from 'node:crypto';
import type http from 'node:http';

/** version-traceid-parentid-flags; later versions may append fields after another dash. */
const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;
const ZERO_TRACE = '0'.repeat(32);
const ZERO_SPAN = '0'.repeat(16);

export interface TraceContext {
  traceId: string;
  /** The span of the client's hop (the parent), when the request carried one. */
  parentSpanId?: string;
  /** The new span for the waypoint's upstream hop. */
  spanId: string;
  flags: string;
  /** `tracestate`, passed on only with a valid incoming traceparent. */
  tracestate?: string;
}

/**
 * Random bytes for trace and span ids, drawn from the CSPRNG a pool at a time: one randomFillSync per ~170 requests
 * instead of two per request (they were 3 % of the waypoint's CPU under load). Ids are unique, not secret.
 */
const RANDOM_POOL = Buffer.alloc(4096);
let randomOffset = RANDOM_POOL.length;

/** `bytes` random bytes as lower-case hex. */
export function randomHex(bytes: number): string {
  if (randomOffset + bytes > RANDOM_POOL.length) {
    randomFillSync(RANDOM_POOL);
    randomOffset = 0;
  }
  const hex = RANDOM_POOL.toString('hex', randomOffset, randomOffset + bytes);
  randomOffset += bytes;
  return hex;
}

/** Lower-case hex digits, and the text of the last request id made (each call overwrites it). */
const HEX_DIGITS = Buffer.from('0123456789abcdef', 'latin1');
const UUID_TEXT = Buffer.alloc(36);

/**
 * A version 4 UUID (RFC 9562: random, with the version and variant bits set) from the same pool: written into one
 * buffer and read as one flat string. crypto.randomUUID, also drawn from a cached pool, builds its text by some twenty
 * string concatenations (about 0.6 KB of garbage per request on the waypoint's gRPC path, and a flatten when used).
 */
export function randomRequestId(): string {
  if (randomOffset + 16 > RANDOM_POOL.length) {
    randomFillSync(RANDOM_POOL);
    randomOffset = 0;
  }
  let at = 0;
  for (let index = 0; index < 16; index++) {
    let byte = RANDOM_POOL[randomOffset + index]!;
    if (index === 6) byte = (byte & 0x0f) | 0x40;
    else if (index === 8) byte = (byte & 0x3f) | 0x80;
    if (index === 4 || index === 6 || index === 8 || index === 10) UUID_TEXT[at++] = 0x2d /* - */;
    UUID_TEXT[at++] = HEX_DIGITS[byte >> 4]!;
    UUID_TEXT[at++] = HEX_DIGITS[byte & 0x0f]!;
  }
  randomOffset += 16;
  return UUID_TEXT.toString('latin1', 0, 36);
}

function single(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

export function requestIdOf(headers: http.IncomingHttpHeaders): string {
  return requestIdFrom(single(headers['x-request-id']));
}

/** The request id from a received `x-request-id` value (made when absent or empty). */
export function requestIdFrom(id: string | undefined): string {
  return id !== undefined && id !== '' ? id : randomRequestId();
}

export function traceContextOf(headers: http.IncomingHttpHeaders): TraceContext {
  const tracestate = headers.tracestate;
  return traceContextFrom(single(headers.traceparent), Array.isArray(tracestate) ? tracestate.join(',') : tracestate);
}

/** The trace context from received `traceparent` and `tracestate` values (HTTP/1.1's lean path reads them in place). */
export function traceContextFrom(traceparent: string | undefined, tracestate: string | undefined): TraceContext {
  // Without a traceparent (the usual request) no regular expression runs; the match's parts are read by index (no
  // array or iterator of a destructuring), and every context has the same shape.
  const parsed = traceparent === undefined ? null : TRACEPARENT.exec(traceparent.trim().toLowerCase());
  const spanId = randomHex(8);
  if (parsed !== null) {
    const version = parsed[1]!;
    const traceId = parsed[2]!;
    const parentSpanId = parsed[3]!;
    if (version !== 'ff' && !(version === '00' && parsed[5] !== undefined) && traceId !== ZERO_TRACE && parentSpanId !== ZERO_SPAN) {
      return { traceId, parentSpanId, spanId, flags: parsed[4]!, tracestate: tracestate ? tracestate : undefined };
    }
  }
  return { traceId: randomHex(16), parentSpanId: undefined, spanId, flags: '00', tracestate: undefined };
}

/** The `traceparent` the upstream hop carries (version 00, this hop's span as parent). */
export function traceparentOf(trace: TraceContext): string {
  return `00-${trace.traceId}-${trace.spanId}-${trace.flags}`;
}
