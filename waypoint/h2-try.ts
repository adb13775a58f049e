/**
 * One try of an HTTP/2 (h2c or gRPC) request to one endpoint: the pick (least request, or a DestinationRule's
 * choice), a stream on the endpoint's pooled HTTP/2 session (h2-upstream.ts), the body fed from the client
 * (h2-request-body.ts), and the outcome: the response's head, or an error (no endpoint UH; no session, or the
 * endpoint refused the stream UF; reset before a response UC; the try's timeout UT). The try's timeout
 * (timeouts.backendRequest) runs until the stream closes: fired after the head it cuts the response.
 *
 * Owns: that one stream, its timer and its place in the body's feed. Must not know about: routes, retries, the
 * client's stream.
 */
import http2 from 'node:http2';
import type { Service } from '../shared/mesh/service.ts';
import type { Workload } from '../shared/mesh/workload.ts';
import { WaypointError } from './errors.ts';
import { cancelStream, type H2Sessions, type UpstreamH2Stream } from './h2-upstream.ts';
import type { H2RequestBody } from './h2-request-body.ts';
import type { UpstreamRequestHead } from './h2-upstream-head.ts';
import type { Attempt, AttemptOutcome, OutcomeListener } from './request-attempts.ts';
import type { UpstreamTarget, Upstreams } from './upstream.ts';
import type { EndpointChooser } from './destination/destination-traffic.ts';
import { listen } from './h2-stream-events.ts';
import { headersObjectOf, OwnUpstreamStream } from './h2-own-upstream.ts';
import type { HeaderList } from '../shared/hbone/h2/hpack.ts';

const { NGHTTP2_FLAG_END_STREAM, NGHTTP2_NO_ERROR, NGHTTP2_REFUSED_STREAM } = http2.constants;

/** A field's value as headersObjectOf would hold it (the first, each repeat joined on with ', '), from a list. */
function listValue(list: HeaderList, name: string): string | undefined {
  let value: string | undefined;
  for (let index = 0; index < list.length; index += 2) {
    if (list[index] === name) value = value === undefined ? list[index + 1] : `${value}, ${list[index + 1]}`;
  }
  return value;
}

/** An object's value as one string (node:http2 makes only set-cookie a list). */
function objectValue(headers: http2.IncomingHttpHeaders | undefined, name: string): string | undefined {
  const value = headers?.[name];
  return Array.isArray(value) ? value[0] : value;
}

/**
 * The head of an endpoint's answer on one try, and its trailers once they came. On the own layer (OwnUpstreamStream)
 * the head and the trailers stay the lists the layer decoded and checked: node:http2's object shape is made from them
 * only when something reads it (a response modifier, a node:http2 client stream, the waypoint's own answers), where
 * the proxy's relay reads `:status` and `grpc-status` from the lists and passes them on as they are (session s14:
 * both objects were made for every call).
 */
export class H2Response {
  readonly stream: UpstreamH2Stream;
  /** A trailers-only or empty answer: nothing follows the head. */
  readonly endStream: boolean;
  /** The own layer's list of the head (`:status` first: the layer checked it); undefined for node:http2's object. */
  readonly fields: HeaderList | undefined;
  #headers: http2.IncomingHttpHeaders | undefined;
  #trailers: http2.IncomingHttpHeaders | undefined = undefined;

  constructor(stream: UpstreamH2Stream, endStream: boolean, headers: http2.IncomingHttpHeaders | undefined, fields: HeaderList | undefined) {
    this.stream = stream;
    this.endStream = endStream;
    this.#headers = headers;
    this.fields = fields;
  }

  /** The head as node:http2's object (made from the list when first read). */
  get headers(): http2.IncomingHttpHeaders {
    return (this.#headers ??= headersObjectOf(this.fields!));
  }

  /** `:status` as a number (502 when there is none, as the object way read it). */
  get status(): number {
    const fields = this.fields;
    if (fields !== undefined && fields[0] === ':status') return Number(fields[1]);
    return Number(this.headers[':status'] ?? 502);
  }

  /** A field of the head, as the object holds it. */
  headValue(name: string): string | undefined {
    return this.fields !== undefined ? listValue(this.fields, name) : objectValue(this.#headers, name);
  }

  /**
   * The answer's trailers once they came, as node:http2's object (kept from the start: they can arrive in the same
   * read as the head): node:http2's from their event (set by the try), the own layer's made from the stream's list
   * when first read.
   */
  get trailers(): http2.IncomingHttpHeaders | undefined {
    if (this.#trailers === undefined && this.fields !== undefined) {
      const list = (this.stream as OwnUpstreamStream).trailerFields;
      if (list !== undefined) this.#trailers = headersObjectOf(list);
    }
    return this.#trailers;
  }

  set trailers(trailers: http2.IncomingHttpHeaders | undefined) {
    this.#trailers = trailers;
  }

  /** A field of the trailers (undefined before they came), as their object holds it. */
  trailerValue(name: string): string | undefined {
    if (this.fields !== undefined) {
      const list = (this.stream as OwnUpstreamStream).trailerFields;
      return list === undefined ? undefined : listValue(list, name);
    }
    return objectValue(this.#trailers, name);
  }
}

export interface H2TryRequest {
  service: Service;
  servicePort: number;
  /** The VIP the client asked for: its family decides the endpoint address's. */
  vip: string;
  /** The request's head for the endpoint. */
  head: UpstreamRequestHead;
  /** timeouts.backendRequest; 0: none. */
  timeoutMs: number;
  /** A DestinationRule's endpoint choice (waypoint/destination/) instead of least request. */
  choose?: EndpointChooser | undefined;
  /** The endpoint's informational (1xx) heads, before its answer (called with the request as `this`). */
  onInformational(headers: http2.IncomingHttpHeaders): void;
}

export class H2Try implements Attempt<H2Response> {
  endpoint: Workload | undefined;
  /** `ip:port` dialled ('' before the pick). */
  address = '';
  /** The endpoint's address alone. */
  host = '';
  /** The try's timeout fired (before or after the response's head). */
  timedOut = false;
  #stream: UpstreamH2Stream | undefined;
  #timer: NodeJS.Timeout | undefined;
  #aborted = false;
  readonly #body: H2RequestBody;
  readonly #request: H2TryRequest;
  /** The endpoint's answer head, once it came (its trailers are put on it when they come). */
  #response: H2Response | undefined;
  /** The outcome, once known (the first one counts, as a promise's first resolution). */
  #result: AttemptOutcome<H2Response> | undefined;
  #listener: OutcomeListener<H2Response> | undefined;
  #promise: Promise<AttemptOutcome<H2Response>> | undefined;
  #resolvePromise: ((outcome: AttemptOutcome<H2Response>) => void) | undefined;

  /** `avoid`: the previous try's endpoint address, which a retry avoids when another can take it. */
  constructor(upstreams: Upstreams, sessions: H2Sessions, request: H2TryRequest, body: H2RequestBody, avoid: string | undefined) {
    this.#body = body;
    this.#request = request;
    this.#start(upstreams, sessions, request, avoid);
  }

  /** The outcome as a promise (made only when asked for: the try loop's runThen is told through `notify`). */
  get outcome(): Promise<AttemptOutcome<H2Response>> {
    if (this.#promise === undefined) {
      const result = this.#result;
      this.#promise = result !== undefined ? Promise.resolve(result) : new Promise((resolve) => (this.#resolvePromise = resolve));
    }
    return this.#promise;
  }

  notify(listener: OutcomeListener<H2Response>): void {
    const result = this.#result;
    if (result !== undefined) listener.attemptSettled(this, result);
    else this.#listener = listener;
  }

  #resolve(outcome: AttemptOutcome<H2Response>): void {
    if (this.#result !== undefined) return;
    this.#result = outcome;
    const listener = this.#listener;
    this.#listener = undefined;
    this.#resolvePromise?.(outcome);
    listener?.attemptSettled(this, outcome);
  }

  /**
   * The pick and the stream: at once on a pooled session with room (`requestNow`, the common case: no promise),
   * else when the session is open.
   */
  #start(upstreams: Upstreams, sessions: H2Sessions, request: H2TryRequest, avoid: string | undefined): void {
    let target: UpstreamTarget;
    try {
      const picked = request.choose ? upstreams.pickWith(request.choose, request.service, request.servicePort, request.vip) : upstreams.pickLeastRequest(request.service, request.servicePort, request.vip, avoid);
      this.endpoint = picked.endpoint.workload;
      this.host = picked.address;
      this.address = addressText(picked.address, picked.targetPort);
      target = { address: { host: picked.address, port: picked.targetPort }, endpoint: picked.endpoint.workload, picked };
      const stream = sessions.requestNow?.(request.service, target, request.head, this.#body.endsAtHeaders);
      if (stream !== undefined) {
        this.#attach(stream);
        return;
      }
    } catch (error) {
      this.#resolve({ error: connectFailure(error) });
      return;
    }
    sessions.request(request.service, target, request.head, this.#body.endsAtHeaders).then(
      (stream) => this.#attach(stream),
      (error: unknown) => this.#resolve({ error: connectFailure(error) }),
    );
  }

  #attach(stream: UpstreamH2Stream): void {
    this.#stream = stream;
    stream.on('error', ignoreStreamError);
    if (this.#aborted) {
      cancelStream(stream);
      this.#resolve({ error: new WaypointError('WAYPOINT_UPSTREAM_RESET', `the try to ${this.address} was cut before it was sent`) });
      return;
    }
    const request = this.#request;
    if (request.timeoutMs > 0) this.#timer = setTimeout(tryTimedOut, request.timeoutMs, this);
    // The try's own methods (and the request's) are the stream's listeners, with their object as `this`: no closure
    // per try (h2-stream-events.ts).
    listen(stream, 'headers', request.onInformational, request, false);
    // The own layer's answer head as its list (H2Response makes the object only if read), node:http2's as its object.
    if (stream instanceof OwnUpstreamStream) listen(stream, 'responseFields', this.#respondedFields, this, true);
    else listen(stream, 'response', this.#responded, this, true);
    listen(stream, 'wantTrailers', this.#trailersWanted, this, true);
    listen(stream, 'close', this.#closed, this, true);
    this.#body.attach(stream);
  }

  /** The endpoint's answer head (node:http2's stream's 'response'). */
  #responded(headers: http2.IncomingHttpHeaders, flags: number): void {
    const stream = this.#stream!;
    const response = new H2Response(stream, (flags & NGHTTP2_FLAG_END_STREAM) !== 0, headers, undefined);
    this.#response = response;
    listen(stream, 'trailers', this.#trailersCame, this, true);
    this.#resolve({ response });
  }

  /** The endpoint's answer head as the own layer's list (OwnUpstreamStream's 'responseFields'); its trailers stay on the stream. */
  #respondedFields(fields: HeaderList, flags: number): void {
    const response = new H2Response(this.#stream!, (flags & NGHTTP2_FLAG_END_STREAM) !== 0, undefined, fields);
    this.#response = response;
    this.#resolve({ response });
  }

  /** The answer's trailers (kept on the response: they can arrive in the same read as the head). */
  #trailersCame(trailers: http2.IncomingHttpHeaders): void {
    this.#response!.trailers = trailers;
  }

  /** The request's body ended: its trailers, if the client sent any. */
  #trailersWanted(): void {
    const trailers = this.#body.trailers;
    this.#stream!.sendTrailers(trailers ? trailersFor(trailers) : {});
  }

  #closed(): void {
    const stream = this.#stream!;
    this.#stopTimer();
    this.#body.detach(stream);
    // The outcome is decided once; the stream's close after its answer builds no error object.
    if (this.#result !== undefined) return;
    const code = stream.rstCode ?? NGHTTP2_NO_ERROR;
    // An endpoint that refuses the stream (REFUSED_STREAM, or GOAWAY before it) never saw it: as a connect failure.
    if (code === NGHTTP2_REFUSED_STREAM) this.#resolve({ error: new WaypointError('WAYPOINT_UPSTREAM_CONNECT_FAILED', `${this.address} refused the stream`) });
    else this.#resolve({ error: new WaypointError('WAYPOINT_UPSTREAM_RESET', `${this.address} reset the stream (HTTP/2 error ${code}) before answering`) });
  }

  /** timeouts.backendRequest ran out (tryTimedOut). */
  timeout(): void {
    this.#timer = undefined;
    this.timedOut = true;
    this.#resolve({ error: new WaypointError('WAYPOINT_BACKEND_TIMEOUT', `no response from ${this.address} within timeouts.backendRequest ${this.#request.timeoutMs} ms`) });
    this.abort();
  }

  /** Ends the try now (its stream reset with CANCEL) unless the stream already closed. */
  abort(): void {
    this.#aborted = true;
    this.#stopTimer();
    const stream = this.#stream;
    if (stream === undefined) return;
    this.#body.detach(stream);
    cancelStream(stream);
  }

  #stopTimer(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}

/** The last endpoint address and port made into `ip:port`, and that text (a try to the same endpoint builds none). */
let lastHost = '';
let lastPort = -1;
let lastAddress = '';

function addressText(host: string, port: number): string {
  if (host !== lastHost || port !== lastPort) {
    lastHost = host;
    lastPort = port;
    lastAddress = `${host}:${port}`;
  }
  return lastAddress;
}

function tryTimedOut(attempt: H2Try): void {
  attempt.timeout();
}

function connectFailure(error: unknown): WaypointError {
  return error instanceof WaypointError ? error : new WaypointError('WAYPOINT_UPSTREAM_CONNECT_FAILED', (error as Error).message, { cause: error });
}

/** Resets and broken sessions: 'close' says what happened. One function, not a closure per stream. */
function ignoreStreamError(): void {}

/** Connection-specific fields never go into trailers either. */
export function trailersFor(trailers: http2.IncomingHttpHeaders): http2.OutgoingHttpHeaders {
  const result: http2.OutgoingHttpHeaders = {};
  for (const name in trailers) if (name.charCodeAt(0) !== 58 /* : */ && name !== 'connection' && name !== 'transfer-encoding') result[name] = trailers[name];
  return result;
}
