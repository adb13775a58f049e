/**
 * The head of a request as the waypoint sends it to an endpoint on the HTTP/2 path: the client's fields with the
 * changes the proxy makes (connection-specific fields dropped, `te` other than `trailers` dropped, the rewritten
 * `:path` and `:authority`, the request id and trace context), as the own layer's flat list: pseudo-headers first,
 * names lower-case, each field checked as node:http2 would check it.
 *
 * Why a list and not an object: the client's head arrives as a list (HPACK), becomes the request's object (what
 * routes, policy and tracing read), and used to be copied into a second object for the endpoint that was then turned
 * into a list again: an object with a dozen keyed stores and a list per request (BENCHMARKS.md, "The gRPC path,
 * session s12 (wpgrpc)"). Here the list is built from the request's object once, with the changes, no object between; the object
 * is made from the list only for node:http2's sessions and mirrors, which take objects. A route with header
 * modifiers goes the object way (h2-proxy.ts's upstreamRequestHeaders, then `fromObject`): rare, and the modifiers'
 * semantics (set, add joined with ',', remove) stay in one place.
 *
 * A field node:http2 would refuse (CR, LF or NUL in a value, a name outside the token characters) is not thrown at
 * once: it is the try's failure when the head is sent (503 UF with the reason), as node:http2's request() throws.
 *
 * Owns: the upstream head's fields and their checks. Must not know about: routes, endpoints, connections.
 */
import type http2 from 'node:http2';
import { WaypointError } from './errors.ts';
import { headerListOf, lowerName, putValue } from './h2-own-upstream.ts';

/** Connection-specific headers (RFC 9113 8.2.2): never forwarded (Node refuses them on HTTP/2 anyway). */
export const CONNECTION_SPECIFIC = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'http2-settings', 'host']);

// The pseudo-headers the proxy rewrites or looks for (pseudoFieldBit), as bits of what the client's head had.
const PATH = 1;
const AUTHORITY = 2;
const SCHEME = 4;

/** The bit of pseudo-header `name` among PATH, AUTHORITY and SCHEME (0: another, sent as it came). */
function pseudoFieldBit(name: string): number {
  return name === ':path' ? PATH : name === ':authority' ? AUTHORITY : name === ':scheme' ? SCHEME : 0;
}

/** The value sent for a pseudo-header of bit `bit`: the route's `path` always, its `authority` where it rewrites one. */
function pseudoValue<V>(bit: number, value: V, path: string, authority: string | undefined): V | string {
  if (bit === PATH) return path;
  if (bit === AUTHORITY && authority !== undefined) return authority;
  return value;
}

/** `:path` and a rewritten `:authority` where the client's head lacked them (not in `present`), appended at `at`; the new end. */
function putMissingPseudoFields(list: string[], at: number, present: number, path: string, authority: string | undefined): number {
  if ((present & PATH) === 0) at = putValue(list, at, ':path', path, undefined);
  if ((present & AUTHORITY) === 0 && authority !== undefined) at = putValue(list, at, ':authority', authority, undefined);
  return at;
}

/** The head names its `:scheme` and `:authority` (the client's or the route's): nothing to add per endpoint. */
function pseudoComplete(present: number, authority: string | undefined): boolean {
  return (present & SCHEME) !== 0 && ((present & AUTHORITY) !== 0 || authority !== undefined);
}

// What becomes of a client's regular field on its way to the endpoint (regularFieldFate): left out, sent as it came,
// or one of the three trace fields, sent once with the proxy's value (the bit records that it was sent).
const LEAVE_OUT = -1;
const AS_SENT = 0;
const REQUEST_ID = 1;
const TRACEPARENT = 2;
const TRACESTATE = 4;

/**
 * The fate of regular field `name` (lower-case) given the trace fields already sent (`seen`, bits): connection-specific
 * fields and `te` other than `trailers` are left out (HTTP/1.1-style `te` is connection-specific too; gRPC's
 * `te: trailers` passes), as is a trace field sent already or `tracestate` when it is dropped.
 */
function regularFieldFate(name: string, value: unknown, seen: number, dropTracestate: boolean): number {
  if (CONNECTION_SPECIFIC.has(name)) return LEAVE_OUT;
  if (name === 'te' && value !== 'trailers') return LEAVE_OUT;
  let bit: number;
  if (name === 'x-request-id') bit = REQUEST_ID;
  else if (name === 'traceparent') bit = TRACEPARENT;
  else if (name === 'tracestate') {
    if (dropTracestate) return LEAVE_OUT;
    bit = TRACESTATE;
  } else return AS_SENT;
  return (seen & bit) !== 0 ? LEAVE_OUT : bit;
}

/** The proxy's value of the trace field `bit` (never TRACESTATE while `tracestate` is undefined: regularFieldFate). */
function traceValue(bit: number, requestId: string, traceparent: string, tracestate: string | undefined): string {
  return bit === REQUEST_ID ? requestId : bit === TRACEPARENT ? traceparent : tracestate!;
}

/** The trace fields the client did not send (not in `seen`), appended at `at`; the new end. */
function putMissingTraceFields(list: string[], at: number, seen: number, requestId: string, traceparent: string, tracestate: string | undefined): number {
  if ((seen & REQUEST_ID) === 0) at = putValue(list, at, 'x-request-id', requestId, undefined);
  if ((seen & TRACEPARENT) === 0) at = putValue(list, at, 'traceparent', traceparent, undefined);
  if ((seen & TRACESTATE) === 0 && tracestate !== undefined) at = putValue(list, at, 'tracestate', tracestate, undefined);
  return at;
}

export class UpstreamRequestHead {
  /** The fields as names and values in turn, pseudo-headers first (up to `pseudoEnd`). */
  readonly fields: string[];
  /** The end of the pseudo-headers in `fields` (an index into it). */
  readonly pseudoEnd: number;
  /** The client's head had `:scheme` and `:authority` (nothing to add per endpoint). */
  readonly complete: boolean;
  /** A field node:http2 would refuse: the try fails with it when the head is sent. */
  readonly problem: WaypointError | undefined;
  #object: http2.OutgoingHttpHeaders | undefined;

  constructor(fields: string[], pseudoEnd: number, complete: boolean, problem: WaypointError | undefined, object?: http2.OutgoingHttpHeaders) {
    this.fields = fields;
    this.pseudoEnd = pseudoEnd;
    this.complete = complete;
    this.problem = problem;
    this.#object = object;
  }

  /** A head from node:http2's outgoing object (a route with header modifiers; a mirror's copy). */
  static fromObject(headers: http2.OutgoingHttpHeaders): UpstreamRequestHead {
    let fields: string[];
    let problem: WaypointError | undefined;
    try {
      fields = headerListOf(headers);
    } catch (error) {
      if (!(error instanceof WaypointError)) throw error;
      fields = [];
      problem = error;
    }
    let pseudoEnd = 0;
    while (pseudoEnd < fields.length && fields[pseudoEnd]!.charCodeAt(0) === 58 /* : */) pseudoEnd += 2;
    return new UpstreamRequestHead(fields, pseudoEnd, headers[':scheme'] !== undefined && headers[':authority'] !== undefined, problem, headers);
  }

  /**
   * The list to send: `fields`, with `defaults` (pseudo-header names and values) put after the client's
   * pseudo-headers where the head lacks them (a new list then; the head's own otherwise). Throws `problem`.
   */
  fieldsWith(defaults: readonly string[]): string[] {
    if (this.problem !== undefined) throw this.problem;
    if (this.complete) return this.fields;
    const fields = this.fields;
    const list = fields.slice(0, this.pseudoEnd);
    for (let index = 0; index < defaults.length; index += 2) {
      const name = defaults[index]!;
      let present = false;
      for (let at = 0; at < this.pseudoEnd; at += 2) if (fields[at] === name) present = true;
      if (!present) list.push(name, defaults[index + 1]!);
    }
    for (let index = this.pseudoEnd; index < fields.length; index++) list.push(fields[index]!);
    return list;
  }

  /** The head as node:http2's outgoing object (its sessions and mirrors take objects): made once, when asked. */
  get object(): http2.OutgoingHttpHeaders {
    if (this.#object === undefined) {
      const object: http2.OutgoingHttpHeaders = {};
      const fields = this.fields;
      for (let index = 0; index < fields.length; index += 2) {
        const name = fields[index]!;
        const existing = object[name];
        if (existing === undefined) object[name] = fields[index + 1]!;
        else if (Array.isArray(existing)) existing.push(fields[index + 1]!);
        else object[name] = [String(existing), fields[index + 1]!];
      }
      this.#object = object;
    }
    return this.#object;
  }
}

/**
 * The head for the endpoint straight from the request's object, for a route without header modifiers: what
 * upstreamRequestHeaders then the overrides then headerListOf made, in the same order, without the objects between.
 * `authority`: the route's hostname rewrite (undefined: the client's). `tracestate` undefined drops the client's.
 */
export function upstreamHeadOf(headers: http2.IncomingHttpHeaders, path: string, authority: string | undefined, requestId: string, traceparent: string, tracestate: string | undefined): UpstreamRequestHead {
  // Made at its size (an upper bound: the client's values and the three fields the proxy adds), trimmed at the end.
  let size = 4;
  for (const key in headers) {
    const value = headers[key];
    if (value !== undefined) size += Array.isArray(value) ? value.length : 1;
  }
  const list = new Array<string>(2 * size);
  let at = 0;
  let problem: WaypointError | undefined;
  let present = 0;
  let regular = false;
  try {
    for (const key in headers) {
      if (key.charCodeAt(0) !== 58 /* : */) {
        regular = true;
        continue;
      }
      const name = lowerName(key);
      const bit = pseudoFieldBit(name);
      present |= bit;
      at = putValue(list, at, name, pseudoValue(bit, headers[key], path, authority), undefined);
    }
    at = putMissingPseudoFields(list, at, present, path, authority);
    const pseudoEnd = at;
    let seen = 0;
    if (regular) {
      for (const key in headers) {
        if (key.charCodeAt(0) === 58) continue;
        const name = lowerName(key);
        let value = headers[key];
        const fate = regularFieldFate(name, value, seen, tracestate === undefined);
        if (fate === LEAVE_OUT) continue;
        if (fate !== AS_SENT) {
          seen |= fate;
          value = traceValue(fate, requestId, traceparent, tracestate);
        }
        at = putValue(list, at, name, value, undefined);
      }
    }
    at = putMissingTraceFields(list, at, seen, requestId, traceparent, tracestate);
    while (list.length > at) list.pop();
    return new UpstreamRequestHead(list, pseudoEnd, pseudoComplete(present, authority), undefined);
  } catch (error) {
    if (!(error instanceof WaypointError)) throw error;
    problem = error;
  }
  return new UpstreamRequestHead([], 0, false, problem);
}

/**
 * upstreamHeadOf from the own layer's list of the client's head (names lower-case, pseudo-headers first, each
 * pseudo-header once: checked on receipt), without node:http2's object between (session s14): the same fields in the
 * same order, the same checks (badField on every field sent), except that a regular field the client repeated goes
 * on as the repeats it came as (HTTP/2 to HTTP/2: RFC 9110 5.3 makes them one list either way) where the object
 * joined them with ', '; `x-request-id`, `traceparent` and `tracestate` go once, with the values given.
 */
export function upstreamHeadOfFields(fields: readonly string[], path: string, authority: string | undefined, requestId: string, traceparent: string, tracestate: string | undefined): UpstreamRequestHead {
  // At most the client's fields and the four the proxy may add (:path, :authority, and three of the trace fields
  // only in place of or beside the client's); trimmed at the end.
  const list = new Array<string>(fields.length + 10);
  let at = 0;
  let present = 0;
  try {
    let index = 0;
    for (; index < fields.length; index += 2) {
      const name = fields[index]!;
      if (name.charCodeAt(0) !== 58 /* : */) break;
      const bit = pseudoFieldBit(name);
      present |= bit;
      at = putValue(list, at, name, pseudoValue(bit, fields[index + 1]!, path, authority), undefined);
    }
    at = putMissingPseudoFields(list, at, present, path, authority);
    const pseudoEnd = at;
    let seen = 0;
    for (; index < fields.length; index += 2) {
      const name = fields[index]!;
      let value = fields[index + 1]!;
      const fate = regularFieldFate(name, value, seen, tracestate === undefined);
      if (fate === LEAVE_OUT) continue;
      if (fate !== AS_SENT) {
        seen |= fate;
        value = traceValue(fate, requestId, traceparent, tracestate);
      }
      at = putValue(list, at, name, value, undefined);
    }
    at = putMissingTraceFields(list, at, seen, requestId, traceparent, tracestate);
    while (list.length > at) list.pop();
    return new UpstreamRequestHead(list, pseudoEnd, pseudoComplete(present, authority), undefined);
  } catch (error) {
    if (!(error instanceof WaypointError)) throw error;
    return new UpstreamRequestHead([], 0, false, error);
  }
}
