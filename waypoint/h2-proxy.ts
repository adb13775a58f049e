/**
 * The waypoint's HTTP/2 path (prior-knowledge h2c, and so gRPC): a terminated CONNECT stream whose client spoke the
 * HTTP/2 preface is handed, as a connection, to one Node HTTP/2 server; each request stream on it goes as an
 * HTTP/1.1 request does: L7 policy (authz/request-gate.ts), the route (request-target.ts: HTTPRoute and GRPCRoute
 * entries) with its filters (header modifiers of the rule and the backendRef, URLRewrite, RequestRedirect), the
 * request id and trace context, the DestinationRule's pool slot and endpoint choice (destination/), then tries on
 * pooled HTTP/2 sessions to endpoints (h2-try.ts, h2-upstream.ts) within the route's timeouts and retried as its
 * retry (or Istio's default) says (request-attempts.ts, shared with the HTTP/1.1 path). The body streams to the try
 * and is kept for a retry while small (h2-request-body.ts: a streaming gRPC call is not retried once its first
 * message went). Bodies are piped both ways (HTTP/2 flow control is the back-pressure), trailers are carried both
 * ways, resets map to resets. Each request gets Istio's metrics (request_protocol grpc or http,
 * grpc_response_status) and an access-log line with Envoy's response flags.
 *
 * When the waypoint itself answers a gRPC request it answers as Envoy does: HTTP 200, trailers-only, grpc-status
 * mapped from the HTTP status (403 -> 7 PERMISSION_DENIED, 404 -> 12 UNIMPLEMENTED, 503 -> 14 UNAVAILABLE, 500 ->
 * 2 UNKNOWN), except a timeout, which is 4 DEADLINE_EXCEEDED (counted as 504 UT), and the reason in grpc-message.
 *
 * A client that sends garbage (a bad preface, a malformed frame) gets a GOAWAY and loses its stream, nothing else.
 *
 * Owns: the per-stream flow, HTTP/2 header handling, the waypoint's own gRPC answers.
 * Must not know about: how routes match, how endpoints are picked or tried, HBONE and TLS.
 */
import http2 from 'node:http2';
import type { Duplex } from 'node:stream';
import type { H2Connection } from '../shared/hbone/h2/connection.ts';
import type { Logger } from 'pino';
import type { HboneRequest } from '../shared/hbone/index.ts';
import type { MeshState } from '../shared/mesh/mesh-state.ts';
import type { Service } from '../shared/mesh/service.ts';
import type { Workload } from '../shared/mesh/workload.ts';
import { fillTryFields, logRequest, type RequestRecord as AccessLogRecord } from './access-log.ts';
import { WaypointError } from './errors.ts';
import { applyFault } from './fault.ts';
import { modifyHeaders, redirectLocation, rewrittenUrl } from './filters.ts';
import { type DownstreamH2Stream, OwnDownstreamStream, serveOwnConnection } from './h2-own-downstream.ts';
import { badField, OwnUpstreamStream } from './h2-own-upstream.ts';
import { H2RequestBody } from './h2-request-body.ts';
import { sendH2Mirror } from './mirror.ts';
import { H2Try, type H2Response, type H2TryRequest } from './h2-try.ts';
import { listen } from './h2-stream-events.ts';
import { CONNECTION_SPECIFIC, upstreamHeadOf, upstreamHeadOfFields, UpstreamRequestHead } from './h2-upstream-head.ts';
import { H2RequestHead } from './h2-request-head.ts';
import { cancelStream, H2_SESSION_WINDOW_BYTES, H2_STREAM_WINDOW_BYTES, type H2Sessions, type UpstreamH2Stream } from './h2-upstream.ts';
import { pathOf, queryOf } from './http-router.ts';
import type { RequestFacts, WaypointMetrics } from './metrics.ts';
import { grpcStatusForHttp, isGrpcContentType } from './protocols.ts';
import { RequestAttempts, type AttemptsListener, type AttemptsOptions, type AttemptsResult, type ResponseFacts } from './request-attempts.ts';
import { routeRequest } from './request-target.ts';
import { TryRequestBase } from './try-request-base.ts';
import { cachedServiceKey } from './service-keys.ts';
import { ISTIO_DEFAULT_RETRY, MAX_BUFFERED_BODY_BYTES } from './retry.ts';
import type { RouteBackend, RouteEntry, RouteTable } from './route-table.ts';
import { requestIdFrom, traceContextFrom, traceparentOf } from './tracing.ts';
import type { Upstreams } from './upstream.ts';
import { decisionOf, type GateRefusal, type GateRequest, type GateResponse, type RequestGate } from './authz/request-gate.ts';
import type { DestinationRequest, DestinationTraffic, HashSource } from './destination/destination-traffic.ts';

const { NGHTTP2_CANCEL, NGHTTP2_FLAG_END_STREAM, NGHTTP2_INTERNAL_ERROR, NGHTTP2_NO_ERROR } = http2.constants;


/** Placeholders of the reused access-log record before its first line. */
const UNKNOWN_SRC: AccessLogRecord['src'] = { principal: 'unknown', workload: 'unknown', namespace: 'unknown', address: '' };
const UNKNOWN_DST: AccessLogRecord['dst'] = { principal: 'unknown', workload: 'unknown', namespace: 'unknown', service: '' };

/** Limits of the downstream server: as many streams per client connection as the HBONE server allows per tunnel. */
const DOWNSTREAM_MAX_CONCURRENT_STREAMS = 200;
/**
 * Rapid reset on the client's h2c connection, on the own layer's server: nghttp2's defaults (node:http2's server,
 * the other downstream), a burst of 1,000 RST_STREAMs then 33/s, past which the client loses that connection
 * (GOAWAY ENHANCE_YOUR_CALM). The layer's own default (10,000 then 1,000/s) is for pooled HBONE connections that
 * carry many applications' tunnels; here every stream is a request the waypoint routes, and one client's connection.
 */
const DOWNSTREAM_RESET_BURST = 1000;
const DOWNSTREAM_RESET_RATE_PER_SECOND = 33;

export interface H2StreamContext {
  hbone: HboneRequest;
  service: Service;
  source: Workload | undefined;
  /** The access log's src block for every request of this client connection, made at its first line. */
  srcBlock?: AccessLogRecord['src'];
}

type HeaderModifier = RouteEntry['requestHeaderModifier'];

/** The request's headers for the endpoint: connection-specific ones dropped, the route's modifier applied. */
export function upstreamRequestHeaders(headers: http2.IncomingHttpHeaders, modifier: HeaderModifier): http2.OutgoingHttpHeaders {
  const result: http2.OutgoingHttpHeaders = {};
  for (const name in headers) if (!CONNECTION_SPECIFIC.has(name)) result[name] = headers[name];
  // HTTP/1.1-style `te` other than trailers is connection-specific too; gRPC's `te: trailers` passes.
  if (result.te !== undefined && result.te !== 'trailers') delete result.te;
  applyModifier(result, modifier);
  return result;
}

/** The endpoint's response headers (or trailers) for the client, with the route's response modifier applied. */
export function downstreamResponseHeaders(headers: http2.IncomingHttpHeaders, modifier: HeaderModifier): http2.OutgoingHttpHeaders {
  const result: http2.OutgoingHttpHeaders = {};
  for (const name in headers) if (!CONNECTION_SPECIFIC.has(name)) result[name] = headers[name];
  applyModifier(result, modifier);
  return result;
}

function applyModifier(headers: http2.OutgoingHttpHeaders, modifier: HeaderModifier): void {
  if (!modifier) return;
  for (const header of modifier.set) headers[header.name.toLowerCase()] = header.value;
  for (const header of modifier.add) {
    const name = header.name.toLowerCase();
    const existing = headers[name];
    headers[name] = existing === undefined ? header.value : `${Array.isArray(existing) ? existing.join(',') : String(existing)},${header.value}`;
  }
  for (const name of modifier.remove) delete headers[name];
}

/** gRPC's DEADLINE_EXCEEDED: the waypoint's answer to a gRPC request that outlasted a route timeout. */
const GRPC_DEADLINE_EXCEEDED = 4;

/** The grpc-status the waypoint answers a gRPC request with for `error`: a timeout is DEADLINE_EXCEEDED, the rest by HTTP status. */
export function grpcStatusForError(error: WaypointError): number {
  if (error.code === 'WAYPOINT_REQUEST_TIMEOUT' || error.code === 'WAYPOINT_BACKEND_TIMEOUT') return GRPC_DEADLINE_EXCEEDED;
  return grpcStatusForHttp(error.status);
}

/** A grpc-status value (of an answer's head, for a trailers-only answer, or of its trailers) as a number; undefined when absent or not one. */
function grpcStatusOf(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const status = Number(value);
  return Number.isInteger(status) ? status : undefined;
}

/** What the try loop reads of an HTTP/2 answer, and how it drops one that is retried. */
const H2_RESPONSE_FACTS: ResponseFacts<H2Response> = {
  status: (response) => response.status,
  // Only a trailers-only answer carries its gRPC status in the head (Envoy's gRPC retryOn looks there too).
  grpcStatus: (response) => (response.endStream ? grpcStatusOf(response.headValue('grpc-status')) : undefined),
  discard: (response) => cancelStream(response.stream),
};

/** What an H2Request needs of the proxy (one object per proxy, made in its constructor, as http-proxy.ts's LeanOwner). */
interface H2RequestOwner {
  readonly upstreams: Upstreams;
  readonly sessions: H2Sessions;
  /** The tries' result: the waypoint's own answer, or the relay of the endpoint's. */
  answered(request: H2Request, result: AttemptsResult<H2Response>): void;
  /** The client's stream closed: the metrics, the access-log line, no try going on. */
  closed(request: H2Request): void;
  /** A step threw: the stream is reset (or its answer cut). */
  failed(request: H2Request, error: Error): void;
}

/**
 * One request stream as one object: what is known about it as it goes (for its metrics and access-log line), what
 * its tries read (H2TryRequest, the try loop's options), the listener of the tries' result, and the relay's state;
 * its listeners on the client's and the endpoint's streams are module functions called with it as `this`
 * (h2-stream-events.ts). Before session s13 these were a record, an options object, a try request per try and about
 * ten closures per request.
 */
class H2Request extends TryRequestBase<H2Response, H2StreamContext> implements GateRequest, GateResponse, AttemptsOptions<H2Response>, AttemptsListener<H2Response>, H2TryRequest, HashSource {
  readonly owner: H2RequestOwner;
  readonly stream: DownstreamH2Stream;
  /** The request's head: the own layer's list, node:http2's object made from it only when read (h2-request-head.ts). */
  readonly requestHead: H2RequestHead;
  readonly grpc: boolean;
  readonly method: string;
  /** The path (and query) as the client sent it. */
  readonly path: string;
  readonly authority: string;
  /** The request's HEADERS ended it (no body). */
  readonly endStream: boolean;
  body: H2RequestBody | undefined = undefined;
  /** The HTTP status decided (0 until then: a client gone before an answer). */
  status = 0;
  grpcStatus: number | undefined = undefined;
  flags = '-';
  /** The target the gate decided on (it normalises the path: `/a/../b` -> `/b`), as GateRequest's `url`. */
  url: string;
  /** The gate's refusal, written by it (GateResponse) and sent in `end`. */
  #gateStatus = 0;
  #gateHeaders: Record<string, string | number> | undefined = undefined;
  // What the tries send (set in #tries before they start), beside TryRequestBase's backend, port and settings.
  head!: UpstreamRequestHead;
  // The relay of the endpoint's answer (from #relay on).
  upstream: UpstreamH2Stream | undefined = undefined;
  response: H2Response | undefined = undefined;
  relaying: H2Try | undefined = undefined;
  /** The answer's head went on as the endpoint's list (both legs the own layer's, no response modifier). */
  passedAsList = false;

  constructor(owner: H2RequestOwner, context: H2StreamContext, stream: DownstreamH2Stream, head: H2RequestHead, flags: number) {
    super(context, requestIdFrom(head.requestId), traceContextFrom(head.traceparent, head.tracestate), H2_RESPONSE_FACTS);
    this.owner = owner;
    this.stream = stream;
    this.requestHead = head;
    this.grpc = isGrpcContentType(head.contentType);
    this.method = head.method ?? '';
    this.path = head.path ?? '/';
    this.url = this.path;
    this.authority = head.authority ?? '';
    this.endStream = (flags & NGHTTP2_FLAG_END_STREAM) !== 0;
  }

  /** The request's head as node:http2's object (GateRequest's, HashSource's): made when first read. */
  get headers(): http2.IncomingHttpHeaders {
    return this.requestHead.object;
  }

  /** HashSource's: the client's address (`url` is the gate's normalised target, the one the route matched). */
  get sourceIp(): string {
    return plainAddress(this.context.hbone.remoteAddress);
  }

  // GateRequest and GateResponse: the request as L7 policy reads it, and its refusal, as HTTP or as a gRPC status.
  resume(): void {
    this.stream.resume();
  }

  writeHead(code: number, headers: Record<string, string | number>): void {
    this.#gateStatus = code;
    this.#gateHeaders = headers;
  }

  end(body = ''): void {
    const stream = this.stream;
    if (stream.closed || stream.destroyed || stream.headersSent) return;
    if (this.grpc) {
      stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': String(grpcStatusForHttp(this.#gateStatus)), 'grpc-message': grpcMessage(body) }, { endStream: true });
      return;
    }
    stream.respond({ ...this.#gateHeaders, ':status': this.#gateStatus });
    stream.end(body);
  }

  /** An endpoint's 1xx head, passed on before the answer (called with the request as `this`: see H2Try). */
  onInformational(informational: http2.IncomingHttpHeaders): void {
    const stream = this.stream;
    if (!stream.headersSent && !stream.closed) stream.additionalHeaders(downstreamResponseHeaders(informational, undefined));
  }

  // AttemptsOptions: the try loop's.
  start(avoid: string | undefined): H2Try {
    return new H2Try(this.owner.upstreams, this.owner.sessions, this, this.body!, avoid);
  }

  replayable(): boolean {
    const stream = this.stream;
    return this.body!.replayable() && !stream.closed && !stream.headersSent;
  }

  // AttemptsListener: called from a try's event (an endpoint's head, a reset) or at once: what throws here is this request's alone.
  attemptsDone(result: AttemptsResult<H2Response>): void {
    try {
      this.owner.answered(this, result);
    } catch (error) {
      this.owner.failed(this, error as Error);
    }
  }
}

/** The client's stream closed (its 'close', with the request as `this`): counted and logged once, no try goes on. */
function requestClosed(this: H2Request): void {
  this.owner.closed(this);
}

/** The answer's body ended: the endpoint's trailers go on (the client's stream's 'wantTrailers'). */
function relayTrailers(this: H2Request): void {
  const response = this.response!;
  if (this.grpc) this.grpcStatus = grpcStatusOf(response.trailerValue('grpc-status'));
  const trailerFields = this.passedAsList ? passedTrailerFields(this.upstream!) : undefined;
  if (trailerFields !== undefined) {
    (this.stream as OwnDownstreamStream).sendTrailerFields(trailerFields);
    return;
  }
  const trailers = response.trailers;
  this.stream.sendTrailers(trailers ? downstreamResponseHeaders(trailers, undefined) : {});
}

/**
 * A chunk of the answer's body (the endpoint's stream's 'data'), counted, with the client's flow control as the
 * back-pressure: what Readable.pipe does, without its six listeners each way per request (profiled: 1-2 % of the
 * waypoint's CPU).
 */
function relayData(this: H2Request, chunk: Buffer): void {
  this.responseBytes += chunk.length;
  const stream = this.stream;
  if (!stream.closed && !stream.destroyed && !stream.write(chunk)) {
    this.upstream!.pause();
    listen(stream, 'drain', relayDrained, this, true);
  }
}

function relayDrained(this: H2Request): void {
  this.upstream!.resume();
}

/** The endpoint's answer ended (its stream's 'end'). */
function relayEnded(this: H2Request): void {
  const upstream = this.upstream!;
  const stream = this.stream;
  // A reset ends the readable side too: that one is not the answer's end (relayCut resets the client's stream).
  const reset = upstream.rstCode !== undefined && upstream.rstCode !== NGHTTP2_NO_ERROR;
  if (!reset && !stream.closed && !stream.destroyed) stream.end();
}

/**
 * The endpoint's stream closed after the head (it ended, reset, its connection broke, or a timeout cut it): a cut
 * answer resets the client's stream too, so it never takes a short answer for a whole one.
 */
function relayCut(this: H2Request): void {
  const tries = this.tries!;
  tries.stop();
  const code = this.upstream!.rstCode ?? NGHTTP2_NO_ERROR;
  if (code === NGHTTP2_NO_ERROR) {
    // The endpoint answered in full while the client still sends (a stream the server ended first).
    this.body?.discardRest();
    return;
  }
  const stream = this.stream;
  if (stream.closed || stream.destroyed) return;
  this.flags = this.relaying!.timedOut || tries.timedOut ? 'UT' : 'UC';
  this.details = 'upstream_reset_after_response_started';
  stream.close(code === NGHTTP2_CANCEL ? NGHTTP2_INTERNAL_ERROR : code);
}

/**
 * The client's stream as fault.ts answers on it: a trailers-only gRPC abort (its head carries grpc-status) is one
 * HEADERS frame with END_STREAM, as gRPC requires.
 */
function faultResponseOf(stream: DownstreamH2Stream): Parameters<typeof applyFault>[1] {
  let ended = false;
  return {
    get headersSent() {
      return stream.headersSent;
    },
    get destroyed() {
      return stream.destroyed || stream.closed;
    },
    writeHead(statusCode: number, headers: Record<string, string> = {}) {
      if (stream.closed || stream.destroyed) return;
      ended = headers['grpc-status'] !== undefined;
      stream.respond({ ':status': statusCode, ...headers }, { endStream: ended });
    },
    end(body?: string) {
      if (!ended && !stream.closed && !stream.destroyed) stream.end(body);
    },
    once(event: 'close', listener: () => void) {
      stream.once(event, listener);
    },
    off(event: 'close', listener: () => void) {
      stream.off(event, listener);
    },
  };
}

/** grpc-message is percent-encoded (gRPC over HTTP/2: printable ASCII except '%' stays). */
function grpcMessage(text: string): string {
  return text.replace(/[^\x20-\x24\x26-\x7e]/gu, (character) => encodeURIComponent(character));
}

export class H2Proxy {
  readonly #server: http2.Http2Server;
  readonly #contexts = new WeakMap<http2.Http2Session, H2StreamContext>();
  readonly #clientSessions = new Set<http2.ServerHttp2Session>();
  /** Client connections served by the own HTTP/2 layer (serveOwnConnection). */
  readonly #ownConnections = new Set<H2Connection>();
  #connecting: H2StreamContext | undefined;
  readonly #upstreams: Upstreams;
  readonly #sessions: H2Sessions;
  readonly #routes: RouteTable;
  readonly #state: MeshState;
  readonly #metrics: WaypointMetrics;
  readonly #gate: RequestGate | undefined;
  readonly #destinations: DestinationTraffic | undefined;
  readonly #log: Logger | undefined;
  /** #finish's facts and byte counts for the metrics, filled per request (requestByFacts keeps neither object). */
  readonly #facts: RequestFacts = { source: undefined, peer: undefined as unknown as RequestFacts['peer'], endpoint: undefined, service: undefined as unknown as Service, protocol: 'grpc', status: 0, flags: '-', grpcStatus: '' };
  readonly #bytes = { request: 0, response: 0 };
  /** What each request's own object needs of the proxy. */
  readonly #owner: H2RequestOwner;
  /** The access-log record every request's line is written from (filled in per request: no object per request). */
  readonly #logRecord: AccessLogRecord = {
    method: '', path: '', protocol: 'HTTP/2', authority: '', status: 0, flags: '', details: '', durationMs: 0, bytesReceived: 0, bytesSent: 0, upstreamHost: '', upstreamCluster: '',
    attempts: 0, routeName: '', ruleName: '', requestId: '', traceId: '', spanId: '', src: UNKNOWN_SRC, dst: UNKNOWN_DST, authz: undefined, grpcStatus: undefined,
  };
  /** Client connections that ended in a protocol error (garbage preface or frame), for config_dump and tests. */
  protocolErrors = 0;
  /** Request streams being served now (config_dump; the rude-peer tests watch it come back to 0). */
  activeStreams = 0;

  constructor(options: { upstreams: Upstreams; sessions: H2Sessions; routes: RouteTable; state: MeshState; metrics: WaypointMetrics; gate?: RequestGate; destinations?: DestinationTraffic; log?: Logger }) {
    this.#gate = options.gate;
    this.#destinations = options.destinations;
    this.#log = options.log;
    this.#upstreams = options.upstreams;
    this.#sessions = options.sessions;
    this.#routes = options.routes;
    this.#state = options.state;
    this.#metrics = options.metrics;
    this.#owner = {
      upstreams: options.upstreams,
      sessions: options.sessions,
      answered: (request, result) => this.#answered(request, result),
      closed: (request) => {
        this.activeStreams--;
        this.#finish(request.stream, request);
        request.tries?.abort();
        if (request.upstream !== undefined) cancelStream(request.upstream);
      },
      failed: (request, error) => this.#failed(request.stream, request.requestHead, error),
    };
    this.#server = http2.createServer({
      settings: { initialWindowSize: H2_STREAM_WINDOW_BYTES, maxConcurrentStreams: DOWNSTREAM_MAX_CONCURRENT_STREAMS, enablePush: false },
    });
    // The session is made synchronously inside emit('connection'): that is where it learns whose connection it is.
    this.#server.on('session', (session: http2.ServerHttp2Session) => {
      if (this.#connecting) this.#contexts.set(session, this.#connecting);
      this.#clientSessions.add(session);
      session.once('close', () => this.#clientSessions.delete(session));
      // A client whose preface is garbage has its session destroyed before 'connect' handlers run.
      session.once('connect', () => {
        if (!session.destroyed) session.setLocalWindowSize(H2_SESSION_WINDOW_BYTES);
      });
    });
    this.#server.on('stream', (stream, headers, flags) => {
      // Before anything can close it: a stream closed with an error code emits 'error', which must not crash the
      // waypoint (a stream reset as it opens has no session, so no context, and is closed here).
      stream.on('error', ignoreStreamError);
      const context = this.#contexts.get(stream.session!);
      if (!context) {
        stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
        return;
      }
      this.#serveStream(stream, H2RequestHead.ofObject(headers), flags, context);
    });
    // A client's bad preface or frame: nghttp2 answers GOAWAY PROTOCOL_ERROR and the session (one HBONE stream) ends.
    this.#server.on('sessionError', () => this.protocolErrors++);
  }

  /** Serves HTTP/2 on `connection` (the terminated HBONE stream, already answered 200) until the client closes it. */
  serveConnection(hbone: HboneRequest, connection: Duplex, service: Service, source: Workload | undefined): void {
    this.#connecting = { hbone, service, source };
    try {
      this.#server.emit('connection', connection);
    } finally {
      this.#connecting = undefined;
    }
  }

  /**
   * Serves HTTP/2 on `transport` (the terminated HBONE stream, answered 200; `firstBytes` read from it already) with
   * the own HTTP/2 layer (h2-own-downstream.ts) instead of node:http2's server: the same request flow.
   */
  serveOwnConnection(hbone: HboneRequest, transport: Duplex, firstBytes: Buffer | undefined, service: Service, source: Workload | undefined): void {
    const context: H2StreamContext = { hbone, service, source };
    const connection = serveOwnConnection(transport, firstBytes, {
      streamWindowBytes: H2_STREAM_WINDOW_BYTES, connectionWindowBytes: H2_SESSION_WINDOW_BYTES, maxConcurrentStreams: DOWNSTREAM_MAX_CONCURRENT_STREAMS,
      resetBurst: DOWNSTREAM_RESET_BURST, resetRatePerSecond: DOWNSTREAM_RESET_RATE_PER_SECOND,
    }, (stream, flags) =>
      this.#serveStream(stream, H2RequestHead.ofFields(stream.stream.requestHeaders), flags, context),
    );
    this.#ownConnections.add(connection);
    // A client's bad preface or frame: the layer answers GOAWAY with the RFC's code and the connection ends.
    connection.on('error', (error: Error & { code?: string }) => {
      if (error.code === 'H2_PEER_PROTOCOL') this.protocolErrors++;
    });
    connection.once('close', () => this.#ownConnections.delete(connection));
  }

  /** One request stream, whichever server carries it. */
  #serveStream(stream: DownstreamH2Stream, head: H2RequestHead, flags: number, context: H2StreamContext): void {
    // A request that throws anywhere in its flow (a peer's odd input, a header value Node refuses) loses its stream
    // only: reset with INTERNAL_ERROR (or its answer cut); the waypoint and the other streams carry on.
    try {
      this.#handle(stream, head, flags, context);
    } catch (error) {
      this.#failed(stream, head, error as Error);
    }
  }

  /** A request's flow threw (synchronously or in one of its waits): its stream is reset, nothing else. */
  #failed(stream: DownstreamH2Stream, head: H2RequestHead, error: Error): void {
    this.#log?.warn({ err: error.message, method: head.method, path: head.currentPath }, 'HTTP/2 request failed in the waypoint');
    if (!stream.closed && !stream.destroyed) stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
  }

  /** Sends every client GOAWAY (their open streams finish; new requests go to a new connection) and stops. */
  close(): void {
    for (const session of this.#clientSessions) session.close();
    for (const connection of this.#ownConnections) connection.close();
    this.#server.close();
  }

  /** Client connections and request streams open now. */
  view(): object {
    return { clientSessions: this.#clientSessions.size + this.#ownConnections.size, activeStreams: this.activeStreams, protocolErrors: this.protocolErrors };
  }

  /**
   * A request's flow, without a promise in the common case: each stage goes on at once when what it waits for is
   * there already (no policy fetch, no fault delay, a pool slot free, a pooled endpoint connection with room, and
   * the tries told their outcome through runThen), and on a promise's settling otherwise.
   */
  #handle(stream: DownstreamH2Stream, head: H2RequestHead, flags: number, context: H2StreamContext): void {
    stream.on('error', ignoreStreamError);
    const record = new H2Request(this.#owner, context, stream, head, flags);
    // Every request stream is counted and logged once, when it closes, whatever ended it; then no try goes on for
    // a client that went away (or reset its stream).
    this.activeStreams++;
    listen(stream, 'close', requestClosed, record, true);
    if (this.#gate) {
      // L7 policy (waypoint/authz/), as on the HTTP/1.1 path: a refusal is answered here (in gRPC for gRPC requests,
      // as Envoy's local replies are: 403 -> PERMISSION_DENIED, 401 -> UNAUTHENTICATED, 429 -> UNAVAILABLE).
      // The request is the gate's request and answer (no object of their own).
      // Synchronous when the Service has no policy: no promise unless a JWKS fetch is due.
      const checked = this.#gate.check(record, record, context.hbone, context.service);
      if (checked instanceof Promise) {
        checked.then((refusal) => {
          if (this.#gatePassed(record, refusal)) this.#route(stream, record);
        }).catch((error: Error) => this.#failed(stream, head, error));
        return;
      }
      if (!this.#gatePassed(record, checked)) return;
    }
    this.#route(stream, record);
  }

  /** The gate's verdict: false when it refused (answered already); the path it normalised goes on. */
  #gatePassed(record: H2Request, refusal: GateRefusal | undefined): boolean {
    if (refusal) {
      this.#decided(record, refusal.status, refusal.responseFlags, refusal.details, record.grpc ? grpcStatusForHttp(refusal.status) : undefined);
      return false;
    }
    // The gate normalises the path it decided on (`/a/../b` -> `/b`); the endpoint gets the same path.
    if (record.url !== undefined && record.url !== record.requestHead.currentPath) record.requestHead.normalisePath(record.url);
    return true;
  }

  /** The route, and the VirtualService fault (fault.ts) before anything goes upstream, as on the HTTP/1.1 path. */
  #route(stream: DownstreamH2Stream, record: H2Request): void {
    const context = record.context;
    const url = record.requestHead.currentPath;
    let entry: RouteEntry | undefined;
    let backend: RouteBackend | undefined;
    let port: number;
    try {
      // The head's object only if a route matches on headers (matchRoute calls the function then).
      const routed = routeRequest(this.#routes, this.#state, context.service, context.hbone.target.port, record.method, url, () => record.requestHead.object, true);
      record.destination = routed.destination;
      record.entry = entry = routed.entry;
      backend = routed.backend;
      port = routed.port;
    } catch (error) {
      if (!(error instanceof WaypointError)) throw error;
      this.#answer(stream, record, error, error.code === 'WAYPOINT_NO_ROUTE' ? 'route_not_found' : 'no_usable_backend');
      return;
    }
    if (entry?.fault) {
      this.#faulted(stream, record, entry.fault, backend, port, url).catch((error: Error) => this.#failed(stream, record.requestHead, error));
      return;
    }
    this.#admit(stream, record, backend, port, url);
  }

  /** A route with fault injection: the delay or abort first (a wait), then the request goes on. */
  async #faulted(stream: DownstreamH2Stream, record: H2Request, injected: NonNullable<RouteEntry['fault']>, backend: RouteBackend | undefined, port: number, url: string): Promise<void> {
    const fault = await applyFault(injected, faultResponseOf(stream));
    record.faultFlags = fault.flags;
    if (fault.clientGone || fault.abortedWith !== undefined) {
      stream.resume();
      const grpcStatus = fault.abortedWith !== undefined && injected.abort?.httpStatus === 0 ? injected.abort.grpcStatus : undefined;
      this.#decided(record, fault.abortedWith ?? 0, fault.clientGone ? 'DC' : '-', fault.clientGone ? 'downstream_remote_disconnect' : 'fault_filter_abort', grpcStatus);
      return;
    }
    this.#admit(stream, record, backend, port, url);
  }

  /** A redirect's answer, or the upstream head and the DestinationRule's pool slot (a wait only when the pool is full). */
  #admit(stream: DownstreamH2Stream, record: H2Request, backend: RouteBackend | undefined, port: number, url: string): void {
    const context = record.context;
    const entry = record.entry;
    const path = pathOf(url);
    const query = queryOf(url);
    if (entry?.redirect) {
      const location = redirectLocation(entry, { host: record.authority, path, query, servicePort: context.hbone.target.port });
      stream.resume();
      if (!stream.closed) stream.respond({ ':status': entry.redirect.statusCode, location }, { endStream: true });
      this.#decided(record, entry.redirect.statusCode, '-', 'direct_response', undefined);
      return;
    }
    const upstreamHead = this.#upstreamHead(record, backend, entry ? rewrittenUrl(entry, path, query) : url);
    // ---- DestinationRule hook (waypoint/destination/), as on the HTTP/1.1 path: a pool slot for the request (or
    // 503 UO), the rule's endpoint choice for each try, the outcome for outlier detection when the request ends. ----
    const traffic = this.#destinations?.forService(cachedServiceKey(record.destination));
    if (traffic === undefined) {
      this.#tries(stream, record, backend, port, upstreamHead);
      return;
    }
    // A VirtualService destination's subset: its pods, as the backend's DestinationRule defines it (none: 503 NC).
    const subset = backend?.subset !== undefined ? traffic.subsetPods(backend.subset) : undefined;
    if (backend?.subset !== undefined && subset === undefined) {
      this.#answer(stream, record, new WaypointError('WAYPOINT_UNKNOWN_SUBSET', `no DestinationRule of ${record.destination.hostname} defines subset ${backend.subset}`), 'cluster_not_found');
      return;
    }
    let begun: DestinationRequest | Promise<DestinationRequest>;
    try {
      // The request is the hash's source (its head's object made only when a hash reads a header).
      begun = traffic.begin(record, subset);
    } catch (error) {
      this.#overflowed(stream, record, error);
      return;
    }
    if (begun instanceof Promise) {
      begun.then(
        (admitted) => this.#admitted(stream, record, backend, port, upstreamHead, admitted),
        (error: unknown) => this.#overflowed(stream, record, error),
      ).catch((error: Error) => this.#failed(stream, record.requestHead, error));
      return;
    }
    this.#admitted(stream, record, backend, port, upstreamHead, begun);
  }

  /** No pool slot for the request: 503 UO (a WaypointError); anything else is the request's failure. */
  #overflowed(stream: DownstreamH2Stream, record: H2Request, error: unknown): void {
    if (!(error instanceof WaypointError)) throw error;
    this.#destinations!.overflowed(cachedServiceKey(record.destination));
    this.#answer(stream, record, error, 'upstream_overflow', error.responseFlags, { 'x-envoy-overloaded': 'true' });
  }

  #admitted(stream: DownstreamH2Stream, record: H2Request, backend: RouteBackend | undefined, port: number, upstreamHead: UpstreamRequestHead, admitted: DestinationRequest): void {
    record.destinationRequest = admitted;
    // The client left while the request waited for its slot: nothing to send.
    if (stream.closed || stream.destroyed) return;
    this.#tries(stream, record, backend, port, upstreamHead);
  }

  /** The body, the mirrors and the tries (request-attempts.ts), told their outcome without a promise (runThen). */
  #tries(stream: DownstreamH2Stream, record: H2Request, backend: RouteBackend | undefined, port: number, upstreamHead: UpstreamRequestHead): void {
    if (stream.closed || stream.destroyed) return;
    const entry = record.entry;
    const body = new H2RequestBody(stream, MAX_BUFFERED_BODY_BYTES, record.endStream);
    record.body = body;
    if (entry?.mirrors !== undefined) {
      const vip = record.context.hbone.target.host;
      for (const mirror of entry.mirrors) {
        const service = this.#state.serviceByKey(mirror.service);
        if (!service || (mirror.fraction < 1 && Math.random() >= mirror.fraction)) continue;
        sendH2Mirror(this.#sessions, this.#upstreams, { service, servicePort: mirror.port, vip, headers: upstreamHead.object, body }, (message) => this.#log?.debug({ mirror: mirror.service, err: message }, 'mirror request failed'));
      }
    }
    // The request is the tries' options, what each try reads, and the listener of their result.
    record.backend = backend;
    record.servicePort = port;
    record.head = upstreamHead;
    record.policy = entry?.retry ?? ISTIO_DEFAULT_RETRY;
    record.requestTimeoutMs = entry?.requestTimeoutMs ?? 0;
    const tries = new RequestAttempts<H2Response>(record);
    record.tries = tries;
    tries.runThen(record);
  }

  /** The tries' result: the waypoint's own answer, or the relay of the endpoint's. */
  #answered(record: H2Request, result: AttemptsResult<H2Response>): void {
    const current = result.attempt as H2Try;
    record.attempts = record.tries!.attempts;
    record.endpoint = current.endpoint;
    record.upstreamHost = current.address;
    const stream = record.stream;
    if (result.kind === 'timeout') {
      this.#answer(stream, record, result.error, 'request_timeout');
      return;
    }
    if (result.kind === 'error') {
      this.#answer(stream, record, result.error, result.error.code === 'WAYPOINT_BACKEND_TIMEOUT' ? 'upstream_per_try_timeout' : 'upstream_reset_before_response_started', result.flags);
      return;
    }
    this.#relay(stream, record, result.response, current, record.backend, result.flags);
  }

  /** The request's head for the endpoint: end-to-end fields, the filters', the rewritten path, the request id and trace context. */
  #upstreamHead(record: H2Request, backend: RouteBackend | undefined, upstreamPath: string): UpstreamRequestHead {
    const entry = record.entry;
    const traceparent = traceparentOf(record.trace);
    const authority = entry?.urlRewrite?.hostname || undefined;
    // No header modifier (the common route): the list straight from the request's list, or from node:http2's object
    // (h2-upstream-head.ts).
    if (entry?.requestHeaderModifier === undefined && backend?.requestHeaderModifier === undefined) {
      const fields = record.requestHead.fields;
      if (fields !== undefined) return upstreamHeadOfFields(fields, upstreamPath, authority, record.requestId, traceparent, record.trace.tracestate);
      return upstreamHeadOf(record.requestHead.object, upstreamPath, authority, record.requestId, traceparent, record.trace.tracestate);
    }
    const result = upstreamRequestHeaders(record.requestHead.object, entry?.requestHeaderModifier);
    modifyHeaders(result, backend?.requestHeaderModifier);
    result[':path'] = upstreamPath;
    if (authority !== undefined) result[':authority'] = authority;
    result['x-request-id'] = record.requestId;
    result.traceparent = traceparent;
    if (record.trace.tracestate !== undefined) result.tracestate = record.trace.tracestate;
    else delete result.tracestate;
    return UpstreamRequestHead.fromObject(result);
  }

  /**
   * Passes the endpoint's answer on (with the response filters): head, body, trailers; a cut upstream resets the
   * client's stream. The listeners are the module's relay functions with the request as `this` (no closure each).
   */
  #relay(stream: DownstreamH2Stream, record: H2Request, response: H2Response, current: H2Try, backend: RouteBackend | undefined, flags: string): void {
    const upstream = response.stream;
    const status = response.status;
    if (stream.closed || stream.destroyed) {
      cancelStream(upstream);
      return;
    }
    // Own layer both ways and no response modifier: the endpoint's fields go on as the list they came in.
    const passed = record.entry?.responseHeaderModifier === undefined && backend?.responseHeaderModifier === undefined ? passedResponseFields(upstream, stream) : undefined;
    let responseHeaders: http2.OutgoingHttpHeaders | undefined;
    if (passed === undefined) {
      responseHeaders = downstreamResponseHeaders(response.headers, record.entry?.responseHeaderModifier);
      modifyHeaders(responseHeaders, backend?.responseHeaderModifier);
    }
    if (response.endStream) {
      record.tries!.stop();
      this.#decided(record, status, flags, 'via_upstream', record.grpc ? grpcStatusOf(response.headValue('grpc-status')) : undefined);
      if (passed !== undefined) (stream as OwnDownstreamStream).respondFields(status, passed, true, false);
      else stream.respond(responseHeaders, { endStream: true });
      return;
    }
    this.#decided(record, status, flags, 'via_upstream', undefined);
    record.upstream = upstream;
    record.response = response;
    record.relaying = current;
    record.passedAsList = passed !== undefined;
    listen(stream, 'wantTrailers', relayTrailers, record, true);
    if (passed !== undefined) (stream as OwnDownstreamStream).respondFields(status, passed, false, true);
    else stream.respond(responseHeaders, { waitForTrailers: true });
    listen(upstream, 'data', relayData, record, false);
    listen(upstream, 'end', relayEnded, record, true);
    // The client's stream closing cancels the upstream too (H2Proxy's closed: the tries' abort and cancelStream).
    if (upstream.closed) relayCut.call(record);
    else listen(upstream, 'close', relayCut, record, true);
  }

  /** The waypoint's own answer: an HTTP status, or for gRPC a trailers-only response with the mapped grpc-status. */
  #answer(stream: DownstreamH2Stream, record: H2Request, error: WaypointError, details: string, flags = error.responseFlags, extraHeaders?: http2.OutgoingHttpHeaders): void {
    const grpcStatus = record.grpc ? grpcStatusForError(error) : undefined;
    this.#decided(record, error.status, flags, details, grpcStatus);
    stream.resume();
    if (stream.closed || stream.destroyed) return;
    if (stream.headersSent) {
      stream.close(NGHTTP2_INTERNAL_ERROR);
      return;
    }
    if (grpcStatus !== undefined) {
      stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': String(grpcStatus), 'grpc-message': grpcMessage(error.message), ...extraHeaders }, { endStream: true });
    } else {
      stream.respond({ ':status': error.status, 'content-type': 'text/plain', ...extraHeaders });
      stream.end(`${error.message}\n`);
    }
  }

  #decided(record: H2Request, status: number, flags: string, details: string, grpcStatus: number | undefined): void {
    record.status = status;
    record.flags = flags;
    record.details = details;
    record.grpcStatus = grpcStatus;
  }

  /** The stream closed: the DestinationRule outcome, Istio's metrics and the access-log line, once. */
  #finish(stream: DownstreamH2Stream, record: H2Request): void {
    const { context, endpoint, destination } = record;
    const reset = stream.rstCode !== undefined && stream.rstCode !== NGHTTP2_NO_ERROR;
    // A client that reset its stream before an answer is a downstream disconnect (Envoy's DC, response code 0).
    if (reset && (record.status === 0 || record.flags === '-')) record.flags = 'DC';
    if (record.faultFlags !== '') record.flags = record.flags === '-' ? record.faultFlags : `${record.faultFlags},${record.flags}`;
    record.destinationRequest?.done(/U[FCT]/.test(record.flags) ? 'connect-failure' : record.details === 'via_upstream' && record.status > 0 ? record.status : undefined);
    const durationMs = performance.now() - record.started;
    const requestBytes = record.body?.bytes ?? 0;
    const grpcStatus = record.grpcStatus === undefined ? '' : String(record.grpcStatus);
    // By the request's facts (a short key; the 24 labels are made once per series), as the HTTP/1.1 path counts.
    // Into the proxy's two scratch objects: requestByFacts reads them and keeps neither.
    const facts = this.#facts;
    facts.source = context.source;
    facts.peer = context.hbone.peerIdentity;
    facts.endpoint = endpoint;
    facts.service = destination;
    facts.protocol = record.grpc ? 'grpc' : 'http';
    facts.status = record.status;
    facts.flags = record.flags;
    facts.grpcStatus = grpcStatus;
    const bytes = this.#bytes;
    bytes.request = requestBytes;
    bytes.response = record.responseBytes;
    this.#metrics.requestByFacts(facts, durationMs, bytes);
    if (!this.#log) return;
    // One record for every request's line, filled in here (logRequest keeps nothing of it): no object, and no spread
    // of an optional member, per request.
    const line = this.#logRecord;
    line.method = record.method;
    line.path = record.path;
    line.authority = record.authority;
    line.status = record.status;
    line.flags = record.flags;
    line.details = record.details;
    line.durationMs = durationMs;
    fillTryFields(line, record, requestBytes, decisionOf(record));
    line.grpcStatus = grpcStatus !== '' ? grpcStatus : undefined;
    logRequest(this.#log, line);
  }
}

/**
 * The endpoint's answer head as the client's list (without `:status`), when both legs are the own layer's: the
 * layer checked it on receipt (only `:status` as pseudo-header, lower-case names, no CR/LF/NUL, no connection-specific
 * field, `te`), and what downstreamResponseHeaders and the list conversion would refuse besides (a name outside the
 * token characters) throws here as there; `host` or `http2-settings` in it: undefined (the object way drops them).
 */
function passedResponseFields(upstream: UpstreamH2Stream, stream: DownstreamH2Stream): string[] | undefined {
  if (!(upstream instanceof OwnUpstreamStream) || !(stream instanceof OwnDownstreamStream)) return undefined;
  const fields = upstream.stream?.responseHeaders;
  if (fields === undefined || fields[0] !== ':status') return undefined;
  for (let index = 2; index < fields.length; index += 2) {
    const name = fields[index]!;
    if (name.charCodeAt(0) === 58 /* : */ || name === 'host' || name === 'http2-settings') return undefined;
    if (badField(name, fields[index + 1]!)) throw new WaypointError('WAYPOINT_UPSTREAM_CONNECT_FAILED', `header ${JSON.stringify(name)} cannot be sent to the client: invalid name or value`);
  }
  return fields.slice(2);
}

/** The endpoint's trailers as the client's list (checked on receipt: trailersProblem), unless they hold `host` or `http2-settings`. */
function passedTrailerFields(upstream: UpstreamH2Stream): readonly string[] | undefined {
  const fields = (upstream as OwnUpstreamStream).trailerFields;
  if (fields === undefined) return undefined;
  for (let index = 0; index < fields.length; index += 2) if (fields[index] === 'host' || fields[index] === 'http2-settings') return undefined;
  return fields;
}

/** A client stream's error (a reset, a broken connection): 'close' follows and cancels the upstream. One function, not a closure per stream. */
function ignoreStreamError(): void {}

function plainAddress(address: string): string {
  return address.startsWith('::ffff:') ? address.slice(7) : address;
}
