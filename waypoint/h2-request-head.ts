/**
 * A request's head on the waypoint's HTTP/2 path as the proxy reads it: the own layer's decoded field list (names
 * lower-case, pseudo-headers first, checked on receipt: shared/hbone/h2/headers.ts) or node:http2's object, with the
 * few fields every request needs (`:method`, `:path`, `:authority`/`host`, `content-type`, `x-request-id`,
 * `traceparent`, `tracestate`) read in one pass. node:http2's object shape (IncomingHttpHeaders, repeats joined with
 * ', ', set-cookie a list: headersObjectOf) is made from the list only when something reads it: L7 policy, a route
 * that matches on headers, a route with header modifiers, a DestinationRule's hash, a mirror; so routes and policy
 * take the same object as on the HTTP/1.1 path, and a request none of them reads builds none (as HTTP/1.1's
 * http1/head-fields.ts). Before session s14 every request's list became that object as it arrived (a dozen
 * megamorphic keyed stores) and the endpoint's head was then built by iterating the object.
 *
 * Owns: the head's two shapes and its read facts. Must not know about: routes, policy, endpoints.
 */
import type http2 from 'node:http2';
import type { HeaderList } from '../shared/hbone/h2/hpack.ts';
import { headersObjectOf } from './h2-own-upstream.ts';

/** A field's value as headersObjectOf puts it: the first, with each repeat joined on with ', '. */
function joined(existing: string | undefined, value: string): string {
  return existing === undefined ? value : `${existing}, ${value}`;
}

/** An object value as one string (node:http2 makes only set-cookie a list: its first value). */
function single(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

export class H2RequestHead {
  /** The own layer's fields, or undefined when the head came as node:http2's object. */
  readonly fields: HeaderList | undefined;
  readonly method: string | undefined;
  readonly path: string | undefined;
  /** `:authority`, else `host` (as the object path read `headers[':authority'] ?? headers.host`). */
  readonly authority: string | undefined;
  readonly contentType: string | undefined;
  readonly requestId: string | undefined;
  readonly traceparent: string | undefined;
  readonly tracestate: string | undefined;
  #object: http2.IncomingHttpHeaders | undefined;
  /** The path the gate normalised (`/a/../b` -> `/b`): the object's `:path` from then on. */
  #normalisedPath: string | undefined = undefined;

  private constructor(fields: HeaderList | undefined, object: http2.IncomingHttpHeaders | undefined) {
    this.fields = fields;
    this.#object = object;
    let method: string | undefined;
    let path: string | undefined;
    let authority: string | undefined;
    let host: string | undefined;
    let contentType: string | undefined;
    let requestId: string | undefined;
    let traceparent: string | undefined;
    let tracestate: string | undefined;
    if (fields !== undefined) {
      for (let index = 0; index < fields.length; index += 2) {
        const name = fields[index]!;
        const value = fields[index + 1]!;
        if (name.charCodeAt(0) === 58 /* : */) {
          if (name === ':method') method = joined(method, value);
          else if (name === ':path') path = joined(path, value);
          else if (name === ':authority') authority = joined(authority, value);
        } else if (name === 'content-type') contentType = joined(contentType, value);
        else if (name === 'x-request-id') requestId = joined(requestId, value);
        else if (name === 'traceparent') traceparent = joined(traceparent, value);
        else if (name === 'tracestate') tracestate = joined(tracestate, value);
        else if (name === 'host') host = joined(host, value);
      }
    } else {
      const headers = object!;
      method = headers[':method'];
      path = headers[':path'];
      authority = single(headers[':authority']);
      host = headers.host;
      contentType = headers['content-type'];
      requestId = single(headers['x-request-id']);
      traceparent = single(headers.traceparent);
      const state = headers.tracestate;
      tracestate = Array.isArray(state) ? state.join(',') : state;
    }
    this.method = method;
    this.path = path;
    this.authority = authority ?? host;
    this.contentType = contentType;
    this.requestId = requestId;
    this.traceparent = traceparent;
    this.tracestate = tracestate;
  }

  /** The own layer's head: the object is made only when read. */
  static ofFields(fields: HeaderList): H2RequestHead {
    return new H2RequestHead(fields, undefined);
  }

  /** node:http2's head. */
  static ofObject(headers: http2.IncomingHttpHeaders): H2RequestHead {
    return new H2RequestHead(undefined, headers);
  }

  /** node:http2's object shape of the head (made from the list the first time it is read). */
  get object(): http2.IncomingHttpHeaders {
    let object = this.#object;
    if (object === undefined) {
      object = this.#object = headersObjectOf(this.fields!);
      if (this.#normalisedPath !== undefined) object[':path'] = this.#normalisedPath;
    }
    return object;
  }

  /** The gate's normalised path in place of the client's `:path` (in the object, made or not yet). */
  normalisePath(path: string): void {
    this.#normalisedPath = path;
    if (this.#object !== undefined) this.#object[':path'] = path;
  }

  /** `:path` as the flow reads it: the normalised one once the gate set it. */
  get currentPath(): string {
    return this.#normalisedPath ?? this.path ?? '/';
  }
}
